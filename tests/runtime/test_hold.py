"""A call holding for the agent (Twilio, Plivo: a pause, then a redirect) listens again when the
hold runs out; it never says the turn's words a second time."""

from __future__ import annotations

import pytest

from voicecall.runtime.sim.script import AgentStep, Script, Step
from voicecall.runtime.sim.simulate import Simulator


def bot_lines(result: object) -> list[str]:
    record = getattr(result, "record", None)
    assert record is not None
    return [line.text for line in record.transcript if line.speaker == "bot"]


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_the_opening_message_is_said_once_while_the_agent_is_idle(provider: str) -> None:
    script = Script(caller=(Step(action="answer"), Step(action="say", value="sure")))
    async with Simulator(provider) as sim:
        result = await sim.call("conversation", script=script, params={"message": "Hi"})
    assert bot_lines(result) == ["Hi"]


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_an_agent_turn_is_said_once_while_the_agent_is_idle(provider: str) -> None:
    caller = (Step(action="answer"), Step(action="say", value="sure"),
              Step(action="say", value="fine"))  # fmt: skip
    script = Script(caller=caller, agent=(AgentStep(action="continue", text="Anything else?"),))
    async with Simulator(provider) as sim:
        result = await sim.call("conversation", script=script, params={"message": "Hi"})
    assert bot_lines(result) == ["Hi", "Anything else?"]
