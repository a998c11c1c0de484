"""Speech to speech over the OpenAI Realtime API, for ``converse: {driver: realtime}`` calls.

One :class:`RealtimeSession` bridges one call's media stream to one Realtime WebSocket (the
official SDK's ``AsyncOpenAI().realtime.connect``). Audio stays G.711 μ-law 8 kHz both ways
(``audio/pcmu``, the GA name of the beta's ``g711_ulaw``), so nothing is transcoded: the
caller's frames go up as they arrive and the model's audio comes down ready for the carrier.
Turn taking is the service's server VAD; the session reports to a :class:`RealtimeHandler`
that the call side implements (play audio, clear it on barge-in, transcripts, tool calls, the
end of the call).

Config (the plugin's ``realtime`` section, names as in the original)::

    {"provider": "openai", "instructions": "...", "toolPolicy": "safe-read-only",
     "tools": [{"type": "function", "name", "description", "parameters"}],
     "providers": {"openai": {"apiKey", "model", "voice", "baseUrl", "silenceDurationMs"}}}

``apiKey`` falls back to ``OPENAI_API_KEY`` and ``baseUrl`` to ``OPENAI_BASE_URL``; the
WebSocket URL is the base URL with ``http(s)`` swapped for ``ws(s)``, always passed to the SDK
so that a proxy or a local fake is reached on both transports. The GA API has no sampling
temperature, so none is configured.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections import deque
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Protocol, cast
from urllib.parse import urlsplit

from openai.types.realtime import (
    ConversationItemInputAudioTranscriptionCompletedEvent,
    InputAudioBufferSpeechStartedEvent,
    RealtimeConversationItemFunctionCall,
    RealtimeErrorEvent,
    ResponseAudioDeltaEvent,
    ResponseAudioTranscriptDeltaEvent,
    ResponseAudioTranscriptDoneEvent,
    ResponseCreatedEvent,
    ResponseDoneEvent,
)

from voicecall.runtime.urls import websocket_url

if TYPE_CHECKING:
    from openai import AsyncOpenAI
    from openai.resources.realtime.realtime import AsyncRealtimeConnection
    from openai.types.realtime import RealtimeServerEvent
    from openai.types.realtime.session_update_event_param import Session

log = logging.getLogger(__name__)

PROVIDERS = ("openai",)
TOOL_POLICIES = ("safe-read-only", "owner", "none")
DEFAULT_MODEL = "gpt-realtime"
DEFAULT_VOICE = "alloy"
DEFAULT_BASE_URL = "https://api.openai.com/v1"
DEFAULT_TRANSCRIBE_MODEL = "gpt-4o-mini-transcribe"
DEFAULT_SILENCE_MS = 500  # the service's own default end-of-turn silence
END_CALL: Final = "end_call"
FINISH: Final = "finish_conversation"
BYTES_PER_MS: Final = 8  # μ-law 8 kHz: one byte a sample
MAX_FEED_BYTES: Final = 5 * 8000  # caller audio waiting for the socket; older audio is dropped
MAX_APPEND_BYTES: Final = 8000  # one ``input_audio_buffer.append`` carries at most 1 s
ULAW: Final = {"type": "audio/pcmu"}

DEFAULT_INSTRUCTIONS = (
    "You are a phone-call voice assistant. Keep spoken replies brief and natural; the caller "
    "hears you on a telephone line."
)
END_GUIDE = (
    f"When the caller wants to end the call or the conversation is over, say your goodbye "
    f"first, then call {END_CALL} with those words as farewell; the call ends once they have "
    f"been heard, and nothing after the tool call is spoken."
)
FINISH_GUIDE = (
    f"When you have every value asked for, call {FINISH} with them. If it answers with an "
    f"error, ask the caller for what the error names and call it again."
)
END_CALL_TOOL: Final[Mapping[str, Any]] = {
    "type": "function",
    "name": END_CALL,
    "description": "End the phone call. Speak your farewell before calling this.",
    "parameters": {
        "type": "object",
        "properties": {"farewell": {"type": "string", "description": "The goodbye you just said."}},
        "required": ["farewell"],
    },
}


class RealtimeError(Exception):
    """A realtime session could not start; the message is one line and holds no secret."""


class RealtimeConfigError(ValueError):
    """A ``realtime`` config the runtime cannot use; the message starts with the key path."""


# --- settings and config ------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class RealtimeSettings:
    """How sessions connect and what the model is told.

    ``tool_policy`` is the original's consult-tool exposure. Here: ``none`` declares none of
    the configured ``realtime.tools`` (only the built-ins); ``safe-read-only`` and ``owner``
    declare them all and leave what a call may do to the handler's ``tool`` (it can read the
    policy from these settings).
    """

    api_key: str = field(repr=False)
    model: str = DEFAULT_MODEL
    voice: str = DEFAULT_VOICE
    instructions: str = DEFAULT_INSTRUCTIONS
    tools: tuple[Mapping[str, Any], ...] = ()
    tool_policy: str = "safe-read-only"
    base_url: str = DEFAULT_BASE_URL
    websocket_base_url: str | None = None  # None: base_url with ws(s) for http(s)
    transcribe_model: str = DEFAULT_TRANSCRIBE_MODEL
    silence_duration_ms: int = DEFAULT_SILENCE_MS
    start_timeout_s: float = 10.0  # connect and session.updated
    tool_timeout_s: float = 10.0  # a handler slower than this answers with an error

    @property
    def ws_url(self) -> str:
        """The WebSocket base URL the SDK connects to."""
        return self.websocket_base_url or websocket_url(self.base_url)


def realtime_from_config(
    plugin_config: Mapping[str, Any], env: Mapping[str, str]
) -> RealtimeFactory | None:
    """The factory for realtime sessions, or None when no API key is configured or set.

    ``realtime.enabled`` is the original's whole-call switch and does not gate flow nodes that
    ask for ``driver: realtime``.

    Raises:
        RealtimeConfigError: an unknown provider or a value of the wrong shape, naming its path.
    """
    section = plugin_config.get("realtime") or {}
    provider = section.get("provider") or "openai"
    if provider not in PROVIDERS:
        raise RealtimeConfigError(
            f"realtime.provider: unknown provider {provider!r} (known: {', '.join(PROVIDERS)})"
        )
    openai = (section.get("providers") or {}).get("openai") or {}
    api_key = _text(openai, "apiKey") or env.get("OPENAI_API_KEY")
    if not api_key:
        return None
    base_url = _base_url(openai) or env.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL
    return RealtimeFactory(
        RealtimeSettings(
            api_key=api_key,
            model=_text(openai, "model") or DEFAULT_MODEL,
            voice=_text(openai, "voice") or DEFAULT_VOICE,
            instructions=_instructions(section),
            tools=_tools(section),
            tool_policy=_policy(section),
            base_url=base_url.rstrip("/"),
            silence_duration_ms=_silence(openai),
        )
    )


def _text(section: Mapping[str, Any], key: str) -> str | None:
    value = section.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise RealtimeConfigError(f"realtime.providers.openai.{key}: expected a string")
    return value


def _base_url(section: Mapping[str, Any]) -> str | None:
    url = _text(section, "baseUrl")
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RealtimeConfigError(
            f"realtime.providers.openai.baseUrl: expected an http(s) URL, got {url!r}"
        )
    return url


def _silence(section: Mapping[str, Any]) -> int:
    value = section.get("silenceDurationMs", DEFAULT_SILENCE_MS)
    if isinstance(value, bool) or not isinstance(value, int) or not 100 <= value <= 5000:
        raise RealtimeConfigError(
            f"realtime.providers.openai.silenceDurationMs: expected 100..5000, got {value!r}"
        )
    return value


def _policy(section: Mapping[str, Any]) -> str:
    policy = section.get("toolPolicy") or "safe-read-only"
    if policy not in TOOL_POLICIES:
        raise RealtimeConfigError(
            f"realtime.toolPolicy: expected one of {', '.join(TOOL_POLICIES)}, got {policy!r}"
        )
    return str(policy)


def _tools(section: Mapping[str, Any]) -> tuple[Mapping[str, Any], ...]:
    tools = section.get("tools") or []
    out: list[Mapping[str, Any]] = []
    for index, tool in enumerate(tools):
        name = tool.get("name") if isinstance(tool, Mapping) else None
        if not isinstance(name, str) or not name:
            raise RealtimeConfigError(f"realtime.tools[{index}].name: expected a tool name")
        if name in (END_CALL, FINISH):
            raise RealtimeConfigError(f"realtime.tools[{index}].name: {name!r} is built in")
        out.append({"type": "function", **tool})
    return tuple(out)


def _instructions(section: Mapping[str, Any]) -> str:
    """The configured instructions; the manifest's default names the original's built-in
    tools (``openclaw_end_call``, ``openclaw_agent_consult``), which are not declared here,
    so it is replaced by a default that names none."""
    text = section.get("instructions")
    if not isinstance(text, str) or not text.strip() or text == _manifest_default():
        return DEFAULT_INSTRUCTIONS
    return text


def _manifest_default() -> str | None:
    from voicecall.plugin.config import config_schema

    with contextlib.suppress(KeyError, TypeError):
        value = config_schema()["properties"]["realtime"]["properties"]["instructions"]
        return str(value["default"])
    return None


# --- the session's parts that are only data -----------------------------------------------


def session_tools(
    settings: RealtimeSettings, collect: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The tools the model is given: the configured ones unless the policy is ``none``,
    ``end_call``, and ``finish_conversation`` with ``collect`` as its parameters."""
    tools = [dict(t) for t in settings.tools] if settings.tool_policy != "none" else []
    tools.append(dict(END_CALL_TOOL))
    if collect is not None:
        tools.append({
            "type": "function",
            "name": FINISH,
            "description": "Finish the conversation with the values collected from the caller.",
            "parameters": dict(collect),
        })  # fmt: skip
    return tools


def session_config(
    settings: RealtimeSettings, *, instructions: str, collect: Mapping[str, Any] | None
) -> dict[str, Any]:
    """The ``session.update`` payload (GA shape)."""
    guides = [END_GUIDE] + ([FINISH_GUIDE] if collect is not None else [])
    text = "\n\n".join(p for p in (settings.instructions, instructions, *guides) if p.strip())
    return {
        "type": "realtime",
        "model": settings.model,
        "instructions": text,
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "format": dict(ULAW),
                # The caller's words reach the transcript only through this.
                "transcription": {"model": settings.transcribe_model},
                "turn_detection": {
                    "type": "server_vad",
                    "silence_duration_ms": settings.silence_duration_ms,
                    "create_response": True,
                    "interrupt_response": True,
                },
            },
            "output": {"format": dict(ULAW), "voice": settings.voice},
        },
        "tools": session_tools(settings, collect),
        "tool_choice": "auto",
    }


def _interrupting(config: Mapping[str, Any], interrupt: bool) -> dict[str, Any]:
    """``config`` with the server's turn detection cancelling a response when the caller
    speaks (``interrupt``), or not."""
    audio = dict(config["audio"])
    heard = dict(audio["input"])
    heard["turn_detection"] = {**heard["turn_detection"], "interrupt_response": interrupt}
    audio["input"] = heard
    return {**config, "audio": audio}


class RealtimeHandler(Protocol):
    """What the call side does for a session. The plain methods are called from the
    session's reader and must not block."""

    def play(self, ulaw: bytes) -> None:
        """Assistant audio, μ-law 8 kHz, in order: queue it for the caller."""

    def barge_in(self) -> None:
        """The service heard the caller start speaking: drop the audio queued and not yet
        played and, if anything was dropped, call :meth:`RealtimeSession.truncate` at once
        with how much was played."""

    def heard(self, text: str) -> None:
        """The caller said ``text`` (the service's transcription of one turn)."""

    def said(self, text: str, cut: bool) -> None:
        """The assistant said ``text`` in one response; ``cut``: the caller interrupted it.

        The model's audio arrives faster than it plays, so a response is reported once its
        fate is known: at a truncate, the next caller transcript, the next response, the
        end of the call or close; in order with :meth:`heard`."""

    async def tool(self, name: str, arguments: dict[str, Any]) -> Mapping[str, Any] | None:
        """A function tool call; the result goes back to the model, which then goes on.

        ``finish_conversation`` carries the collected values: answer ``{"error": ...}`` to
        have the model ask again, or close the session to hand the call back to the flow.
        Return None for a tool the call has no handler for (the model is told so).
        """

    def end(self, farewell: str) -> None:
        """The model ended the call. Its farewell audio has already been passed to
        :meth:`play`: let it play out, then hang up. The session closes itself."""


@dataclass(slots=True)
class _Response:
    """One model response as it streams in."""

    id: str
    transcript: list[str] = field(default_factory=list)
    final: str | None = None  # output_audio_transcript.done
    item_id: str | None = None  # the audio item
    audio_bytes: int = 0
    interrupted: bool = False  # the caller spoke while it streamed: drop the rest

    @property
    def text(self) -> str:
        return (self.final if self.final is not None else "".join(self.transcript)).strip()


@dataclass(slots=True)
class _Said:
    """A finished response whose transcript waits to learn whether it was heard in full."""

    text: str
    item_id: str | None
    cut: bool


@dataclass(slots=True)
class _Segment:
    item_id: str
    start: int  # bytes since the last barge-in
    length: int


class _Output:
    """Assistant audio handed to ``play`` since the call side last cleared its queue, per
    item, so the played duration it reports maps onto the items the model must truncate."""

    def __init__(self) -> None:
        self._segments: list[_Segment] = []
        self._given = 0

    def audio(self, item_id: str, size: int) -> None:
        if not self._segments or self._segments[-1].item_id != item_id:
            self._segments.append(_Segment(item_id=item_id, start=self._given, length=0))
        self._segments[-1].length += size
        self._given += size

    def cleared(self, played_ms: int) -> list[tuple[str, int]]:
        """(item, audio_end_ms) for every item the caller did not hear in full; the next
        clear counts from here."""
        played = max(0, played_ms) * BYTES_PER_MS
        cuts = [
            (s.item_id, min(max(0, played - s.start), s.length) // BYTES_PER_MS)
            for s in self._segments
            if played < s.start + s.length
        ]
        self._segments, self._given = [], 0
        return cuts


# --- the session --------------------------------------------------------------------------


class RealtimeSession:
    """One call bridged to one Realtime conversation.

    ``instructions`` (the flow node's) follow the configured ones; ``collect`` is the JSON
    Schema of the values to finish with (a ``finish_conversation`` tool), None for none;
    ``greeting`` is said first when given.
    """

    def __init__(
        self,
        settings: RealtimeSettings,
        handler: RealtimeHandler,
        *,
        instructions: str = "",
        collect: Mapping[str, Any] | None = None,
        greeting: str | None = None,
        protect_greeting: bool = False,
    ) -> None:
        self.settings = settings
        self._handler = handler
        self._config = session_config(settings, instructions=instructions, collect=collect)
        # A protected greeting (a call we placed says why before it listens): the service
        # does not cancel it when the callee speaks, until its response is done.
        self.protecting = bool(greeting and protect_greeting)
        self._greeting_id: str | None = None
        self._declared = {str(t["name"]) for t in self._config["tools"]}
        self._greeting = greeting
        self._client: AsyncOpenAI | None = None
        self._conn: AsyncRealtimeConnection | None = None
        self._audio: deque[bytes] = deque()
        self._queued = 0
        self._dropping = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._responses: dict[str, _Response] = {}
        self._said: list[_Said] = []
        self._output = _Output()
        self._farewell: str | None = None  # the farewell response to end the call after
        self._closing = False
        self._ender: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self._reason: str | None = None

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def speaking(self) -> bool:
        """A response is streaming: more of its audio or its end may still arrive."""
        return bool(self._responses)

    async def start(self) -> None:
        """Connect and configure the session; the greeting, if any, starts playing.

        Raises:
            RealtimeError: the service refused or did not answer (one line, no key).
        """
        from openai import AsyncOpenAI  # lazily: only realtime calls pay the import

        if self._closing:
            raise RealtimeError("realtime session did not start: closed before it started")
        cfg = self.settings
        self._client = AsyncOpenAI(
            api_key=cfg.api_key, base_url=cfg.base_url, websocket_base_url=cfg.ws_url
        )
        try:
            async with asyncio.timeout(cfg.start_timeout_s):
                self._conn = await self._client.realtime.connect(model=cfg.model).enter()
                first = _interrupting(self._config, not self.protecting)
                await self._conn.session.update(session=cast("Session", first))
                await self._until_updated(self._conn)
                if self._greeting:
                    say = f'Greet the caller by saying exactly this, then wait: "{self._greeting}"'
                    await self._conn.response.create(response={"instructions": say})
        except Exception as exc:  # every failure is one line to the caller
            reason = _kind(exc)
            await self._shutdown()
            raise RealtimeError(f"realtime session did not start: {reason}") from None
        self._spawn(self._read(self._conn))
        self._spawn(self._send_audio(self._conn))

    async def _until_updated(self, conn: AsyncRealtimeConnection) -> None:
        while True:
            event = await conn.recv()
            if isinstance(event, RealtimeErrorEvent):
                raise _Refused(event.error.code or event.error.type)
            if event.type == "session.updated":
                return

    def feed(self, ulaw: bytes) -> None:
        """Caller audio (μ-law 8 kHz); never blocks. Past :data:`MAX_FEED_BYTES` waiting,
        the oldest is dropped: late audio is worth less than current audio."""
        if self._closing or not ulaw:
            return
        self._audio.append(ulaw)
        self._queued += len(ulaw)
        while self._queued > MAX_FEED_BYTES:
            self._queued -= len(self._audio.popleft())
            if not self._dropping:
                self._dropping = True
                log.warning("realtime: caller audio backed up; dropping the oldest")
        self._wake.set()

    def truncate(self, played_ms: int) -> asyncio.Task[None]:
        """The call side cleared the assistant audio it had queued (after :meth:`barge_in
        <RealtimeHandler.barge_in>` or on its own barge-in): of the audio passed to ``play``
        since its previous clear (or the start), the caller heard ``played_ms``. The model is
        told where each item was cut, so its context matches what was heard, and the rest of
        a response still streaming is not played.

        Call it at the moment of the clear, without awaiting first: the accounting happens in
        this call (audio arriving later belongs to the next clear); the events are sent in
        the background, and the returned task can be awaited to wait for them.
        """
        cuts = self._output.cleared(played_ms)
        for response in self._responses.values():
            response.interrupted = True
        cut_items = {item_id for item_id, _ in cuts}
        for said in self._said:
            said.cut = said.cut or said.item_id in cut_items
        self._flush_said()
        return self._spawn(self._send_truncates(cuts))

    async def _send_truncates(self, cuts: list[tuple[str, int]]) -> None:
        conn = self._conn
        try:
            for item_id, end_ms in cuts:
                if conn is None or self._closing:
                    return
                await conn.conversation.item.truncate(
                    item_id=item_id, content_index=0, audio_end_ms=end_ms
                )
        except Exception as exc:
            await self._fail(_kind(exc))

    async def wait_closed(self) -> str | None:
        """Wait for the session to end; the reason when it failed, None when closed."""
        await self._closed.wait()
        return self._reason

    async def close(self) -> None:
        """End the session (idempotent); safe from the handler's callbacks."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        for response in self._responses.values():  # what was passed to play, unfinished
            if response.text and response.audio_bytes:
                self._said.append(_Said(text=response.text, item_id=response.item_id, cut=True))
        self._flush_said()
        await self._shutdown()

    async def _shutdown(self) -> None:
        self._closing = True
        current = asyncio.current_task()
        tasks = [t for t in self._tasks if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.close()
        self._closed.set()

    async def _fail(self, reason: str) -> None:
        if self._closing:
            return
        self._reason = reason
        log.warning("realtime session ended: %s", reason)
        await self.close()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- the two loops --------------------------------------------------------------------

    async def _read(self, conn: AsyncRealtimeConnection) -> None:
        try:
            async for event in conn:
                self._on_event(event)
        except Exception as exc:  # one log line, the session ends
            await self._fail(_kind(exc))
            return
        await self._fail("the service closed the session")

    async def _send_audio(self, conn: AsyncRealtimeConnection) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._audio:
                    audio = base64.b64encode(self._take()).decode("ascii")
                    event = {"type": "input_audio_buffer.append", "audio": audio}
                    # send_raw, not input_audio_buffer.append: the SDK's TypedDict transform
                    # costs ~125 µs an event, 50 times a second, and changes nothing here.
                    await conn.send_raw(json.dumps(event))
        except Exception as exc:
            await self._fail(_kind(exc))

    def _take(self) -> bytes:
        parts: list[bytes] = []
        size = 0
        while self._audio and size + len(self._audio[0]) <= MAX_APPEND_BYTES:
            size += len(self._audio[0])
            parts.append(self._audio.popleft())
        if not parts:  # one oversized chunk
            parts.append(self._audio.popleft())
            size = len(parts[0])
        self._queued -= size
        self._dropping = False
        return b"".join(parts)

    # --- server events --------------------------------------------------------------------

    def _on_event(self, event: RealtimeServerEvent) -> None:
        if self._closing:  # ending: nothing more reaches the call side
            return
        if isinstance(event, ResponseAudioDeltaEvent):
            self._on_audio(event)
        elif isinstance(event, ResponseAudioTranscriptDeltaEvent):
            if response := self._responses.get(event.response_id):
                response.transcript.append(event.delta)
        elif isinstance(event, ResponseAudioTranscriptDoneEvent):
            if response := self._responses.get(event.response_id):
                response.final = event.transcript
        elif isinstance(event, InputAudioBufferSpeechStartedEvent):
            self._on_speech_started()
        elif isinstance(event, ConversationItemInputAudioTranscriptionCompletedEvent):
            self._flush_said()
            if event.transcript.strip():
                self._handler.heard(event.transcript.strip())
        elif isinstance(event, ResponseCreatedEvent):
            self._on_response_created(event)
        elif isinstance(event, ResponseDoneEvent):
            self._on_response_done(event)
        elif isinstance(event, RealtimeErrorEvent):
            # Most are about one request (a truncate past the end, a cancel too late); the
            # session goes on. The message may quote a key, so only the code is logged.
            log.warning("realtime: service error %s", event.error.code or event.error.type)

    def _on_audio(self, event: ResponseAudioDeltaEvent) -> None:
        response = self._responses.get(event.response_id)
        if response is None or response.interrupted:  # late audio of a finished response
            return
        audio = base64.b64decode(event.delta)
        response.item_id = event.item_id
        response.audio_bytes += len(audio)
        self._output.audio(event.item_id, len(audio))
        self._handler.play(audio)

    def _on_speech_started(self) -> None:
        if self.protecting:  # the greeting is not cut; what the callee says still counts
            return
        for response in self._responses.values():
            response.interrupted = True  # the server cancels it; late audio is not played
        self._handler.barge_in()

    def _on_response_created(self, event: ResponseCreatedEvent) -> None:
        self._flush_said()
        response_id = event.response.id or ""
        self._responses[response_id] = _Response(id=response_id)
        if self.protecting and self._greeting_id is None:
            self._greeting_id = response_id

    def _on_response_done(self, event: ResponseDoneEvent) -> None:
        done = event.response
        if self.protecting and done.id == self._greeting_id:
            self.protecting = False  # from now on the callee's speech interrupts the model
            if self._conn is not None:
                update = cast("Session", _interrupting(self._config, True))
                self._spawn(self._conn.session.update(session=update))
        response = self._responses.pop(done.id or "", None) or _Response(id=done.id or "")
        cut = done.status in ("cancelled", "incomplete") or (
            response.interrupted and response.audio_bytes > 0
        )
        if response.text:
            self._said.append(_Said(text=response.text, item_id=response.item_id, cut=cut))
        if self._farewell is not None:
            self._end(self._farewell)
            return
        calls = [
            i for i in done.output or () if isinstance(i, RealtimeConversationItemFunctionCall)
        ]
        if not calls or done.status != "completed":
            return
        end = next((c for c in calls if c.name == END_CALL), None)
        spoken = response.audio_bytes > 0
        if end is None:
            self._spawn(self._run_tools(calls))
        elif len(calls) == 1:
            self._on_end_call(end, spoken=spoken)
        else:  # e.g. finish_conversation and end_call together: the values first
            others = [c for c in calls if c is not end]
            self._spawn(self._tools_then_end(others, end, spoken=spoken))

    def _flush_said(self) -> None:
        said, self._said = self._said, []
        for s in said:
            self._handler.said(s.text, s.cut)

    # --- tools ----------------------------------------------------------------------------

    def _on_end_call(self, call: RealtimeConversationItemFunctionCall, *, spoken: bool) -> None:
        farewell = str(_arguments(call.arguments).get("farewell") or "").strip()
        if spoken or not farewell:
            self._end(farewell)
            return
        # The model called the tool without speaking first: have it say the farewell, and
        # end after that response, so the caller never loses the goodbye (#155271).
        self._farewell = farewell
        self._spawn(self._say_farewell(call, farewell))

    async def _tools_then_end(
        self,
        calls: Sequence[RealtimeConversationItemFunctionCall],
        end: RealtimeConversationItemFunctionCall,
        *,
        spoken: bool,
    ) -> None:
        for call in calls:
            await self._tool_output(call)  # the call is ending: nobody reads the outputs
        if not self._closing:  # the handler did not hand the call back meanwhile
            self._on_end_call(end, spoken=spoken)

    async def _say_farewell(self, call: RealtimeConversationItemFunctionCall, text: str) -> None:
        conn = self._conn
        assert conn is not None
        say = f'Say exactly this to the caller and nothing else: "{text}"'
        try:
            await self._output_item(conn, call, {"ok": True})
            await conn.response.create(response={"instructions": say, "tool_choice": "none"})
        except Exception as exc:
            await self._fail(_kind(exc))

    def _end(self, farewell: str) -> None:
        self._flush_said()
        self._handler.end(farewell)
        self._closing = True  # no more audio or tools; the close below finishes the job
        self._ender = asyncio.get_running_loop().create_task(self._shutdown())

    async def _run_tools(self, calls: Sequence[RealtimeConversationItemFunctionCall]) -> None:
        conn = self._conn
        assert conn is not None
        try:
            for call in calls:
                output = await self._tool_output(call)
                if self._closing:
                    return
                await self._output_item(conn, call, output)
            if not self._closing:
                await conn.response.create()
        except Exception as exc:
            await self._fail(_kind(exc))

    async def _tool_output(self, call: RealtimeConversationItemFunctionCall) -> Mapping[str, Any]:
        """What the model is told for one call; never raises, never waits forever (#80840)."""
        if call.name not in self._declared:
            return {"error": f"there is no tool named {call.name!r}"}
        arguments = _arguments(call.arguments)
        try:
            async with asyncio.timeout(self.settings.tool_timeout_s):
                result = await self._handler.tool(call.name, arguments)
        except TimeoutError:
            log.warning("realtime: tool %s did not answer in time", call.name)
            return {"error": "the tool did not answer in time; go on without it"}
        except Exception as exc:  # the model hears that it failed
            log.warning("realtime: tool %s failed: %s", call.name, type(exc).__name__)
            return {"error": "the tool failed; go on without it"}
        if result is None:
            log.info("realtime: no handler for tool %s on this call", call.name)
            return {"error": f"no handler is bound to {call.name!r} on this call; go on without it"}
        return result

    @staticmethod
    async def _output_item(
        conn: AsyncRealtimeConnection,
        call: RealtimeConversationItemFunctionCall,
        output: Mapping[str, Any],
    ) -> None:
        item = {
            "type": "function_call_output",
            "call_id": call.call_id or "",
            "output": json.dumps(output, default=str),
        }
        await conn.conversation.item.create(item=cast(Any, item))


class RealtimeFactory:
    """Makes one :class:`RealtimeSession` per call from the configured settings."""

    def __init__(self, settings: RealtimeSettings) -> None:
        self.settings = settings

    def session(
        self,
        handler: RealtimeHandler,
        *,
        instructions: str = "",
        collect: Mapping[str, Any] | None = None,
        greeting: str | None = None,
        protect_greeting: bool = False,
    ) -> RealtimeSession:
        """A session not yet started (``await session.start()``)."""
        return RealtimeSession(self.settings, handler, instructions=instructions, collect=collect,
                               greeting=greeting, protect_greeting=protect_greeting)  # fmt: skip


class _Refused(Exception):
    """The service answered the session setup with an error event (its code only)."""


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _kind(exc: BaseException) -> str:
    """What went wrong in one line, without the message (a service's text may echo a key)."""
    if isinstance(exc, _Refused):
        return f"refused by the service ({exc})"
    if isinstance(exc, TimeoutError):
        return "no answer from the service in time"
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status:
        return f"HTTP {status} from the service"
    return type(exc).__name__
