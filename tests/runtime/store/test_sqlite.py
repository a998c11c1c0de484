"""The SQLite store's own workings: group commit, the replay-key index, row encoding (what every
store does is in test_contract.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.store.test_contract import record
from voicecall.runtime.store import SQLiteStore, StoredReply, sqlite


async def test_concurrent_webhooks_share_one_commit_and_stay_exactly_once(tmp_path: Path) -> None:
    import asyncio

    store = SQLiteStore(tmp_path / "c.sqlite")
    calls = [record() for _ in range(5)]
    reply = StoredReply(b"<Response/>", "text/xml")
    results = await asyncio.gather(
        *(store.commit_event(f"k{i}", c, reply) for i, c in enumerate(calls)),
        store.commit_event("k0", calls[0], reply),  # a duplicate inside the same batch
    )
    assert results == [True] * 5 + [False]
    assert (store.batches, store.batched) == (1, 5)
    other = SQLiteStore(tmp_path / "c.sqlite")  # a second connection sees all of it committed
    assert sorted(c.call_id for c in other.live()) == sorted(c.call_id for c in calls)


async def test_a_synchronous_save_commits_the_open_batch_first(tmp_path: Path) -> None:
    import asyncio

    store = SQLiteStore(tmp_path / "c.sqlite")
    store.group_window_s = 60.0  # the batch would otherwise wait a minute
    first, second = record(), record()
    pending = asyncio.ensure_future(store.commit_event("k1", first, None))
    await asyncio.sleep(0)
    assert await store.seen("k1") is not None  # the replay check commits the batch it sits in
    await store.save(second)
    assert await pending is True
    other = SQLiteStore(tmp_path / "c.sqlite")
    assert {c.call_id for c in other.live()} == {first.call_id, second.call_id}


async def test_a_new_key_costs_no_select_and_a_replay_reads_its_reply(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    reply = StoredReply(b"<Response/>", "text/xml")
    store = SQLiteStore(path)
    assert await store.commit_event("k1", record(), reply) is True
    store.close()
    again = SQLiteStore(path)  # the index is loaded from the file at open
    statements: list[str] = []
    again.db.set_trace_callback(statements.append)
    assert await again.seen("k2") is None
    assert statements == []  # a key never committed is new without reading the file
    assert await again.seen("k1") == reply
    assert any(s.startswith("SELECT reply") for s in statements)
    assert await again.commit_event("k2", record(), reply) is True
    assert await again.seen("k2") == reply  # a key joins the index once committed


async def test_pruned_keys_leave_the_index(tmp_path: Path) -> None:
    clock = [100.0]
    store = SQLiteStore(tmp_path / "c.sqlite", now=lambda: clock[0])
    reply = StoredReply(b"<Response/>", "text/xml")
    assert await store.commit_event("old", record(), reply) is True
    clock[0] = 200.0
    assert await store.commit_event("new", record(), reply) is True
    assert store.prune(before=150.0) == (1, True)
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    assert await store.seen("old") is None
    assert statements == []
    assert await store.seen("new") == reply


async def test_past_its_bound_the_index_gives_way_to_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory stays bounded: past MAX_INDEXED_KEYS the keys are looked up in the file (at open
    and while running), and replays are still answered with their stored reply."""
    monkeypatch.setattr(sqlite, "MAX_INDEXED_KEYS", 2)
    path = tmp_path / "c.sqlite"
    reply = StoredReply(b"<Response/>", "text/xml")
    store = SQLiteStore(path)
    for key in ("k1", "k2", "k3"):
        assert await store.commit_event(key, record(), reply) is True
    statements: list[str] = []
    store.db.set_trace_callback(statements.append)
    assert await store.seen("k4") is None and any(s.startswith("SELECT reply") for s in statements)
    assert await store.seen("k1") == reply
    store.close()
    again = SQLiteStore(path)  # three keys at open: no index
    assert await again.seen("k3") == reply and await again.seen("k5") is None
    assert await again.commit_event("k3", record(), reply) is False  # still exactly once


def test_a_row_orjson_refuses_still_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    store = SQLiteStore(path)
    call = record(params={"message": "héllo", "big": 2**70})  # past 64 bits: json.dumps's turn
    store.write(call)
    store.close()
    assert SQLiteStore(path).get(call.call_id) == call
