"""The OpenAI responder answering calls on the mock carrier (all three providers), wired from
the config, against the local fake of the chat-completions API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.fakes.openai_http import API_KEY, FakeOpenAI, Turn
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.sim.simulate import Simulation, Simulator
from voicecall.runtime.voice.responder import FALLBACK

PROVIDERS = ("twilio", "plivo", "telnyx")
CLINIC = "+15550009999"


def config(fake: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    return {"responseProviders": {"openai": {"apiKey": API_KEY, "baseUrl": fake.base_url}},
            **extra}  # fmt: skip


def caller(*said: str) -> Script:
    steps = (Step(action="answer"), *(Step(action="say", value=s) for s in said))
    return Script(caller=steps)


async def inbound(
    provider: str, fake: FakeOpenAI, script: Script, store_dir: Path | None = None,
    own: str | None = None, **extra: Any,
) -> Simulation:  # fmt: skip
    async with Simulator(provider, config=config(fake, **extra), store_dir=store_dir) as sim:
        return await sim.call("inbound", script=script, own=own)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_model_ends_the_call_after_its_farewell_is_heard(provider: str) -> None:
    turns = [Turn(content='{"spoken":"Your table is booked."}'),
             Turn(tool="end_call", arguments={"farewell": "Goodbye, see you Friday."})]  # fmt: skip
    async with FakeOpenAI(turns) as fake:
        result = await inbound(provider, fake, caller("book a table", "that is all"))
    assert result.record is not None
    assert result.said[1:] == ["Your table is booked.", "Goodbye, see you Friday."]
    assert result.record.end_reason == "hangup-bot"
    bot = [(e.what, e.detail.get("text")) for e in result.timeline if e.who == "bot"]
    # The farewell is said in full, then the bot hangs up: nothing after it, nothing cut.
    assert bot[-2:] == [("say", "Goodbye, see you Friday."), ("hangup", None)]
    assert fake.messages(1)[1:3] == [
        {"role": "user", "content": "book a table"},
        {"role": "assistant", "content": '{"spoken": "Your table is booked."}'},
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_slow_model_is_answered_with_a_spoken_fallback(provider: str) -> None:
    turns = [Turn(content='{"spoken":"Too late."}', delay_s=60)]
    async with FakeOpenAI(turns) as fake:
        result = await inbound(provider, fake, caller("hello"), responseTimeoutMs=300)
    assert result.said[1] == FALLBACK
    assert "Too late." not in result.said


async def test_a_failing_model_is_answered_with_a_spoken_fallback() -> None:
    async with FakeOpenAI([Turn(status=500)]) as fake:
        result = await inbound("twilio", fake, caller("hello"))
    assert result.said[1] == FALLBACK


async def test_per_phone_history_survives_a_restart(tmp_path: Path) -> None:
    turns = [Turn(content='{"spoken":"Noted: two guests."}'), Turn(content='{"spoken":"Yes."}')]
    async with FakeOpenAI(turns) as fake:
        await inbound("twilio", fake, caller("two guests please"), store_dir=tmp_path)
        # A new runtime on the same store: the same caller's next call has the context.
        await inbound("twilio", fake, caller("is that still two"), store_dir=tmp_path)
    assert [m["content"] for m in fake.messages(1)[1:]] == [
        "two guests please", '{"spoken": "Noted: two guests."}', "is that still two"]  # fmt: skip


async def test_the_dialled_number_overrides_model_and_prompt() -> None:
    numbers = {
        CLINIC: {"responseModel": "openai/small", "responseSystemPrompt": "You are the clinic."}
    }
    async with FakeOpenAI([Turn(content='{"spoken":"ok"}')] * 2) as fake:
        await inbound("twilio", fake, caller("hi"), own=CLINIC, numbers=numbers,
                      responseModel="big", responseSystemPrompt="You are the shop.")  # fmt: skip
        await inbound("twilio", fake, caller("hi"), numbers=numbers,
                      responseModel="big", responseSystemPrompt="You are the shop.")  # fmt: skip
    assert [r["model"] for r in fake.requests] == ["small", "big"]
    assert fake.messages(0)[0]["content"].startswith("You are the clinic.")
    assert fake.messages(1)[0]["content"].startswith("You are the shop.")
