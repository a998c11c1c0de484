"""Processed-event keys are kept as long as a carrier may redeliver (eventRetentionHours),
across restarts, and pruned in small batches after that (issue 7, section 3)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from tests.runtime.support import Flows, StandIn
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager import CallManager, ManagerSettings
from voicecall.runtime.server import ServerSettings, make_app
from voicecall.runtime.sim.simulate import Simulator
from voicecall.runtime.store import SQLiteStore, StoredReply

GOOD = {"X-Test-Signature": "good"}
HOUR = 3600.0


def inbound(call: str) -> str:
    return json.dumps({"kind": "call.fetch", "id": call, "from": "+15551112222"})


async def test_replays_are_recognised_inside_the_window_and_pruned_after_it(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    path = tmp_path / "c.sqlite"
    store = SQLiteStore(path, now=clock.now)
    adapter = StandIn()
    settings = ManagerSettings(provider="twilio", from_number="+15550000000",
                               webhook_base="http://t/voice/webhook", inbound_policy="open",
                               inbound_flow="ivr-menu", max_concurrent=5,
                               event_retention_s=72 * HOUR)  # fmt: skip
    manager = CallManager(settings, store, adapter, Flows(), clock)
    async with TestClient(TestServer(make_app(manager, ServerSettings()))) as client:
        old = await client.post("/voice/webhook", data=inbound("CA1"), headers=GOOD)
        assert old.status == 200
        clock.advance(71 * HOUR)
        recent = await client.post("/voice/webhook", data=inbound("CA2"), headers=GOOD)
        recent_body = await recent.read()
        clock.advance(2 * HOUR)  # CA1's key is 73 h old, CA2's 2 h
        assert store.count_events() == 2
        assert await manager.retention.prune() == 1
        assert store.count_events() == 1
        parsed = adapter.parsed
        replay = await client.post("/voice/webhook", data=inbound("CA2"), headers=GOOD)
        assert await replay.read() == recent_body  # acknowledged with the stored reply
        assert adapter.parsed == parsed  # and never applied again
    store.close()
    reopened = SQLiteStore(path)  # the window covers restarts: the kept key is in the file
    keys = [row[0] for row in reopened.db.execute("SELECT key FROM events")]
    assert len(keys) == 1 and await reopened.seen(keys[0]) is not None


async def test_pruning_sweeps_in_small_batches_and_deletes_only_old_keys(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    store = SQLiteStore(tmp_path / "c.sqlite", now=clock.now)
    reply = StoredReply(b"<Response/>", "text/xml")
    for i in range(7):
        assert await store.commit_event(f"old{i}", None, reply)
    clock.advance(10 * HOUR)
    assert await store.commit_event("new", None, reply)
    cutoff = clock.now() - 5 * HOUR
    # Keys in order: new, old0..old6: batches of three, the last one short: the sweep is done.
    assert [store.prune(cutoff, 3) for _ in range(3)] == [(2, False), (3, False), (2, True)]
    assert await store.seen("new") == reply and await store.seen("old0") is None
    assert store.count_events() == 1
    assert store.prune(cutoff, 3) == (0, True)  # a new sweep finds nothing left


async def test_the_window_is_read_from_the_config() -> None:
    async with Simulator("twilio", config={"eventRetentionHours": 1.5}) as sim:
        assert sim.runtime is not None
        assert sim.runtime.manager.settings.event_retention_s == 1.5 * HOUR


async def test_the_background_task_prunes_on_its_own(tmp_path: Path) -> None:
    clock = VirtualClock()
    store = SQLiteStore(tmp_path / "c.sqlite", now=clock.now)
    settings = ManagerSettings(provider="twilio", from_number="+15550000000",
                               webhook_base="http://t/voice/webhook",
                               event_retention_s=HOUR)  # fmt: skip
    manager = CallManager(settings, store, StandIn(), Flows(), clock)
    assert await store.commit_event("old", None, StoredReply(b"", "text/xml"))
    clock.advance(2 * HOUR)
    manager.retention.start(every_s=0.001)
    try:
        for _ in range(5000):  # a safety net against a hang, not a speed check
            if store.count_events() == 0:
                break
            await asyncio.sleep(0.001)
    finally:
        await manager.stop_background()
    assert store.count_events() == 0
