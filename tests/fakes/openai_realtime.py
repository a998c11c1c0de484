"""A local stand-in for OpenAI's Realtime WebSocket API, transcription sessions.

It speaks what the official SDK sends and reads: ``GET /v1/realtime?intent=transcription``
upgraded to a WebSocket with a Bearer key (``AsyncOpenAI.realtime.connect`` appends
``/realtime`` to the client's base URL, ws/wss for http/https), then JSON events. On connect it
sends ``session.created``; each ``session.update`` is kept and answered with
``session.updated``. Audio arrives as ``input_audio_buffer.append`` (base64 μ-law, 8 kHz, as the
session's ``audio/pcmu`` format says); an energy VAD plays the server VAD: speech_started at the
onset, then after the session's ``silence_duration_ms`` of audio-time silence speech_stopped,
committed, the transcript as word deltas and completed. The words come from a scripted list,
else from a :class:`Captions` (any stream: the fake cannot know which call it serves), else "".

Failures to inject: refuse the upgrade (``status``), close the socket after some audio
(``close_after_frames``), wait before answering the upgrade (``delay_s``), answer the
session.update with an error event (``update_error``) or not at all (``ack=False``).

:class:`RealtimeServer` and :func:`server_event` are the reusable skeleton (aiohttp server on
127.0.0.1:0, the SDK's path, key check, one :class:`Connection` record per socket): a fake of
speech-to-speech sessions subclasses it and overrides :meth:`RealtimeServer.session`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from voicecall.runtime.sim.captions import ANY, Captions
from voicecall.runtime.voice.stt import EndOfTurn

API_KEY = "sk-test-fake-realtime-0123456789"
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
DEFAULT_SILENCE_MS = 500  # the service's default silence_duration_ms

_ids = itertools.count(1)


def server_event(type_: str, **fields: Any) -> dict[str, Any]:
    """A server event as the service sends it: ``type``, a fresh ``event_id``, the fields."""
    return {"type": type_, "event_id": f"event_fake_{next(_ids)}", **fields}


@dataclass(slots=True, kw_only=True)
class Connection:
    """One accepted WebSocket: what the client asked and sent, for the tests to read."""

    ws: web.WebSocketResponse
    query: Mapping[str, str]
    path: str
    received: list[dict[str, Any]] = field(default_factory=list)  # every client event
    sessions: list[dict[str, Any]] = field(default_factory=list)  # each session.update's body
    audio: bytearray = field(default_factory=bytearray)  # input_audio_buffer.append, decoded

    @property
    def audio_bytes(self) -> int:
        return len(self.audio)

    @property
    def session(self) -> dict[str, Any]:
        """The last session config the client sent ({} before any)."""
        return self.sessions[-1] if self.sessions else {}

    async def send(self, type_: str, **fields: Any) -> None:
        if not self.ws.closed:
            await self.ws.send_json(server_event(type_, **fields))


class RealtimeServer:
    """``async with Server() as fake:`` then ``base_url=fake.base_url`` (http; the SDK derives ws).

    Subclasses override :meth:`session` (after the upgrade and ``session.created``) to serve a
    socket; :meth:`event` gets each client event and may be overridden instead.
    """

    def __init__(
        self, *, api_key: str = API_KEY, status: int | None = None, delay_s: float = 0.0
    ) -> None:
        self.api_key = api_key
        self.status = status  # refuse every upgrade with this HTTP status
        self.delay_s = delay_s  # before answering the upgrade
        self.connections: list[Connection] = []
        self.refused = 0
        self.base_url = ""
        self.websocket_base_url = ""
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    async def __aenter__(self) -> RealtimeServer:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._upgrade)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.websocket_base_url = f"ws://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        for conn in self.connections:
            await conn.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def last(self) -> Connection:
        return self.connections[-1]

    async def wait(self, seconds: float | None) -> None:
        """Sleep, cut short when the server shuts down."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _upgrade(self, request: web.Request) -> web.StreamResponse:
        if self.delay_s:
            await self.wait(self.delay_s)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            self.refused += 1
            return error_response(401, "Incorrect API key provided.", "invalid_api_key")
        if self.status is not None:
            self.refused += 1
            return error_response(self.status, "The server had an error.", "server_error")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conn = Connection(ws=ws, query=dict(request.query), path=request.path)
        self.connections.append(conn)
        await conn.send("session.created", session=self.initial_session(conn))
        await self.session(conn)
        return ws

    def initial_session(self, conn: Connection) -> dict[str, Any]:
        return {"type": "transcription", "id": f"sess_fake_{len(self.connections)}"}

    async def session(self, conn: Connection) -> None:
        """Serve one socket until it closes: each client event goes to :meth:`event`."""
        async for msg in conn.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            event = json.loads(msg.data)
            conn.received.append(event)
            if not await self.event(conn, event):
                await conn.ws.close()
                return

    async def event(self, conn: Connection, event: dict[str, Any]) -> bool:
        """Handle one client event; False closes the socket."""
        return True


def error_response(status: int, message: str, code: str) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return web.json_response({"error": error}, status=status)


class FakeOpenAIRealtime(RealtimeServer):
    """The transcription service: server VAD on the received μ-law, transcripts scripted.

    Args:
        transcripts: the words of each turn in order (used first).
        captions: read with ``Captions.next(ANY)`` at each turn's end when the script is out.
        close_after_frames: close the socket (code ``close_code``) after this much audio.
        update_error: answer session.update with an ``error`` event of this code instead.
        ack: answer session.update with session.updated.
    """

    def __init__(
        self,
        *,
        transcripts: list[str] | None = None,
        captions: Captions | None = None,
        close_after_frames: int | None = None,
        close_code: int = 1011,
        update_error: str | None = None,
        ack: bool = True,
        api_key: str = API_KEY,
        status: int | None = None,
        delay_s: float = 0.0,
    ) -> None:
        super().__init__(api_key=api_key, status=status, delay_s=delay_s)
        self.transcripts = list(transcripts or [])
        self.captions = captions
        self.close_after_frames = close_after_frames
        self.close_code = close_code
        self.update_error = update_error
        self.ack = ack
        self.sent: list[dict[str, Any]] = []  # transcripts completed, as (item_id, text) dicts
        self._turns: dict[int, _Turn] = {}

    async def __aenter__(self) -> FakeOpenAIRealtime:
        await super().__aenter__()
        return self

    async def event(self, conn: Connection, event: dict[str, Any]) -> bool:
        kind = event.get("type")
        if kind in ("session.update", "transcription_session.update"):
            return await self._update(conn, event)
        if kind == "input_audio_buffer.append":
            return await self._append(conn, base64.b64decode(event.get("audio", "")))
        return True

    async def _update(self, conn: Connection, event: dict[str, Any]) -> bool:
        session = event.get("session") or {}
        conn.sessions.append(session)
        if self.update_error is not None:
            error = {"type": "invalid_request_error", "code": self.update_error,
                     "message": f"Invalid session: {self.update_error}", "param": "session",
                     "event_id": event.get("event_id")}  # fmt: skip
            await conn.send("error", error=error)
        elif self.ack:
            await conn.send("session.updated", session={**self.initial_session(conn), **session})
        return True

    def _turn(self, conn: Connection) -> _Turn:
        turn = self._turns.get(id(conn))
        if turn is None:
            detection = (conn.session.get("audio") or {}).get("input", {}).get("turn_detection")
            silence = (detection or {}).get("silence_duration_ms", DEFAULT_SILENCE_MS)
            turn = self._turns[id(conn)] = _Turn(detector=EndOfTurn(silence_ms=int(silence)))
        return turn

    async def _append(self, conn: Connection, audio: bytes) -> bool:
        conn.audio += audio
        turn = self._turn(conn)
        turn.pending += audio
        while len(turn.pending) >= FRAME_BYTES:
            frame, turn.pending = turn.pending[:FRAME_BYTES], turn.pending[FRAME_BYTES:]
            turn.frames += 1
            await self._frame(conn, turn, frame)
            if self.close_after_frames is not None and turn.frames >= self.close_after_frames:
                await conn.ws.close(code=self.close_code, message=b"fake: closed mid-session")
                return False
        return True

    async def _frame(self, conn: Connection, turn: _Turn, frame: bytes) -> None:
        edge = turn.detector.feed(frame)
        ms = turn.frames * 20
        if edge == "start":
            turn.item = f"item_fake_{next(_ids)}"
            await conn.send("input_audio_buffer.speech_started", audio_start_ms=ms,
                            item_id=turn.item)  # fmt: skip
        elif edge == "end":
            await self._transcribe(conn, turn.item, ms)

    async def _transcribe(self, conn: Connection, item: str, ms: int) -> None:
        await conn.send("input_audio_buffer.speech_stopped", audio_end_ms=ms, item_id=item)
        await conn.send("input_audio_buffer.committed", item_id=item, previous_item_id=None)
        text = self._next_text()
        words = text.split(" ") if text else []
        for index, word in enumerate(words):
            delta = word if index == 0 else f" {word}"
            await conn.send("conversation.item.input_audio_transcription.delta", item_id=item,
                            content_index=0, delta=delta)  # fmt: skip
        await conn.send("conversation.item.input_audio_transcription.completed", item_id=item,
                        content_index=0, transcript=text,
                        usage={"type": "duration", "seconds": ms / 1000})  # fmt: skip
        self.sent.append({"item_id": item, "text": text})

    def _next_text(self) -> str:
        if self.transcripts:
            return self.transcripts.pop(0)
        return self.captions.next(ANY) if self.captions is not None else ""


@dataclass(slots=True, kw_only=True)
class _Turn:
    detector: EndOfTurn
    pending: bytes = b""
    frames: int = 0
    item: str = ""
