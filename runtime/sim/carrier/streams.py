"""Media streams: the mock carrier's side of a Twilio, Plivo or Telnyx bidirectional stream.

When the bot answers with a stream opening (Twilio ``<Connect><Stream>``, Plivo ``<Stream
bidirectional>``, Telnyx ``streaming_start``), the carrier opens a WebSocket to the bot, as the
real one would, and speaks that carrier's protocol on it, frame for frame (providers.md §3): the
opening (``connected``, ``start`` carrying the bot's parameters), then a ``media`` frame every
20 ms: silence (μ-law 0xFF), or the caller's voice when the script has it speak. What the bot
sends is played out at the speed a phone plays it (160 bytes every 20 ms) from a queue, so
marks come back when the audio before them has played, and a ``clear`` drops what is still
queued.

The caller takes its turns by ear: a polite caller (``say``, ``press``, ``silence``, ``hangup``)
acts once the bot's audio has finished playing and a short pause has passed; ``interrupt`` speaks
while the bot's audio still plays (barge-in). The words it speaks are written into the carrier's
:class:`~voicecall.runtime.sim.captions.Captions` as it starts each utterance, for the offline
recognizers. Everything here runs in real time, whatever the call's clock: while a stream is open
its task counts as busy, so that a simulation does not jump its virtual clock over a
conversation; only while the caller waits for the bot with nothing to say (a ``silence`` step,
a transfer's ``dial`` step, an answering machine) does the stream count as idle, so that the
bot's own timers can fire.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import deque
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from voicecall.runtime.media.codec import SILENCE_BYTE
from voicecall.runtime.media.pacing import FRAME_BYTES, FRAME_SECONDS
from voicecall.runtime.media.streams import CALL_PARAM, stream_key
from voicecall.runtime.sim.script import PATIENT_REPLIES, Step

from . import clips
from .model import Clear, StreamRecord, Utterance

if TYPE_CHECKING:
    from .session import CallSession

SILENCE = bytes([SILENCE_BYTE]) * FRAME_BYTES
ULAW = "audio/x-mulaw"
MAX_LAG_S = 0.1  # behind schedule by more than this: a new schedule, no burst of frames
_GONE = (ConnectionError, aiohttp.ClientError)  # the socket went away under a send


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamSpec:
    """What the bot asked for: where to connect and what the ``start`` must carry."""

    url: str
    params: Mapping[str, str] = field(default_factory=dict)
    client_state: str = ""  # Telnyx: handed back as is in ``start.client_state``


@dataclass(frozen=True, slots=True)
class _Mark:
    """A mark in the playout queue: echoed once the audio before it has played."""

    name: str


# --- each carrier's frames ---------------------------------------------------------------------


def _dump(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class _Frames:
    """The frames one carrier sends, numbered as it numbers them."""

    name = ""

    def __init__(self, stream: CarrierStream):
        self.stream = stream
        self.sid = stream.record.stream_id
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def opening(self) -> list[str]:
        raise NotImplementedError

    def media(self, payload: bytes, chunk: int, ms: int) -> str:
        raise NotImplementedError

    def dtmf(self, digit: str) -> str:
        raise NotImplementedError

    def mark(self, name: str) -> str:
        raise NotImplementedError

    def cleared(self) -> str | None:
        """The answer to a clear (Plivo's ``clearedAudio``); None when the carrier sends none."""
        return None

    def stop(self) -> str | None:
        """The frame that ends the stream; None when the carrier only closes the socket."""
        return None

    def echoes_cut_marks(self) -> bool:
        """Whether a clear echoes the marks it cut off (Twilio, Telnyx) or drops them (Plivo)."""
        return True

    def ours(self, data: Mapping[str, Any]) -> tuple[str, Any]:
        """A frame from the bot as (media, bytes) | (mark, name) | (clear, None)."""
        raise NotImplementedError


class _TwilioFrames(_Frames):
    """Twilio Media Streams: counters are strings; every frame names the streamSid."""

    name = "twilio"

    def _head(self, event: str) -> dict[str, Any]:
        return {"event": event, "sequenceNumber": str(self.next_seq()), "streamSid": self.sid}

    def opening(self) -> list[str]:
        call = self.stream.session.call
        start = {"accountSid": self.stream.account_id, "streamSid": self.sid,
                 "callSid": call.provider_call_id, "tracks": ["inbound"],
                 "customParameters": dict(self.stream.spec.params),
                 "mediaFormat": {"encoding": ULAW, "sampleRate": 8000, "channels": 1}}  # fmt: skip
        return [
            _dump({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
            _dump({**self._head("start"), "start": start}),
        ]

    def media(self, payload: bytes, chunk: int, ms: int) -> str:
        body = {"track": "inbound", "chunk": str(chunk), "timestamp": str(ms),
                "payload": _b64(payload)}  # fmt: skip
        return _dump({**self._head("media"), "media": body})

    def dtmf(self, digit: str) -> str:
        return _dump({**self._head("dtmf"), "dtmf": {"track": "inbound_track", "digit": digit}})

    def mark(self, name: str) -> str:
        return _dump({**self._head("mark"), "mark": {"name": name}})

    def stop(self) -> str | None:
        stop = {"accountSid": self.stream.account_id,
                "callSid": self.stream.session.call.provider_call_id}  # fmt: skip
        return _dump({**self._head("stop"), "stop": stop})

    def ours(self, data: Mapping[str, Any]) -> tuple[str, Any]:
        event = data.get("event")
        if data.get("streamSid") != self.sid:
            raise ValueError(f"{event} for streamSid {data.get('streamSid')!r} (error 31924)")
        return _common(event, data)


class _TelnyxFrames(_Frames):
    """Telnyx media streaming: snake_case, string counters; the bot's frames name no stream."""

    name = "telnyx"

    def _head(self, event: str) -> dict[str, Any]:
        return {"event": event, "sequence_number": str(self.next_seq()), "stream_id": self.sid}

    def opening(self) -> list[str]:
        call = self.stream.session.call
        media_format = {"encoding": "PCMU", "sample_rate": 8000, "channels": 1}
        start = {"user_id": self.stream.account_id, "call_control_id": call.provider_call_id,
                 "client_state": self.stream.spec.client_state, "from": call.from_,
                 "to": call.to, "media_format": media_format}  # fmt: skip
        return [
            _dump({"event": "connected", "version": "1.0.0"}),
            _dump({**self._head("start"), "start": start}),
        ]

    def media(self, payload: bytes, chunk: int, ms: int) -> str:
        body = {"track": "inbound", "chunk": str(chunk), "timestamp": str(ms),
                "payload": _b64(payload)}  # fmt: skip
        return _dump({**self._head("media"), "media": body})

    def dtmf(self, digit: str) -> str:
        return _dump({**self._head("dtmf"), "dtmf": {"digit": digit}})

    def mark(self, name: str) -> str:
        return _dump({**self._head("mark"), "mark": {"name": name}})

    def stop(self) -> str | None:
        stop = {"user_id": self.stream.account_id,
                "call_control_id": self.stream.session.call.provider_call_id}  # fmt: skip
        return _dump({**self._head("stop"), "stop": stop})

    def ours(self, data: Mapping[str, Any]) -> tuple[str, Any]:
        return _common(data.get("event"), data)


class _PlivoFrames(_Frames):
    """Plivo audio streams: JSON numbers, ``extra_headers`` as ``k=v;k2=v2`` on start and
    media, ``playedStream`` / ``clearedAudio`` answers, and no stop frame (the socket closes)."""

    name = "plivo"

    def _head(self, event: str) -> dict[str, Any]:
        return {"event": event, "sequenceNumber": self.next_seq(), "streamId": self.sid}

    def _headers(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.stream.spec.params.items())

    def opening(self) -> list[str]:
        call = self.stream.session.call
        start = {"callId": call.provider_call_id, "streamId": self.sid,
                 "accountId": self.stream.account_id, "tracks": ["inbound"],
                 "mediaFormat": {"encoding": ULAW, "sampleRate": 8000}}  # fmt: skip
        return [_dump({"event": "start", "sequenceNumber": self.next_seq(), "start": start,
                       "extra_headers": self._headers()})]  # fmt: skip

    def media(self, payload: bytes, chunk: int, ms: int) -> str:
        epoch_ms = int(self.stream.epoch_s * 1000) + ms
        body = {"track": "inbound", "timestamp": str(epoch_ms), "chunk": chunk,
                "payload": _b64(payload)}  # fmt: skip
        return _dump({**self._head("media"), "media": body, "extra_headers": self._headers()})

    def dtmf(self, digit: str) -> str:
        return _dump({**self._head("dtmf"), "dtmf": {"track": "inbound", "digit": digit}})

    def mark(self, name: str) -> str:
        return _dump({**self._head("playedStream"), "name": name})

    def cleared(self) -> str | None:
        return _dump(self._head("clearedAudio"))

    def echoes_cut_marks(self) -> bool:
        return False

    def ours(self, data: Mapping[str, Any]) -> tuple[str, Any]:
        event = data.get("event")
        if event == "playAudio":
            media = data.get("media")
            if not isinstance(media, dict):
                raise ValueError("playAudio without media")
            kind, rate = media.get("contentType"), media.get("sampleRate")
            if kind != ULAW or rate != 8000:
                raise ValueError(f"playAudio as {kind!r} at {rate!r} Hz, not μ-law 8000")
            return "media", _payload(media)
        if event == "checkpoint":
            return "mark", _name(data.get("name"))
        if event == "clearAudio":
            return "clear", None
        if event == "sendDTMF":
            return "dtmf", str(data.get("dtmf", ""))
        raise ValueError(f"unknown Plivo event {event!r}")


def _common(event: object, data: Mapping[str, Any]) -> tuple[str, Any]:
    """Twilio's and Telnyx's shared shapes: media, mark, clear."""
    if event == "media":
        media = data.get("media")
        if not isinstance(media, dict):
            raise ValueError("media without a media object")
        return "media", _payload(media)
    if event == "mark":
        mark = data.get("mark")
        return "mark", _name(mark.get("name") if isinstance(mark, dict) else None)
    if event == "clear":
        return "clear", None
    raise ValueError(f"unknown event {event!r}")


def _payload(media: Mapping[str, Any]) -> bytes:
    raw = media.get("payload")
    if not isinstance(raw, str):
        raise ValueError("media.payload is not a string")
    return base64.b64decode(raw, validate=True)


def _name(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("a mark without a name")
    return value


_FRAMES: dict[str, type[_Frames]] = {"twilio": _TwilioFrames, "telnyx": _TelnyxFrames,
                                     "plivo": _PlivoFrames}  # fmt: skip


def new_stream_id(provider: str) -> str:
    """A stream id in the carrier's format (Twilio MZ…, the others UUIDs)."""
    return "MZ" + uuid.uuid4().hex if provider == "twilio" else str(uuid.uuid4())


# --- the stream --------------------------------------------------------------------------------


class CarrierStream:
    """One media stream from the carrier to the bot, with the scripted caller on it.

    Created by :meth:`CallSession.open_stream`; :meth:`run` lasts as long as the stream. Its
    record (``record``, also in ``call.streams``) keeps what happened.
    """

    def __init__(self, session: CallSession, spec: StreamSpec):
        self.session = session
        self.carrier = session.carrier
        self.spec = spec
        call = session.call
        self.record = StreamRecord(provider=session.provider, url=spec.url,
                                   params=dict(spec.params),
                                   stream_id=new_stream_id(session.provider))  # fmt: skip
        call.streams.append(self.record)
        self.key = stream_key(spec.params.get(CALL_PARAM) or call.call_id or call.provider_call_id)
        self.account_id = _account(self.carrier.provider, self.carrier.credentials)
        self.epoch_s = self.carrier.clock.now()
        self.frames = _FRAMES[session.provider](self)
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._send_lock = asyncio.Lock()
        self._playout: deque[bytearray | _Mark] = deque()
        self._queued = 0  # bytes of the bot's audio not played yet
        self._speech: deque[bytes] = deque()  # the caller's frames still to send
        self._stop = asyncio.Event()
        self._stop_reason = ""
        self._ended = asyncio.Event()
        self._tick: asyncio.Future[None] | None = None
        self._heard = asyncio.Event()  # bot audio arrived since the caller's last step
        self._bot_spoke = False  # … the same, for the turn-taking checks
        self._drained_at = 0.0  # loop time the bot's audio last finished playing
        self._played_since_turn = 0  # bytes of the bot's audio played since the caller's step

    # --- control ---------------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Ends the stream (a stop frame, then the socket closes): a redirect, a transfer, a
        ``streaming_stop``, the call's end. Does nothing once the stream is ending."""
        if not self._stop.is_set():
            self._stop_reason = reason
            self._stop.set()

    async def wait(self) -> str:
        """Waits until the stream has ended; why it ended."""
        await self._ended.wait()
        return self.record.ended

    @property
    def ended(self) -> bool:
        return self._ended.is_set()

    # --- the stream's life -----------------------------------------------------------------

    async def run(self) -> str:
        """Connects, plays the caller until the stream ends, closes. Why it ended: hangup (the
        caller), closed-by-bot, refused (closed 1008), disconnected, connect-failed, or the
        reason given to :meth:`stop`."""
        loop = asyncio.get_running_loop()
        self.session.record("carrier", "stream", url=self.spec.url, stream_id=self.record.stream_id)
        tasks: list[asyncio.Task[Any]] = []
        reason = "disconnected"
        try:
            if self._stop.is_set():  # ended before it could start (a redirect at once)
                reason = self._stop_reason
                return reason
            if not await self._connect():
                reason = "connect-failed"
                return reason
            self.record.opened_at = self._drained_at = loop.time()
            for frame in self.frames.opening():
                await self._send(frame)
            tasks = [loop.create_task(self._read()), loop.create_task(self._pace()),
                     loop.create_task(self._converse())]  # fmt: skip
            stopping = loop.create_task(self._stop.wait())
            done, _ = await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            reason = await self._why(done, tasks)
        except _GONE as exc:
            reason = "disconnected"
            self.record.error = self.record.error or f"{type(exc).__name__}: {exc}"
        finally:
            await self._close(tasks, reason)
        if reason == "hangup":
            self.session.end("hangup-user", "remote")
        return reason

    async def _connect(self) -> bool:
        try:
            self._ws = await self.carrier.stream_client.ws_connect(
                self.spec.url, autoping=True, max_msg_size=0,
                timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            )  # fmt: skip
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            self.record.error = f"{type(exc).__name__}: {exc}"
            self.session.record("carrier", "stream-failed", url=self.spec.url,
                                error=self.record.error)  # fmt: skip
            return False
        return True

    async def _why(self, done: set[asyncio.Task[Any]], tasks: list[asyncio.Task[Any]]) -> str:
        reader, _pacer, converse = tasks
        for task in done:
            error = None if task.cancelled() else task.exception()
            if error is not None and not isinstance(error, _GONE):
                raise error  # a bug in the carrier
        if converse in done and converse.exception() is None:
            return "hangup"
        if self._stop.is_set():
            return self._stop_reason
        # The bot closed the socket (the reader saw it, or a send failed first): its code.
        await asyncio.wait([reader], timeout=1.0)
        code = self._ws.close_code if self._ws is not None else None
        self.record.close_code = code
        if code == 1008:
            return "refused"
        return "closed-by-bot" if code is not None else "disconnected"

    async def _close(self, tasks: list[asyncio.Task[Any]], reason: str) -> None:
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        ws = self._ws
        if ws is not None and not ws.closed:
            stop = self.frames.stop()
            try:
                if stop is not None:
                    await ws.send_str(stop)
                await ws.close()
            except (ConnectionError, aiohttp.ClientError):
                pass
        self._note_bot_audio()
        self.record.closed_at = asyncio.get_running_loop().time()
        self.record.ended = reason
        detail = {"code": self.record.close_code} if self.record.close_code is not None else {}
        self.session.record("carrier", "stream-end", reason=reason, **detail)
        self._ended.set()

    async def _send(self, frame: str) -> None:
        assert self._ws is not None
        async with self._send_lock:
            await self._ws.send_str(frame)

    # --- the bot's frames ------------------------------------------------------------------

    async def _read(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                await self._received(message.data)
            else:
                self.record.unknown.append(f"{message.type.name} frame")

    async def _received(self, text: str) -> None:
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            kind, value = self.frames.ours(data)
        except (ValueError, TypeError) as exc:
            self.record.unknown.append(f"{exc}: {text[:120]}")
            return
        if kind == "media":
            self._queue_audio(value)
        elif kind == "mark":
            self._playout.append(_Mark(value))
        elif kind == "clear":
            await self._clear()
        elif kind == "dtmf":
            self.session.record("bot", "dtmf", digits=value)

    def _queue_audio(self, audio: bytes) -> None:
        now = asyncio.get_running_loop().time()
        self.record.audio += audio
        self.record.arrivals.append(now)
        if audio:
            self._playout.append(bytearray(audio))
            self._queued += len(audio)
            self._bot_spoke = True
            self._heard.set()

    async def _clear(self) -> None:
        dropped = self._queued
        cut = tuple(item.name for item in self._playout if isinstance(item, _Mark))
        self._playout.clear()
        self._queued = 0
        now = asyncio.get_running_loop().time()
        self._drained_at = now
        self._bot_spoke = False  # what counts now is what the bot says after the clear
        self.record.clears.append(Clear(at=now, dropped_bytes=dropped, cut_marks=cut))
        self.session.record("bot", "clear", dropped_ms=dropped // 8)
        if self.frames.echoes_cut_marks():
            for name in cut:
                await self._echo(name)
        cleared = self.frames.cleared()
        if cleared is not None:
            await self._send(cleared)

    async def _echo(self, name: str) -> None:
        self.record.marks.append(name)
        await self._send(self.frames.mark(name))

    # --- the clock of the line: one frame each way every 20 ms -----------------------------

    async def _pace(self) -> None:
        loop = asyncio.get_running_loop()
        start, n, chunk = loop.time(), 0, 0
        while True:
            n += 1
            delay = start + n * FRAME_SECONDS - loop.time()
            if delay < -MAX_LAG_S:
                start, n, delay = loop.time(), 0, 0.0
            await asyncio.sleep(max(0.0, delay))
            chunk += 1
            frame = self._speech.popleft() if self._speech else SILENCE
            await self._send(self.frames.media(frame, chunk, chunk * 20))
            self.record.frames_sent += 1
            for name in self._play_out(loop.time()):
                await self._echo(name)
            tick, self._tick = self._tick, None
            if tick is not None and not tick.done():
                tick.set_result(None)

    def _play_out(self, now: float) -> list[str]:
        """Plays 20 ms of the bot's queued audio; the marks now reached."""
        budget = FRAME_BYTES if self._queued else 0
        was_playing = self._queued > 0
        while budget and self._playout:
            head = self._playout[0]
            if isinstance(head, _Mark):
                break
            taken = min(budget, len(head))
            del head[:taken]
            budget -= taken
            self._queued -= taken
            self.record.played_bytes += taken
            self._played_since_turn += taken
            if not head:
                self._playout.popleft()
        reached = []
        while self._playout and isinstance(self._playout[0], _Mark):
            mark = self._playout.popleft()
            assert isinstance(mark, _Mark)
            reached.append(mark.name)
        if was_playing and not self._queued:
            self._drained_at = now
        return reached

    async def _next_tick(self) -> None:
        if self._tick is None:
            self._tick = asyncio.get_running_loop().create_future()
        await self._tick

    # --- the caller ------------------------------------------------------------------------

    async def _converse(self) -> None:
        """The caller's steps, by ear; returns when the caller hangs up."""
        caller = self.session.caller
        while True:
            step = caller.peek()
            if caller.machine or (step is not None and step.action == "dial"):
                # An answering machine says nothing; a dial step is a transfer's outcome.
                await self._idle(asyncio.Event().wait())
                continue
            if step is None:
                prompted = await self._turn()
                step = self._patient(prompted) or Step(action="hangup", where="<no step left>")
            elif step.action == "interrupt":
                await self._barge_in_moment(step)
                caller.pop()
            else:
                await self._turn()
                caller.pop()
                if step.after_s > 0:
                    await asyncio.sleep(step.after_s)
            if await self._act(step):
                return

    def _patient(self, prompted: bool) -> Step | None:
        """A patient callee (the Gateway's mock): a short reply when the bot said something,
        else silence; None for any other caller (it hangs up)."""
        if not self.session.call.script.patient:
            return None
        if not prompted:
            return Step(action="silence")
        said = sum(1 for e in self.session.call.timeline if e.who == "caller" and e.what == "say")
        return Step(action="say", value=PATIENT_REPLIES[said % len(PATIENT_REPLIES)])

    async def _turn(self) -> bool:
        """Waits for the caller's turn: the bot's audio has played out and a pause passed
        (True), or the bot has said nothing for ``stream_prompt_wait_s`` (False)."""
        loop = asyncio.get_running_loop()
        since = loop.time()
        while True:
            now = loop.time()
            if self._bot_spoke:
                if not self._queued and now - self._drained_at >= self.carrier.stream_reply_pause_s:
                    return True
            elif now - since >= self.carrier.stream_prompt_wait_s:
                return False
            await self._next_tick()

    async def _barge_in_moment(self, step: Step) -> None:
        """Waits until the bot's audio has been playing a while (``after``, else
        ``stream_interrupt_after_s``), or the bot says nothing for ``stream_prompt_wait_s``."""
        loop = asyncio.get_running_loop()
        since = loop.time()
        while not self._bot_spoke and loop.time() - since < self.carrier.stream_prompt_wait_s:
            await self._next_tick()
        await asyncio.sleep(step.after_s or self.carrier.stream_interrupt_after_s)

    async def _act(self, step: Step) -> bool:
        """Does one step; True when the caller hung up."""
        self._note_bot_audio()
        self.session.record("caller", step.action, **_detail(step))
        self._bot_spoke = False
        self._heard.clear()
        if step.action in ("say", "interrupt"):
            await self._speak(step.value)
        elif step.action == "press":
            for digit in step.value:
                self.record.dtmf.append(digit)
                await self._send(self.frames.dtmf(digit))
                await asyncio.sleep(self.carrier.stream_dtmf_gap_s)
        elif step.action == "silence":
            await self._idle(self._heard.wait())  # until the bot speaks again
        return step.action == "hangup"

    async def _speak(self, text: str) -> None:
        loop = asyncio.get_running_loop()
        frames = clips.frames_for(text)
        self.carrier.captions.say(self.key, text)
        utterance = Utterance(text=text, started=loop.time(), over_bot=self._queued > 0,
                              frames=len(frames))  # fmt: skip
        self.record.utterances.append(utterance)
        self._speech.extend(frames)
        while self._speech:
            await self._next_tick()
        utterance.ended = loop.time()

    async def _idle(self, awaitable: Awaitable[Any]) -> None:
        """Waits on the bot: idle (a simulation may move its clock meanwhile, so that the bot's
        own timers fire), unless the carrier's ``stream_idle_while_waiting`` is off."""
        if self.carrier.stream_idle_while_waiting:
            await self.session.work.wait(awaitable)
        else:
            await awaitable

    def _note_bot_audio(self) -> None:
        """Puts the bot's audio played since the caller's last step on the timeline."""
        if self._played_since_turn:
            self.session.record("bot", "audio", ms=self._played_since_turn // 8)
            self._played_since_turn = 0


def _detail(step: Step) -> dict[str, Any]:
    key = {"say": "text", "interrupt": "text", "press": "digits"}.get(step.action)
    return {key: step.value} if key else {}


def _account(provider: str, credentials: Mapping[str, str]) -> str:
    """The account id a carrier puts in its ``start`` (Telnyx: a user id of the connection)."""
    if provider == "twilio":
        return credentials.get("accountSid", "")
    if provider == "plivo":
        return credentials.get("authId", "")
    return str(uuid.uuid5(uuid.NAMESPACE_OID, credentials.get("connectionId", "")))
