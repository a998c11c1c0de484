"""ElevenLabs TTS through the official SDK, streamed, already in the phone's format.

ElevenLabs can stream ``ulaw_8000`` itself, so the audio goes to the caller exactly as the
service produced it: no resampling, no transcoding, nothing to add latency or aliasing.

Pointable: ``baseUrl`` in the config (the SDK's ``base_url``); ``apiKey``, else the SDK's
``ELEVENLABS_API_KEY``. The SDK reads no base-URL variable of its own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from voicecall.runtime.voice.tts import TtsConfigError, VoiceSettings, check_base_url

# The original's defaults (OpenClaw core TTS).
DEFAULT_VOICE_ID = "pMsXgVXv3BLzUgSXRplE"
DEFAULT_MODEL_ID = "eleven_multilingual_v2"
OUTPUT_FORMAT: Final = "ulaw_8000"
# The SDK re-chunks the body (1024 bytes by default, 128 ms of audio): one 20 ms frame instead,
# so the first frame goes to the caller as soon as it has arrived.
FRAME_BYTES: Final = 160
# Per network operation; how long a caller may wait for audio is tts.timeoutMs (tts.py).
_TIMEOUT_S: Final = 30.0

# tts.providers.elevenlabs.voiceSettings (camelCase, as the original) → the SDK's names.
_VOICE_SETTINGS: Final = {
    "stability": "stability",
    "similarityBoost": "similarity_boost",
    "style": "style",
    "useSpeakerBoost": "use_speaker_boost",
    "speed": "speed",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ElevenLabsTtsConfig:
    """``tts.providers.elevenlabs`` (names as in the original's config)."""

    api_key: str | None = None  # None: ELEVENLABS_API_KEY
    base_url: str | None = None  # None: api.elevenlabs.io
    voice_id: str = DEFAULT_VOICE_ID
    model_id: str = DEFAULT_MODEL_ID
    language_code: str | None = None
    voice_settings: tuple[tuple[str, float | bool], ...] = ()  # SDK names, as given

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> ElevenLabsTtsConfig:
        """Raises TtsConfigError naming the key path of a value of the wrong type."""
        return cls(
            api_key=_text(section, "apiKey"),
            base_url=check_base_url(section, "elevenlabs"),
            voice_id=_text(section, "voiceId") or DEFAULT_VOICE_ID,
            model_id=_text(section, "modelId") or DEFAULT_MODEL_ID,
            language_code=_text(section, "languageCode"),
            voice_settings=_voice_settings(section.get("voiceSettings")),
        )


def _text(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TtsConfigError(f"tts.providers.elevenlabs.{key}: expected a string")
    return value


def _voice_settings(value: Any) -> tuple[tuple[str, float | bool], ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise TtsConfigError("tts.providers.elevenlabs.voiceSettings: expected an object")
    out: list[tuple[str, float | bool]] = []
    for key, item in value.items():
        path = f"tts.providers.elevenlabs.voiceSettings.{key}"
        if key not in _VOICE_SETTINGS:
            raise TtsConfigError(f"{path}: unknown setting ({', '.join(_VOICE_SETTINGS)})")
        if key == "useSpeakerBoost":
            if not isinstance(item, bool):
                raise TtsConfigError(f"{path}: expected true or false")
        elif isinstance(item, bool) or not isinstance(item, int | float):
            raise TtsConfigError(f"{path}: expected a number")
        out.append((_VOICE_SETTINGS[key], item))
    return tuple(out)


class ElevenLabsTts:
    """A :class:`~voicecall.runtime.voice.tts.TtsService` on ElevenLabs' streaming endpoint."""

    name = "elevenlabs"

    def __init__(
        self, config: ElevenLabsTtsConfig, *, env: Mapping[str, str] | None = None
    ) -> None:
        import httpx
        from elevenlabs.client import AsyncElevenLabs  # lazily: a heavy import

        env = os.environ if env is None else env
        self.config = config
        # Our own HTTP client, to close it; no redirects, which would carry the key header
        # (not an Authorization header, so httpx would not drop it) to another host.
        self._http = httpx.AsyncClient(timeout=_TIMEOUT_S, follow_redirects=False)
        kwargs: dict[str, Any] = {"api_key": config.api_key or env.get("ELEVENLABS_API_KEY")}
        if config.base_url:
            kwargs["base_url"] = config.base_url
        self._client = AsyncElevenLabs(httpx_client=self._http, **kwargs)

    @classmethod
    def from_config(cls, section: Mapping[str, Any], *, env: Mapping[str, str]) -> ElevenLabsTts:
        """From ``tts.providers.elevenlabs``."""
        return cls(ElevenLabsTtsConfig.from_section(section), env=env)

    async def aclose(self) -> None:
        """Close the connections to the service."""
        await self._http.aclose()

    async def synthesize(self, text: str, *, voice_settings: VoiceSettings) -> AsyncIterator[bytes]:
        """μ-law 8 kHz chunks of ``text`` spoken, in order, exactly as the service sends them."""
        from elevenlabs.types import VoiceSettings as SdkVoiceSettings

        cfg = self.config
        settings: dict[str, Any] = dict(cfg.voice_settings)
        if voice_settings.speed is not None:
            settings["speed"] = voice_settings.speed
        extra: dict[str, Any] = {}
        if settings:
            extra["voice_settings"] = SdkVoiceSettings(**settings)
        language = voice_settings.language or cfg.language_code
        if language:
            extra["language_code"] = language
        stream = self._client.text_to_speech.stream(
            voice_settings.voice or cfg.voice_id,
            text=text,
            model_id=cfg.model_id,
            output_format=OUTPUT_FORMAT,
            request_options={"chunk_size": FRAME_BYTES},
            **extra,
        )
        # Closed here, not by the garbage collector, when the listener stops early (barge-in).
        async with contextlib.aclosing(stream):
            async for chunk in stream:
                if chunk:
                    yield chunk
