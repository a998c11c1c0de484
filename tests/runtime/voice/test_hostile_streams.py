"""Hostile media streams against the runtime as `start_runtime` serves it (streaming on, the
mock carrier's Twilio credentials, the offline stand-in voice and transcriber): our own signed
webhooks fetch the call's stream opening, our own WebSocket plays the carrier. Token misuse,
replayed documents, a second stream, malformed and abusive frames, carriers that echo no marks
or read nothing, callers who never stop, hang-ups mid-reply, and what is left after the calls.
Each outcome is awaited generously; no test asserts a duration."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import WSMsgType, web

from tests.fakes.openai_realtime_voice import API_KEY as REALTIME_KEY
from tests.fakes.openai_realtime_voice import FakeRealtimeVoice, Reply
from tests.runtime import hostile_support as hs
from voicecall.dsl.catalog import Catalog
from voicecall.runtime.app import Runtime, RuntimeConfig, start_runtime
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager.core import ModelReply
from voicecall.runtime.media.codec import SILENCE_BYTE
from voicecall.runtime.media.streams import stream_key
from voicecall.runtime.sim.voice import tone_speech
from voicecall.runtime.state import CallRecord
from voicecall.runtime.voice import conversation

FLOWS = Path(__file__).parent / "flows"
EXAMPLES = Path(__file__).parents[3] / "flows" / "examples"
GENEROUS_S = 20.0  # how long an outcome may take on a loaded machine (not a speed limit)
SILENCE = bytes([SILENCE_BYTE]) * 160
SECRET = "sk-hostile-streams-never-logged-0123456789"
# A conversation that hands its values to a node that waits for keys (a <Gather>).
THEN_ASK = """version: 1
name: then-ask
direction: inbound
start: talk
nodes:
  talk:
    - converse:
        driver: model
        message: Hello, how many are you?
        max_turns: 4
        collect:
          party: {type: integer, description: How many guests}
        on_done: menu
  menu:
    - ask:
        prompt: Press 1 to confirm.
        input: dtmf
        num_digits: 1
        timeout: 5s
        save_as: choice
        on_no_input: bye
    - say: Confirmed.
    - hangup
  bye:
    - say: Goodbye.
    - hangup
"""


# --- the rig: a runtime, our signed webhooks, our carrier socket ---------------------------------


class Responder:
    """The response model: answers from a list; ``hold`` makes it wait (a slow model)."""

    def __init__(self) -> None:
        self.answers: list[ModelReply] = []
        self.heard: list[str] = []
        self.hold: asyncio.Event | None = None
        self.cancelled = 0
        self.running = 0

    async def reply(self, call: CallRecord, heard: str, options: Any) -> ModelReply:
        self.heard.append(heard)
        self.running += 1
        try:
            if self.hold is not None:
                await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return self.answers.pop(0) if self.answers else ModelReply(text="Certainly.")


@dataclass
class Opening:
    call_id: str  # ours
    key: str  # the callId parameter
    token: str
    document: str
    action: str  # the <Connect action> URL (where Twilio comes back when the stream ends)


@dataclass
class Rig:
    runtime: Runtime
    target: hs.Target
    http: aiohttp.ClientSession
    responder: Responder
    sockets: list[aiohttp.ClientWebSocketResponse] = field(default_factory=list)

    @property
    def stream_url(self) -> str:
        assert self.runtime.streams is not None
        return f"http://{self.target.host}{self.runtime.streams.settings.path}"

    async def post(self, url: str, pairs: list[tuple[str, str]]) -> tuple[int, str]:
        """A form POST signed as Twilio signs it."""
        signed = hs.form_headers(self.target, url, pairs)
        headers = {"Content-Type": hs.FORM, **{str(k): str(v) for k, v in signed}}
        async with self.http.post(url, data=urlencode(pairs), headers=headers) as r:
            return r.status, await r.text()

    async def inbound(self, sid: str = "1", flow: str = "front-desk") -> Opening:
        """A new inbound call to ``flow``: the runtime answers with its stream opening."""
        manager = self.runtime.manager
        manager.settings = dataclasses.replace(manager.settings, inbound_flow=flow)
        status, document = await self.post(self.target.url(hs.PATH),
                                           hs.inbound_pairs(self.target, sid))  # fmt: skip
        assert status == 200, document
        return opening(document)

    def call_sid(self, sid: str = "1") -> str:
        return dict(hs.inbound_pairs(self.target, sid))["CallSid"]

    async def ended(self, opened: Opening, sid: str = "1") -> None:
        """Twilio's status callback: the call completed."""
        url = f"{self.target.url(hs.PATH)}?call={opened.call_id}&kind=status"
        pairs = [*hs.inbound_pairs(self.target, sid)[:-1], ("CallStatus", "completed")]
        status, body = await self.post(url, pairs)
        assert status in (200, 204), body

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        ws = await self.http.ws_connect(self.stream_url, max_msg_size=0)
        self.sockets.append(ws)
        return ws

    async def stream(self, opened: Opening, *, key: str | None = None, token: str | None = None,
                     encoding: str = "audio/x-mulaw", sid: str = "MZ1",
                     ) -> aiohttp.ClientWebSocketResponse:  # fmt: skip
        """A carrier socket that has sent its connected and start."""
        ws = await self.connect()
        await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
        await ws.send_str(start(key or opened.key, token or opened.token, encoding, sid))
        return ws

    def conversation(self, call_id: str) -> Any:
        assert self.runtime.conversations is not None
        return self.runtime.conversations.conversations.get(call_id)

    def record(self, call_id: str) -> CallRecord:
        found = self.runtime.store.get(call_id)
        assert found is not None
        return found


def opening(document: str) -> Opening:
    params = dict(re.findall(r'<Parameter name="(\w+)" value="(\w+)"', document))
    action = re.search(r'<Connect action="([^"]+)"', document)
    assert action is not None and params, document
    url = action.group(1).replace("&amp;", "&")
    call_id = re.search(r"call=([0-9a-f-]+)", url)
    assert call_id is not None
    return Opening(call_id=call_id.group(1), key=params["callId"], token=params["token"],
                   document=document, action=url)  # fmt: skip


def start(key: str, token: str, encoding: str = "audio/x-mulaw", sid: str = "MZ1") -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": sid,
                       "start": {"streamSid": sid, "accountSid": "AC1", "callSid": "CA1",
                                 "tracks": ["inbound"],
                                 "customParameters": {"callId": key, "token": token},
                                 "mediaFormat": {"encoding": encoding,
                                                 "sampleRate": 8000, "channels": 1}}})  # fmt: skip


def media(payload: bytes, seq: int = 2, sid: str = "MZ1") -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": sid,
                       "media": {"track": "inbound", "chunk": str(seq), "timestamp": "0",
                                 "payload": base64.b64encode(payload).decode()}})  # fmt: skip


def mark(name: str, sid: str = "MZ1") -> str:
    return json.dumps({"event": "mark", "sequenceNumber": "3", "streamSid": sid,
                       "mark": {"name": name}})  # fmt: skip


def dtmf(digit: str, sid: str = "MZ1") -> str:
    return json.dumps({"event": "dtmf", "sequenceNumber": "4", "streamSid": sid,
                       "dtmf": {"track": "inbound_track", "digit": digit}})  # fmt: skip


def stop(sid: str = "MZ1") -> str:
    return json.dumps({"event": "stop", "sequenceNumber": "5", "streamSid": sid,
                       "stop": {"accountSid": "AC1", "callSid": "CA1"}})  # fmt: skip


async def until(check: Callable[[], Any], what: str) -> None:
    """Waits for ``check()`` to hold (generously: not a speed limit)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + GENEROUS_S
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.02)


async def closed(ws: aiohttp.ClientWebSocketResponse) -> int | None:
    """Reads (and drops our audio) until the runtime closes the socket: its close code."""
    while True:
        message = await asyncio.wait_for(ws.receive(), GENEROUS_S)
        if message.type == WSMsgType.CLOSE:
            return int(message.data)  # the code the runtime sent
        if message.type in (WSMsgType.CLOSED, WSMsgType.CLOSING):
            return ws.close_code


async def frames(ws: aiohttp.ClientWebSocketResponse, event: str, count: int = 1,
                 ) -> list[dict[str, Any]]:  # fmt: skip
    """Reads until ``count`` frames of ``event`` came from the runtime."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        message = await asyncio.wait_for(ws.receive(), GENEROUS_S)
        assert message.type == WSMsgType.TEXT, message
        data = json.loads(message.data)
        if data.get("event") == event:
            found.append(data)
    return found


class Carrier:
    """Reads what the runtime sends on a stream: counts audio, clears, marks; echoes each mark
    once its audio would have played (``echo``), or never."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, *, echo: bool = True):
        self.ws, self.echo = ws, echo
        self.audio = 0
        self.marks: list[str] = []
        self.clears = 0
        self.after_close = 0  # frames that came after the runtime said the call ended
        self.ended = False
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if self.ended:
                self.after_close += 1
            event = data.get("event")
            if event == "media":
                self.audio += 1
            elif event == "clear":
                self.clears += 1
            elif event == "mark":
                self.marks.append(data["mark"]["name"])
                if self.echo:
                    await self.ws.send_str(mark(data["mark"]["name"]))

    async def aclose(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.task


async def speak(ws: aiohttp.ClientWebSocketResponse, rig: Rig, key: str, words: str) -> None:
    """The caller says ``words``: voiced audio then a second of silence (the stand-in
    transcriber hears the turn end and reads the words from the captions)."""
    rig.runtime.carrier.captions.say(key, words)
    voice = tone_speech(words)
    for i in range(0, len(voice) - 159, 160):
        await ws.send_str(media(voice[i : i + 160]))
    for _ in range(60):
        await ws.send_str(media(SILENCE))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with runtime_rig(tmp_path) as made:
        yield made


@contextlib.asynccontextmanager
async def runtime_rig(tmp_path: Path, config: dict[str, Any] | None = None) -> AsyncIterator[Rig]:
    """The runtime (``config`` adds to its config)."""
    raw = {"provider": "mock", "store": str(tmp_path), "inboundPolicy": "open",
           "inboundFlow": "front-desk", "maxConcurrentCalls": 100, "serve": dict(hs.LIMITS),
           "streaming": {"enabled": True}, **(config or {})}  # fmt: skip
    extra = tmp_path / "flows"
    extra.mkdir()
    (extra / "then-ask.yaml").write_text(THEN_ASK)
    responder = Responder()
    runtime = await start_runtime(RuntimeConfig(raw=raw), clock=VirtualClock(),
                                  catalog=Catalog([FLOWS, EXAMPLES, extra]), responder=responder,
                                  mock_backend="twilio", port=0, restore=False)  # fmt: skip
    carrier = runtime.carrier
    target = hs.Target(provider="twilio", runtime=runtime, port=runtime.runner.addresses[0][1],
                       credentials=dict(carrier.credentials), signing_key=None)  # fmt: skip
    http = aiohttp.ClientSession()
    made = Rig(runtime=runtime, target=target, http=http, responder=responder)
    try:
        yield made
    finally:
        if responder.hold is not None:
            responder.hold.set()
        for ws in made.sockets:
            await ws.close()
        await http.close()
        await runtime.stop()


# --- tokens at the runtime level -----------------------------------------------------------------


async def test_a_used_token_opens_no_second_stream(rig: Rig) -> None:
    opened = await rig.inbound()
    first = await rig.stream(opened)
    await until(lambda: rig.conversation(opened.call_id) is not None, "the stream started")
    live = rig.conversation(opened.call_id)
    again = await rig.stream(opened)
    assert await closed(again) == 1008
    assert rig.conversation(opened.call_id) is live and not live.stopped
    assert not first.closed


async def test_a_token_of_one_call_opens_no_stream_of_another(rig: Rig) -> None:
    a = await rig.inbound("1")
    b = await rig.inbound("2")
    forged = await rig.stream(b, token=a.token)
    assert await closed(forged) == 1008
    # A wrong token uses up neither call's: both carriers' own streams still get in.
    for opened in (a, b):
        await rig.stream(opened)
        await until(lambda o=opened: rig.conversation(o.call_id) is not None, "started")  # type: ignore[misc]


async def test_a_token_opens_nothing_once_the_call_has_ended(rig: Rig) -> None:
    opened = await rig.inbound()
    await rig.ended(opened)
    await until(lambda: rig.record(opened.call_id).ended, "the call ended")
    late = await rig.stream(opened)
    assert await closed(late) == 1008
    assert rig.conversation(opened.call_id) is None


async def test_a_call_that_expects_no_stream_gets_none(rig: Rig) -> None:
    opened = await rig.inbound()
    made_up = stream_key("0b5e8f52-8f0d-4c8e-9d1b-7a5d2b7c1e00")
    forged = await rig.stream(opened, key=made_up)
    assert await closed(forged) == 1008
    await rig.stream(opened)  # the real one still gets in
    await until(lambda: rig.conversation(opened.call_id) is not None, "started")


async def test_a_second_start_on_a_live_stream_claims_nothing(rig: Rig) -> None:
    """A started socket that sends another start, with another call's valid token: ignored;
    that call's own stream still gets in, and each conversation is on its own socket."""
    a = await rig.inbound("1")
    b = await rig.inbound("2")
    ws = await rig.stream(a)
    await until(lambda: rig.conversation(a.call_id) is not None, "a started")
    await ws.send_str(start(b.key, b.token, sid="MZ9"))
    await ws.send_str(media(SILENCE))
    await rig.stream(b, sid="MZ2")
    await until(lambda: rig.conversation(b.call_id) is not None, "b started with its token")
    assert rig.conversation(a.call_id).session is not rig.conversation(b.call_id).session
    assert rig.conversation(b.call_id).session.start.stream_id == "MZ2"


async def test_a_replayed_webhook_mints_no_fresh_token(rig: Rig) -> None:
    opened = await rig.inbound()
    replayed = await rig.inbound()  # the same signed request again
    assert replayed.document == opened.document
    assert rig.runtime.streams is not None and len(rig.runtime.streams.tokens) == 1
    await rig.stream(opened)
    await until(lambda: rig.conversation(opened.call_id) is not None, "started")
    assert await rig.inbound() == opened  # once used, a replay brings back the same, spent one
    assert len(rig.runtime.streams.tokens) == 0


# --- frames --------------------------------------------------------------------------------------


def failures(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Errors and failed tasks logged (a hostile frame must cost one warning at most)."""
    return [r.getMessage() for r in caplog.records
            if r.levelno >= logging.ERROR or "task failed" in r.getMessage()]  # fmt: skip


async def started(rig: Rig, opened: Opening, **kwargs: Any) -> tuple[Any, Any]:
    ws = await rig.stream(opened, **kwargs)
    await until(lambda: rig.conversation(opened.call_id) is not None, "the stream started")
    return ws, rig.conversation(opened.call_id)


async def test_an_oversize_frame_ends_the_stream_and_its_conversation(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    opened = await rig.inbound()
    ws, live = await started(rig, opened)
    await ws.send_str(json.dumps({"event": "media", "padding": "a" * 70_000}))
    assert await closed(ws) == 1009
    await until(lambda: live.stopped, "the conversation stopped")
    assert rig.conversation(opened.call_id) is None
    assert failures(caplog) == []


async def test_garbage_frames_are_skipped_and_the_conversation_goes_on(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Malformed JSON, binary frames, events we do not know, empty, one-byte and 16 KB media,
    thousands of echoes of marks we never sent, a keypad flood: nothing fails, the stream
    lives, a carrier's stop then ends it."""
    caplog.set_level(logging.INFO)
    opened = await rig.inbound()
    ws, live = await started(rig, opened)
    for bad in ("{", "[]", "null", '{"event": 5}', '{"event":"clear","streamSid":"MZ1"}',
                '{"event":"media","streamSid":"MZ1","media":{"payload":"!!"}}',
                '{"event":"mark","streamSid":"MZ1","mark":{}}', "\udcff"):  # fmt: skip
        with contextlib.suppress(UnicodeEncodeError):
            await ws.send_str(bad)
    await ws.send_bytes(b"\x00" * 100)
    for payload in (b"", b"\x00", bytes(range(256)) * 64):
        await ws.send_str(media(payload))
    for i in range(2000):
        await ws.send_str(mark(f"never{i}"))
    for _ in range(100):
        await ws.send_str(dtmf("1"))
    for _ in range(25):
        await ws.send_str(media(SILENCE))
    await ws.send_str(stop())
    assert await closed(ws) is not None
    await until(lambda: live.stopped, "stopped by the carrier's stop")
    assert rig.runtime.streams is not None and rig.runtime.streams.sessions == {}
    assert failures(caplog) == []
    ignored = [r for r in caplog.records if "frame ignored" in r.getMessage()]
    assert len(ignored) == 1  # logged once a stream


async def test_media_before_start_opens_nothing(rig: Rig) -> None:
    opened = await rig.inbound()
    ws = await rig.connect()
    await ws.send_str(media(SILENCE))
    assert await closed(ws) == 1008
    await rig.stream(opened)  # the token was not used up by it
    await until(lambda: rig.conversation(opened.call_id) is not None, "started")


async def test_a_silent_framed_stream_lives_and_a_mute_one_is_ended(rig: Rig) -> None:
    """The watchdog: silence sent as frames is a live caller; no frames at all is a zombie."""
    streams = rig.runtime.streams
    assert streams is not None
    streams.settings = dataclasses.replace(streams.settings, inactivity_timeout_s=0.4)
    opened = await rig.inbound()
    ws, live = await started(rig, opened)
    carrier = Carrier(ws)
    for _ in range(60):  # 1.2 s of framed silence, three watchdog periods
        await ws.send_str(media(SILENCE))
        await asyncio.sleep(0.02)
    assert not live.stopped and not ws.closed
    await until(lambda: live.stopped, "the watchdog ended the mute stream")
    await carrier.aclose()
    assert ws.close_code == 1011


async def test_an_upgrade_trickled_byte_by_byte_is_cut_off(rig: Rig) -> None:
    """Slowloris on the stream path: the server's head timeout (serve.headerTimeoutMs) holds
    before the WebSocket handler, so no pending-stream slot is spent on it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", rig.target.port)
    head = (f"GET {rig.runtime.streams.settings.path} HTTP/1.1\r\nHost: {rig.target.host}\r\n"  # type: ignore[union-attr]
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n").encode()  # fmt: skip

    async def trickle() -> None:
        for n in range(10_000):
            writer.write(head[n : n + 1] if n < len(head) else b"X")
            await asyncio.sleep(0.05)

    dripping = asyncio.create_task(trickle())
    try:
        answer = await asyncio.wait_for(reader.read(), GENEROUS_S)
    finally:
        dripping.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert rig.runtime.streams is not None and not rig.runtime.streams._open


async def test_a_caller_who_never_stops_talking_breaks_nothing(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Ten seconds of voice without a pause: our greeting is cut once, no turn ends (the
    model is not asked), the stream lives."""
    opened = await rig.inbound()
    ws, live = await started(rig, opened)
    carrier = Carrier(ws)
    voice = tone_speech("x" * 100)  # 3 s
    for _ in range(3):
        for i in range(0, len(voice) - 159, 160):
            await ws.send_str(media(voice[i : i + 160]))
    await until(lambda: carrier.clears == 1, "the greeting was cut")
    assert not live.stopped and rig.responder.heard == []
    await carrier.aclose()
    assert failures(caplog) == []


async def test_a_hang_up_mid_realtime_reply_stops_everything(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The model's audio is flowing when the call ends: the bridge's tasks end, the realtime
    session is closed, nothing more is sent to the carrier, nothing fails."""
    async with FakeRealtimeVoice() as fake:
        service = {"apiKey": REALTIME_KEY, "baseUrl": fake.base_url, "silenceDurationMs": 300}
        extra = {"realtime": {"providers": {"openai": service}}}
        async with runtime_rig(tmp_path, extra) as made:
            fake.captions = made.runtime.carrier.captions
            fake.replies = [Reply(say="Hello there, a long greeting", audio_ms=5000)]
            opened = await made.inbound(flow="concierge-realtime")
            ws, live = await started(made, opened)
            carrier = Carrier(ws)
            await until(lambda: carrier.audio > 20, "the model's audio flows")
            await made.ended(opened)
            await until(lambda: live.stopped, "the conversation stopped")
            carrier.ended = True
            await until(lambda: not live._tasks, "its tasks ended")
            await until(lambda: live.realtime.closed, "the realtime session closed")
            await until(lambda: not conversation._CLOSING, "closes finished")
            for _ in range(10):  # frames keep coming from the carrier; none go back, and the
                if ws.closed:  # runtime closes the socket of the ended call
                    break
                with contextlib.suppress(ConnectionError):
                    await ws.send_str(media(SILENCE))
                await asyncio.sleep(0.02)
            await carrier.aclose()
            assert carrier.after_close == 0
    assert failures(caplog) == []


# --- our side: marks, farewells, hang-ups --------------------------------------------------------


async def test_a_farewell_is_not_cut_and_the_call_hangs_up_after_it(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig.responder.answers = [ModelReply(text="Goodbye, and thanks for calling the hotel.",
                                        end=True)]  # fmt: skip
    opened = await rig.inbound()
    ws, _ = await started(rig, opened)
    carrier = Carrier(ws)
    await until(lambda: carrier.marks, "the greeting played")
    await speak(ws, rig, opened.key, "No thanks, bye")
    await until(lambda: rig.responder.heard, "the model was asked")
    clears, audio = carrier.clears, carrier.audio
    await until(lambda: carrier.audio > audio + 10, "the farewell is playing")
    await speak(ws, rig, opened.key, "wait, one more thing")  # over the farewell
    await until(lambda: rig.record(opened.call_id).ending == "hangup-bot", "hung up")
    assert carrier.clears == clears  # the farewell was not cleared
    farewell = [line for line in rig.record(opened.call_id).transcript if line.source == "model"]
    assert [line.text for line in farewell] == ["Goodbye, and thanks for calling the hotel."]
    await carrier.aclose()
    assert failures(caplog) == []


async def test_an_agents_last_words_hang_up_once_echoed(rig: Rig) -> None:
    opened = await rig.inbound()
    ws, _ = await started(rig, opened)
    carrier = Carrier(ws)
    await rig.runtime.manager.turns.end_call(opened.call_id, "Goodbye then.")
    for _ in range(50):
        await ws.send_str(media(SILENCE))
    await until(lambda: rig.record(opened.call_id).ending == "hangup-bot", "hung up")
    await carrier.aclose()


async def test_a_conversation_that_finished_hands_the_caller_to_the_next_node(rig: Rig) -> None:
    """The control for the failing test of words heard after the finish: the next node's
    <Gather> answer is taken."""
    rig.responder.answers = [ModelReply(text="", done={"party": 4})]
    opened = await rig.inbound(flow="then-ask")
    ws, _ = await started(rig, opened)
    carrier = Carrier(ws)
    await speak(ws, rig, opened.key, "Four of us")
    await until(lambda: (w := rig.record(opened.call_id).waiting) is not None
                and w.block == "menu", "the flow went on")  # fmt: skip
    status, document = await rig.post(gather_url(rig, opened), gather_pairs(rig))
    assert status == 200 and "Confirmed." in document
    await carrier.aclose()


def gather_url(rig: Rig, opened: Opening) -> str:
    return f"{rig.target.url(hs.PATH)}?call={opened.call_id}&kind=input&block=menu&step=0"


def gather_pairs(rig: Rig) -> list[tuple[str, str]]:
    return [*hs.inbound_pairs(rig.target)[:-1], ("CallStatus", "in-progress"), ("Digits", "1")]


# --- secrets -------------------------------------------------------------------------------------


@pytest.fixture
async def tattler() -> AsyncIterator[str]:
    """A service (a proxy in front of OpenAI, say) that refuses every request and echoes the
    key it was sent in its error text: the base URL."""

    async def refuse(request: web.Request) -> web.Response:
        said = f"Incorrect API key provided: {request.headers.get('Authorization', '')}"
        return web.json_response({"error": {"message": said, "type": "invalid_request_error",
                                            "code": "invalid_api_key"}}, status=401)  # fmt: skip

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", refuse)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


async def test_keys_are_never_logged_or_recorded(
    tmp_path: Path, tattler: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Synthesis and transcription both refused by a service that echoes the key: the caller
    hears why in the carrier's voice; no log line, transcript or stored record has the key
    (nor the carrier's auth token). At INFO, as the runtime logs: the websockets client's
    DEBUG lines show the handshake's Authorization header (see the report)."""
    caplog.set_level(logging.INFO)
    keyed = {"apiKey": SECRET, "baseUrl": tattler}
    extra = {"tts": {"provider": "openai", "providers": {"openai": keyed}},
             "streaming": {"enabled": True, "providers": {"openai": keyed}}}  # fmt: skip
    async with runtime_rig(tmp_path, extra) as made:
        opened = await made.inbound()
        _, live = await started(made, opened)
        await until(lambda: live.stopped or made.record(opened.call_id).ending,
                    "the refusal was handled")  # fmt: skip
        await made.runtime.manager.drain()
        record = made.record(opened.call_id)
        made.runtime.sqlite.flush()
        dump = "\n".join(made.runtime.sqlite.db.iterdump())
        token = made.target.credentials["authToken"]
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    for secret in (SECRET, token):
        assert secret not in logged
        assert secret not in repr(record)
        assert secret not in dump
    assert "refused" in logged or "failed" in logged  # the refusal itself was logged


# --- what is left after the calls ----------------------------------------------------------------


async def test_nothing_is_left_after_streamed_calls(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """Calls that end while listening, after a carrier's stop, and while the model answers."""
    for n in range(3):
        sid = str(n + 1)
        opened = await rig.inbound(sid)
        ws, live = await started(rig, opened)
        carrier = Carrier(ws)
        await speak(ws, rig, opened.key, "hello there")
        await until(lambda n=n: rig.responder.heard[n:], "the model was asked")  # type: ignore[misc]
        if n == 1:
            await ws.send_str(stop())
        await rig.ended(opened, sid)
        await until(lambda lv=live: lv.stopped and not lv._tasks, "the conversation's tasks")  # type: ignore[misc]
        await ws.close()
        await carrier.aclose()
    runtime = rig.runtime
    assert runtime.streams is not None and runtime.conversations is not None
    await runtime.manager.drain()
    await until(lambda: not runtime.streams.sessions and not runtime.streams._open, "sockets")  # type: ignore[union-attr]
    assert runtime.conversations.conversations == {}
    assert runtime.streams._expected == {} and len(runtime.streams.tokens) == 0
    assert runtime.conversations._ahead == {} and runtime.conversations._ahead_text == {}
    await until(lambda: not conversation._CLOSING, "transcribers closed")
    assert failures(caplog) == []
