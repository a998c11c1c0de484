"""The media-stream WebSocket endpoint on the webhook server (``streaming.streamPath``).

The carrier opens a WebSocket and sends its ``start``; the stream belongs to a call only if the
``start`` carries the call id and the one-use token we issued for it (:mod:`.tokens`). The
endpoint only moves frames: the carrier's protocol module (:mod:`.twilio`, :mod:`.telnyx`,
:mod:`.plivo`) turns them into events, a :class:`StreamSink` given by whoever expected the
stream receives them, and a :class:`StreamSession` sends ours.

Limits, as the original's media-stream handler (each refusal is one log line):
- ``maxConnections`` sockets in all: one more is answered 503 before the upgrade;
- ``maxPendingConnections`` sockets without a valid ``start`` (503), ``maxPendingConnectionsPerIp``
  of them from one address (429): an unauthenticated socket costs little but is bounded;
- ``preStartTimeoutMs`` to send a valid ``start``, else closed 1008;
- a frame cap (64 KB; more closes 1009);
- an inactivity watchdog: a started stream with no frame for ``inactivity_timeout_s`` is a zombie
  (carriers send media every 20 ms, silence included) and is closed 1011, its sink told.

Each refusal, and each started stream closed by a limit, is also handed to ``count_refusal`` by
its reason's label (a fixed set: ``voicecall_media_streams_refused_total{reason}``).

Both directions carry fifty frames a second per stream, so neither arms a timer per frame (an
``asyncio.timeout`` costs more than aiohttp's ``send_str`` of a frame): a send is timed only
when the socket's unsent bytes say it may wait, and the watchdog is one timer per stream that
looks at the time of the last frame and sets itself again when that was recent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, web

from voicecall.runtime.media import plivo, telnyx, twilio
from voicecall.runtime.media import protocol as p
from voicecall.runtime.media.marks import MarkOutcome, MarkTracker
from voicecall.runtime.media.tokens import StreamTokens, TokenCheck

log = logging.getLogger("voicecall.stream")

CALL_PARAM = "callId"  # the names of our parameters in the carrier's start
TOKEN_PARAM = "token"
STOPPED = "stopped by the carrier"
LIMIT_LABELS = frozenset({"frame_too_large", "protocol_error"})  # a started stream's reader
TOKEN_LABELS = {TokenCheck.UNKNOWN: "no_token", TokenCheck.WRONG: "wrong_token",
                TokenCheck.EXPIRED: "token_expired"}  # fmt: skip


CLOSE_TIMEOUT_S = 2.0


def stream_key(call_id: str) -> str:
    """A call id as it travels in stream parameters: alphanumeric (our call ids are UUIDs;
    Plivo's ``extraHeaders`` allow alphanumerics only), so the hyphens go."""
    return call_id.replace("-", "").lower()


PROTOCOLS = {m.NAME: m.PROTOCOL for m in (twilio, telnyx, plivo)}


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSettings:
    path: str = "/voice/stream"  # streaming.streamPath
    pre_start_timeout_s: float = 5.0  # streaming.preStartTimeoutMs
    max_pending: int = 32  # streaming.maxPendingConnections
    max_pending_per_ip: int = 4  # streaming.maxPendingConnectionsPerIp
    max_connections: int = 128  # streaming.maxConnections
    max_frame: int = 64 * 1024
    inactivity_timeout_s: float = 32.0  # the original's watchdog: 30 s without media + 2 s
    # aiohttp holds at most ~64 KB unsent and then makes a send wait: a carrier that stops
    # reading would hold our sender forever. Past this wait the socket is dropped (the
    # original closes 1013 past 1 MB buffered; no close frame reaches a peer that reads nothing).
    send_timeout_s: float = 5.0
    token_ttl_s: float = 30.0


class StreamSink(Protocol):
    """What the runtime gives a started stream: it receives the caller's side.

    Called on the event loop for every frame: nothing here may block (hand audio to a bounded
    queue, do the work elsewhere).
    """

    def on_audio(self, ulaw: bytes) -> None: ...
    def on_mark(self, outcome: MarkOutcome) -> None: ...
    def on_dtmf(self, digit: str) -> None: ...
    def on_stop(self, reason: str) -> None: ...


class StreamClosed(ConnectionError):
    """Audio sent to a stream that has ended."""


class StreamSession:
    """One started stream, as the runtime uses it: send audio, clear it, mark it."""

    def __init__(self, ws: web.WebSocketResponse, protocol: p.StreamProtocol, call_id: str,
                 start: p.Start, *, send_timeout_s: float = 5.0,
                 transport: asyncio.Transport | None = None,
                 count_refusal: Callable[[str], None] | None = None):  # fmt: skip
        self.call_id = call_id  # ours
        self.start = start  # the carrier's stream id, call id, format
        self.provider = protocol.name
        self.marks = MarkTracker()
        self._ws = ws
        self._send_timeout_s = send_timeout_s
        self._transport = transport
        self._protocol = protocol
        self._count_refusal = count_refusal
        self.timed_sends = 0  # sends that could wait for the carrier, so were timed

    @property
    def closed(self) -> bool:
        return self._ws.closed

    async def send_audio(self, ulaw: bytes) -> None:
        """μ-law 8 kHz to play after what is queued (the caller hears it in order)."""
        await self._send(self._protocol.media(self.start.stream_id, ulaw))

    async def clear(self) -> tuple[str, ...]:
        """Drops our queued audio (barge-in). Returns the marks cut off by it."""
        cut = self.marks.cleared()
        await self._send(self._protocol.clear(self.start.stream_id))
        return cut

    async def mark(self, name: str) -> None:
        """Asks the carrier to tell when the audio sent so far has played (``on_mark``)."""
        self.marks.sent(name)
        await self._send(self._protocol.mark(self.start.stream_id, name))

    async def close(self, reason: str = "closed by the runtime") -> None:
        await self._ws.close(code=WSCloseCode.OK, message=reason.encode()[:120])

    async def _send(self, frame: str) -> None:
        if self._ws.closed:
            raise StreamClosed(f"media stream of call {self.call_id} has ended")
        try:
            if self._may_wait():
                self.timed_sends += 1
                async with asyncio.timeout(self._send_timeout_s):
                    await self._ws.send_str(frame)
            else:
                await self._ws.send_str(frame)
        except TimeoutError:
            log.warning("media stream of call %s dropped: the carrier read nothing for %gs",
                        self.call_id, self._send_timeout_s)  # fmt: skip
            if self._transport is not None:
                self._transport.abort()
            if self._count_refusal is not None:
                self._count_refusal("not_reading")
            raise StreamClosed(f"media stream of call {self.call_id}: not reading") from None
        except ConnectionError as exc:
            raise StreamClosed(f"media stream of call {self.call_id}: {exc}") from None

    def _may_wait(self) -> bool:
        """Whether a send may have to wait for the carrier to read, so needs a timeout.

        aiohttp's send waits only while the transport has paused writing: asyncio pauses it
        when the unsent bytes pass the high-water mark and resumes it once they are down to the
        low-water mark, so at or below that mark a send writes and returns without waiting.
        A live carrier reads as fast as we send: its sockets stay there, untimed.
        """
        transport = self._transport
        if transport is None:
            return True
        return transport.get_write_buffer_size() > transport.get_write_buffer_limits()[0]


SinkFactory = Callable[[StreamSession], StreamSink]


def _uncounted(reason: str) -> None:
    pass


class _Refused(Exception):
    """The socket is closed with ``code`` and the reason logged (``label``: its kind)."""

    def __init__(self, code: int, reason: str, label: str):
        super().__init__(reason)
        self.code = code
        self.label = label


class StreamEndpoint:
    """The WebSocket handler and its bookkeeping (see the module's docstring)."""

    def __init__(self, protocol: p.StreamProtocol, settings: StreamSettings | None = None,
                 tokens: StreamTokens | None = None):  # fmt: skip
        self.protocol = protocol
        self.settings = settings or StreamSettings()
        self.tokens = StreamTokens(ttl_s=self.settings.token_ttl_s) if tokens is None else tokens
        self.sessions: dict[str, StreamSession] = {}  # by our call id, while started
        self._expected: dict[str, tuple[str, SinkFactory]] = {}  # by stream_key(call id)
        self._open: set[web.WebSocketResponse] = set()
        self._pending: Counter[str] = Counter()  # sockets not started, by address
        self._pending_ws: dict[web.WebSocketResponse, str] = {}
        self.count_refusal: Callable[[str], None] = _uncounted  # the runtime's metrics

    def expect(self, call_id: str, open_sink: SinkFactory) -> str:
        """A stream for ``call_id`` may start: returns the token to hand the carrier.

        ``open_sink`` is called with the session once the stream has started.
        """
        key = stream_key(call_id)
        token = self.tokens.issue(key)
        self._expected = {k: e for k, e in self._expected.items() if k in self.tokens}
        self._expected[key] = (call_id, open_sink)
        return token

    def forget(self, call_id: str) -> None:
        """The call has ended: no stream may start for it any more."""
        self.tokens.revoke(stream_key(call_id))
        self._expected.pop(stream_key(call_id), None)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        ip = request.remote or "?"
        refusal = self._refusal(ip)
        if refusal is not None:
            status, reason, label = refusal
            self.count_refusal(label)
            return _reject(request, status, reason)
        # timeout: how long our close waits for the carrier's (a carrier that stopped and
        # answers nothing holds its slot 2 s, not aiohttp's 10). compress: a carrier offering
        # permessage-deflate would make every 20 ms frame pay for it.
        ws = web.WebSocketResponse(max_msg_size=self.settings.max_frame, autoping=True,
                                   timeout=CLOSE_TIMEOUT_S, compress=False)  # fmt: skip
        if not ws.can_prepare(request).ok:
            self.count_refusal("not_websocket")
            return _reject(request, 400, "not a WebSocket upgrade")
        self._pending[ip] += 1
        self._pending_ws[ws] = ip
        self._open.add(ws)
        try:
            await ws.prepare(request)
            await self._serve(ws, ip, request.transport)
        finally:
            self._open.discard(ws)
            self._unpend(ws)
        return ws

    async def shutdown(self, app: web.Application | None = None) -> None:
        """Closes every stream (the server is stopping): handlers must not hold it up."""
        for ws in list(self._open):
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server stopping")

    def _refusal(self, ip: str) -> tuple[int, str, str] | None:
        """(status, reason, label) of a socket refused before its upgrade, or None."""
        s = self.settings
        if len(self._open) >= s.max_connections:
            return (503, f"more than {s.max_connections} media streams "
                    "(streaming.maxConnections)", "max_streams")  # fmt: skip
        if self._pending.total() >= s.max_pending:
            return (503, f"more than {s.max_pending} media streams not started "
                    "(streaming.maxPendingConnections)", "max_pending")  # fmt: skip
        if self._pending[ip] >= s.max_pending_per_ip:
            return (429, f"more than {s.max_pending_per_ip} media streams not started from {ip} "
                    "(streaming.maxPendingConnectionsPerIp)", "max_pending_per_ip")  # fmt: skip
        return None

    def _unpend(self, ws: web.WebSocketResponse) -> None:
        ip = self._pending_ws.pop(ws, None)
        if ip is not None:
            self._pending[ip] -= 1
            if self._pending[ip] <= 0:
                del self._pending[ip]

    async def _serve(self, ws: web.WebSocketResponse, ip: str,
                     transport: asyncio.Transport | None) -> None:  # fmt: skip
        try:
            session, sink = await self._started(ws, transport)
        except _Refused as refused:
            log.warning("media stream from %s refused: %s", ip, refused)
            self.count_refusal(refused.label)
            await ws.close(code=refused.code, message=str(refused).encode()[:120])
            return
        self._unpend(ws)
        self.sessions[session.call_id] = session
        reason = "disconnected"
        try:
            pump = _Pump(ws, self.protocol, session, sink, self.settings)
            reason = await pump.run()
            if pump.limit:  # closed by a limit of ours, not by the carrier
                self.count_refusal(pump.limit)
        finally:
            if self.sessions.get(session.call_id) is session:
                del self.sessions[session.call_id]
            log.info("media stream of call %s ended: %s", session.call_id, reason)
            sink.on_stop(reason)

    async def _started(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport | None
    ) -> tuple[StreamSession, StreamSink]:
        timeout = self.settings.pre_start_timeout_s
        try:
            async with asyncio.timeout(timeout):
                start = await self._await_start(ws)
        except TimeoutError:
            reason = f"no valid start in {timeout:g}s (streaming.preStartTimeoutMs)"
            raise _Refused(WSCloseCode.POLICY_VIOLATION, reason, "start_timeout") from None
        key = stream_key(start.params.get(CALL_PARAM, ""))
        check = self.tokens.redeem(key, start.params.get(TOKEN_PARAM, ""))
        if check is not TokenCheck.OK:
            raise _Refused(WSCloseCode.POLICY_VIOLATION, f"call {key!r}: {check.value}",
                           TOKEN_LABELS[check])  # fmt: skip
        expected = self._expected.pop(key, None)
        if expected is None:
            raise _Refused(WSCloseCode.POLICY_VIOLATION, f"call {key!r} expects no stream",
                           "unexpected_call")  # fmt: skip
        problem = _format_problem(start)
        if problem is not None:  # its audio would be read as μ-law, and ours played wrong
            raise _Refused(WSCloseCode.POLICY_VIOLATION, f"call {key!r}: {problem}",
                           "audio_format")  # fmt: skip
        call_id, open_sink = expected
        session = StreamSession(ws, self.protocol, call_id, start, transport=transport,
                                send_timeout_s=self.settings.send_timeout_s,
                                count_refusal=self.count_refusal)  # fmt: skip
        return session, open_sink(session)

    async def _await_start(self, ws: web.WebSocketResponse) -> p.Start:
        while True:
            event = _event(await ws.receive(), self.protocol)
            if isinstance(event, p.Start):
                return event
            if not isinstance(event, p.Connected):
                raise _Refused(WSCloseCode.POLICY_VIOLATION, f"{_name(event)} before start",
                               "before_start")  # fmt: skip


class _Pump:
    """A started stream's inbound side: frames to the sink, until it stops or goes silent.

    The watchdog is one timer, due ``inactivity_timeout_s`` after the last frame as known
    when it was set: when it fires and a frame came since, it is set again from that frame
    (once per timeout at most, while frames come); otherwise the stream is a zombie and its
    receive is cancelled, as a timeout would (``uncancel`` tells this cancel from another).
    """

    def __init__(self, ws: web.WebSocketResponse, protocol: p.StreamProtocol,
                 session: StreamSession, sink: StreamSink, settings: StreamSettings):  # fmt: skip
        self.ws, self.protocol, self.session, self.sink = ws, protocol, session, sink
        self.settings = settings
        self.malformed = 0
        self.last = 0.0  # loop time of the last frame
        self.expired = False
        self.limit = ""  # the label of a limit of ours that ended the stream, if one did
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None

    async def run(self) -> str:
        idle = self.settings.inactivity_timeout_s
        task = asyncio.current_task()
        assert task is not None
        self._task, cancelling = task, task.cancelling()
        self.last = self._loop.time()
        self._timer = self._loop.call_at(self.last + idle, self._watch)
        try:
            reason = await self._receive()
        except asyncio.CancelledError:
            if not self.expired or task.uncancel() > cancelling:
                raise
            reason = None
        finally:
            self._timer.cancel()
        if reason is None:
            self.limit = "inactive"
            await self.ws.close(code=WSCloseCode.INTERNAL_ERROR,
                                message=f"no frame in {idle:g}s".encode())  # fmt: skip
            return f"inactive: no frame in {idle:g}s"
        if reason == STOPPED:
            await self.ws.close()
        return reason

    def _watch(self) -> None:
        due = self.last + self.settings.inactivity_timeout_s
        if self._loop.time() < due:
            self._timer = self._loop.call_at(due, self._watch)
            return
        self.expired = True
        assert self._task is not None
        self._task.cancel()

    async def _receive(self) -> str:
        """Frames to the sink until the stream stops or the socket ends: the reason."""
        loop = self._loop
        while True:
            message = await self.ws.receive()
            self.last = loop.time()
            try:
                event = _event(message, self.protocol)
            except _Refused as refused:
                if message.type in (WSMsgType.TEXT, WSMsgType.BINARY):
                    self._malformed(refused)
                    continue
                if message.type == WSMsgType.ERROR:
                    if refused.label in LIMIT_LABELS:
                        self.limit = refused.label
                    return f"error: {refused}"
                return "disconnected"
            if self.dispatch(event):
                return STOPPED

    def dispatch(self, event: p.Event) -> bool:
        """Hands one event on; True when the stream has stopped."""
        if isinstance(event, p.Media):
            if event.track == "inbound":
                self.sink.on_audio(event.payload)
        elif isinstance(event, p.Mark):
            for outcome in self.session.marks.echoed(event.name):
                self.sink.on_mark(outcome)
        elif isinstance(event, p.Dtmf):
            self.sink.on_dtmf(event.digit)
        elif isinstance(event, p.Cleared):
            self.session.marks.forget_cut()
        elif isinstance(event, p.StreamError):
            log.warning("media stream of call %s: carrier error %s %s %s", self.session.call_id,
                        event.code, event.title, event.detail[:200])  # fmt: skip
        return isinstance(event, p.Stop)

    def _malformed(self, exc: Exception) -> None:
        # Logged once a stream: a carrier bug would otherwise log fifty lines a second.
        self.malformed += 1
        if self.malformed == 1:
            log.warning("media stream of call %s: frame ignored: %s", self.session.call_id, exc)


def _event(message: WSMessage, protocol: p.StreamProtocol) -> p.Event:
    if message.type == WSMsgType.TEXT:
        try:
            return protocol.parse(message.data)
        except p.ProtocolError as exc:
            raise _Refused(WSCloseCode.POLICY_VIOLATION, f"malformed frame: {exc}",
                           "malformed_frame") from None  # fmt: skip
    if message.type == WSMsgType.BINARY:
        raise _Refused(WSCloseCode.UNSUPPORTED_DATA, "binary frame (the protocol is JSON text)",
                       "binary_frame")  # fmt: skip
    if message.type == WSMsgType.ERROR:
        # aiohttp's reader failed: a frame over max_frame (1009) or broken framing (a
        # WebSocketError, the socket closed by aiohttp), or the connection itself.
        label = "closed_before_start"
        if isinstance(message.data, WebSocketError):
            too_big = message.data.code == WSCloseCode.MESSAGE_TOO_BIG
            label = "frame_too_large" if too_big else "protocol_error"
        raise _Refused(WSCloseCode.MESSAGE_TOO_BIG, f"{message.data}", label)
    raise _Refused(WSCloseCode.OK, "closed", "closed_before_start")


# How the carriers name 8 kHz μ-law in a start (Twilio, Plivo: audio/x-mulaw; Telnyx: PCMU).
ULAW_NAMES = frozenset({"audio/x-mulaw", "pcmu", "audio/pcmu", "mulaw", "ulaw", "g711_ulaw"})


def _format_problem(start: p.Start) -> str | None:
    """Why a started stream's audio is not the μ-law 8 kHz mono we asked for, or None (a
    carrier that names no encoding is taken at its word: we asked for μ-law)."""
    encoding = start.encoding.split(";")[0].strip().lower()
    if encoding and encoding not in ULAW_NAMES:
        return f"audio {start.encoding!r} is not the μ-law 8 kHz asked for"
    if start.sample_rate != 8000 or start.channels != 1:
        return f"audio at {start.sample_rate} Hz, {start.channels} channel(s): 8000 Hz mono asked"
    return None


def _name(event: p.Event) -> str:
    return type(event).__name__.lower()


def _reject(request: web.Request, status: int, reason: str) -> web.Response:
    log.warning("media stream %s from %s rejected with %d: %s", request.path, request.remote,
                status, reason)  # fmt: skip
    return web.Response(status=status, text=f"{reason}\n")
