"""Telnyx: a rejected inbound call gets one ``reject`` command, however often its first event
arrives (identical replays, redeliveries under a new event id, after a restart)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from tests.runtime.support import Flows, StandIn
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager import CallManager, ManagerSettings
from voicecall.runtime.providers.base import Event, EventKind
from voicecall.runtime.sim.simulate import Simulator
from voicecall.runtime.store import SQLiteStore


async def test_one_reject_across_replays_and_redeliveries_on_the_mock_carrier() -> None:
    async with Simulator("telnyx", config={"inboundPolicy": "disabled"}) as sim:
        assert sim.runtime is not None
        carrier = sim.runtime.carrier
        carrier.sender.duplicate_next(1)  # call.initiated sent twice, identical
        carrier.sender.redeliver_next(1)  # and once more under a new event id
        await sim.call("inbound")
        initiated = [d for d in carrier.sender.deliveries if d.event == "call.initiated"]
        rejects = [r for r in carrier.requests if r.path.endswith("/actions/reject")]
        assert sim.runtime.store.live() == []
    assert len(initiated) >= 3 and all(d.status == 200 for d in initiated)
    assert len(rejects) == 1


class Telnyx(StandIn):
    name = "telnyx"

    def __init__(self) -> None:
        super().__init__()
        self.commands: list[tuple[str, str]] = []

    async def command(
        self, provider_call_id: str, command: str, body: Mapping[str, object]
    ) -> None:
        self.commands.append((provider_call_id, command))


def manager(path: Path, adapter: Telnyx) -> CallManager:
    settings = ManagerSettings(provider="telnyx", from_number="+15550000000",
                               webhook_base="http://t/voice/webhook",
                               inbound_policy="disabled")  # fmt: skip
    return CallManager(settings, SQLiteStore(path), adapter, Flows(), VirtualClock())


def initiated(event_id: str) -> list[Event]:
    return [Event(kind=EventKind.INITIATED, provider="telnyx", provider_call_id="v3:abc",
                  direction="inbound", from_number="+15551112222", to_number="+15550000000",
                  event_id=event_id)]  # fmt: skip


async def test_the_rejected_call_id_is_remembered_across_a_store_reopen(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    adapter = Telnyx()
    first = manager(path, adapter)
    await first.handle(initiated("e1"), "k1")
    await first.handle(initiated("e1"), "k1")  # a replay that raced past the server's check
    await first.handle(initiated("e2"), "k2")  # a redelivery under a new event id
    await first.drain()
    assert adapter.commands == [("v3:abc", "reject")]
    first.store.close()
    again = manager(path, adapter)  # a restart
    await again.handle(initiated("e3"), "k3")
    await again.drain()
    assert adapter.commands == [("v3:abc", "reject")]
    assert await again.store.was_rejected("telnyx", "v3:abc")
