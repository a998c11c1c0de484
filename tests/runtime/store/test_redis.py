"""What only the Redis store does: owners, takeovers, fencing, expiry and prefixes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from tests.runtime.store.conftest import REDIS_URL
from tests.runtime.store.test_contract import REPLY, line, record
from voicecall.runtime.store.redis import NotOwner, RedisStore


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"vctest:{uuid.uuid4().hex[:10]}:"
    yield name
    cleaner = RedisStore(REDIS_URL, prefix=name)
    await cleaner.delete_all()
    await cleaner.aclose()


async def test_a_node_that_lost_its_call_cannot_overwrite_the_new_owner(prefix: str) -> None:
    a = RedisStore(REDIS_URL, prefix=prefix, node="a")
    b = RedisStore(REDIS_URL, prefix=prefix, node="b")
    call = record()
    call.transcript.append(line("first"))
    assert await a.commit_event("e1", call, REPLY)
    assert a.live() == [call] and b.live() == [] and b.all_live() == [call]
    assert await b.claim(call.call_id, "a")  # a's lease expired: b takes the call
    assert not await b.claim(call.call_id, "a")  # once
    taken = await b.load(call.call_id)
    assert taken == call and b.owns(call.call_id)
    call.transcript.append(line("from the old owner"))
    with pytest.raises(NotOwner):
        await a.commit_event("e2", call, REPLY)
    assert await a.seen("e2") is None  # refused whole: not even the event key
    assert taken is not None
    taken.transcript.append(line("from the new owner"))
    assert await b.commit_event("e2", taken, REPLY)
    final = RedisStore(REDIS_URL, prefix=prefix).get(call.call_id)
    assert final is not None
    assert [x.text for x in final.transcript] == ["first", "from the new owner"]
    for store in (a, b):
        await store.aclose()


async def test_an_ended_call_has_no_owner_and_cannot_be_claimed(prefix: str) -> None:
    a = RedisStore(REDIS_URL, prefix=prefix, node="a")
    call = record(state="completed", end_reason="completed")
    await a.save(call)
    assert await a.aio.get(a.key("owner", call.call_id)) is None
    assert not await RedisStore(REDIS_URL, prefix=prefix, node="b").claim(call.call_id, "a")
    await a.aclose()


async def test_event_keys_expire_with_the_retention(prefix: str) -> None:
    a = RedisStore(REDIS_URL, prefix=prefix, retention_s=3600)
    assert await a.commit_event("k", None, REPLY, rejected=("twilio", "CA9"))
    for key in (a.key("ev", "k"), a.key("rej", "twilio", "CA9")):
        assert 3590_000 < await a.aio.pttl(key) <= 3600_000
    assert a.prune(0.0) == (0, True)  # nothing to sweep: Redis expires them
    await a.aclose()


async def test_deployments_under_other_prefixes_see_nothing_of_each_other(prefix: str) -> None:
    a = RedisStore(REDIS_URL, prefix=prefix)
    other = RedisStore(REDIS_URL, prefix=prefix + "other:")
    call = record(provider_call_id="CA1")
    assert await a.commit_event("k", call, REPLY)
    assert other.get(call.call_id) is None and other.find("twilio", "CA1") is None
    assert await other.seen("k") is None and await other.count_live() == 0
    assert await other.delete_all() == 0 and await a.count_live() == 1
    for store in (a, other):
        await store.aclose()


async def test_a_node_that_has_not_read_the_call_doubles_no_line(prefix: str) -> None:
    first = RedisStore(REDIS_URL, prefix=prefix, node="a")
    call = record()
    call.transcript += [line("one"), line("two")]
    call.visited += ["greet"]
    assert await first.commit_event("e1", call, REPLY)
    again = RedisStore(REDIS_URL, prefix=prefix, node="a")  # the same node, nothing in memory
    call.transcript.append(line("three"))
    call.visited.append("menu")
    assert await again.commit_event("e2", call, REPLY)  # sends every line: none read first
    stored = RedisStore(REDIS_URL, prefix=prefix).get(call.call_id)
    assert stored is not None
    assert [x.text for x in stored.transcript] == ["one", "two", "three"]
    assert stored.visited == ["greet", "menu"]
    for store in (first, again):
        await store.aclose()


async def test_a_call_is_not_claimed_from_a_node_whose_lease_is_back(prefix: str) -> None:
    # b saw a's lease missing (a paused), then a renewed it and checked its calls (still its
    # own) before b's claim ran: the claim must see the lease, or both nodes run the call.
    a = RedisStore(REDIS_URL, prefix=prefix, node="a")
    b = RedisStore(REDIS_URL, prefix=prefix, node="b")
    call = record()
    assert await a.commit_event("e1", call, REPLY)
    await a.aio.set(a.key("node", "a"), "", px=60_000)
    assert not await b.claim(call.call_id, "a")
    assert await b.aio.get(b.key("owner", call.call_id)) == b"a"
    await a.aio.delete(a.key("node", "a"))
    assert await b.claim(call.call_id, "a")  # dead now: taken
    for store in (a, b):
        await store.aclose()


async def test_a_webhook_for_an_ended_call_makes_no_blocking_redis_call(prefix: str) -> None:
    # A late webhook (Twilio's status callback after the bot hung up) reads the ended call,
    # changes nothing, and asks whether it changed: that answer must not block the event loop.
    a = RedisStore(REDIS_URL, prefix=prefix, node="a")
    call = record(state="completed", end_reason="completed")
    call.transcript.append(line("bye"))
    await a.save(call)
    b = RedisStore(REDIS_URL, prefix=prefix, node="b")
    b.sync.close()
    b.sync = redis.Redis.from_url("redis://127.0.0.1:1/0")  # any blocking call fails
    read = await b.read(call.call_id)
    assert read is not None and b.unchanged(read)
    read.metadata["late"] = True
    assert not b.unchanged(read)
    for store in (a, b):
        await store.aclose()


async def test_a_carrier_call_is_created_once_when_two_nodes_race_to_create_it(
    prefix: str,
) -> None:
    # Telnyx re-sends call.initiated re-signed (another replay key) when the first try is
    # slow: a first try at node a and the retry at node b each find no call and create one.
    # The second creation must be refused (the carrier id is taken) and routed to the first.
    a = RedisStore(REDIS_URL, prefix=prefix, node="a")
    b = RedisStore(REDIS_URL, prefix=prefix, node="b")
    first, second = record(provider_call_id="v3:1"), record(provider_call_id="v3:1")
    assert await a.commit_event("try-1", first, REPLY)
    with pytest.raises(NotOwner):
        await b.commit_event("try-2", second, REPLY)
    assert await b.seen("try-2") is None and await b.count_live() == 1
    assert await b.read(second.call_id) is None
    found = await b.read_by("twilio", "v3:1")
    assert found is not None and found.call_id == first.call_id
    for store in (a, b):
        await store.aclose()


async def test_every_live_call_is_read_in_one_round_trip(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `voicecall.status` lists every live call of the deployment with the blocking client:
    # one round trip per call held the event loop (every call's media) that many times.
    a = RedisStore(REDIS_URL, prefix=prefix, node="a")
    calls = [record(started_at=float(n)) for n in range(20)]
    for n, call in enumerate(calls):
        assert await a.commit_event(f"e{n}", call, REPLY)
    b = RedisStore(REDIS_URL, prefix=prefix, node="b")
    pipelines = 0
    pipeline = b.sync.pipeline

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal pipelines
        pipelines += 1
        return pipeline(*args, **kwargs)

    monkeypatch.setattr(b.sync, "pipeline", counted)
    assert [c.call_id for c in b.all_live()] == [c.call_id for c in calls]
    assert [c.call_id for c in b.recent(5)] == [c.call_id for c in calls[::-1][:5]]
    assert pipelines == 2
    for store in (a, b):
        await store.aclose()


async def test_an_ended_call_leaves_redis_after_its_retention(prefix: str) -> None:
    store = RedisStore(REDIS_URL, prefix=prefix, ended_kept_s=3600)
    live = record(provider_call_id="CA1")
    live.transcript.append(line("hi"))
    await store.save(live)
    assert await store.aio.pttl(store.key("call", live.call_id)) == -1  # live: kept
    old = record(provider_call_id="CA0", started_at=live.started_at - 7200, state="completed",
                 end_reason="completed")  # fmt: skip
    await store.save(old)
    live.state, live.end_reason = "completed", "completed"
    await store.save(live)
    for key in ("call", "lines"):
        assert 3590_000 < await store.aio.pttl(store.key(key, live.call_id)) <= 3600_000
    assert 3590_000 < await store.aio.pttl(store.key("pid", "twilio", "CA1")) <= 3600_000
    recent = await store.aio.zrange(store.key("recent"), 0, -1)
    assert recent == [live.call_id.encode()]  # one ended before the retention: off the index
    forever = RedisStore(REDIS_URL, prefix=prefix, ended_kept_s=0)
    kept = record(state="completed", end_reason="completed")
    await forever.save(kept)
    assert await forever.aio.pttl(forever.key("call", kept.call_id)) == -1
    for each in (store, forever):
        await each.aclose()
