"""CallManager.watch: every committed change of a call reaches the listeners (Gateway events)."""

from __future__ import annotations

import pytest

from voicecall.runtime.sim.simulate import Simulator
from voicecall.runtime.state import CallRecord


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_listeners_see_each_commit_and_a_failing_one_changes_nothing(
    provider: str, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, int]] = []

    def listener(call: CallRecord) -> None:
        seen.append((call.state, len(call.transcript)))

    def broken(call: CallRecord) -> None:
        raise RuntimeError("listener bug")

    async with Simulator(provider) as sim:
        assert sim.runtime is not None
        sim.runtime.manager.watch(broken)
        sim.runtime.manager.watch(listener)
        result = await sim.call("notify", params={"message": "Your parcel is here."})
    assert result.ok and result.record is not None
    assert seen[0] == ("initiated", 0)
    assert seen[-1] == (result.record.end_reason, len(result.record.transcript))
    assert (result.record.transcript[0].text, max(n for _, n in seen)) == (
        "Your parcel is here.", 1)  # fmt: skip
    assert "a store watcher failed" in caplog.text
