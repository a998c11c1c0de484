"""Speech to text on a call's media stream: a small streaming interface, OpenAI's realtime
transcription behind it, and an offline stand-in.

The caller's audio arrives as 20 ms μ-law frames on the event loop; a :class:`Transcriber` takes
each one without blocking (a bounded queue; when the service falls behind the oldest audio is
dropped, since stale speech is worth less than current speech) and gives back three events:
:class:`SpeechStarted` when the service hears the caller begin (barge-in), :class:`Partial` with
the words so far, :class:`Final` with the utterance once the service's VAD decides the turn is
over. The final transcripts drive the responder or the agent.

:class:`OpenAITranscriber` is a realtime transcription session through the official SDK
(``AsyncOpenAI.realtime.connect`` with ``intent=transcription``): the μ-law goes as is
(``audio/pcmu``, the G.711 format the service takes at 8 kHz: no transcoding), end of turn is
the service's server VAD. :class:`ScriptedTranscriber` is the offline stand-in for simulations,
``voicecall test``, the demo and tests: its "recognition" is reading back the words the mock
carrier wrote into :class:`~voicecall.runtime.sim.captions.Captions` when it played them.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol
from urllib.parse import urlsplit

from voicecall.runtime.media.vad import Vad, VadEvent, VadSettings
from voicecall.runtime.urls import websocket_url

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.resources.realtime.realtime import AsyncRealtimeConnection

    from voicecall.runtime.sim.captions import Captions

log = logging.getLogger(__name__)

PROVIDERS = ("openai",)
DEFAULT_MODEL = "gpt-4o-transcribe"
DEFAULT_SILENCE_MS = 800  # the original's silenceDurationMs
DEFAULT_VAD_THRESHOLD = 0.5
FRAME_MS = 20
MAX_PENDING_FRAMES = 150  # 3 s of caller audio waiting for the service
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
MAX_FRAMES_PER_APPEND = 50  # a backlog goes in 1 s appends, not one message per frame
CONNECT_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 2.0


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The caller started talking (the service's VAD onset): stop our audio."""


@dataclass(frozen=True, slots=True)
class Partial:
    """The words of the utterance in progress so far (each one repeats the earlier words)."""

    text: str


@dataclass(frozen=True, slots=True)
class Final:
    """The whole utterance, after the service decided the caller's turn is over."""

    text: str


SttEvent = SpeechStarted | Partial | Final


class SttError(Exception):
    """The transcription service could not be used; the message is one line, without secrets."""


class Transcriber(Protocol):
    """One call's speech-to-text session."""

    async def start(self) -> None:
        """Connect. Raises :class:`SttError` with a one-line reason on failure."""

    def feed(self, ulaw: bytes) -> None:
        """Take the next μ-law frame (on the event loop); never blocks."""

    def events(self) -> AsyncIterator[SttEvent]:
        """The events in order; ends when closed or the service connection ends."""

    async def close(self) -> None:
        """Stop the session (idempotent)."""


TranscriberFactory = Callable[[str, str | None], Transcriber]  # (call_id, language)


# --- config -------------------------------------------------------------------------------


class SttConfigError(ValueError):
    """A ``streaming`` config the runtime cannot use; the message starts with the key path."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SttSettings:
    """A transcription service's settings, resolved from the config and the environment.

    ``base_url`` is the HTTP API base (``…/v1``); ``websocket_base_url`` the WebSocket one,
    derived from ``base_url`` (http→ws, https→wss) when not given.
    """

    provider: str = "openai"
    api_key: str
    model: str = DEFAULT_MODEL
    silence_duration_ms: int = DEFAULT_SILENCE_MS
    vad_threshold: float = DEFAULT_VAD_THRESHOLD
    language: str | None = None
    prompt: str | None = None
    base_url: str | None = None
    websocket_base_url: str | None = None
    connect_timeout_s: float = CONNECT_TIMEOUT_S
    max_pending_frames: int = MAX_PENDING_FRAMES


def stt_from_config(
    plugin_config: Mapping[str, Any], env: Mapping[str, str]
) -> TranscriberFactory | None:
    """The transcriber factory the plugin config asks for; None when streaming is off.

    Reads ``streaming.enabled``, ``streaming.provider`` (only ``openai``, the default) and
    ``streaming.providers.openai`` (the manifest leaves these keys free):

    - ``apiKey`` (else ``OPENAI_API_KEY``), ``model`` (``gpt-4o-transcribe``)
    - ``silenceDurationMs`` (800: the silence that ends the caller's turn), ``vadThreshold``
      (0.5, 0..1: the service VAD's activation level)
    - ``language`` (ISO 639-1; ``en-US`` is taken as ``en``), ``prompt`` (a hint of the words
      to expect)
    - ``baseUrl`` (else ``OPENAI_BASE_URL``) and ``websocketBaseUrl`` (else derived from the
      base URL): a proxy or a compatible service in front

    Returns:
        ``factory(call_id, language)``; a call's ``language`` overrides the configured one.

    Raises:
        SttConfigError: an unknown provider, no key, a value of the wrong type.
    """
    streaming = plugin_config.get("streaming") or {}
    if not isinstance(streaming, Mapping) or not streaming.get("enabled"):
        return None
    settings = settings_from_config(streaming, env)

    def factory(call_id: str, language: str | None) -> Transcriber:
        return OpenAITranscriber(settings, call_id=call_id, language=language)

    return factory


def settings_from_config(streaming: Mapping[str, Any], env: Mapping[str, str]) -> SttSettings:
    """:class:`SttSettings` from the ``streaming`` section (see :func:`stt_from_config`)."""
    provider = streaming.get("provider") or "openai"
    if not isinstance(provider, str) or provider.lower() not in PROVIDERS:
        raise SttConfigError(
            f"streaming.provider: unknown transcription provider {provider!r} (supported: openai)"
        )
    section = (streaming.get("providers") or {}).get("openai") or {}
    if not isinstance(section, Mapping):
        raise SttConfigError("streaming.providers.openai: expected an object")
    fields = _Section(section, "streaming.providers.openai")
    api_key = fields.text("apiKey") or env.get("OPENAI_API_KEY")
    if not api_key:
        raise SttConfigError("streaming.providers.openai.apiKey: missing (or set OPENAI_API_KEY)")
    base_url = fields.url("baseUrl", ("http", "https")) or env.get("OPENAI_BASE_URL") or None
    return SttSettings(
        api_key=api_key,
        model=fields.text("model") or DEFAULT_MODEL,
        silence_duration_ms=fields.positive_int("silenceDurationMs", DEFAULT_SILENCE_MS),
        vad_threshold=fields.fraction("vadThreshold", DEFAULT_VAD_THRESHOLD),
        language=iso_language(fields.text("language")),
        prompt=fields.text("prompt"),
        base_url=base_url,
        websocket_base_url=fields.url("websocketBaseUrl", ("ws", "wss", "http", "https")),
    )


class _Section:
    """Typed reads of one config object, each error naming its key path."""

    def __init__(self, section: Mapping[str, Any], path: str) -> None:
        self._section = section
        self._path = path

    def _fail(self, key: str, expected: str, value: object) -> SttConfigError:
        shown = "a value" if key == "apiKey" else repr(value)  # a key is never echoed
        return SttConfigError(f"{self._path}.{key}: expected {expected}, got {shown}")

    def text(self, key: str) -> str | None:
        value = self._section.get(key)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self._fail(key, "a string", value)
        return value

    def positive_int(self, key: str, default: int) -> int:
        value = self._section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise self._fail(key, "a positive integer (ms)", value)
        return value

    def fraction(self, key: str, default: float) -> float:
        value = self._section.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise self._fail(key, "a number from 0 to 1", value)
        return float(value)

    def url(self, key: str, schemes: tuple[str, ...]) -> str | None:
        value = self.text(key)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.hostname:
            raise self._fail(key, f"a {'/'.join(schemes)} URL", value)
        return value.rstrip("/")


def iso_language(language: str | None) -> str | None:
    """ISO 639-1 as the service wants it: ``en-US`` → ``en`` (None stays None)."""
    if not language:
        return None
    return language.replace("_", "-").split("-")[0].lower() or None


# --- OpenAI realtime transcription --------------------------------------------------------


class OpenAITranscriber:
    """A :class:`Transcriber` on OpenAI's realtime transcription (one WebSocket per call).

    ``OpenAITranscriber(settings, call_id=..., language=...)``; ``language`` overrides the
    settings' (a flow's or a number's language). Audio fed before :meth:`start` is queued and
    sent once the session is configured.
    """

    def __init__(
        self, settings: SttSettings, *, call_id: str = "", language: str | None = None
    ) -> None:
        self.settings = settings
        self.call_id = call_id
        self.language = iso_language(language) or settings.language
        self.dropped_frames = 0  # audio lost to a backlog (the service too slow)
        self._pending: deque[bytes] = deque(maxlen=settings.max_pending_frames)
        self._wake = asyncio.Event()
        self._client: AsyncOpenAI | None = None
        self._conn: AsyncRealtimeConnection | None = None
        self._sender: asyncio.Task[None] | None = None
        self._partials: dict[str, str] = {}
        self._closed = False
        self._ended = False

    # public -------------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and configure the session; waits for the service's ``session.updated``.

        Raises:
            SttError: refused (key, status), unreachable, no answer within the timeout, or
                the session config rejected. One line, no key.
        """
        if self._conn is not None or self._closed:
            raise SttError("openai realtime: the transcriber was already started or closed")
        timeout = self.settings.connect_timeout_s
        try:
            self._conn = await asyncio.wait_for(self._connect(), timeout)
        except SttError:
            await self.close()
            raise
        except TimeoutError:
            await self.close()
            raise SttError(
                f"openai realtime at {self._where()}: no answer within {timeout:g} s"
            ) from None
        except Exception as exc:  # the SDK's and websockets' failures: one line each
            await self.close()
            raise SttError(f"openai realtime at {self._where()}: {_describe(exc)}") from None
        self._sender = asyncio.create_task(self._send_audio(self._conn))
        self._wake.set()  # audio fed while connecting

    def feed(self, ulaw: bytes) -> None:
        """Queue one μ-law frame for the service; the oldest goes when the queue is full."""
        if self._closed or self._ended:
            return
        # The queue holds 20 ms frames: a carrier's bigger media message is cut into them, so
        # the bound is 3 s of audio whatever the message size.
        for i in range(0, len(ulaw), FRAME_BYTES):
            if len(self._pending) == self._pending.maxlen:
                if not self.dropped_frames:
                    log.warning(
                        "stt %s: the service falls behind; dropping the oldest caller audio",
                        self.call_id,
                    )
                self.dropped_frames += 1
            self._pending.append(ulaw[i : i + FRAME_BYTES] if len(ulaw) > FRAME_BYTES else ulaw)
        self._wake.set()

    async def events(self) -> AsyncIterator[SttEvent]:
        """The service's events as :data:`SttEvent`; ends on close or disconnect."""
        from websockets.exceptions import ConnectionClosed

        conn = self._conn
        if conn is None:
            return
        try:
            async for server_event in conn:
                event = self._map(server_event)
                if event is not None:
                    yield event
            if not self._closed:
                log.info("stt %s: openai realtime ended the session", self.call_id)
        except (ConnectionClosed, OSError) as exc:
            if not self._closed:
                log.warning("stt %s: openai realtime connection lost (%s)", self.call_id,
                            _describe(exc))  # fmt: skip
        except Exception as exc:  # the SDK's unsent-messages error, a bad frame
            if not self._closed:
                log.warning("stt %s: openai realtime ended (%s)", self.call_id, _describe(exc))
        finally:
            self._ended = True
            self._wake.set()

    async def close(self) -> None:
        """Stop sending, close the WebSocket and the client (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sender
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._conn.close(), CLOSE_TIMEOUT_S)
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()

    # connection ---------------------------------------------------------------------------

    def _ws_base(self) -> str | None:
        s = self.settings
        if s.websocket_base_url:
            return s.websocket_base_url
        return websocket_url(s.base_url) if s.base_url else None

    def _where(self) -> str:
        """The service's address for messages: scheme, host, path (never userinfo or query)."""
        base = self._ws_base() or "wss://api.openai.com/v1"
        parts = urlsplit(base)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"

    async def _connect(self) -> AsyncRealtimeConnection:
        from openai import AsyncOpenAI

        s = self.settings
        self._client = AsyncOpenAI(
            api_key=s.api_key, base_url=s.base_url, websocket_base_url=self._ws_base()
        )
        manager = self._client.realtime.connect(extra_query={"intent": "transcription"})
        conn = await manager.enter()
        try:
            await conn.session.update(session=self._session())
            await self._await_ack(conn)
        except BaseException:
            with contextlib.suppress(Exception):
                await conn.close()
            raise
        return conn

    def _session(self) -> Any:
        """The transcription session: μ-law in, the model and hints, the server VAD."""
        s = self.settings
        transcription: dict[str, Any] = {"model": s.model}
        if self.language:
            transcription["language"] = self.language
        if s.prompt:
            transcription["prompt"] = s.prompt
        turn_detection = {
            "type": "server_vad",
            "silence_duration_ms": s.silence_duration_ms,
            "threshold": s.vad_threshold,
        }
        audio_input = {
            "format": {"type": "audio/pcmu"},
            "transcription": transcription,
            "turn_detection": turn_detection,
        }
        return {"type": "transcription", "audio": {"input": audio_input}}

    async def _await_ack(self, conn: AsyncRealtimeConnection) -> None:
        """Wait for ``session.updated``; an ``error`` before it is the config refused."""
        while True:
            event = await conn.recv()
            kind = getattr(event, "type", "")
            if kind in ("session.updated", "transcription_session.updated"):
                return
            if kind == "error":
                raise SttError(
                    f"openai realtime at {self._where()} refused the session: "
                    f"{_error_text(getattr(event, 'error', None))}"
                )

    async def _send_audio(self, conn: AsyncRealtimeConnection) -> None:
        """Drain the queue into ``input_audio_buffer.append`` events until closed."""
        while not (self._closed or self._ended):
            await self._wake.wait()
            self._wake.clear()
            while self._pending and not self._closed:
                count = min(len(self._pending), MAX_FRAMES_PER_APPEND)
                chunk = b"".join(self._pending.popleft() for _ in range(count))
                audio = base64.b64encode(chunk).decode("ascii")
                event = {"type": "input_audio_buffer.append", "audio": audio}
                try:
                    # send_raw, not input_audio_buffer.append: the SDK's TypedDict transform of
                    # each event costs ~125 µs, 50 times a second per call, and changes nothing.
                    await conn.send_raw(json.dumps(event))
                except Exception as exc:  # the connection went; events() reports it
                    if not self._closed:
                        log.warning("stt %s: sending audio failed (%s)", self.call_id,
                                    _describe(exc))  # fmt: skip
                    self._ended = True
                    return

    # events -------------------------------------------------------------------------------

    def _map(self, event: Any) -> SttEvent | None:
        kind = getattr(event, "type", "")
        if kind == "input_audio_buffer.speech_started":
            return SpeechStarted()
        if kind == "conversation.item.input_audio_transcription.delta":
            item = str(getattr(event, "item_id", ""))
            text = self._partials.get(item, "") + str(getattr(event, "delta", None) or "")
            self._partials[item] = text
            return Partial(text.strip()) if text.strip() else None
        if kind == "conversation.item.input_audio_transcription.completed":
            self._partials.pop(str(getattr(event, "item_id", "")), None)
            text = str(getattr(event, "transcript", None) or "").strip()
            if not text:
                log.debug("stt %s: an utterance transcribed to nothing", self.call_id)
                return None
            return Final(text)
        if kind == "conversation.item.input_audio_transcription.failed":
            self._partials.pop(str(getattr(event, "item_id", "")), None)
            log.warning("stt %s: an utterance could not be transcribed (%s)", self.call_id,
                        _error_text(getattr(event, "error", None)))  # fmt: skip
        elif kind == "error":
            log.warning("stt %s: openai realtime error: %s", self.call_id,
                        _error_text(getattr(event, "error", None)))  # fmt: skip
        return None


_SECRET = re.compile(r"\b(sk|rk|ek|sess)[-_][A-Za-z0-9_*\-]{6,}")


def _error_text(error: Any) -> str:
    """A service error object in one line: code or type, and its message with keys masked."""
    if error is None:
        return "unknown error"
    code = getattr(error, "code", None) or getattr(error, "type", None) or "error"
    message = " ".join(str(getattr(error, "message", None) or "").split())
    message = _SECRET.sub("[redacted]", message)
    return f"{code}: {message}" if message else str(code)


def _describe(exc: BaseException) -> str:
    """One line for a connection failure, never the exception's text (it may echo headers)."""
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        if status in (401, 403):
            return f"HTTP {status}, the API key was refused (streaming.providers.openai.apiKey)"
        return f"HTTP {status}, the connection was refused"
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        return f"closed with code {code}"
    if isinstance(exc, OSError):
        return f"unreachable ({type(exc).__name__})"
    return type(exc).__name__


# --- offline stand-in ---------------------------------------------------------------------


Edge = Literal["start", "end"]


class EndOfTurn:
    """Speech onset and end of turn from μ-law frames, counted in audio time.

    The local VAD (:class:`~voicecall.runtime.media.vad.Vad`) gives the onset; the turn ends
    after ``silence_ms`` of audio without speech, as a service's server VAD decides it. Its
    hangover counts as silence already heard. Used by :class:`ScriptedTranscriber` and the
    tests' fake realtime server.
    """

    def __init__(self, *, silence_ms: int = DEFAULT_SILENCE_MS, vad: VadSettings | None = None):
        self.silence_ms = silence_ms
        self.vad = Vad(vad)
        self.in_turn = False
        self._silent_ms = 0.0
        # The lengths of the last frames: the VAD's hangover is a count of frames.
        self._recent_ms: deque[float] = deque(maxlen=self.vad.settings.hangover_frames)

    def feed(self, ulaw: bytes) -> Edge | None:
        """Take the next frame; ``start`` at the onset of a turn, ``end`` when it is over."""
        edge = self.vad.feed_ulaw(ulaw)
        frame_ms = len(ulaw) / 8  # 8 samples a millisecond
        self._recent_ms.append(frame_ms)
        if not self.in_turn:
            if edge is VadEvent.SPEECH_START:
                self.in_turn, self._silent_ms = True, 0.0
                return "start"
            return None
        if self.vad.speaking:
            self._silent_ms = 0.0
        elif edge is VadEvent.SPEECH_END:
            self._silent_ms = sum(self._recent_ms)  # the hangover was silence already
        else:
            self._silent_ms += frame_ms
        if self._silent_ms >= self.silence_ms:
            self.in_turn = False
            return "end"
        return None


class ScriptedTranscriber:
    """OFFLINE STAND-IN, not speech recognition: the simulator's and tests' transcriber.

    Its VAD hears the fixture audio the mock carrier plays; at the end of each turn
    (``silence_ms`` of audio-time silence after speech) it "recognizes" the words the carrier
    wrote for stream ``key`` into ``captions``. Build one per call with
    :func:`scripted_stt` or ``ScriptedTranscriber(captions, stream_key(call_id))``.
    """

    def __init__(
        self,
        captions: Captions,
        key: str,
        *,
        silence_ms: int = DEFAULT_SILENCE_MS,
        vad: VadSettings | None = None,
    ) -> None:
        self.captions = captions
        self.key = key
        self._turn = EndOfTurn(silence_ms=silence_ms, vad=vad)
        self._events: asyncio.Queue[SttEvent | None] = asyncio.Queue()
        self._closed = False

    async def start(self) -> None:
        """Nothing to connect to."""

    def feed(self, ulaw: bytes) -> None:
        if self._closed:
            return
        edge = self._turn.feed(ulaw)
        if edge == "start":
            self._events.put_nowait(SpeechStarted())
        elif edge == "end":
            text = self.captions.next(self.key)
            if text:
                self._events.put_nowait(Final(text))
            else:
                log.debug("stt (scripted) %s: a turn ended with no caption to name it", self.key)

    async def events(self) -> AsyncIterator[SttEvent]:
        while (event := await self._events.get()) is not None:
            yield event

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._events.put_nowait(None)


def scripted_stt(captions: Captions, *, silence_ms: int = DEFAULT_SILENCE_MS) -> TranscriberFactory:
    """A factory of :class:`ScriptedTranscriber` keyed by each call's stream key."""
    from voicecall.runtime.media.streams import stream_key

    def factory(call_id: str, language: str | None) -> Transcriber:
        return ScriptedTranscriber(captions, stream_key(call_id), silence_ms=silence_ms)

    return factory
