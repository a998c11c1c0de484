"""Realtime conversations (``converse: {driver: realtime}``) end to end.

The mock carrier opens the stream the compiled flow asks for and plays the caller's words as
audio; the real realtime bridge (the official SDK) speaks to a local fake of the OpenAI
Realtime API, which hears the caller with its own voice-activity detector, reads their words
from the carrier's captions and answers with scripted responses (a tone with a transcript,
and function calls). Nothing is stubbed inside the runtime.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_realtime_voice import API_KEY, FakeRealtimeVoice, Reply
from voicecall.dsl.catalog import Catalog
from voicecall.runtime.app import Runtime
from voicecall.runtime.sim.captions import Captions
from voicecall.runtime.sim.flowtest import PROVIDERS
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.sim.simulate import Simulation, Simulator
from voicecall.runtime.state import TranscriptLine
from voicecall.runtime.voice.conversation import STT_UNAVAILABLE

FLOWS = Path(__file__).parent / "flows"
GREETING = "Hello, this is the concierge of the Harbour Hotel. How can I help?"


@pytest.fixture
async def fake() -> AsyncIterator[FakeRealtimeVoice]:
    async with FakeRealtimeVoice(captions=Captions()) as server:
        yield server


def config(
    fake: FakeRealtimeVoice, api_key: str = API_KEY, streaming: bool = False
) -> dict[str, Any]:
    """The realtime service and nothing else: `streaming.enabled` is off (a realtime
    conversation streams all the same), the carrier's voice for what the flow says."""
    realtime = {"providers": {"openai": {"apiKey": api_key, "baseUrl": fake.base_url,
                                         "silenceDurationMs": 300}}}  # fmt: skip
    return {"realtime": realtime, **({"streaming": {"enabled": True}} if streaming else {})}


async def run(
    provider: str, flow: str, script: Script, fake: FakeRealtimeVoice,
    during: Callable[[Runtime], Awaitable[None]] | None = None, **kw: Any,
) -> tuple[Simulation, Any]:  # fmt: skip
    """One call (``during`` runs beside it); the simulation and the carrier's record."""
    async with Simulator(provider, catalog=Catalog([FLOWS]), config=config(fake, **kw)) as sim:
        assert sim.runtime is not None
        carrier = sim.runtime.carrier
        assert fake.captions is not None
        carrier.captions = fake.captions  # the fake hears what the caller says
        beside = asyncio.ensure_future(during(sim.runtime)) if during is not None else None
        try:
            result = await sim.call(flow, script=script)
        finally:
            if beside is not None:
                beside.cancel()
        if beside is not None and not beside.cancelled():
            beside.result()  # its failure fails the test
        return result, list(carrier.calls.values())[-1]


def lines(sim: Simulation, speaker: str) -> list[TranscriptLine]:
    assert sim.record is not None
    return [line for line in sim.record.transcript if line.speaker == speaker]


def texts(sim: Simulation, speaker: str) -> list[str]:
    return [line.text for line in lines(sim, speaker)]


def output(fake: FakeRealtimeVoice, index: int) -> Any:
    return json.loads(fake.function_outputs[index]["output"])


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_realtime_call(provider: str, fake: FakeRealtimeVoice) -> None:
    """The model greets, hears the caller, answers, and ends the call with a farewell that is
    heard before the hangup; both sides are in the transcript."""
    fake.replies = [
        Reply(say=GREETING, audio_ms=600),
        Reply(say="Yes, every room looks over the harbour.", audio_ms=500),
        Reply(say="Goodbye!", audio_ms=400, tool="end_call", arguments={"farewell": "Goodbye!"}),
    ]
    script = Script(caller=(Step(action="answer"),
                            Step(action="say", value="Do you have a room with a view"),
                            Step(action="say", value="Lovely, that is all")))  # fmt: skip
    sim, call = await run(provider, "concierge-realtime", script, fake)
    assert sim.error == ""
    assert sim.end_reason == "hangup-bot"
    # Both sides, in order: the caller's words as the service transcribed them, the model's
    # as it said them, none cut off.
    assert sim.record is not None
    assert [(line.speaker, line.text) for line in sim.record.transcript] == [
        ("bot", GREETING), ("user", "Do you have a room with a view"),
        ("bot", "Yes, every room looks over the harbour."), ("user", "Lovely, that is all"),
        ("bot", "Goodbye!")]  # fmt: skip
    assert all(line.source == "realtime" for line in lines(sim, "bot"))
    assert all(line.block == "talk" for line in lines(sim, "user"))
    # The greeting was asked of the model, with the flow's instructions in the session.
    (update,) = fake.session_updates
    assert "You are the concierge of the Harbour Hotel." in update["instructions"]
    assert GREETING in fake.response_creates[0]["instructions"]
    # All three responses reached the carrier as audio (600 + 500 + 400 ms of μ-law) …
    (stream,) = call.streams
    assert len(stream.audio) == 1500 * 8
    assert stream.media_frames * 160 == len(stream.audio)  # in 20 ms frames
    assert stream.clears == [] and stream.unknown == []
    # … and were played out to the caller, each marked; the farewell was heard to its end
    # before the hangup.
    assert stream.played_bytes == 1500 * 8
    assert len(stream.marks) == 3
    assert fake.turns == 2 and fake.appended_bytes > 8000


# One carrier: the stream protocols are covered each by the streamed-call tests.
@pytest.mark.parametrize("provider", ["telnyx"])
async def test_the_caller_cuts_a_long_reply_short(provider: str, fake: FakeRealtimeVoice) -> None:
    """Speech over the model's reply clears the carrier's audio at once; the model is told how
    much of its reply was heard (a truncate), and the transcript marks the reply cut off."""
    spa = "Our spa has a pool, a sauna and six treatment rooms, open every day from seven."
    fake.replies = [
        Reply(say=GREETING, audio_ms=400),
        Reply(say=spa, audio_ms=3000, hold_after_ms=2000),  # held until the caller speaks
        Reply(say="Goodbye!", audio_ms=300, tool="end_call", arguments={"farewell": "Goodbye!"}),
    ]
    script = Script(caller=(Step(action="answer"), Step(action="say", value="And the spa"),
                            Step(action="interrupt", value="Sorry, I must go")))  # fmt: skip
    sim, call = await run(provider, "concierge-realtime", script, fake)
    assert sim.error == ""
    assert sim.end_reason == "hangup-bot"
    assert sim.record is not None
    assert [(line.speaker, line.text) for line in sim.record.transcript] == [
        ("bot", GREETING), ("user", "And the spa"), ("bot", spa),
        ("user", "Sorry, I must go"), ("bot", "Goodbye!")]  # fmt: skip
    greeting, reply, farewell = lines(sim, "bot")
    assert greeting.source == "realtime" and farewell.source == "realtime"
    assert reply.source == "realtime; cut off"
    # The carrier was told to drop what it still had of the reply, once.
    (stream,) = call.streams
    assert stream.utterances[-1].over_bot
    (clear,) = stream.clears
    assert clear.dropped_bytes > 0
    # The caller heard the reply for about 0.3 s before speaking up (the carrier's interrupt
    # comes 0.3 s in) and the model was told how much, give or take the few frames the
    # carrier had in hand; the greeting before it, heard in full, was not truncated.
    heard_ms = stream.played_bytes // 8 - 400 - 300  # less the greeting and the farewell
    assert 200 <= heard_ms <= 1000
    (truncate,) = fake.truncates
    assert truncate["content_index"] == 0
    assert abs(truncate["audio_end_ms"] - heard_ms) <= 100


# One carrier: the stream protocols are covered each by the streamed-call tests.
@pytest.mark.parametrize("provider", ["plivo"])
async def test_collected_values_hand_the_call_back_to_the_flow(
    provider: str, fake: FakeRealtimeVoice
) -> None:
    """finish_conversation with values the collect rejects answers the model with what to fix;
    its second try is saved as flow variables, the stream is left and the flow says them."""
    fake.replies = [
        Reply(say="Hello, this is Luigi's. For which day, and for how many?", audio_ms=400),
        Reply(tool="finish_conversation", arguments={"date": "next Friday", "party": 4}),
        Reply(say="Lovely, one moment.", audio_ms=500, tool="finish_conversation",
              arguments={"date": "2026-01-09", "party": 4}),
    ]  # fmt: skip
    # The caller waits after their answer (it does not hang up once the model's audio ends).
    script = Script(caller=(Step(action="answer"), Step(action="say", value="Friday, four"),
                            Step(action="silence")))  # fmt: skip
    sim, call = await run(provider, "booking-realtime", script, fake)
    assert sim.error == ""
    assert sim.record is not None
    # The model was offered the finishing tool, the collected values as its parameters.
    (update,) = fake.session_updates
    finish = next(t for t in update["tools"] if t["name"] == "finish_conversation")
    assert set(finish["parameters"]["properties"]) == {"date", "party"}
    # The first try was answered with what to fix (the model then tried again) …
    (refused,) = fake.function_outputs
    assert "date" in output(fake, 0)["error"]
    assert refused["call_id"]
    # … the second went to the flow.
    assert sim.record.visited == ["book", "confirm"]
    assert sim.record.scopes[""]["party"] == 4
    assert sim.record.scopes[""]["date"] == "2026-01-09"
    # The model's last words were heard to the end before the flow went on to say its own.
    assert [(line.speaker, line.text) for line in sim.record.transcript] == [
        ("bot", "Hello, this is Luigi's. For which day, and for how many?"),
        ("user", "Friday, four"), ("bot", "Lovely, one moment."),
        ("bot", "Thank you. A table for 4 on 2026-01-09. Goodbye.")]  # fmt: skip
    assert lines(sim, "bot")[1].source == "realtime"
    assert sim.end_reason == "hangup-bot"
    (stream,) = call.streams
    assert stream.played_bytes == len(stream.audio) == (400 + 500) * 8
    assert stream.ended in ("redirect", "transfer", "streaming_stop")


WRONG_KEY = "sk-wrong-key-for-the-realtime-service"


@pytest.mark.parametrize(
    ("provider", "failure"),
    [("twilio", "wrong key"), ("plivo", "refused"), ("telnyx", "down")],
)
async def test_a_realtime_service_that_refuses_is_apologized_for(
    provider: str, failure: str, fake: FakeRealtimeVoice, caplog: pytest.LogCaptureFixture
) -> None:
    """Wrong key, a refused session or no service at all: the caller hears an apology in the
    carrier's voice and the call ends; one log line says why, without the key."""
    kw: dict[str, Any] = {}
    if failure == "wrong key":
        kw["api_key"] = WRONG_KEY
    elif failure == "refused":
        fake.refuse_update = "invalid_value"
    else:
        await fake.__aexit__(None, None, None)  # nothing listens there any more
    script = Script(caller=(Step(action="answer"), Step(action="say", value="Hello?")))
    sim, call = await run(provider, "concierge-realtime", script, fake, **kw)
    assert sim.error == ""
    assert sim.end_reason == "hangup-bot"
    assert sim.said == [STT_UNAVAILABLE]
    (stream,) = call.streams
    assert stream.audio == b""  # the model never spoke: nothing but the apology was said
    assert stream.ended in ("redirect", "transfer", "streaming_stop")
    refusals = [r for r in caplog.records if "realtime session did not start" in r.getMessage()]
    assert len(refusals) == 1
    assert not any(r.exc_info for r in caplog.records)
    assert WRONG_KEY not in caplog.text and API_KEY not in caplog.text


async def test_a_realtime_call_with_streaming_enabled(fake: FakeRealtimeVoice) -> None:
    """Streaming on for every conversation changes nothing for a realtime one: the model
    speaks, not the TTS voice, and the model hears, not the transcriber."""
    fake.replies = [
        Reply(say=GREETING, audio_ms=300),
        Reply(say="Goodbye!", audio_ms=300, tool="end_call", arguments={"farewell": "Goodbye!"}),
    ]
    script = Script(caller=(Step(action="answer"), Step(action="say", value="Bye")))
    sim, call = await run("twilio", "concierge-realtime", script, fake, streaming=True)
    (stream,) = call.streams
    assert len(stream.audio) == 600 * 8
    assert sim.end_reason == "hangup-bot"
    assert texts(sim, "bot") == [GREETING, "Goodbye!"]
    assert texts(sim, "user") == ["Bye"]


# One carrier: the stream protocols are covered each by the streamed-call tests.
@pytest.mark.parametrize("provider", ["twilio"])
async def test_a_realtime_service_that_goes_away_mid_call_is_apologized_for(
    provider: str, fake: FakeRealtimeVoice
) -> None:
    """The service closing the session mid-call: the caller is not left in silence on an open
    stream; the apology is said in the carrier's voice and the call ends."""
    fake.replies = [Reply(say=GREETING, audio_ms=300), Reply(drop=True)]
    script = Script(caller=(Step(action="answer"), Step(action="say", value="Hi"),
                            Step(action="silence")))  # fmt: skip
    sim, call = await run(provider, "concierge-realtime", script, fake)
    assert sim.error == ""
    assert sim.end_reason == "hangup-bot"
    assert sim.said == [GREETING, STT_UNAVAILABLE]
    assert texts(sim, "user") == ["Hi"]
    (stream,) = call.streams
    assert stream.ended in ("redirect", "transfer", "streaming_stop")


# One carrier: the stream protocols are covered each by the streamed-call tests.
@pytest.mark.parametrize("provider", ["telnyx"])
async def test_an_agent_ends_a_realtime_call_with_its_own_words(
    provider: str, fake: FakeRealtimeVoice
) -> None:
    """`voicecall end` with a message on a realtime call: the model stops, the words are said
    on the stream (the stand-in voice here) and heard, then the call hangs up."""
    fake.replies = [Reply(say=GREETING, audio_ms=300)]
    words = "The front desk will call you back. Goodbye."

    async def agent(runtime: Runtime) -> None:
        async with asyncio.timeout(10):  # only a guard against a hang
            while not runtime.carrier.calls or not _marks(runtime):
                await asyncio.sleep(0.02)  # until the greeting has played
        (live,) = runtime.store.live()
        await runtime.manager.end_call(live.call_id, words)

    script = Script(caller=(Step(action="answer"), Step(action="silence"),
                            Step(action="silence")))  # fmt: skip
    sim, call = await run(provider, "concierge-realtime", script, fake, during=agent)
    assert sim.error == ""
    assert sim.end_reason == "hangup-bot"
    assert sim.record is not None
    assert [(line.text, line.source) for line in lines(sim, "bot")] == [
        (GREETING, "realtime"), (words, "agent")]  # fmt: skip
    (stream,) = call.streams
    assert len(stream.marks) == 2  # the greeting's, the agent's words': both played out
    assert stream.played_bytes == len(stream.audio) > 300 * 8
    assert fake.replies == [] and fake.turns == 0


def _marks(runtime: Runtime) -> list[str]:
    calls = list(runtime.carrier.calls.values())
    return calls[-1].streams[0].marks if calls and calls[-1].streams else []


async def test_a_realtime_conversations_turns_run_out_to_on_timeout(
    fake: FakeRealtimeVoice,
) -> None:
    """`max_turns` counts the caller's turns on a realtime call too: the model answers the
    last one, and once that has played the flow goes on at `on_timeout`."""
    fake.replies = [Reply(say="Hello, this is the concierge. How can I help?", audio_ms=400),
                    Reply(say="Breakfast is served from seven.", audio_ms=400)]  # fmt: skip
    script = Script(caller=(Step(action="answer"),
                            Step(action="say", value="When is breakfast")))  # fmt: skip
    sim, call = await run("twilio", "concierge-brief", script, fake)
    assert sim.error == ""
    assert sim.record is not None and sim.record.visited == ["talk", "wrap_up"]
    assert texts(sim, "user") == ["When is breakfast"]
    assert "Breakfast is served from seven." in texts(sim, "bot")
    assert sim.said[-1] == "We are out of time for today. Goodbye."
    assert sim.end_reason == "hangup-bot"
    (stream,) = call.streams
    assert stream.played_bytes == 800 * 8  # the last answer was heard before the flow went on


async def test_the_outbound_greeting_of_a_realtime_call_is_not_cut(
    fake: FakeRealtimeVoice,
) -> None:
    """A call we placed says why before it listens, on a realtime call too: the callee
    speaking over the greeting clears nothing and truncates nothing; their words still count,
    and the service was told not to cancel the greeting (interrupt_response off, then on)."""
    greeting = "Hello, this is the Harbour Hotel calling about your booking tomorrow."
    fake.replies = [
        Reply(say=greeting, audio_ms=1500),
        Reply(say="Wonderful, see you then.", audio_ms=300, tool="end_call",
              arguments={"farewell": "Wonderful, see you then."}),
    ]  # fmt: skip
    script = Script(caller=(Step(action="answer"),
                            Step(action="interrupt", value="Yes that is me"),
                            Step(action="silence")))  # fmt: skip
    sim, call = await run("plivo", "reminder-realtime", script, fake)
    assert sim.error == ""
    (stream,) = call.streams
    assert stream.clears == [] and fake.truncates == []
    assert lines(sim, "bot")[0].text == greeting
    assert lines(sim, "bot")[0].source == "realtime"  # not cut off
    assert texts(sim, "user") == ["Yes that is me"]
    assert sim.end_reason == "hangup-bot"
    detection = [u["audio"]["input"]["turn_detection"]["interrupt_response"]
                 for u in fake.session_updates]  # fmt: skip
    assert detection == [False, True]
