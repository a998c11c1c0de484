"""Realtime conversations (``converse: {driver: realtime}``) end to end.

The mock carrier opens the stream the compiled flow asks for and plays the caller's words as
audio; the real realtime bridge (the official SDK) speaks to a local fake of the OpenAI
Realtime API, which hears the caller with its own voice-activity detector, reads their words
from the carrier's captions and answers with scripted responses (a tone with a transcript,
and function calls). Nothing is stubbed inside the runtime.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_realtime_voice import API_KEY, FakeRealtimeVoice, Reply
from voicecall.dsl.catalog import Catalog
from voicecall.runtime.sim.captions import Captions
from voicecall.runtime.sim.flowtest import PROVIDERS
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.sim.simulate import Simulation, Simulator
from voicecall.runtime.state import TranscriptLine

FLOWS = Path(__file__).parent / "flows"
GREETING = "Hello, this is the concierge of the Harbour Hotel. How can I help?"


@pytest.fixture
async def fake() -> AsyncIterator[FakeRealtimeVoice]:
    async with FakeRealtimeVoice(captions=Captions()) as server:
        yield server


def config(
    fake: FakeRealtimeVoice, api_key: str = API_KEY, streaming: bool = True
) -> dict[str, Any]:
    """The realtime service and nothing else (the carrier's voice and the offline stand-ins
    for the rest)."""
    realtime = {"providers": {"openai": {"apiKey": api_key, "baseUrl": fake.base_url,
                                         "silenceDurationMs": 300}}}  # fmt: skip
    return {"realtime": realtime, **({"streaming": {"enabled": True}} if streaming else {})}


async def run(
    provider: str, flow: str, script: Script, fake: FakeRealtimeVoice, **kw: Any
) -> tuple[Simulation, Any]:
    """One call; returns the simulation and the carrier's record of the call."""
    async with Simulator(provider, catalog=Catalog([FLOWS]), config=config(fake, **kw)) as sim:
        assert sim.runtime is not None
        carrier = sim.runtime.carrier
        assert fake.captions is not None
        carrier.captions = fake.captions  # the fake hears what the caller says
        result = await sim.call(flow, script=script)
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
    # The greeting was asked of the model, with the flow's instructions in the session.
    (update,) = fake.session_updates
    assert "You are the concierge of the Harbour Hotel." in update["instructions"]
    assert GREETING in fake.response_creates[0]["instructions"]
    # All three responses reached the carrier as audio (600 + 500 + 400 ms of μ-law) …
    (stream,) = call.streams
    assert len(stream.audio) == 1500 * 8
    assert stream.clears == [] and stream.unknown == []
    # … and were played out to the caller, each marked; the farewell was heard to its end
    # before the hangup.
    assert stream.played_bytes == 1500 * 8
    assert len(stream.marks) == 3
    assert fake.turns == 2 and fake.appended_bytes > 8000
