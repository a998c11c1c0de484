"""Transfers that do not connect: noticed when the carrier reports them, on every provider."""

from __future__ import annotations

import pytest

from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.sim.simulate import simulate

BUSY = Script(caller=(Step(action="answer"), Step(action="press", value="1"),
                      Step(action="dial", value="busy"),
                      Step(action="press", value="5551234567")))  # fmt: skip
VISITED = ["menu", "sales", "sales_busy", "callback", "callback~ask_number", "callback_booked"]


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_a_busy_transfer_goes_to_on_fail_at_once(provider: str) -> None:
    sim = await simulate("ivr-menu", provider=provider, script=BUSY)
    assert sim.record is not None and sim.record.visited == VISITED
    # Telnyx reports the busy leg with call.hangup of that leg: no waiting for the
    # transfer's 30 s timeout (the virtual clock would have moved 35 s).
    assert sim.to_json()["duration_s"] == 0.0


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_a_simulation_shows_each_transfer_and_its_outcome(provider: str) -> None:
    busy = (await simulate("ivr-menu", provider=provider, script=BUSY)).to_json()
    assert busy["transfers"] == [{"to": ["+15550100200"], "outcome": "busy", "at_s": 0.0}]
    answered = Script(caller=(Step(action="answer"), Step(action="press", value="1"),
                              Step(action="dial", value="answered"),
                              Step(action="hangup")))  # fmt: skip
    sim = (await simulate("ivr-menu", provider=provider, script=answered)).to_json()
    assert [t["outcome"] for t in sim["transfers"]] == ["answered"]
