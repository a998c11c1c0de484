"""admit.reject_message is rendered for the call and spoken on every provider (issue 7, §4.4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.dsl.catalog import Catalog
from voicecall.runtime.sim.simulate import Simulator

HERE = Path(__file__).parent
STRANGER = "+15559990000"


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_a_rejected_caller_hears_the_rendered_message_then_a_hang_up(provider: str) -> None:
    async with Simulator(provider, catalog=Catalog([HERE / "flows"])) as sim:
        assert sim.runtime is not None
        result = await sim.call("private-line", caller=STRANGER)
        assert sim.runtime.store.live() == []
        requests = [r.path.rsplit("/", 1)[-1] for r in sim.runtime.carrier.requests]
    said = [e.detail.get("text") for e in result.timeline if e.what == "say"]
    assert said == [f"Sorry {STRANGER}, Ann's line is private."]
    assert [e.what for e in result.timeline if e.who == "bot"][-1] == "hangup"
    assert "reject" not in requests  # Telnyx: answered, spoken, hung up instead
    assert result.record is None  # reported as a rejection, not as a call


async def test_without_a_message_telnyx_rejects_without_answering() -> None:
    async with Simulator("telnyx", config={"inboundPolicy": "disabled"}) as sim:
        assert sim.runtime is not None
        result = await sim.call("inbound", caller=STRANGER)
        requests = [r.path.rsplit("/", 1)[-1] for r in sim.runtime.carrier.requests]
    assert requests == ["reject"]
    assert [e.what for e in result.timeline if e.who == "bot"] == ["reject"]
