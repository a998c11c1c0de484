"""Streamed conversations end to end, on each carrier's media-stream protocol.

The mock carrier opens the stream our compiled flow asks for and plays the caller's words as
audio; the official SDKs speak to local fakes: OpenAI speech (TTS), OpenAI realtime
transcription (STT, hearing the carrier's audio with its own voice-activity detector), OpenAI
chat completions (the responder). Nothing is stubbed inside the runtime.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fakes import openai_http, openai_realtime, openai_speech
from voicecall.dsl.catalog import Catalog
from voicecall.runtime.sim.captions import Captions
from voicecall.runtime.sim.flowtest import PROVIDERS
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.sim.simulate import Simulation, Simulator
from voicecall.runtime.state import CallRecord, TranscriptLine

FLOWS = Path(__file__).parent / "flows"
EXAMPLES = Path(__file__).parents[3] / "flows" / "examples"


def pcm24k(ms: int) -> bytes:
    """What OpenAI's speech endpoint streams (response_format pcm): 24 kHz 16-bit, a voiced
    tone at speech level."""
    t = np.arange(24 * ms) / 24_000
    tone = np.sin(2 * np.pi * 150 * t) + np.sin(2 * np.pi * 300 * t) / 2
    return (tone * 7000).astype("<i2").tobytes()


def speech(ms: int) -> openai_speech.Audio:
    audio = pcm24k(ms)
    return openai_speech.Audio(chunks=(audio[: len(audio) // 2], audio[len(audio) // 2 :]))


@dataclass
class Services:
    tts: openai_speech.FakeOpenAISpeech
    stt: openai_realtime.FakeOpenAIRealtime
    chat: openai_http.FakeOpenAI
    captions: Captions

    def config(self) -> dict[str, Any]:
        return {
            "streaming": {"enabled": True, "providers": {"openai": {
                "apiKey": openai_realtime.API_KEY, "baseUrl": self.stt.base_url,
                "silenceDurationMs": 300}}},
            "tts": {"provider": "openai", "providers": {"openai": {
                "apiKey": openai_speech.API_KEY, "baseUrl": self.tts.base_url}}},
            "responseProviders": {"openai": {"apiKey": openai_http.API_KEY,
                                             "baseUrl": self.chat.base_url}},
        }  # fmt: skip


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    captions = Captions()
    async with (
        openai_speech.FakeOpenAISpeech([speech(900), speech(400), speech(500)]) as tts,
        openai_realtime.FakeOpenAIRealtime(captions=captions) as stt,
        openai_http.FakeOpenAI() as chat,
    ):
        yield Services(tts=tts, stt=stt, chat=chat, captions=captions)


async def run(
    provider: str, flow: str, script: Script, services: Services, *, folder: Path = FLOWS,
    prompt_wait_s: float = 1.0,
) -> tuple[Simulation, Any]:  # fmt: skip
    """One call; returns the simulation and the carrier's record of the call."""
    async with Simulator(provider, catalog=Catalog([folder]), config=services.config()) as sim:
        assert sim.runtime is not None
        carrier = sim.runtime.carrier
        carrier.captions = services.captions  # the fake STT hears what the caller says
        carrier.stream_prompt_wait_s = prompt_wait_s  # how long the caller waits for us
        result = await sim.call(flow, script=script)
        calls = list(carrier.calls.values())
        return result, calls[-1]


def bot_lines(sim: Simulation) -> list[TranscriptLine]:
    assert sim.record is not None
    return [line for line in sim.record.transcript if line.speaker == "bot"]


def user_lines(sim: Simulation) -> list[str]:
    assert sim.record is not None
    return [line.text for line in sim.record.transcript if line.speaker == "user"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_streamed_conversation(provider: str, services: Services) -> None:
    """Greeting as TTS frames, the caller cutting in (barge-in clears it), their words
    transcribed, the model's reply spoken, the model ending the call with a farewell that is
    heard, then the hangup."""
    services.chat.turns = [
        openai_http.Turn(content='{"spoken": "Of course. Which day are you arriving?"}'),
        openai_http.Turn(tool="end_call", arguments={"farewell": "Goodbye!"}),
    ]
    script = Script(caller=(Step(action="answer"),
                            Step(action="interrupt", value="Do you have a room with a view"),
                            Step(action="say", value="On Friday, thank you")))  # fmt: skip
    sim, call = await run(provider, "front-desk", script, services)
    assert sim.error == ""
    assert sim.end_reason == "hangup-bot"
    # The caller's words, as the transcription service heard them in the stream's audio.
    assert user_lines(sim) == ["Do you have a room with a view", "On Friday, thank you"]
    greeting, reply, farewell = bot_lines(sim)
    assert greeting.text.startswith("Hello, this is the front desk")
    assert greeting.source.endswith("cut off")  # the caller cut in: cleared, not heard
    assert reply.text == "Of course. Which day are you arriving?"
    assert farewell.text == "Goodbye!" and not farewell.source.endswith("cut off")
    # The greeting, the reply and the farewell were synthesized (in that order) …
    assert [r["input"] for r in services.tts.requests][:1] == [greeting.text]
    assert [r["input"] for r in services.tts.requests][1:] == [reply.text, "Goodbye!"]
    # … reached the carrier as audio on the stream, and one clear cut the greeting.
    (stream,) = call.streams
    assert len(stream.audio) >= 8000  # over a second of μ-law, in 160-byte frames
    assert len(stream.clears) == 1
    assert stream.utterances[0].over_bot  # the interruption was spoken over our audio
    # The responder saw the caller's words; the model was asked twice, the STT saw audio.
    heard = [r["messages"][-1]["content"] for r in services.chat.requests]
    assert heard == ["Do you have a room with a view", "On Friday, thank you"]
    assert services.stt.last is not None and services.stt.last.audio_bytes > 16_000


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_collect_conversation_hands_its_values_to_the_flow(
    provider: str, services: Services
) -> None:
    """The model finishes with the values the conversation collects; the stream is left and
    the flow's next node says them in the carrier's voice."""
    services.tts.answers = [speech(600), speech(400)]
    services.chat.turns = [
        openai_http.Turn(content='{"spoken": "For how many guests?"}'),
        openai_http.Turn(tool="finish_conversation",
                         arguments={"date": "2026-01-05", "party": 4}),
    ]  # fmt: skip
    script = Script(caller=(Step(action="answer"), Step(action="say", value="Monday please"),
                            Step(action="say", value="Four of us")))  # fmt: skip
    sim, call = await run(provider, "table-booking", script, services, folder=EXAMPLES)
    assert sim.error == ""
    assert sim.record is not None
    assert sim.record.visited == ["book", "confirm"]
    assert sim.record.scopes[""]["party"] == 4 and sim.record.scopes[""]["date"] == "2026-01-05"
    assert sim.said[-1] == "Thank you. A table for 4 on 2026-01-05. Goodbye."
    assert sim.end_reason == "hangup-bot"
    (stream,) = call.streams
    assert stream.ended in ("redirect", "transfer", "streaming_stop")
    # The model was offered the finishing tool with the collected values' schema.
    tools = {t["function"]["name"]: t["function"] for t in services.chat.requests[0]["tools"]}
    assert set(tools["finish_conversation"]["parameters"]["properties"]) == {
        "date", "party", "note"}  # fmt: skip


async def test_the_outbound_greeting_is_not_interrupted(services: Services) -> None:
    """A call we placed says why before it listens: speech over the greeting does not cut it
    (the original's rule); the caller's words still count."""
    # A greeting long enough for the words over it to be recognized before it ends (the
    # caller hangs up once it has heard us out, having no step left).
    services.tts.answers = [speech(1500), speech(400)]
    services.chat.turns = [openai_http.Turn(tool="end_call", arguments={"farewell": "Bye."})]
    script = Script(caller=(Step(action="answer"),
                            Step(action="interrupt", value="Yes hello")))  # fmt: skip
    sim, call = await run("twilio", "callback-offer", script, services)
    assert sim.error == ""
    (stream,) = call.streams
    assert stream.clears == []
    greeting = bot_lines(sim)[0]
    assert greeting.text.startswith("Hello, this is the Harbour Hotel calling")
    assert not greeting.source.endswith("cut off")
    assert user_lines(sim) == ["Yes hello"]
    assert sim.end_reason == "hangup-bot"
    # Synthesized once, while the call rang, and played when the stream opened.
    spoken = [r["input"] for r in services.tts.requests]
    assert spoken == [greeting.text, "Bye."]


# --- failures are never silence --------------------------------------------------------------


async def test_a_synthesis_failure_is_said_in_the_carriers_voice(services: Services) -> None:
    """The reply's synthesis fails: the stream is left, the carrier's voice says the reply,
    and the conversation goes on on a new stream."""
    failed = openai_speech.Audio(status=500)  # the SDK tries 3 times
    services.tts.answers = [speech(400), failed, failed, failed, speech(300)]
    services.chat.turns = [
        openai_http.Turn(content='{"spoken": "Which day are you arriving?"}'),
        openai_http.Turn(tool="end_call", arguments={"farewell": "Goodbye!"}),
    ]
    script = Script(caller=(Step(action="answer"), Step(action="say", value="I need a room"),
                            Step(action="say", value="On Friday")))  # fmt: skip
    sim, call = await run("twilio", "front-desk", script, services, prompt_wait_s=6.0)
    assert sim.error == ""
    assert "Which day are you arriving?" in sim.said
    assert user_lines(sim) == ["I need a room", "On Friday"]
    assert call.streams[0].ended == "redirect"  # left for the carrier's <Say>
    assert len(call.streams) == 2  # and opened again after it
    assert bot_lines(sim)[-1].text == "Goodbye!"
    assert sim.end_reason == "hangup-bot"


async def test_speech_recognition_down_ends_the_call_with_an_apology(
    services: Services,
) -> None:
    async with openai_realtime.FakeOpenAIRealtime(status=500) as down:
        services.stt = down
        script = Script(caller=(Step(action="answer"), Step(action="say", value="Hello?")))
        sim, _ = await run("plivo", "front-desk", script, services)
    assert sim.error == ""
    said = [line.text for line in bot_lines(sim)]
    assert said[-1] == "Sorry, I can't hear you right now. Please call again later."
    assert sim.end_reason == "hangup-bot"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_dropped_stream_is_opened_again(provider: str, services: Services) -> None:
    """The stream drops after the greeting: the call is not left silent; the conversation
    goes on on a new stream (Twilio: the <Connect> action; Plivo: the <Redirect> after
    <Stream>; Telnyx: our streaming_start after the stream stopped)."""
    services.tts.answers = [speech(300), speech(300)]
    services.chat.turns = [openai_http.Turn(tool="end_call", arguments={"farewell": "Bye!"})]
    script = Script(caller=(Step(action="answer"), Step(action="say", value="Still there?")))
    async with Simulator(provider, catalog=Catalog([FLOWS]), config=services.config()) as sim:
        assert sim.runtime is not None and sim.runtime.streams is not None
        carrier = sim.runtime.carrier
        carrier.captions = services.captions
        endpoint = sim.runtime.streams
        dropped: list[str] = []

        async def drop_after_greeting() -> None:
            while not endpoint.sessions:
                await asyncio.sleep(0.01)
            ((call_id, session),) = endpoint.sessions.items()
            conversation = sim.runtime.conversations.conversations[call_id]  # type: ignore[union-attr]
            while conversation._playing is not None or not conversation._mark_seq:
                await asyncio.sleep(0.01)
            transport = session._transport
            assert transport is not None
            transport.abort()  # the connection is lost, not closed
            dropped.append(call_id)

        dropper = asyncio.ensure_future(drop_after_greeting())
        result = await sim.call("front-desk", script=script)
        dropper.cancel()
        (mock,) = carrier.calls.values()
    assert dropped
    assert result.error == ""
    assert len(mock.streams) == 2
    assert user_lines(result) == ["Still there?"]
    assert bot_lines(result)[-1].text == "Bye!"
    assert result.end_reason == "hangup-bot"


async def test_an_outbound_greeting_is_synthesized_while_the_call_rings(
    services: Services,
) -> None:
    services.chat.turns = [openai_http.Turn(tool="end_call", arguments={"farewell": "Bye."})]
    script = Script(caller=(Step(action="answer"), Step(action="say", value="Yes")))
    async with Simulator("plivo", catalog=Catalog([FLOWS]), config=services.config()) as sim:
        assert sim.runtime is not None and sim.runtime.conversations is not None
        sim.runtime.carrier.captions = services.captions
        streams, store = sim.runtime.conversations, sim.runtime.store
        started: list[tuple[str, float | None]] = []
        synthesize = streams._synthesize_ahead

        def spy(call: CallRecord, text: str) -> None:
            record = store.get(call.call_id)
            started.append((text, record.answered_at if record else None))
            synthesize(call, text)

        streams._synthesize_ahead = spy  # type: ignore[method-assign]
        result = await sim.call("callback-offer", script=script)
    assert result.end_reason == "hangup-bot"
    greeting = bot_lines(result)[0].text
    assert started == [(greeting, None)]  # before the answer, and not again at the stream


async def test_the_dialled_numbers_voice_speaks_its_calls(services: Services) -> None:
    """`numbers.<E164>.tts` (the original's per-number voice) reaches streamed speech."""
    from voicecall.runtime.sim.simulate import OWN

    services.tts.answers = [speech(300), speech(300)]
    services.chat.turns = [openai_http.Turn(tool="end_call", arguments={"farewell": "Bye."})]
    config = services.config() | {"numbers": {OWN: {"tts": {"providers": {"openai": {
        "voice": "nova", "instructions": "Speak warmly."}}}}}}  # fmt: skip
    script = Script(caller=(Step(action="answer"), Step(action="say", value="Hello")))
    async with Simulator("twilio", catalog=Catalog([FLOWS]), config=config) as sim:
        assert sim.runtime is not None
        sim.runtime.carrier.captions = services.captions
        result = await sim.call("front-desk", script=script)
    assert result.end_reason == "hangup-bot"
    voices = [(r["voice"], r.get("instructions")) for r in services.tts.requests]
    assert voices == [("nova", "Speak warmly."), ("nova", "Speak warmly.")]
