"""The mock carrier's media streams, against the real stream endpoint (``StreamEndpoint``) on a
small aiohttp server: for each carrier, the stream opening the bot serves, the token, the
caller's voice (loud enough for the VAD), captions, the bot's audio played out, marks, clears,
barge-in, keys and hang-up; a wrong token; a stream ended by the bot from outside; idleness.

Outcomes are awaited generously; no test asserts how long anything took (the only time checks
are lower bounds that follow from playing audio at its own speed).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.media import telnyx as telnyx_media
from voicecall.runtime.media.codec import encode_array
from voicecall.runtime.media.marks import MarkOutcome
from voicecall.runtime.media.streams import (
    PROTOCOLS,
    StreamEndpoint,
    StreamSession,
    StreamSink,
    stream_key,
)
from voicecall.runtime.media.vad import Vad, VadEvent
from voicecall.runtime.sim.carrier import MockCall, MockCarrier, clips
from voicecall.runtime.sim.script import PATIENT_REPLIES, Script, Step

from .carrier_support import Bot, Hit, rest

GENEROUS_S = 20.0  # how long an outcome may take on a loaded machine (not a speed limit)
TO, FROM = "+15550001111", "+15550002222"
CALL_ID = "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
KEY = stream_key(CALL_ID)
PROVIDERS = ("twilio", "plivo", "telnyx")


def tone(ms: int, dbfs: float = -20.0) -> bytes:
    """The bot's "speech": a 440 Hz tone, μ-law."""
    n = ms * 8
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(2)
    pcm = (amplitude * np.sin(2 * math.pi * 440 * np.arange(n) / 8000)).astype(np.int16)
    return encode_array(pcm).tobytes()


GREETING = tone(200)
REPLY = tone(1000)


@dataclass
class BotSide:
    """The runtime's side of the stream: a StreamSink that runs the VAD over the caller's
    audio and reacts as a streamed conversation would (greet, answer, clear on barge-in)."""

    talk: bool = True  # greet and answer (else only what the test sends)
    session: StreamSession | None = None
    vad: Vad = field(default_factory=Vad)
    audio: list[bytes] = field(default_factory=list)
    speech: list[tuple[VadEvent, float]] = field(default_factory=list)
    marks: list[tuple[MarkOutcome, float]] = field(default_factory=list)
    sent: dict[str, float] = field(default_factory=dict)  # mark name -> when its audio was sent
    digits: list[str] = field(default_factory=list)
    stopped: asyncio.Future[str] = field(default_factory=asyncio.Future)
    opened: asyncio.Event = field(default_factory=asyncio.Event)
    idle_at_speech: list[bool] = field(default_factory=list)
    carrier: MockCarrier | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    playing_reply: bool = False

    def open(self, session: StreamSession) -> StreamSink:
        self.session = session
        self.opened.set()
        if self.talk:
            self.spawn(self.say("greet", GREETING))
        return self

    def spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def say(self, name: str, audio: bytes) -> None:
        assert self.session is not None
        self.sent[name] = asyncio.get_running_loop().time()
        for i in range(0, len(audio), 160):
            await self.session.send_audio(audio[i : i + 160])
        await self.session.mark(name)

    async def clear(self) -> None:
        assert self.session is not None
        self.playing_reply = False
        await self.session.clear()

    def on_audio(self, ulaw: bytes) -> None:
        self.audio.append(ulaw)
        event = self.vad.feed_ulaw(ulaw)
        if event is None:
            return
        self.speech.append((event, asyncio.get_running_loop().time()))
        if self.carrier is not None:
            self.idle_at_speech.append(self.carrier.idle)
        starts = sum(1 for e, _ in self.speech if e is VadEvent.SPEECH_START)
        if event is VadEvent.SPEECH_END and starts == 1 and self.talk:
            self.playing_reply = True
            self.spawn(self.say("reply", REPLY))
        elif event is VadEvent.SPEECH_START and self.playing_reply:
            self.spawn(self.clear())  # barge-in

    def on_mark(self, outcome: MarkOutcome) -> None:
        self.marks.append((outcome, asyncio.get_running_loop().time()))
        if outcome.name == "reply":
            self.playing_reply = False

    def on_dtmf(self, digit: str) -> None:
        self.digits.append(digit)

    def on_stop(self, reason: str) -> None:
        if not self.stopped.done():
            self.stopped.set_result(reason)


@dataclass
class Harness:
    carrier: MockCarrier
    bot: Bot
    endpoint: StreamEndpoint
    ws_url: str
    side: BotSide
    token: str = ""

    def expect(self) -> str:
        self.token = self.endpoint.expect(CALL_ID, self.side.open)
        return self.token

    async def place(self) -> MockCall:
        path = "/telnyx" if self.carrier.provider == "telnyx" else "/voice"
        return await self.carrier.place_inbound(FROM, TO, self.bot.url(path, kind="answer"))

    async def ended(self, call: MockCall) -> MockCall:
        return await self.carrier.wait_ended(call.provider_call_id, timeout=GENEROUS_S)


def twiml_stream(ws_url: str, token: str, action: str) -> str:
    return (f'<Response><Connect action="{action}" method="POST"><Stream url="{ws_url}">'
            f'<Parameter name="callId" value="{KEY}"/><Parameter name="token" value="{token}"/>'
            "</Stream></Connect></Response>")  # fmt: skip


def plivo_stream(ws_url: str, token: str, after: str) -> str:
    return ('<Response><Stream bidirectional="true" keepCallAlive="true" audioTrack="inbound" '
            f'contentType="audio/x-mulaw;rate=8000" extraHeaders="callId={KEY},token={token}">'
            f'{ws_url}</Stream><Redirect method="POST">{after}</Redirect></Response>')  # fmt: skip


def streaming_start(ws_url: str, token: str) -> dict[str, str]:
    state = telnyx_media.client_state({"callId": KEY, "token": token, "c": CALL_ID})
    return {"stream_url": ws_url, "stream_track": "inbound_track", "stream_codec": "PCMU",
            "stream_bidirectional_mode": "rtp", "stream_bidirectional_codec": "PCMU",
            "client_state": state}  # fmt: skip


def responder(provider: str, get: Callable[[], Harness], token: str | None = None) -> Any:
    """The bot's webhooks: the stream opening (with the issued token, or ``token``), and after
    the stream a hang-up."""

    async def handle(hit: Hit) -> str:
        h = get()
        if provider == "telnyx":
            return await telnyx_react(h, hit, token)
        if hit.kind == "answer":
            issued = h.expect() if token is None else (h.expect(), token)[1]
            after = h.bot.url("/voice", kind="after")
            if provider == "twilio":
                return twiml_stream(h.ws_url, issued, after)
            return plivo_stream(h.ws_url, issued, after)
        if hit.kind == "after":
            return "<Response><Hangup/></Response>"
        return ""

    return handle


async def telnyx_react(h: Harness, hit: Hit, token: str | None) -> str:
    event, ccid = hit.event, hit.payload["call_control_id"]
    commands: list[tuple[str, dict[str, Any]]] = []
    if event == "call.initiated":
        commands = [("answer", {})]
    elif event == "call.answered":
        issued = h.expect() if token is None else (h.expect(), token)[1]
        commands = [("streaming_start", streaming_start(h.ws_url, issued))]
    elif event in ("streaming.stopped", "streaming.failed"):
        commands = [("hangup", {})]
    async with rest(h.carrier) as client:
        for action, body in commands:
            async with client.post(f"/v2/calls/{ccid}/actions/{action}", json=body) as response:
                assert response.status == 200, await response.text()
    return ""


@asynccontextmanager
async def harness(provider: str, caller: Script, *, token: str | None = None,
                  talk: bool = True) -> AsyncIterator[Harness]:  # fmt: skip
    endpoint = StreamEndpoint(PROTOCOLS[provider])
    app = web.Application()
    app.router.add_get("/voice/stream", endpoint.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    carrier = MockCarrier(provider, VirtualClock())
    carrier.script = caller
    # Quick turns keep the test short; the behaviour is the same at the defaults.
    carrier.stream_reply_pause_s = 0.1
    carrier.stream_interrupt_after_s = 0.15
    carrier.stream_prompt_wait_s = 0.2
    carrier.stream_dtmf_gap_s = 0.02
    side = BotSide(talk=talk, carrier=carrier)
    holder: list[Harness] = []
    bot = Bot(responder(provider, lambda: holder[0], token))
    await carrier.start()
    await bot.start()
    h = Harness(carrier, bot, endpoint, f"ws://{host}:{port}/voice/stream", side)
    holder.append(h)
    try:
        yield h
    finally:
        await carrier.stop()
        await bot.stop()
        await endpoint.shutdown()
        await runner.cleanup()
        for task in side.tasks:
            task.cancel()
    assert carrier.errors == []


def steps(*items: tuple[str, str] | str) -> Script:
    return Script(caller=tuple(Step(action=i) if isinstance(i, str) else
                               Step(action=i[0], value=i[1]) for i in items))  # fmt: skip


# --- a whole conversation on each carrier -------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_streamed_conversation(provider: str) -> None:
    caller = steps("answer", ("say", "yes"), ("interrupt", "stop"), ("press", "12"), "hangup")
    async with harness(provider, caller) as h:
        call = await h.place()
        call = await h.ended(call)
        reason = await asyncio.wait_for(h.side.stopped, GENEROUS_S)
        side, carrier = h.side, h.carrier
    record = call.streams[0]
    # The token passed: the bot's sink was opened with the call's key.
    assert side.session is not None and side.session.start.params["callId"] == KEY
    assert side.session.start.call_id == call.provider_call_id
    assert side.session.start.stream_id == record.stream_id
    # The caller's two utterances were speech to the VAD; the captions say what they were.
    starts = [t for e, t in side.speech if e is VadEvent.SPEECH_START]
    assert len(starts) == 2, side.speech
    assert [u.text for u in record.utterances] == ["yes", "stop"]
    assert carrier.captions.next(KEY) == "yes" and carrier.captions.next(KEY) == "stop"
    # Every frame sent arrived (one may be cut off by the stop as it is counted).
    assert 0 <= record.frames_sent - len(side.audio) <= 1 and len(side.audio) > 40
    # The bot's audio was recorded as sent; the greeting's mark came back once it had played.
    assert call.stream_audio.startswith(GREETING) and len(record.arrivals) >= 11
    greet, greet_at = side.marks[0]
    assert greet == MarkOutcome(name="greet", heard=True)
    assert greet_at - side.sent["greet"] >= len(GREETING) / 8000 - 0.02
    # The caller spoke after the greeting (polite) and over the reply (barge-in) ...
    first, second = record.utterances
    assert not first.over_bot and second.over_bot
    # ... and the clear dropped what was still queued; the reply's mark was cut off.
    assert len(record.clears) == 1 and record.clears[0].dropped_bytes > 0
    assert record.played_bytes < len(GREETING) + len(REPLY)
    if provider == "plivo":
        assert "reply" not in record.marks  # Plivo answers clearedAudio instead
        assert record.clears[0].cut_marks == ("reply",)
    else:
        assert MarkOutcome(name="reply", heard=False) in [m for m, _ in side.marks]
    assert side.digits == ["1", "2"] and record.dtmf == ["1", "2"]
    # The caller hung up: a stop frame (Plivo: the socket closes), the call ended by the caller.
    assert reason == ("disconnected" if provider == "plivo" else "stopped by the carrier")
    assert record.ended == "hangup" and call.end_reason == "hangup-user"
    assert record.unknown == []  # every frame the bot sent was the carrier's protocol
    whats = [(e.who, e.what) for e in call.timeline if e.what != "status"]
    assert whats[-2:] == [("caller", "hangup"), ("carrier", "stream-end")]
    assert ("caller", "interrupt") in whats and ("bot", "clear") in whats
    if provider == "telnyx":
        events = [hit.event for hit in h.bot.hits]
        assert events == ["call.initiated", "call.answered", "streaming.started",
                          "streaming.stopped", "call.hangup"]  # fmt: skip
        started = h.bot.hits[2].payload
        assert started["stream_url"] == h.ws_url and started["stream_id"] == record.stream_id
        assert telnyx_media.client_state_params(started["client_state"])["callId"] == KEY


# --- refusals and streams the bot ends -------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_wrong_token_is_refused_and_the_call_goes_on(provider: str) -> None:
    async with harness(provider, steps("answer", ("say", "yes")), token="wrong") as h:
        call = await h.ended(await h.place())
        hits = list(h.bot.hits)
    record = call.streams[0]
    assert record.refused and record.ended == "refused" and record.close_code == 1008
    assert h.side.session is None and not record.utterances
    # What the carrier does once the stream is over: the Connect action (Twilio), the next
    # element (Plivo), streaming.stopped (Telnyx); the bot then hangs up.
    if provider == "telnyx":
        assert [hit.event for hit in hits][-2:] == ["streaming.stopped", "call.hangup"]
    else:
        assert [hit.kind for hit in hits] == ["answer", "after"]
    assert call.end_reason == "hangup-bot"


async def test_twilio_connect_action_runs_when_the_bot_closes_the_stream() -> None:
    async with harness("twilio", steps("answer", "silence"), talk=False) as h:
        call = await h.place()
        await asyncio.wait_for(h.side.opened.wait(), GENEROUS_S)
        assert h.side.session is not None
        await h.side.session.close()
        call = await h.ended(call)
    assert call.streams[0].ended == "closed-by-bot" and call.streams[0].close_code == 1000
    assert [hit.kind for hit in h.bot.hits] == ["answer", "after"]
    connect = h.bot.hits[1].form
    assert connect["CallSid"] == call.provider_call_id and connect["CallStatus"] == "in-progress"


async def test_twilio_redirect_ends_the_stream_with_a_stop() -> None:
    async with harness("twilio", steps("answer", "silence"), talk=False) as h:
        call = await h.place()
        await asyncio.wait_for(h.side.opened.wait(), GENEROUS_S)
        path = f"/2010-04-01/Accounts/{h.carrier.credentials['accountSid']}/Calls/"
        twiml = "<Response><Say>Moved on</Say><Hangup/></Response>"
        async with rest(h.carrier) as client:
            response = await client.post(f"{path}{call.provider_call_id}.json",
                                         data={"Twiml": twiml})  # fmt: skip
            assert response.status == 200
        reason = await asyncio.wait_for(h.side.stopped, GENEROUS_S)
        call = await h.ended(call)
    assert reason == "stopped by the carrier" and call.streams[0].ended == "redirect"
    assert call.said() == ["Moved on"] and call.end_reason == "hangup-bot"
    assert [hit.kind for hit in h.bot.hits] == ["answer"]  # no Connect action after a redirect


async def test_telnyx_streaming_stop_sends_stop_and_streaming_stopped() -> None:
    async with harness("telnyx", steps("answer", "silence"), talk=False) as h:
        call = await h.place()
        await asyncio.wait_for(h.side.opened.wait(), GENEROUS_S)
        async with rest(h.carrier) as client:
            url = f"/v2/calls/{call.provider_call_id}/actions/streaming_stop"
            async with client.post(url, json={}) as response:
                assert response.status == 200
        reason = await asyncio.wait_for(h.side.stopped, GENEROUS_S)
        call = await h.ended(call)
    assert reason == "stopped by the carrier" and call.streams[0].ended == "streaming_stop"
    assert [hit.event for hit in h.bot.hits][-2:] == ["streaming.stopped", "call.hangup"]


async def test_plivo_transfer_ends_the_stream_and_runs_the_new_xml() -> None:
    async with harness("plivo", steps("answer", "silence"), talk=False) as h:
        call = await h.place()
        await asyncio.wait_for(h.side.opened.wait(), GENEROUS_S)
        path = f"/v1/Account/{h.carrier.credentials['authId']}/Call/{call.provider_call_id}/"
        async with rest(h.carrier) as client:
            body = {"legs": "aleg", "aleg_url": h.bot.url("/voice", kind="after")}
            async with client.post(path, json=body) as response:
                assert response.status == 202
        reason = await asyncio.wait_for(h.side.stopped, GENEROUS_S)
        call = await h.ended(call)
    assert reason == "disconnected"  # Plivo has no stop frame: the socket closes
    assert call.streams[0].ended == "transfer" and call.end_reason == "hangup-bot"
    assert [hit.kind for hit in h.bot.hits] == ["answer", "after"]


async def test_telnyx_hangup_stops_the_stream_before_call_hangup() -> None:
    async with harness("telnyx", steps("answer", "silence"), talk=False) as h:
        call = await h.place()
        await asyncio.wait_for(h.side.opened.wait(), GENEROUS_S)
        async with rest(h.carrier) as client:
            url = f"/v2/calls/{call.provider_call_id}/actions/hangup"
            async with client.post(url, json={}) as response:
                assert response.status == 200
        reason = await asyncio.wait_for(h.side.stopped, GENEROUS_S)
        call = await h.ended(call)
    assert reason == "stopped by the carrier" and call.streams[0].ended == "call-ended"
    assert [hit.event for hit in h.bot.hits][-2:] == ["streaming.stopped", "call.hangup"]
    # The webhooks after streaming_start carry its client_state (the stream's parameters).
    state = h.bot.hits[-1].payload["client_state"]
    assert telnyx_media.client_state_params(state)["callId"] == KEY


@pytest.mark.parametrize("provider", ["twilio", "telnyx"])
async def test_a_stream_that_cannot_connect(provider: str) -> None:
    async with harness(provider, steps("answer")) as h:
        h.ws_url = "ws://127.0.0.1:9/voice/stream"  # nothing listens there
        call = await h.ended(await h.place())
    record = call.streams[0]
    assert record.ended == "connect-failed" and record.error and record.opened_at is None
    if provider == "telnyx":
        failed = h.bot.of("streaming.failed")[0].payload
        assert failed["failure_reason"] == record.error
        assert failed["stream_params"]["stream_url"] == record.url
    else:
        assert [hit.kind for hit in h.bot.hits] == ["answer", "after"]


# --- idleness ------------------------------------------------------------------------------


async def test_busy_while_the_caller_talks_idle_while_it_waits_silently() -> None:
    async with harness("plivo", steps("answer", ("say", "yes"), "silence"), talk=False) as h:
        call = await h.place()
        await asyncio.wait_for(h.side.opened.wait(), GENEROUS_S)
        async with asyncio.timeout(GENEROUS_S):
            while not (h.carrier.idle and call.entries("caller", "silence")):
                await asyncio.sleep(0.01)
        assert call.streams[0].closed_at is None  # still open, the caller waiting on the bot
        # The bot speaks again: the silent caller's turn comes round (no step left: hangs up).
        assert h.side.session is not None
        await h.side.say("again", GREETING)
        call = await h.ended(call)
    assert h.side.idle_at_speech and not any(h.side.idle_at_speech)
    assert call.streams[0].ended == "hangup" and call.end_reason == "hangup-user"
    assert call.entries("caller", "hangup")[0].detail == {}


async def test_busy_throughout_when_told_so() -> None:
    async with harness("twilio", steps("answer", "silence"), talk=False) as h:
        h.carrier.stream_idle_while_waiting = False
        call = await h.place()
        await asyncio.wait_for(h.side.opened.wait(), GENEROUS_S)
        async with asyncio.timeout(GENEROUS_S):
            while not call.entries("caller", "silence"):
                await asyncio.sleep(0.01)
        for _ in range(5):
            await asyncio.sleep(0.02)
            assert not h.carrier.idle
        assert h.side.session is not None
        await h.side.session.close()
        call = await h.ended(call)
    assert call.streams[0].ended == "closed-by-bot"


async def test_a_patient_callee_answers_only_when_the_bot_spoke() -> None:
    patient = Script(caller=(Step(action="answer"),), patient=True)
    async with harness("twilio", patient, talk=False) as h:
        call = await h.place()
        async with asyncio.timeout(GENEROUS_S):
            while not call.entries("caller", "silence"):  # the bot said nothing yet
                await asyncio.sleep(0.01)
            await h.side.say("hello", GREETING)
            while not call.streams[0].utterances or call.streams[0].utterances[0].ended is None:
                await asyncio.sleep(0.01)
        assert h.side.session is not None
        await h.side.session.close()
        call = await h.ended(call)
    assert [u.text for u in call.streams[0].utterances] == [PATIENT_REPLIES[0]]
    assert call.end_reason == "hangup-bot"  # the Connect action's <Hangup/>


# --- the caller's voice -------------------------------------------------------------------------


def test_clips_are_the_generators_output_and_sound_like_speech() -> None:
    for duration in clips.DURATIONS_MS:
        shipped = clips.clip(duration)
        assert len(shipped) == duration * 8
        fresh = clips.synthesize(duration)
        differing = sum(a != b for a, b in zip(shipped, fresh, strict=True))
        assert differing <= len(shipped) // 1000, f"rerun python -m {clips.__name__}"
        vad = Vad()
        frames = [shipped[i : i + 160] for i in range(0, len(shipped), 160)]
        events = [vad.feed_ulaw(f) for f in frames + [b"\xff" * 160] * 20]
        assert [e for e in events if e] == [VadEvent.SPEECH_START, VadEvent.SPEECH_END]
        assert events.index(VadEvent.SPEECH_START) <= 3


def test_the_clip_follows_the_length_of_the_words() -> None:
    assert clips.duration_for("yes") == 400
    assert clips.duration_for("I would like a table") == 1500
    assert clips.duration_for("x" * 200) == 2500
    assert len(clips.frames_for("hello there")) == 700 // 20
