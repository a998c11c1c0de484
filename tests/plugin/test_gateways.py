"""Two `voicecall gateway` processes sharing one Redis store behind one webhook address: the
Twilio-speaking mock carrier (in this process) reaches them through a round-robin front, RPCs go
to either, and one of them is killed with SIGKILL in the middle of a call."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.plugin.gateway.support import GatewayProcess, client, free_port, write_config
from tests.runtime.cluster_support import REDIS_URL, TALK, Front
from voicecall.runtime.sim.carrier.carrier import MockCarrier
from voicecall.runtime.store.redis import RedisStore

pytestmark = pytest.mark.e2e

CALLEE = "+15550001234"
GENEROUS_S = 60.0  # a hang guard only, never a speed check


class Deployment:
    def __init__(self, tmp: Path, carrier: MockCarrier, front: Front, prefix: str):
        self.gateways: list[GatewayProcess] = []
        for n in range(2):
            folder = tmp / f"gw{n}"
            folder.mkdir()
            port = free_port()
            plugin = {
                "provider": "twilio", "fromNumber": "+15550000000", "maxConcurrentCalls": 10,
                "publicUrl": front.url + "/voice/webhook", "store": REDIS_URL,
                "redis": {"keyPrefix": prefix, "leaseSeconds": 2},
                "serve": {"port": port, "bind": "127.0.0.1", "path": "/voice/webhook"},
                "twilio": {**carrier.credentials, "apiBaseUrl": carrier.api_base},
            }  # fmt: skip
            self.gateways.append(GatewayProcess(write_config(folder, plugin), tick_ms=200))
            front.targets.append(f"http://127.0.0.1:{port}")
        self.front, self.prefix = front, prefix
        for gateway in self.gateways:
            gateway.wait_ready()


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[tuple[Deployment, MockCarrier]]:
    prefix = f"vctest:{uuid.uuid4().hex[:10]}:"
    carrier = MockCarrier("twilio")
    await carrier.start()
    carrier.script = TALK
    front = Front()
    await front.start()
    made = await asyncio.to_thread(Deployment, tmp_path, carrier, front, prefix)
    try:
        yield made, carrier
    finally:
        for gateway in made.gateways:
            gateway.kill()
        await front.stop()
        await carrier.stop()
        cleaner = RedisStore(REDIS_URL, prefix=prefix)
        await cleaner.delete_all()
        await cleaner.aclose()


async def status(c: Any, call_id: str) -> dict[str, Any]:
    found: dict[str, Any] = await c.ok("voicecall.status", {"callId": call_id})
    assert found["found"] is True, found
    call: dict[str, Any] = found["call"]
    return call


async def until(c: Any, call_id: str, check: Any) -> dict[str, Any]:
    async with asyncio.timeout(GENEROUS_S):
        while not check(call := await status(c, call_id)):
            await asyncio.sleep(0.1)
    return call


async def test_rpcs_to_either_gateway_and_a_kill_9_mid_call(
    deployment: tuple[Deployment, MockCarrier],
) -> None:
    made, carrier = deployment
    first, second = made.gateways
    async with client(first) as a, client(second) as b:
        started = await a.ok("voicecall.initiate", {"message": "Hello there", "to": CALLEE,
                                                    "mode": "conversation"})  # fmt: skip
        call_id = started["callId"]
        await until(b, call_id, lambda c: c["state"] == "listening")
        # The clients of the gateway that does not own the call hear its events too.
        await b.until_event(lambda e: e.get("event") == "voicecall.transcript"
                            and e["payload"]["callId"] == call_id
                            and e["payload"]["text"] == "Hello there")  # fmt: skip
        listed = await b.ok("voicecall.status", {})
        assert call_id in [c["callId"] for c in listed["calls"]]  # every gateway's calls
        answer = await b.ok("voicecall.continue", {"callId": call_id, "message": "How are you?"})
        assert answer["success"] is True and answer["transcript"] == "Fine, thanks"
    first.kill()  # SIGKILL: no lease given up, nothing handed over
    async with client(second) as b:
        await until(b, call_id, lambda c: c["state"] == "listening")
        assert await b.ok("voicecall.end", {"callId": call_id}) == {"success": True}
        ended = await until(b, call_id, lambda c: "endedAt" in c)
    assert ended["endReason"] in ("hangup-bot", "completed")
    updates = [r for r in carrier.requests if r.method == "POST" and "/Calls/" in r.path]
    hangups = [r for r in updates if isinstance(r.body, dict) and r.body.get("Status")]
    assert len(hangups) <= 1  # the call was hung up once, not once per gateway
    assert len(made.front.sent) == 2  # the carrier's webhooks reached both gateways
    store = RedisStore(REDIS_URL, prefix=made.prefix)
    record = store.get(call_id)
    await store.aclose()
    assert record is not None and record.ended
    lines = [(line.speaker, line.text) for line in record.transcript]
    assert lines == [("bot", "Hello there"), ("user", "Hi"), ("bot", "How are you?"),
                     ("user", "Fine, thanks")]  # nothing lost or doubled  # fmt: skip
