"""Fixtures shared by the runtime's tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from tests.runtime.cluster_support import REDIS_URL, Front, Pair, start_gateway
from voicecall.runtime.sim.carrier.carrier import MockCarrier
from voicecall.runtime.store.redis import RedisStore


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    prefix = f"vctest:{uuid.uuid4().hex[:10]}:"
    carrier = MockCarrier("twilio")
    await carrier.start()
    front = Front()
    await front.start()
    gateways = [await start_gateway(carrier, front, prefix) for _ in range(2)]
    yield Pair(carrier, front, gateways, prefix)
    for gateway in gateways:
        await gateway.stop()
    await front.stop()
    await carrier.stop()
    cleaner = RedisStore(REDIS_URL, prefix=prefix)
    await cleaner.delete_all()
    await cleaner.aclose()
