"""Text to speech for calls: one small streaming interface, a factory from the config, a timeout.

A service turns text into μ-law 8 kHz audio chunks as they are synthesized (no waiting for the
whole sentence). Which service, and how it sounds, comes from the effective ``tts`` config: the
host's ``messages.tts`` with the plugin's ``tts`` deep-merged over it (done once by
``plugin.config_effective``), the same shape as the original's core TtsConfig::

    {"provider": "openai" | "elevenlabs" | "edge" | "microsoft",
     "timeoutMs": 8000,
     "providers": {"openai": {"apiKey", "baseUrl", "model", "voice", "instructions", "speed"},
                   "elevenlabs": {"apiKey", "baseUrl", "voiceId", "modelId", "languageCode",
                                  "voiceSettings": {"stability", "similarityBoost", "style",
                                                    "useSpeakerBoost", "speed"}}}}

Edge/Microsoft TTS is ignored for calls, as in the original (it cannot stream telephony audio):
the carrier's own voice speaks instead, and the factory says so once. When synthesis gives no
audio within the timeout, :func:`start_speech` returns :class:`CarrierVoice`, the signal for the
runtime to speak the text with the carrier's voice so the caller never hears dead air.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

from voicecall.plugin.config_effective import deep_merge

log = logging.getLogger(__name__)

# The original's telephony TTS timeout: long enough for a slow first sentence, short enough
# that a caller who hears nothing has not yet hung up.
DEFAULT_TIMEOUT_MS = 8000
MAX_AHEAD_BYTES = 60 * 8000  # 60 s of μ-law 8 kHz
IGNORED_PROVIDERS = ("edge", "microsoft")
PROVIDERS = ("openai", "elevenlabs")


class TtsConfigError(ValueError):
    """A ``tts`` config the runtime cannot use; the message starts with the key path."""


@dataclass(frozen=True, slots=True, kw_only=True)
class VoiceSettings:
    """Per-utterance overrides of the configured voice (a flow's ``say``, a number's ``tts``).

    ``voice`` is the provider's own name for it: an OpenAI voice or an ElevenLabs voiceId.
    """

    voice: str | None = None
    instructions: str | None = None  # OpenAI: how to speak (tone, pace)
    speed: float | None = None
    language: str | None = None  # ElevenLabs languageCode (ISO 639-1)


class TtsService(Protocol):
    """A streaming synthesizer: μ-law 8 kHz mono chunks, in order, as they are produced."""

    @property
    def name(self) -> str: ...

    def synthesize(self, text: str, *, voice_settings: VoiceSettings) -> AsyncIterator[bytes]: ...

    async def aclose(self) -> None:
        """Close the service's connections (at shutdown)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CarrierVoice:
    """No synthesized audio: the runtime speaks ``text`` with the carrier's voice instead.

    ``reason`` is ``timeout``, ``error: <kind>`` or ``empty`` (the service ended without audio).
    """

    text: str
    reason: str


Outcome = Literal["playing", "complete", "stalled", "failed", "cancelled"]


class Speech:
    """Synthesized audio under way; the first chunk has already arrived.

    Iterate it for the chunks in order. A gap between chunks longer than the timeout ends the
    iteration with ``outcome`` ``stalled`` (the caller has heard a part; a retry would repeat
    it), a service error with ``failed``; neither raises, so playback code stays simple.
    """

    def __init__(
        self, *, first: bytes, rest: AsyncIterator[bytes], timeout_s: float, first_audio_ms: float
    ) -> None:
        self._first: bytes | None = first
        self._rest = rest
        self._timeout_s = timeout_s
        self.first_audio_ms = first_audio_ms
        self.outcome: Outcome = "playing"

    def __aiter__(self) -> AsyncGenerator[bytes, None]:
        return self._chunks()

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        try:
            if self._first is not None:
                first, self._first = self._first, None
                yield first
            while True:
                chunk = await asyncio.wait_for(anext(self._rest), self._timeout_s)
                if chunk:
                    yield chunk
        except StopAsyncIteration:
            self.outcome = "complete"
        except TimeoutError:
            self.outcome = "stalled"
            log.warning(
                "tts stalled mid-utterance for %.1f s; the rest is dropped", self._timeout_s
            )
        except Exception as exc:  # any service failure ends the utterance
            self.outcome = "failed"
            log.warning("tts failed mid-utterance: %s", _kind(exc))
        finally:
            if self.outcome == "playing":  # the listener stopped (barge-in, hangup)
                self.outcome = "cancelled"
            await self.aclose()

    async def aclose(self) -> None:
        """Stop the synthesis (barge-in, hangup): closes the request to the service."""
        aclose = getattr(self._rest, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def start_speech(
    tts: TtsService | None, text: str, *, voice_settings: VoiceSettings, timeout_ms: int
) -> Speech | CarrierVoice:
    """Start synthesizing ``text``; wait at most ``timeout_ms`` for the first audio.

    Returns:
        :class:`Speech` once audio flows, else :class:`CarrierVoice` (no service, timeout,
        error, or no audio at all) so the runtime can fall back to the carrier's voice.
    """
    if tts is None:
        return CarrierVoice(text=text, reason="no tts service")
    started = time.perf_counter()
    chunks = tts.synthesize(text, voice_settings=voice_settings)
    timeout_s = timeout_ms / 1000
    try:
        first = b""
        while not first:  # an empty keep-alive chunk is not audio
            first = await asyncio.wait_for(anext(chunks), timeout_s)
    except StopAsyncIteration:
        return CarrierVoice(text=text, reason="empty")
    except TimeoutError:
        await _close(chunks)
        log.warning(
            "tts %s gave no audio within %d ms; using the carrier voice", tts.name, timeout_ms
        )
        return CarrierVoice(text=text, reason="timeout")
    except Exception as exc:  # any service failure falls back to the carrier
        await _close(chunks)
        log.warning("tts %s failed (%s); using the carrier voice", tts.name, _kind(exc))
        return CarrierVoice(text=text, reason=f"error: {_kind(exc)}")
    elapsed_ms = (time.perf_counter() - started) * 1000
    return Speech(first=first, rest=chunks, timeout_s=timeout_s, first_audio_ms=elapsed_ms)


async def synthesize_ahead(
    tts: TtsService | None,
    text: str,
    *,
    voice_settings: VoiceSettings,
    timeout_ms: int,
    max_bytes: int = MAX_AHEAD_BYTES,
) -> bytes | CarrierVoice:
    """The whole of ``text`` as μ-law audio, for a greeting synthesized while the call rings.

    Run it as a task when the call starts ringing and await it when the stream connects: the
    first words are then not late. Returns :class:`CarrierVoice` as :func:`start_speech` does,
    and also when synthesis stalls midway (a greeting cut short is worse than the carrier's).

    Args:
        max_bytes: a bound on the audio kept (default 60 s at 8 kHz); beyond it the text is
            not a greeting and the carrier voice is used.
    """
    speech = await start_speech(tts, text, voice_settings=voice_settings, timeout_ms=timeout_ms)
    if isinstance(speech, CarrierVoice):
        return speech
    audio = bytearray()
    async for chunk in speech:
        audio += chunk
        if len(audio) > max_bytes:
            await speech.aclose()
            return CarrierVoice(text=text, reason="too long to synthesize ahead")
    if speech.outcome != "complete":
        return CarrierVoice(text=text, reason=speech.outcome)
    return bytes(audio)


async def _close(chunks: AsyncIterator[bytes]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def check_base_url(section: Mapping[str, Any], provider: str) -> str | None:
    """``tts.providers.<provider>.baseUrl``: a proxy or compatible service in front (None: none).

    Raises:
        TtsConfigError: not an http(s) URL with a host.
    """
    value = section.get("baseUrl")
    if value is None or value == "":
        return None
    url = value if isinstance(value, str) else ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise TtsConfigError(
            f"tts.providers.{provider}.baseUrl: expected an http(s) URL, got {value!r}"
        )
    return url.rstrip("/")


def _kind(exc: BaseException) -> str:
    """What went wrong, without the message (a service's error text may echo a key)."""
    status = getattr(exc, "status_code", None)
    return f"{type(exc).__name__} {status}" if status else type(exc).__name__


# --- config -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TtsChoice:
    """The service the config chose (None: the carrier voice) and its synthesis timeout."""

    service: TtsService | None
    timeout_ms: int


Builder = Callable[[Mapping[str, Any], Mapping[str, str]], TtsService]


def effective_tts(
    tts: Mapping[str, Any] | None, override: Mapping[str, Any] | None
) -> dict[str, Any]:
    """``override`` (a number's ``tts``) deep-merged over the effective ``tts``, legacy keys moved.

    The original's legacy shape ``tts.<provider>`` becomes ``tts.providers.<provider>``.
    """
    merged: dict[str, Any] = deep_merge(dict(tts or {}), dict(override or {}))
    providers = dict(merged.get("providers") or {})
    for name in (*PROVIDERS, *IGNORED_PROVIDERS):
        legacy = merged.pop(name, None)
        if isinstance(legacy, dict):
            providers[name] = deep_merge(legacy, providers.get(name) or {})
    if providers:
        merged["providers"] = providers
    return merged


def choose_tts(
    tts: Mapping[str, Any] | None,
    *,
    env: Mapping[str, str] | None = None,
    builders: Mapping[str, Builder] | None = None,
) -> TtsChoice:
    """The TTS service calls use, from the effective ``tts`` config (see the module docstring).

    With no ``provider``, the first of OpenAI and ElevenLabs with a key (in the config or the
    SDK's environment variable) is used, else none. Edge/Microsoft, chosen or only configured,
    logs one warning and gives none: the carrier's voice speaks.

    Raises:
        TtsConfigError: an unknown provider, a chosen provider without a key, a bad timeout.
    """
    cfg = effective_tts(tts, None)
    env = os.environ if env is None else env
    builders = _BUILDERS if builders is None else builders
    timeout_ms = _timeout(cfg)
    providers: Mapping[str, Any] = cfg.get("providers") or {}
    name = cfg.get("provider")
    if name is None:
        name = next((p for p in PROVIDERS if _has_key(p, providers.get(p) or {}, env)), None)
        if name is None and any(p in providers for p in IGNORED_PROVIDERS):
            name = next(p for p in IGNORED_PROVIDERS if p in providers)
    if name is None:
        return TtsChoice(service=None, timeout_ms=timeout_ms)
    name = str(name).lower()
    if name in IGNORED_PROVIDERS:
        log.warning(
            "tts.provider %s is ignored for calls (it gives no telephony audio): carrier voice",
            name,
        )
        return TtsChoice(service=None, timeout_ms=timeout_ms)
    if name not in PROVIDERS:
        raise TtsConfigError(f"tts.provider: unknown TTS provider {name!r} (openai, elevenlabs)")
    section = providers.get(name) or {}
    if not isinstance(section, Mapping):
        raise TtsConfigError(f"tts.providers.{name}: expected an object")
    if not _has_key(name, section, env):
        var = _KEY_ENV[name]
        raise TtsConfigError(f"tts.providers.{name}.apiKey: missing (or set {var})")
    return TtsChoice(service=builders[name](section, env), timeout_ms=timeout_ms)


def _timeout(cfg: Mapping[str, Any]) -> int:
    value = cfg.get("timeoutMs", DEFAULT_TIMEOUT_MS)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TtsConfigError(f"tts.timeoutMs: expected a positive integer (ms), got {value!r}")
    return value


_KEY_ENV = {"openai": "OPENAI_API_KEY", "elevenlabs": "ELEVENLABS_API_KEY"}


def _has_key(name: str, section: Mapping[str, Any], env: Mapping[str, str]) -> bool:
    return bool(section.get("apiKey") or env.get(_KEY_ENV[name]))


def _openai(section: Mapping[str, Any], env: Mapping[str, str]) -> TtsService:
    from voicecall.runtime.voice.openai_tts import OpenAiTts

    return OpenAiTts.from_config(section, env=env)


def _elevenlabs(section: Mapping[str, Any], env: Mapping[str, str]) -> TtsService:
    from voicecall.runtime.voice.elevenlabs_tts import ElevenLabsTts

    return ElevenLabsTts.from_config(section, env=env)


_BUILDERS: Mapping[str, Builder] = {"openai": _openai, "elevenlabs": _elevenlabs}
