"""The cluster under what a real deployment does to it: a paused node, a garbled or stray
routed message, messages for nodes that are gone. One node (a Cluster on a real Redis, no
manager: nothing here reaches a call) per test, under its own key prefix."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from voicecall.runtime.cluster import Cluster, OwnerGone
from voicecall.runtime.store.redis import RedisStore

REDIS_URL = "redis://127.0.0.1:6379/0"
GENEROUS_S = 30.0  # how long something may take on a loaded machine (not a speed limit)


@pytest.fixture
async def node() -> AsyncIterator[Cluster]:
    prefix = f"vctest:{uuid.uuid4().hex[:10]}:"
    store = RedisStore(REDIS_URL, prefix=prefix, node="a")
    cluster = Cluster(store, cast(Any, None), lease_s=0.6)
    await cluster.start()
    yield cluster
    await cluster.stop()
    await store.delete_all()
    await store.aclose()


async def test_a_garbled_routed_message_does_not_stop_the_inbox(node: Cluster) -> None:
    inbox = node.key("inbox", node.node)
    await node.store.aio.xadd(inbox, {"kind": "webhook"})  # no id, no sender, no body
    await node.store.aio.xadd(inbox, {"kind": "answer", "id": "x", "body": b"{not json"})
    future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
    node._waiting["r1"] = future
    await node.store.aio.xadd(inbox, {"kind": "answer", "id": "r1", "from": "b",
                                      "body": b'{"ok": true}'})  # fmt: skip
    async with asyncio.timeout(GENEROUS_S):
        assert await future == {"ok": True}


async def test_a_node_swept_while_paused_registers_again(node: Cluster) -> None:
    # Another node saw this one's lease lapse with no call and dropped it from the nodes it
    # sweeps; were it not registered again, its later calls would never be taken over.
    aio = node.store.aio
    await aio.srem(node.key("nodes"), node.node)  # type: ignore[misc]
    async with asyncio.timeout(GENEROUS_S):
        while not await aio.sismember(node.key("nodes"), node.node):  # type: ignore[misc]
            await asyncio.sleep(0.05)


async def test_a_message_for_a_gone_node_leaves_no_lasting_key(node: Cluster) -> None:
    # A request routed to a node that died meanwhile (or an answer to a sender that did)
    # recreates an inbox nobody reads or sweeps any more: it must expire by itself.
    with pytest.raises(OwnerGone):
        await node._route("ghost", "command", {"op": "speak"}, GENEROUS_S)
    assert await node.store.aio.pttl(node.key("inbox", "ghost")) > 0
