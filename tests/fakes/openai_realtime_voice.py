"""A local stand-in for the OpenAI Realtime API (speech to speech), reached through the SDK.

It speaks the GA wire format the official SDK sends and parses: a WebSocket on
``/v1/realtime?model=…`` with a Bearer key, ``session.update`` answered by ``session.updated``,
caller audio in ``input_audio_buffer.append`` (μ-law base64), and per caller turn the events a
server-VAD session sends: ``input_audio_buffer.speech_started`` / ``speech_stopped`` /
``committed``, the turn's transcription, then a response made of the next scripted
:class:`Reply` (a tone as ``response.output_audio.delta`` with its transcript, and/or a function
call). A turn ends when its energy detector has heard the session's ``silence_duration_ms`` of
silence after speech (counted in audio time, not wall time) or on an explicit commit. The
caller's words come from a scripted list, else from :class:`Captions` (what the simulated
caller is playing). Everything the client sends is kept for the tests to read.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from aiohttp import WSMsgType, web

from voicecall.runtime.media import codec
from voicecall.runtime.sim.captions import ANY, Captions

API_KEY = "sk-test-fake-realtime-0123456789"
FRAME = 160  # 20 ms of μ-law 8 kHz
SPEECH_RMS = 500.0  # 16-bit RMS above which a frame is speech (about -36 dBFS)
CHUNK_MS = 100  # audio per output delta


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One scripted response: speech (a tone of ``audio_ms`` with ``say`` as its transcript),
    then optionally function calls (``tool`` with ``arguments``, then each of ``more``).
    ``hold_after_ms``: stop after that much audio and wait for the caller to barge in, then
    end the response cancelled. ``drop``: instead of answering, the service closes the
    connection (a server going away mid-call)."""

    say: str = ""
    audio_ms: int = 300
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    more: tuple[tuple[str, dict[str, Any]], ...] = ()
    hold_after_ms: int | None = None
    drop: bool = False

    @property
    def calls(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        return ((self.tool, self.arguments), *self.more) if self.tool else self.more

    @property
    def speaks(self) -> bool:
        return bool(self.say) and self.audio_ms > 0


def tone(ms: int, hz: float = 440.0, level: int = 8000) -> bytes:
    """μ-law 8 kHz sine of ``ms`` milliseconds."""
    t = np.arange(ms * 8) / 8000
    pcm = (np.sin(2 * np.pi * hz * t) * level).astype(np.int16)
    return codec.encode_array(pcm).tobytes()


def silence(ms: int) -> bytes:
    return bytes([0xFF]) * (ms * 8)


class FakeRealtimeVoice:
    """``async with FakeRealtimeVoice([Reply(...)]) as fake:`` then ``base_url=fake.base_url``."""

    def __init__(
        self,
        replies: list[Reply] | None = None,
        *,
        heard: list[str] | None = None,
        captions: Captions | None = None,
        captions_key: str = ANY,
        api_key: str = API_KEY,
        refuse_update: str | None = None,
    ) -> None:
        self.replies = list(replies or [])
        self.heard = list(heard or [])
        self.captions = captions
        self.captions_key = captions_key
        self.api_key = api_key
        self.refuse_update = refuse_update  # an error code answering session.update
        self.models: list[str] = []  # the ``model`` query of each connection
        self.session_updates: list[dict[str, Any]] = []
        self.response_creates: list[dict[str, Any]] = []
        self.truncates: list[dict[str, Any]] = []
        self.function_outputs: list[dict[str, Any]] = []
        self.appended_bytes = 0
        self.turns = 0  # caller turns ended
        self.base_url = ""
        self._runner: web.AppRunner | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> FakeRealtimeVoice:
        app = web.Application()
        app.router.add_get("/v1/realtime", self._realtime)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def tools(self, index: int = -1) -> list[str]:
        """The tool names of a received session.update (default: the last)."""
        return [t["name"] for t in self.session_updates[index].get("tools", [])]

    def next_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    async def _realtime(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            error = {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                     "code": "invalid_api_key", "param": None}  # fmt: skip
            return web.json_response({"error": error}, status=401)
        self.models.append(request.query.get("model", ""))
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        conversation = _Conversation(self, ws)
        await conversation.run()
        return ws


class _Conversation:
    """One connection: the session's state and the scripted turns."""

    def __init__(self, fake: FakeRealtimeVoice, ws: web.WebSocketResponse) -> None:
        self.fake = fake
        self.ws = ws
        self.silence_ms = 500
        self.in_speech = False
        self.quiet_ms = 0
        self.audio_ms = 0  # caller audio received, in ms
        self.pending = b""
        self.item_id = ""
        self.responding: asyncio.Task[None] | None = None
        self.barged = asyncio.Event()
        self.lock = asyncio.Lock()

    async def send(self, event: dict[str, Any]) -> None:
        event.setdefault("event_id", self.fake.next_id("event"))
        async with self.lock:
            if not self.ws.closed:
                await self.ws.send_str(json.dumps(event))

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": {"type": "realtime"}})
        try:
            async for message in self.ws:
                if message.type != WSMsgType.TEXT:
                    continue
                await self.on_event(json.loads(message.data))
        finally:
            if self.responding is not None:
                self.responding.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.responding

    async def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "session.update":
            session = event["session"]
            self.fake.session_updates.append(session)
            vad = session.get("audio", {}).get("input", {}).get("turn_detection") or {}
            self.silence_ms = int(vad.get("silence_duration_ms", self.silence_ms))
            if self.fake.refuse_update:
                # OpenAI's messages can quote the key; the client must not pass them on.
                error = {"type": "invalid_request_error", "code": self.fake.refuse_update,
                         "message": f"Invalid session for key {self.fake.api_key}"}  # fmt: skip
                await self.send({"type": "error", "error": error})
                return
            await self.send({"type": "session.updated", "session": session})
        elif kind == "input_audio_buffer.append":
            await self.on_audio(base64.b64decode(event["audio"]))
        elif kind == "input_audio_buffer.commit":
            await self.end_turn()
        elif kind == "response.create":
            self.fake.response_creates.append(event.get("response") or {})
            self.respond()
        elif kind == "conversation.item.create":
            item = event["item"]
            if item.get("type") == "function_call_output":
                self.fake.function_outputs.append(item)
            await self.send({"type": "conversation.item.added", "item": item})
        elif kind == "conversation.item.truncate":
            self.fake.truncates.append(event)
            truncated = {k: event[k] for k in ("item_id", "content_index", "audio_end_ms")}
            await self.send({"type": "conversation.item.truncated", **truncated})

    async def on_audio(self, audio: bytes) -> None:
        self.fake.appended_bytes += len(audio)
        data = self.pending + audio
        whole = len(data) - len(data) % FRAME
        self.pending = data[whole:]
        for start in range(0, whole, FRAME):
            await self.on_frame(data[start : start + FRAME])

    async def on_frame(self, frame: bytes) -> None:
        pcm = codec.decode_array(np.frombuffer(frame, dtype=np.uint8)).astype(np.float64)
        loud = float(np.sqrt(np.mean(pcm * pcm))) > SPEECH_RMS
        self.audio_ms += 20
        if loud and not self.in_speech:
            await self.speech_started()
        if not self.in_speech:
            return
        self.quiet_ms = 0 if loud else self.quiet_ms + 20
        if self.quiet_ms >= self.silence_ms:
            await self.end_turn()

    async def speech_started(self) -> None:
        self.in_speech = True
        self.quiet_ms = 0
        self.item_id = self.fake.next_id("item")
        self.barged.set()  # interrupt_response: a held response ends cancelled
        await self.send({
            "type": "input_audio_buffer.speech_started",
            "audio_start_ms": self.audio_ms - 20,
            "item_id": self.item_id,
        })  # fmt: skip

    async def end_turn(self) -> None:
        if not self.in_speech:
            await self.speech_started()
        self.in_speech = False
        self.fake.turns += 1
        item_id = self.item_id
        await self.send({"type": "input_audio_buffer.speech_stopped",
                         "audio_end_ms": self.audio_ms, "item_id": item_id})  # fmt: skip
        await self.send({"type": "input_audio_buffer.committed", "item_id": item_id,
                         "previous_item_id": None})  # fmt: skip
        await self.send({
            "type": "conversation.item.input_audio_transcription.completed",
            "item_id": item_id,
            "content_index": 0,
            "transcript": self.words(),
            "usage": {"type": "duration", "seconds": 1.0},
        })  # fmt: skip
        if self.responding is not None:
            await self.responding  # a held response ended cancelled at the speech start
        self.respond()

    def words(self) -> str:
        if self.fake.heard:
            return self.fake.heard.pop(0)
        if self.fake.captions is not None:
            return self.fake.captions.next(self.fake.captions_key)
        return ""

    def respond(self) -> None:
        reply = self.fake.replies.pop(0) if self.fake.replies else Reply(audio_ms=0)
        self.barged.clear()
        self.responding = asyncio.create_task(self.response(reply))

    async def response(self, reply: Reply) -> None:
        if reply.drop:
            self.responding = None
            await self.ws.close(code=1011, message=b"server going away")
            return
        rid = self.fake.next_id("resp")
        await self.send({"type": "response.created",
                         "response": {"id": rid, "object": "realtime.response",
                                      "status": "in_progress", "output": []}})  # fmt: skip
        output: list[dict[str, Any]] = []
        status = "completed"
        if reply.speaks:
            item, cut = await self.speech(rid, reply)
            output.append(item)
            status = "cancelled" if cut else status
        for name, arguments in reply.calls if status == "completed" else ():
            output.append(await self.function_call(rid, name, arguments, len(output)))
        await self.send({"type": "response.done",
                         "response": {"id": rid, "object": "realtime.response",
                                      "status": status, "output": output}})  # fmt: skip
        self.responding = None

    async def speech(self, rid: str, reply: Reply) -> tuple[dict[str, Any], bool]:
        item_id = self.fake.next_id("item")
        where = {"response_id": rid, "item_id": item_id, "output_index": 0, "content_index": 0}
        item = {"id": item_id, "object": "realtime.item", "type": "message",
                "role": "assistant", "status": "in_progress", "content": []}  # fmt: skip
        await self.send({"type": "response.output_item.added", "response_id": rid,
                         "output_index": 0, "item": item})  # fmt: skip
        for word in reply.say.split(" "):
            await self.send({"type": "response.output_audio_transcript.delta",
                             **where, "delta": word + " "})  # fmt: skip
        audio = tone(reply.audio_ms)
        step = CHUNK_MS * 8
        for sent in range(0, len(audio), step):
            if reply.hold_after_ms is not None and sent >= reply.hold_after_ms * 8:
                await self.barged.wait()
                return {**item, "status": "incomplete"}, True
            chunk = base64.b64encode(audio[sent : sent + step]).decode()
            await self.send({"type": "response.output_audio.delta", **where, "delta": chunk})
            await asyncio.sleep(0)
        await self.send({"type": "response.output_audio.done", **where})
        await self.send({"type": "response.output_audio_transcript.done",
                         **where, "transcript": reply.say})  # fmt: skip
        done = {**item, "status": "completed",
                "content": [{"type": "output_audio", "transcript": reply.say}]}  # fmt: skip
        await self.send({"type": "response.output_item.done", "response_id": rid,
                         "output_index": 0, "item": done})  # fmt: skip
        return done, False

    async def function_call(
        self, rid: str, name: str, arguments: dict[str, Any], index: int
    ) -> dict[str, Any]:
        item = {"id": self.fake.next_id("item"), "object": "realtime.item",
                "type": "function_call", "status": "completed", "name": name,
                "call_id": self.fake.next_id("call"),
                "arguments": json.dumps(arguments)}  # fmt: skip
        await self.send({"type": "response.output_item.added", "response_id": rid,
                         "output_index": index, "item": {**item, "arguments": ""}})  # fmt: skip
        await self.send({"type": "response.function_call_arguments.done", "response_id": rid,
                         "item_id": item["id"], "output_index": index,
                         "call_id": item["call_id"], "name": name,
                         "arguments": item["arguments"]})  # fmt: skip
        await self.send({"type": "response.output_item.done", "response_id": rid,
                         "output_index": index, "item": item})  # fmt: skip
        return item
