"""The cluster under what a real deployment does to it: a paused node, a garbled or stray
routed message, messages for nodes that are gone, one call's webhooks at both gateways at
once. One node (a Cluster on a real Redis, no manager: nothing there reaches a call), or two
whole gateways, per test, under its own key prefix."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest

from tests.runtime.cluster_support import (
    CALLEE,
    TALK,
    Pair,
    waiting_for_agent,
)
from voicecall.runtime.cluster import Cluster, OwnerGone
from voicecall.runtime.sim.carrier.carrier import MockCarrier
from voicecall.runtime.sim.carrier.signing import twilio_signature
from voicecall.runtime.store.redis import RedisStore

REDIS_URL = "redis://127.0.0.1:6379/0"
GENEROUS_S = 30.0  # how long something may take on a loaded machine (not a speed limit)


class NoCalls:
    """The manager of a node that holds no call (what its stop waits for: nothing)."""

    async def drain(self) -> None:
        return None


@pytest.fixture
async def node() -> AsyncIterator[Cluster]:
    prefix = f"vctest:{uuid.uuid4().hex[:10]}:"
    store = RedisStore(REDIS_URL, prefix=prefix, node="a")
    cluster = Cluster(store, cast(Any, NoCalls()), lease_s=0.6)
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


async def test_one_inbound_call_reaching_both_gateways_at_once_is_created_once(
    pair: Pair,
) -> None:
    # The first webhook of a new call at one gateway and its retry under another replay key
    # (a Telnyx or Plivo retry is signed anew) at the other, at the same time.
    url = pair.front.url + "/voice/webhook"
    form = {"CallSid": "CAraced", "AccountSid": pair.carrier.credentials["accountSid"],
            "From": "+15550002222", "To": "+15550000000", "Direction": "inbound",
            "CallStatus": "ringing"}  # fmt: skip
    async with aiohttp.ClientSession() as session:

        async def post(target: str, attempt: str) -> int:
            fields = {**form, "Attempt": attempt}  # another body: another replay key
            token = pair.carrier.credentials["authToken"]
            headers = {"X-Twilio-Signature": twilio_signature(token, url, fields)}
            async with session.post(target + "/voice/webhook", data=fields,
                                    headers=headers) as answer:  # fmt: skip
                await answer.read()
                return answer.status

        statuses = await asyncio.gather(*(post(t, str(i))
                                          for i, t in enumerate(pair.front.targets)))  # fmt: skip
    assert statuses == [200, 200]
    store = pair.gateways[0].store
    assert await store.count_live() == 1
    owners = [len(g.store.live()) for g in pair.gateways]
    assert sorted(owners) == [0, 1]


async def test_an_agent_command_at_a_gateway_that_lost_the_call_goes_to_the_new_owner(
    pair: Pair,
) -> None:
    # The first gateway was paused past its lease and the second took its call over; the
    # first has not noticed yet (its next renewal would): a command it gets is routed on.
    first, second = pair.gateways
    pair.carrier.script = TALK
    call = await first.manager.initiate(to=CALLEE, flow="conversation",
                                        params={"message": "Hello there"})  # fmt: skip
    await waiting_for_agent(pair, call.call_id)
    lost, taker = pair.cluster(0), pair.cluster(1)
    lost._running[0].cancel()  # no renewal: it does not notice
    await lost.store.aio.delete(lost.key("node", lost.node))
    assert await taker.sweep() == [call.call_id]
    assert lost.store.owns(call.call_id)  # what it believes
    await first.manager.speak(call.call_id, "Still there?")
    record = second.store.get(call.call_id)
    assert record is not None
    bot = [line.text for line in record.transcript if line.speaker == "bot"]
    assert bot == ["Hello there", "Still there?"]


async def test_a_gateway_stopping_finishes_the_routed_work_it_holds(
    pair: Pair, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A command routed to the owner is still being applied when the owner is told to stop
    # (a rolling deploy): it must be committed and sent once. Cut off, its commit lands
    # after the drain (the carrier is never told), or its sender, unanswered, runs it again.
    owner, other = pair.gateways
    pair.carrier.script = TALK
    call = await owner.manager.initiate(to=CALLEE, flow="conversation",
                                        params={"message": "Hello there"})  # fmt: skip
    await waiting_for_agent(pair, call.call_id)
    applying = asyncio.Event()
    turns, stopping = owner.manager.turns, pair.cluster(0)
    push = turns._push_turn

    async def slow_push(*args: Any, **kwargs: Any) -> None:
        applying.set()
        while not stopping._stopping:  # still applying once the owner's node is stopping
            await asyncio.sleep(0.01)
        await push(*args, **kwargs)

    monkeypatch.setattr(turns, "_push_turn", slow_push)
    speak = asyncio.create_task(other.manager.speak(call.call_id, "One moment please."))
    async with asyncio.timeout(GENEROUS_S):
        await applying.wait()
    before = live_updates(pair.carrier)
    await owner.stop()
    pair.gateways.remove(owner)  # stopped: not again at the end
    pair.dead.add(0)
    async with asyncio.timeout(GENEROUS_S):
        await speak
    assert live_updates(pair.carrier) == before + 1  # the turn pushed to the call, once


def live_updates(carrier: MockCarrier) -> int:
    return sum(1 for r in carrier.requests if r.method == "POST" and isinstance(r.body, dict)
               and "kind=live" in str(r.body.get("Url", "")))  # fmt: skip


class Blackhole:
    """A TCP relay to Redis that can swallow everything both ways without closing (a network
    partition: no reset, nothing answers)."""

    def __init__(self) -> None:
        self.swallowing = False
        self.pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/0"

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 6379)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self.pumps.add(task)
            task.add_done_callback(self.pumps.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                if not self.swallowing:
                    sink.write(chunk)
                    await sink.drain()
        sink.close()

    async def stop(self) -> None:
        self.server.close()
        for task in list(self.pumps):
            task.cancel()
        await asyncio.gather(*self.pumps, return_exceptions=True)


async def test_the_inbox_is_read_again_after_a_silent_network_partition() -> None:
    # A blocking read whose answer never comes (the network dropped it, no reset) must time
    # out and be sent again: else the node renews its lease but never reads routed work.
    hole = Blackhole()
    url = await hole.start()
    store = RedisStore(url, prefix=f"vctest:{uuid.uuid4().hex[:10]}:", node="a")
    node = Cluster(store, cast(Any, NoCalls()), lease_s=0.6)
    await node.start()
    try:
        hole.swallowing = True
        await asyncio.sleep(1.5)  # a read (each blocks 1 s) was sent and its answer lost
        hole.swallowing = False
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        node._waiting["r1"] = future
        direct = RedisStore(REDIS_URL, prefix=store.prefix)
        await direct.aio.xadd(node.key("inbox", "a"), {"kind": "answer", "id": "r1",
                                                        "from": "b", "body": b"{}"})  # fmt: skip
        async with asyncio.timeout(GENEROUS_S):
            assert await future == {}
    finally:
        await node.stop()
        await direct.delete_all()
        await direct.aclose()
        await store.aclose()
        await hole.stop()
