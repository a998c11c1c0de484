"""Two gateways on one Redis store behind one webhook address (in one process: each a whole
runtime with its own server, manager and node). The mock carrier speaks Twilio to a round-robin
front, so the webhooks of one call alternate between the two; agent commands are sent to the
gateway that does not own the call; one gateway dies without a word and the other takes its
call over when its lease expires. `tests/plugin/test_gateways.py` does the same with two
`voicecall gateway` processes and `kill -9`."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

from tests.runtime.cluster_support import (
    CALLEE,
    GENEROUS_S,
    REDIS_URL,
    TALK,
    Pair,
    ended,
    hangups,
    waiting_for_agent,
)
from voicecall.dsl.catalog import Catalog
from voicecall.runtime.app import Runtime, RuntimeConfig, start_runtime
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.store.redis import RedisStore


async def test_one_calls_webhooks_alternate_and_apply_exactly_once(pair: Pair) -> None:
    pair.carrier.duplicate_rate = 0.5  # half the webhooks sent twice, each to the other gateway
    pair.carrier.script = Script(caller=(Step(action="answer"), Step(action="press", value="1")))
    params = {"patient": "Ann", "when": "today"}
    call = await pair.gateways[0].manager.initiate(to=CALLEE, flow="appointment-reminder",
                                                   params=params)  # fmt: skip
    record = await ended(pair, call.call_id)
    assert record.visited == ["greet", "confirmed"]
    scraped = await metrics(pair.gateways[1])
    assert f"voicecall_cluster_routed_total {float(pair.cluster(1).routed)}" in scraped
    assert "voicecall_cluster_owned_calls 0.0" in scraped
    assert len(pair.front.sent) == 2 and min(pair.front.sent.values()) >= 2, pair.front.sent
    second = pair.cluster(1)  # it sent the owner what it received (or, on a machine so busy
    assert second.routed + second.taken_over >= 1  # that a lease lapsed, took the call over)
    said = [line.text for line in record.transcript if line.speaker == "bot"]
    assert said == ["Hello Ann, this is a reminder of your appointment today.",
                    "Can you make it? Say yes or no, or press 1 for yes or 2 for no.",
                    "Thank you, see you then."]  # each once, in order  # fmt: skip
    assert not pair.gateways[0].store.live() and not pair.gateways[1].store.live()


async def test_agent_commands_sent_to_either_gateway_reach_the_call(pair: Pair) -> None:
    owner, other = pair.gateways
    pair.carrier.script = TALK
    seen: list[tuple[str, int]] = []  # what the other gateway's clients hear of the call
    other.manager.watch(lambda c: seen.append((c.state, len(c.transcript))), everywhere=True)
    call = await owner.manager.initiate(to=CALLEE, flow="conversation",
                                        params={"message": "Hello there"})  # fmt: skip
    await waiting_for_agent(pair, call.call_id)
    heard = await other.manager.continue_call(call.call_id, "How are you?")
    assert heard == "Fine, thanks"  # the callee's answer, back through the owner
    await other.manager.end_call(call.call_id, "Goodbye now.")
    record = await ended(pair, call.call_id)
    bot = [line.text for line in record.transcript if line.speaker == "bot"]
    assert bot == ["Hello there", "How are you?", "Goodbye now."]
    assert pair.cluster(1).routed >= 2 and hangups(pair.carrier) <= 1
    async with asyncio.timeout(GENEROUS_S):  # told of each change, the last one included
        while not seen or seen[-1] != (record.state, len(record.transcript)):
            await asyncio.sleep(0.05)
    assert "listening" in {state for state, _ in seen}


async def test_a_dead_gateways_call_is_taken_over_when_its_lease_expires(pair: Pair) -> None:
    owner, survivor = pair.gateways
    pair.carrier.script = TALK
    call = await owner.manager.initiate(to=CALLEE, flow="conversation",
                                        params={"message": "Hello there"})  # fmt: skip
    await waiting_for_agent(pair, call.call_id)
    await die(owner)
    pair.dead.add(0)
    async with asyncio.timeout(GENEROUS_S):  # the lease (2 s) expires; a renewal sweeps
        while call.call_id not in {c.call_id for c in survivor.store.live()}:
            await asyncio.sleep(0.05)
    assert pair.cluster(1).taken_over == 1
    await survivor.manager.end_call(call.call_id, "Goodbye now.")
    record = await ended(pair, call.call_id)
    bot = [line.text for line in record.transcript if line.speaker == "bot"]
    assert bot == ["Hello there", "Goodbye now."]  # nothing lost, nothing doubled
    assert record.end_reason in ("completed", "hangup-bot")


async def die(runtime: Runtime) -> None:
    """Stops a gateway the way `kill -9` does: no lease released, no call handed over, its
    server gone, its timers never fire (what a dead process leaves: what Redis holds)."""
    cluster = runtime.manager.cluster
    assert cluster is not None
    for task in cluster._running:
        task.cancel()
    await asyncio.gather(*cluster._running, return_exceptions=True)
    await runtime.runner.cleanup()
    for call_id in [c.call_id for c in runtime.store.live()]:
        runtime.manager.calls.timers.cancel_all(call_id)
    runtime.manager.cluster = None  # its stop() would release the lease: a dead one does not
    await cluster._reader.aclose()


async def test_a_gateways_streams_come_to_its_own_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from voicecall.runtime.voice.conversation import stream_url

    prefix = f"vctest:{uuid.uuid4().hex[:10]}:"
    config = {"provider": "mock", "store": REDIS_URL, "streaming": {"enabled": True},
              "redis": {"keyPrefix": prefix, "nodeUrl": "https://gw1.example.com"},
              "serve": {"port": 0, "bind": "127.0.0.1"}}  # fmt: skip
    monkeypatch.setenv("VOICECALL_NODE_URL", "https://gw2.example.com")  # the process's own
    runtime = await start_runtime(RuntimeConfig(raw=config), catalog=Catalog(), port=0)
    try:
        streams = runtime.conversations
        assert streams is not None and streams.node_url == "https://gw2.example.com"
        assert stream_url(streams.node_url, "/voice/stream") == "wss://gw2.example.com/voice/stream"
    finally:
        await runtime.stop()
        cleaner = RedisStore(REDIS_URL, prefix=prefix)
        await cleaner.delete_all()
        await cleaner.aclose()


async def metrics(runtime: Runtime) -> str:
    port = runtime.runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/metrics"
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        return await answer.text()


async def test_a_gateway_that_lost_its_lease_lets_go_of_what_it_held(pair: Pair) -> None:
    owner, other = pair.gateways
    pair.carrier.script = TALK
    call = await owner.manager.initiate(to=CALLEE, flow="conversation",
                                        params={"message": "Hello there"})  # fmt: skip
    await waiting_for_agent(pair, call.call_id)
    freed: list[tuple[str, str]] = []
    owner.manager.calls.end_hooks.append(lambda call_id, why: freed.append((call_id, why)))
    paused = pair.cluster(0)
    renewal = next(t for t in paused._running if t.get_name() == "cluster-lease")
    renewal.cancel()  # paused: it renews nothing
    await paused.store.aio.delete(paused.key("node", paused.node))  # its lease lapsed
    async with asyncio.timeout(GENEROUS_S):  # its sweep, or its own renewal's: one takes it
        while call.call_id not in {c.call_id for c in other.store.live()}:
            await pair.cluster(1).sweep()
            await asyncio.sleep(0.05)
    await paused._recheck()  # what its next renewal does
    assert freed == [(call.call_id, "taken over by another gateway")]
    assert call.call_id not in {c.call_id for c in owner.store.live()}
    await other.manager.end_call(call.call_id, "Goodbye now.")
    assert (await ended(pair, call.call_id)).end_reason in ("completed", "hangup-bot")
