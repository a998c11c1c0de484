"""The store backends every store test runs against: SQLite (a real file) and Redis (the real
server on 127.0.0.1:6379, under a key prefix of the test's own, deleted afterwards)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from voicecall.runtime.store import SQLiteStore, Store
from voicecall.runtime.store.redis import RedisStore

REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass
class Backend:
    """Opens stores on one backend's data; a second ``open()`` is a restarted process."""

    name: str
    open: Callable[[], Store]
    opened: list[Store] = field(default_factory=list)


@pytest.fixture(params=["sqlite", "redis"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    prefix = f"vctest:{uuid.uuid4().hex[:10]}:"
    opened: list[Store] = []

    def open_store() -> Store:
        store: Store
        if request.param == "sqlite":
            store = SQLiteStore(tmp_path / "calls.sqlite")
        else:
            store = RedisStore(REDIS_URL, prefix=prefix)
        opened.append(store)
        return store

    yield Backend(request.param, open_store, opened)
    for store in opened:
        await store.aclose()
    if request.param == "redis":
        cleaner = RedisStore(REDIS_URL, prefix=prefix)
        await cleaner.delete_all()
        await cleaner.aclose()
