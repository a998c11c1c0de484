"""The CallManager's timers and restore rules, on a virtual clock with a stand-in carrier."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.runtime.support import Flows, StandIn
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager import CallManager, ManagerSettings
from voicecall.runtime.providers.base import CallStatus
from voicecall.runtime.store import SQLiteStore


def manager(tmp_path: Path, **settings: object) -> tuple[CallManager, VirtualClock, StandIn]:
    clock = VirtualClock()
    adapter = StandIn()
    options = {"provider": "twilio", "from_number": "+15550000000", "max_concurrent": 5,
               "webhook_base": "http://t/voice/webhook", **settings}  # fmt: skip
    mgr = CallManager(ManagerSettings(**options),  # type: ignore[arg-type]
                      SQLiteStore(tmp_path / "c.sqlite"), adapter, Flows(), clock)  # fmt: skip
    return mgr, clock, adapter


async def settle(mgr: CallManager) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    await mgr.drain()


async def test_an_unanswered_call_ends_at_the_ring_timeout(tmp_path: Path) -> None:
    mgr, clock, adapter = manager(tmp_path, ring_timeout_s=30)
    call = await mgr.initiate(to="+15551112222", flow="notify", params={"message": "hi"})
    clock.advance(29)
    await settle(mgr)
    assert not mgr.store.get(call.call_id).ended  # type: ignore[union-attr]
    clock.advance(2)
    await settle(mgr)
    ended = mgr.store.get(call.call_id)
    assert ended is not None and ended.end_reason == "no-answer"
    assert adapter.hangups == ["P1"]


async def test_the_reaper_ends_stale_unanswered_calls_never_live_ones(tmp_path: Path) -> None:
    mgr, clock, _ = manager(tmp_path, stale_reaper_s=60, ring_timeout_s=10_000)
    stale = await mgr.initiate(to="+15551112222", flow="notify", params={"message": "a"})
    live = await mgr.initiate(to="+15551113333", flow="notify", params={"message": "b"})
    answered = mgr.store.get(live.call_id)
    assert answered is not None
    answered.answered_at, answered.state = clock.now(), "answered"
    await mgr.store.save(answered)
    mgr.start_reaper(every_s=30)
    clock.advance(61)  # the reaper runs at 30 s and 60 s by itself
    await settle(mgr)
    clock.advance(30)
    await settle(mgr)
    assert mgr.store.get(stale.call_id).end_reason == "no-answer"  # type: ignore[union-attr]
    assert not mgr.store.get(live.call_id).ended  # type: ignore[union-attr]


async def test_restore_keeps_live_calls_and_ends_the_others(tmp_path: Path) -> None:
    mgr, clock, _ = manager(tmp_path, max_duration_s=300, ring_timeout_s=10_000)
    kept = await mgr.initiate(to="+15551112222", flow="notify", params={"message": "a"})
    no_id = await mgr.initiate(to="+15551113333", flow="notify", params={"message": "b"})
    gone = await mgr.initiate(to="+15551114444", flow="notify", params={"message": "c"})
    record = mgr.store.get(no_id.call_id)
    assert record is not None
    record.provider_call_id = None  # the carrier never took it
    await mgr.store.save(record)

    restarted, _, adapter = manager(tmp_path, max_duration_s=300, ring_timeout_s=10_000)
    restarted.clock = clock
    assert sorted(await restarted.restore()) == sorted([kept.call_id, gone.call_id])
    assert restarted.store.get(no_id.call_id).end_reason == "error"  # type: ignore[union-attr]

    adapter.status = CallStatus.ENDED  # the carrier says the rest have ended meanwhile
    assert await restarted.restore() == []
    assert restarted.store.get(gone.call_id).end_reason == "completed"  # type: ignore[union-attr]


async def test_restore_hangs_up_live_calls_older_than_the_maximum_duration(
    tmp_path: Path,
) -> None:
    mgr, clock, _ = manager(tmp_path, max_duration_s=300, ring_timeout_s=10_000)
    old = await mgr.initiate(to="+15551112222", flow="notify", params={"message": "a"})
    clock.advance(301)
    restarted, _, adapter = manager(tmp_path, max_duration_s=300, ring_timeout_s=10_000)
    restarted.clock = clock  # the carrier says the call is still live (StandIn: ACTIVE)
    assert await restarted.restore() == []
    await settle(restarted)
    assert restarted.store.get(old.call_id).end_reason == "timeout"  # type: ignore[union-attr]
    assert adapter.hangups == ["P1"]  # hung up at the carrier, not only closed here


async def test_restore_closes_an_old_call_the_carrier_ended_without_hanging_up(
    tmp_path: Path,
) -> None:
    mgr, clock, _ = manager(tmp_path, max_duration_s=300, ring_timeout_s=10_000)
    old = await mgr.initiate(to="+15551112222", flow="notify", params={"message": "a"})
    clock.advance(301)
    restarted, _, adapter = manager(tmp_path, max_duration_s=300, ring_timeout_s=10_000)
    restarted.clock = clock
    adapter.status = CallStatus.ENDED
    assert await restarted.restore() == []
    await settle(restarted)
    assert restarted.store.get(old.call_id).end_reason == "completed"  # type: ignore[union-attr]
    assert adapter.hangups == []
