"""The media-stream endpoint on the real webhook server (AppRunner + GuardedSite), driven by
WebSocket clients: tokens, limits, the frame cap, the watchdog, and frames both ways on each
carrier's protocol. Each outcome is awaited generously; no test asserts a duration."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, WSMsgType, web

from tests.runtime.support import Flows, StandIn
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager import CallManager, ManagerSettings
from voicecall.runtime.media import plivo, telnyx, twilio
from voicecall.runtime.media import protocol as p
from voicecall.runtime.media.marks import MarkOutcome
from voicecall.runtime.media.streams import (
    StreamClosed,
    StreamEndpoint,
    StreamSession,
    StreamSettings,
    StreamSink,
)
from voicecall.runtime.media.tokens import StreamTokens
from voicecall.runtime.server import GuardedSite, ServerSettings, make_app
from voicecall.runtime.store import SQLiteStore

SERVER = ("keepalive_timeout_s", "header_timeout_s")  # GuardedSite's, not the endpoint's
GENEROUS_S = 20.0  # how long an outcome may take on a loaded machine (not a speed limit)
AUDIO = bytes(range(160))
B64 = base64.b64encode(AUDIO).decode()


@dataclass
class Sink:
    audio: list[bytes] = field(default_factory=list)
    marks: list[MarkOutcome] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    stopped: asyncio.Future[str] = field(default_factory=asyncio.Future)
    session: StreamSession | None = None

    def on_audio(self, ulaw: bytes) -> None:
        self.audio.append(ulaw)

    def on_mark(self, outcome: MarkOutcome) -> None:
        self.marks.append(outcome)

    def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    def on_stop(self, reason: str) -> None:
        self.stopped.set_result(reason)


@dataclass
class Served:
    endpoint: StreamEndpoint
    url: str
    http: aiohttp.ClientSession
    runner: web.AppRunner

    def expect(self, call_id: str) -> tuple[str, Sink]:
        sink = Sink()

        def open_sink(session: StreamSession) -> StreamSink:
            sink.session = session
            return sink

        return self.endpoint.expect(call_id, open_sink), sink

    async def connect(self) -> aiohttp.ClientWebSocketResponse:
        return await self.http.ws_connect(self.url, max_msg_size=0)


@pytest.fixture
async def served(tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    made: list[Served] = []

    async def serve(protocol: p.StreamProtocol = twilio.PROTOCOL,
                    tokens: StreamTokens | None = None, **limits: Any) -> Served:  # fmt: skip
        settings = ManagerSettings(provider="twilio", from_number="+15550000000",
                                   webhook_base="http://t/voice/webhook")  # fmt: skip
        manager = CallManager(settings, SQLiteStore(tmp_path / f"c{len(made)}.sqlite"),
                              StandIn(), Flows(), VirtualClock())  # fmt: skip
        server = ServerSettings(**{k: limits.pop(k) for k in list(limits) if k in SERVER})
        endpoint = StreamEndpoint(protocol, StreamSettings(**limits), tokens)
        runner = web.AppRunner(make_app(manager, server, endpoint), access_log=None)
        await runner.setup()
        site = GuardedSite(runner, "127.0.0.1", 0, server)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/voice/stream"
        made.append(Served(endpoint, url, aiohttp.ClientSession(), runner))
        return made[-1]

    yield serve
    for s in made:
        await s.http.close()
        await s.runner.cleanup()


def twilio_start(call_id: str, token: str) -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
                       "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1",
                                 "tracks": ["inbound"],
                                 "customParameters": {"callId": call_id, "token": token},
                                 "mediaFormat": {"encoding": "audio/x-mulaw",
                                                 "sampleRate": 8000, "channels": 1}}})  # fmt: skip


def twilio_media(seq: int) -> str:
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": "MZ1",
                       "media": {"track": "inbound", "chunk": str(seq), "timestamp": "0",
                                 "payload": B64}})  # fmt: skip


async def closing(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, str]:
    """Reads until the server closes the socket: its close code and reason."""
    while True:
        message = await asyncio.wait_for(ws.receive(), GENEROUS_S)
        if message.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.CLOSING):
            return ws.close_code, str(message.extra or "")


async def frame(ws: aiohttp.ClientWebSocketResponse) -> Any:
    message = await asyncio.wait_for(ws.receive(), GENEROUS_S)
    assert message.type == WSMsgType.TEXT, message
    return json.loads(message.data)


async def started(served: Served, call_id: str = "call-1") -> tuple[Any, Sink]:
    token, sink = served.expect(call_id)
    ws = await served.connect()
    await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    await ws.send_str(twilio_start(call_id, token))
    for _ in range(200):  # the session exists once the server has read the start
        if sink.session is not None:
            break
        await asyncio.sleep(0.01)
    assert sink.session is not None
    return ws, sink


async def test_twilio_stream_both_ways(served: Any) -> None:
    s: Served = await served()
    ws, sink = await started(s)
    session = sink.session
    assert session is not None and session.start.call_id == "CA1"
    assert s.endpoint.sessions == {"call-1": session}
    await ws.send_str(twilio_media(2))
    await ws.send_str(json.dumps({"event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "3",
                                  "dtmf": {"track": "inbound_track", "digit": "7"}}))  # fmt: skip
    await session.send_audio(AUDIO)
    await session.mark("greeting")
    assert await frame(ws) == {"event": "media", "streamSid": "MZ1", "media": {"payload": B64}}
    assert await frame(ws) == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "greeting"}}
    await ws.send_str(json.dumps({"event": "mark", "streamSid": "MZ1", "sequenceNumber": "4",
                                  "mark": {"name": "greeting"}}))  # fmt: skip
    for _ in range(200):  # played: the caller heard the greeting
        if sink.marks:
            break
        await asyncio.sleep(0.01)
    await session.mark("reply")
    assert await session.clear() == ("reply",)  # barge-in: the reply is cut off
    await frame(ws)
    assert await frame(ws) == {"event": "clear", "streamSid": "MZ1"}
    await ws.send_str(
        json.dumps(
            {"event": "mark", "streamSid": "MZ1", "sequenceNumber": "5", "mark": {"name": "reply"}}
        )
    )  # Twilio echoes cleared marks
    await ws.send_str(json.dumps({"event": "stop", "sequenceNumber": "6", "streamSid": "MZ1",
                                  "stop": {"accountSid": "AC1", "callSid": "CA1"}}))  # fmt: skip
    assert await asyncio.wait_for(sink.stopped, GENEROUS_S) == "stopped by the carrier"
    assert sink.audio == [AUDIO] and sink.digits == ["7"]
    assert sink.marks == [MarkOutcome(name="greeting", heard=True),
                          MarkOutcome(name="reply", heard=False)]  # fmt: skip
    assert s.endpoint.sessions == {}


async def test_telnyx_stream_takes_its_token_from_client_state(served: Any) -> None:
    s: Served = await served(telnyx.PROTOCOL)
    token, sink = s.expect("call-9")
    ws = await s.connect()
    await ws.send_str('{"event":"connected","version":"1.0.0"}')
    state = telnyx.client_state({"callId": "call-9", "token": token})
    await ws.send_str(json.dumps({"event": "start", "sequence_number": "1", "stream_id": "S1",
                                  "start": {"user_id": "U", "call_control_id": "v3:x",
                                            "client_state": state,
                                            "media_format": {"encoding": "PCMU",
                                                             "sample_rate": 8000,
                                                             "channels": 1}}}))  # fmt: skip
    await ws.send_str(json.dumps({"event": "media", "sequence_number": "2", "stream_id": "S1",
                                  "media": {"track": "inbound", "chunk": "1",
                                            "timestamp": "0", "payload": B64}}))  # fmt: skip
    for _ in range(200):
        if sink.audio:
            break
        await asyncio.sleep(0.01)
    assert sink.audio == [AUDIO] and sink.session is not None
    await sink.session.clear()
    assert await frame(ws) == {"event": "clear"}
    await ws.close()
    assert await asyncio.wait_for(sink.stopped, GENEROUS_S) == "disconnected"


async def test_plivo_stream_takes_its_token_from_extra_headers(served: Any) -> None:
    s: Served = await served(plivo.PROTOCOL)
    token, sink = s.expect("call-5")
    ws = await s.connect()
    await ws.send_str(json.dumps({"event": "start", "sequenceNumber": 1,
                                  "start": {"callId": "CU1", "streamId": "ST1",
                                            "accountId": "MA1", "tracks": ["inbound"],
                                            "mediaFormat": {"encoding": "audio/x-mulaw",
                                                            "sampleRate": 8000}},
                                  "extra_headers": f"callId=call5;token={token}"}))  # fmt: skip
    await ws.send_str(json.dumps({"event": "media", "sequenceNumber": 2, "streamId": "ST1",
                                  "media": {"track": "inbound", "timestamp": "1", "chunk": 1,
                                            "payload": B64}}))  # fmt: skip
    for _ in range(200):
        if sink.audio:
            break
        await asyncio.sleep(0.01)
    assert sink.audio == [AUDIO] and sink.session is not None
    assert sink.session.call_id == "call-5"  # Plivo carried it without its hyphen
    await sink.session.send_audio(AUDIO)
    await sink.session.mark("m")
    assert (await frame(ws))["event"] == "playAudio"
    assert await frame(ws) == {"event": "checkpoint", "streamId": "ST1", "name": "m"}
    await ws.send_str('{"event":"playedStream","streamId":"ST1","name":"m"}')
    await ws.close()
    await asyncio.wait_for(sink.stopped, GENEROUS_S)
    assert sink.marks == [MarkOutcome(name="m", heard=True)]


@pytest.mark.parametrize("misuse", ["wrong", "reused", "other-call", "none-issued", "late"])
async def test_token_misuse_is_refused(served: Any, misuse: str,
                                       caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    clock = [0.0]
    s: Served = await served(tokens=StreamTokens(ttl_s=30, now=lambda: clock[0]))
    token, _ = s.expect("call-1")
    other, _ = s.expect("call-2")
    call, sent = "call-1", token
    if misuse == "wrong":
        sent = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    elif misuse == "reused":
        first, _ = await started_with(s, "call-1", token)
        await first.close()
    elif misuse == "other-call":
        sent = other
    elif misuse == "none-issued":
        call = "call-3"
    elif misuse == "late":
        clock[0] += 31
    ws = await s.connect()
    await ws.send_str(twilio_start(call, sent))
    code, _ = await closing(ws)
    assert code == WSCloseCode.POLICY_VIOLATION
    assert "media stream from 127.0.0.1 refused" in caplog.text
    assert token not in caplog.text and other not in caplog.text  # secrets never logged
    assert "call-1" not in s.endpoint.sessions or misuse == "reused"


async def started_with(s: Served, call_id: str, token: str) -> tuple[Any, None]:
    ws = await s.connect()
    await ws.send_str(twilio_start(call_id, token))
    for _ in range(200):
        if call_id in s.endpoint.sessions:
            return ws, None
        await asyncio.sleep(0.01)
    raise AssertionError("the first stream did not start")


async def test_no_start_in_time_is_closed(served: Any) -> None:
    s: Served = await served(pre_start_timeout_s=0.2)
    ws = await s.connect()
    await ws.send_str('{"event":"connected","protocol":"Call","version":"1.0.0"}')
    code, reason = await closing(ws)
    assert code == WSCloseCode.POLICY_VIOLATION and "preStartTimeoutMs" in reason


async def test_media_before_start_is_refused(served: Any) -> None:
    s: Served = await served()
    ws = await s.connect()
    await ws.send_str(twilio_media(1))
    code, reason = await closing(ws)
    assert code == WSCloseCode.POLICY_VIOLATION and "before start" in reason


async def refused_status(s: Served) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await s.connect()
    return refused.value.status


async def test_pending_streams_per_address_are_capped(served: Any) -> None:
    s: Served = await served(max_pending_per_ip=2)
    waiting = [await s.connect(), await s.connect()]
    assert await refused_status(s) == 429
    token, _ = s.expect("call-1")
    await waiting[0].send_str(twilio_start("call-1", token))  # started: no longer pending
    for _ in range(200):
        if "call-1" in s.endpoint.sessions:
            break
        await asyncio.sleep(0.01)
    third = await s.connect()
    assert not third.closed
    await waiting[1].close()
    await asyncio.sleep(0)  # let the server see it
    for _ in range(200):
        try:
            extra = await s.connect()
            break
        except aiohttp.WSServerHandshakeError:
            await asyncio.sleep(0.01)
    assert not extra.closed


async def test_pending_streams_in_all_are_capped(served: Any) -> None:
    s: Served = await served(max_pending=2, max_pending_per_ip=10)
    _kept = [await s.connect(), await s.connect()]
    assert await refused_status(s) == 503


async def test_streams_in_all_are_capped(served: Any) -> None:
    s: Served = await served(max_connections=1)
    _kept = await started(s)
    assert await refused_status(s) == 503


async def test_plain_get_is_not_an_upgrade(served: Any) -> None:
    s: Served = await served()
    async with s.http.get(s.url) as response:
        assert response.status == 400


@pytest.mark.parametrize("when", ["before start", "after start"])
async def test_an_oversize_frame_closes_the_stream(served: Any, when: str) -> None:
    s: Served = await served(max_frame=1024)
    if when == "before start":
        ws = await s.connect()
    else:
        ws, _ = await started(s)
    await ws.send_str(json.dumps({"event": "media", "pad": "x" * 2000}))
    code, _ = await closing(ws)
    assert code == WSCloseCode.MESSAGE_TOO_BIG


async def test_a_silent_stream_is_ended_by_the_watchdog(served: Any) -> None:
    s: Served = await served(inactivity_timeout_s=0.3)
    ws, sink = await started(s)
    await ws.send_str(twilio_media(2))  # frames keep it alive; then nothing
    code, _ = await closing(ws)
    assert code == WSCloseCode.INTERNAL_ERROR
    assert (await asyncio.wait_for(sink.stopped, GENEROUS_S)).startswith("inactive")
    assert sink.audio == [AUDIO]
    assert s.endpoint.sessions == {}


async def test_malformed_frames_are_skipped_and_logged_once(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    s: Served = await served()
    ws, sink = await started(s)
    for _ in range(3):
        await ws.send_str("{not json")
    await ws.send_str(twilio_media(2))
    for _ in range(200):
        if sink.audio:
            break
        await asyncio.sleep(0.01)
    assert sink.audio == [AUDIO]
    assert caplog.text.count("frame ignored") == 1


async def test_stopping_the_server_closes_streams(served: Any) -> None:
    s: Served = await served()
    ws, sink = await started(s)
    reading = asyncio.create_task(closing(ws))  # a client reads all the time
    await asyncio.wait_for(s.runner.cleanup(), GENEROUS_S)
    code, _ = await reading
    assert code == WSCloseCode.GOING_AWAY
    assert await asyncio.wait_for(sink.stopped, GENEROUS_S) == "disconnected"


async def test_connection_timers_do_not_cut_a_live_stream(served: Any) -> None:
    """GuardedSite's head and keep-alive timers are for HTTP requests, not upgraded sockets."""
    s: Served = await served(keepalive_timeout_s=0.2, header_timeout_s=0.2)
    ws, sink = await started(s)
    for seq in range(2, 12):  # well past both timers, a frame at a time
        await ws.send_str(twilio_media(seq))
        await asyncio.sleep(0.1)
    assert sink.session is not None
    await sink.session.send_audio(AUDIO)
    assert (await frame(ws))["event"] == "media"
    assert not ws.closed and not sink.stopped.done()
    assert len(sink.audio) == 10


async def test_a_carrier_that_stops_reading_is_dropped(served: Any) -> None:
    s: Served = await served(send_timeout_s=0.3)
    _ws, sink = await started(s)  # the client never reads from here on
    assert sink.session is not None
    with pytest.raises(StreamClosed, match="not reading"):
        for _ in range(1_000_000):  # bounded: buffers fill long before this
            await sink.session.send_audio(AUDIO * 50)
    assert await asyncio.wait_for(sink.stopped, GENEROUS_S) == "disconnected"
    assert s.endpoint.sessions == {}
