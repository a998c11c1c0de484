"""Bounded memory: after any number of calls have ended, what the manager and the store hold
in memory is back to its size before the first call (issue 7, section 3)."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.runtime.support import Flows, StandIn
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager import CallManager, ManagerSettings
from voicecall.runtime.providers.base import Event, EventKind
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.sim.simulate import Simulator
from voicecall.runtime.store import SQLiteStore

CALLS = 300


class Carrier(StandIn):
    """A stand-in carrier giving every placed call its own id."""

    def __init__(self) -> None:
        super().__init__()
        self.placed = 0

    async def create_call(self, **_: Any) -> str:
        self.placed += 1
        return f"P{self.placed}"


def sizes(mgr: CallManager, store: SQLiteStore) -> dict[str, int]:
    return {**mgr.held(), **store.cached()}


async def settle(mgr: CallManager) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    await mgr.drain()


class Run:
    """Calls of every kind through one manager: each ends differently."""

    def __init__(self, tmp_path: Path):
        self.clock = VirtualClock()
        self.store = SQLiteStore(tmp_path / "c.sqlite", now=self.clock.now)
        settings = ManagerSettings(provider="twilio", from_number="+15550000000",
                                   webhook_base="http://t/voice/webhook", max_concurrent=1000,
                                   ring_timeout_s=30, inbound_policy="allowlist",
                                   allow_from=("+15557770000",),
                                   config_view={"inboundGreeting": None})  # fmt: skip
        self.mgr = CallManager(settings, self.store, Carrier(), Flows(), self.clock)
        self.keys = 0

    async def event(self, kind: EventKind, **fields: Any) -> None:
        self.keys += 1
        await self.mgr.handle([Event(kind=kind, provider="twilio", **fields)], f"k{self.keys}")

    async def completed(self, i: int) -> None:
        call = await self.mgr.initiate(to="+15551110000", flow="notify",
                                       params={"message": f"hello {i}"})  # fmt: skip
        pid = call.provider_call_id
        await self.event(EventKind.FETCH, call_id=call.call_id, provider_call_id=pid)
        await self.event(EventKind.ENDED, call_id=call.call_id, provider_call_id=pid,
                         status="completed")  # fmt: skip

    async def unanswered(self, i: int) -> None:
        await self.mgr.initiate(to="+15551110000", flow="notify", params={"message": f"{i}"})

    async def inbound(self, i: int, caller: str) -> None:
        pid = f"IN{i}"
        await self.event(EventKind.FETCH, provider_call_id=pid, direction="inbound",
                         from_number=caller, to_number="+15550000000")  # fmt: skip
        await self.event(EventKind.ENDED, provider_call_id=pid, status="completed")


async def test_per_call_state_returns_to_its_baseline_after_hundreds_of_calls(
    tmp_path: Path,
) -> None:
    run = Run(tmp_path)
    baseline = sizes(run.mgr, run.store)
    peak: dict[str, int] = {}
    for i in range(CALLS):
        kind = i % 4
        if kind == 0:
            await run.completed(i)
        elif kind == 1:
            await run.unanswered(i)  # ended by the ring timeout below
        else:  # admitted (allowlisted) or rejected callers
            await run.inbound(i, "+15557770000" if kind == 2 else f"+1555888{i:04}")
        now = sizes(run.mgr, run.store)
        peak = {k: max(v, peak.get(k, 0)) for k, v in now.items()}
    await settle(run.mgr)
    assert peak["timers"] >= CALLS // 4 and peak["pids"] >= CALLS // 4  # they did hold calls
    run.clock.advance(31)  # every unanswered call reaches its ring timeout
    await settle(run.mgr)
    assert run.store.live() == []
    assert sizes(run.mgr, run.store) == baseline
    ended = [c.end_reason for c in run.store.recent(CALLS)]  # rejected callers have none
    assert Counter(ended) == {"hangup-bot": 75, "no-answer": 75, "hangup-user": 75}


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_whole_calls_on_the_mock_carrier_leave_nothing_behind(provider: str) -> None:
    caller = (Step(action="answer"), Step(action="say", value="Hi"), Step(action="hangup"))
    async with Simulator(provider, config={"maxConcurrentCalls": 10}) as sim:
        assert sim.runtime is not None
        manager, store = sim.runtime.manager, sim.runtime.sqlite
        baseline = sizes(manager, store)
        for i in range(10):
            result = await sim.call("notify", params={"message": f"m{i}"})
            assert result.ok, result.error
            result = await sim.call("inbound", script=Script(caller=caller))
            assert result.record is not None and result.record.ended
        assert sizes(manager, store) == baseline
