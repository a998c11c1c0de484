"""A store that fails under a webhook (a full disk, Redis gone): the webhook is answered 503
with one log line, nothing is half-applied, and the carrier's retry is applied once the store
is back — never a 500."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from tests.runtime.hostile_support import exchange, start_target, valid
from voicecall.runtime.app import RuntimeConfig, start_runtime
from voicecall.runtime.store.redis import RedisStore

REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_sqlite_failing_is_a_503_and_the_retry_applies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = await start_target("twilio", tmp_path)
    store = target.runtime.sqlite
    try:
        healthy, store.db = store.db, sqlite3.connect(tmp_path / "readonly.sqlite")
        store.db.execute("PRAGMA query_only = ON")  # every write fails, as on a full disk
        assert await exchange(target.port, valid(target)) == 503
        assert "rejected with 503: the store failed" in caplog.text
        store.db.close()
        store.db = healthy
        assert store.live() == []  # nothing half-applied
        assert await exchange(target.port, valid(target)) == 200  # the retry: a new call
        assert len(store.live()) == 1
    finally:
        await target.runtime.stop()


async def test_redis_going_away_is_a_503_and_the_retry_applies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    prefix = f"vctest:{uuid.uuid4().hex[:10]}:"
    target = await start_target("twilio", REDIS_URL, redis={"keyPrefix": prefix})
    store = target.runtime.store
    assert isinstance(store, RedisStore)
    try:
        healthy, store.aio = store.aio, aioredis.Redis.from_url("redis://127.0.0.1:1/0")
        assert await exchange(target.port, valid(target)) == 503
        assert "rejected with 503: the store failed" in caplog.text
        await store.aio.aclose()
        store.aio = healthy
        assert store.all_live() == []  # nothing half-applied
        assert await exchange(target.port, valid(target)) == 200
        assert len(store.all_live()) == 1
    finally:
        await target.runtime.stop()
        cleaner = RedisStore(REDIS_URL, prefix=prefix)
        await cleaner.delete_all()
        await cleaner.aclose()


@pytest.mark.parametrize(
    ("url", "said"),
    [("redis://:pw-5150@127.0.0.1:notaport/0", "store: Port could not be cast"),
     ("redis://:pw-5150@127.0.0.1:1/0", "store: Redis at redis://127.0.0.1:1/0 is not reachable")],
)  # fmt: skip
async def test_a_redis_store_that_cannot_open_names_the_key_not_the_password(
    url: str, said: str
) -> None:
    with pytest.raises((ValueError, OSError)) as refused:
        await start_runtime(RuntimeConfig(raw={"provider": "mock", "store": url}), port=0)
    assert str(refused.value).startswith(said) and "pw-5150" not in str(refused.value)
