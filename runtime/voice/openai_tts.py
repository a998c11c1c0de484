"""OpenAI TTS through the official SDK, streamed, as μ-law 8 kHz for the phone.

The speech endpoint streams raw PCM (24 kHz, 16-bit little-endian, mono) when asked for
``pcm``; each chunk is resampled to 8 kHz with a real low-pass (soxr, streaming, so chunk
boundaries leave no clicks) and encoded to μ-law as it arrives, so the first audio reaches the
caller after the first network chunk, not after the whole sentence. The codec is bit-exact
with audioop (``runtime.media.codec``).

Pointable: ``baseUrl`` in the config, else the SDK's ``OPENAI_BASE_URL``; ``apiKey``, else
``OPENAI_API_KEY``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from voicecall.runtime.media import codec
from voicecall.runtime.media.resample import Resampler
from voicecall.runtime.voice.tts import TtsConfigError, VoiceSettings, check_base_url

DEFAULT_MODEL = "gpt-4o-mini-tts"
DEFAULT_VOICE = "alloy"
SOURCE_RATE: Final = 24000  # the speech endpoint's ``pcm`` format
TARGET_RATE: Final = 8000


@dataclass(frozen=True, slots=True, kw_only=True)
class OpenAiTtsConfig:
    """``tts.providers.openai`` (names as in the original's config)."""

    api_key: str | None = None  # None: the SDK reads OPENAI_API_KEY
    base_url: str | None = None  # None: the SDK reads OPENAI_BASE_URL, else api.openai.com
    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    instructions: str | None = None
    speed: float | None = None

    @classmethod
    def from_section(cls, section: Mapping[str, Any]) -> OpenAiTtsConfig:
        """Raises TtsConfigError naming the key path of a value of the wrong type."""
        speed = section.get("speed")
        if speed is not None and (
            isinstance(speed, bool) or not isinstance(speed, int | float) or not 0.25 <= speed <= 4
        ):
            raise TtsConfigError(f"tts.providers.openai.speed: expected 0.25..4, got {speed!r}")
        return cls(
            api_key=_text(section, "apiKey"),
            base_url=check_base_url(section, "openai"),
            model=_text(section, "model") or DEFAULT_MODEL,
            voice=_text(section, "voice") or DEFAULT_VOICE,
            instructions=_text(section, "instructions"),
            speed=float(speed) if speed is not None else None,
        )


def _text(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise TtsConfigError(f"tts.providers.openai.{key}: expected a string")
    return value


class OpenAiTts:
    """A :class:`~voicecall.runtime.voice.tts.TtsService` on OpenAI's speech endpoint."""

    name = "openai"

    def __init__(self, config: OpenAiTtsConfig, *, env: Mapping[str, str] | None = None) -> None:
        from openai import AsyncOpenAI  # lazily: only calls with OpenAI TTS pay the import

        env = os.environ if env is None else env
        self.config = config
        self._client = AsyncOpenAI(
            api_key=config.api_key or env.get("OPENAI_API_KEY"),
            base_url=config.base_url or env.get("OPENAI_BASE_URL") or None,
        )

    @classmethod
    def from_config(cls, section: Mapping[str, Any], *, env: Mapping[str, str]) -> OpenAiTts:
        """From ``tts.providers.openai``."""
        return cls(OpenAiTtsConfig.from_section(section), env=env)

    async def aclose(self) -> None:
        """Close the connections to the service."""
        await self._client.close()

    async def synthesize(self, text: str, *, voice_settings: VoiceSettings) -> AsyncIterator[bytes]:
        """μ-law 8 kHz chunks of ``text`` spoken, in order, as the service streams them."""
        cfg = self.config
        instructions = voice_settings.instructions or cfg.instructions
        speed = voice_settings.speed if voice_settings.speed is not None else cfg.speed
        extra: dict[str, Any] = {}
        if instructions:
            extra["instructions"] = instructions
        if speed is not None:
            extra["speed"] = speed
        converter = _Pcm24kTo8k()
        async with self._client.audio.speech.with_streaming_response.create(
            model=cfg.model,
            voice=voice_settings.voice or cfg.voice,
            input=text,
            response_format="pcm",
            **extra,
        ) as response:
            async for chunk in response.iter_bytes():
                out = converter.feed(chunk)
                if out:
                    yield out
        tail = converter.flush()
        if tail:
            yield tail


class _Pcm24kTo8k:
    """24 kHz PCM16 bytes in, 8 kHz μ-law bytes out, across arbitrary chunk boundaries."""

    def __init__(self) -> None:
        self._odd = b""  # a network chunk may end in the middle of a sample
        self._resampler = Resampler(SOURCE_RATE, TARGET_RATE)

    def feed(self, chunk: bytes) -> bytes:
        data = self._odd + chunk
        cut = len(data) - len(data) % 2
        self._odd = data[cut:]
        return codec.encode(self._resampler.process_bytes(data[:cut])) if cut else b""

    def flush(self) -> bytes:
        tail = self._resampler.flush().astype("<i2", copy=False).tobytes()
        return codec.encode(tail)
