"""Two gateways on one Redis store behind one webhook address, for the cluster tests: a
round-robin front, the gateways (whole runtimes, each its own server, manager and node), and
what the tests wait for."""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web
from yarl import URL

from voicecall.dsl.catalog import Catalog
from voicecall.runtime.app import Runtime, RuntimeConfig, start_runtime
from voicecall.runtime.cluster import Cluster
from voicecall.runtime.sim.carrier.carrier import MockCarrier
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.state import CallRecord

REDIS_URL = "redis://127.0.0.1:6379/0"
GENEROUS_S = 30.0  # how long something may take on a loaded machine (not a speed limit)
CALLEE = "+15550001111"


@dataclass
class Front:
    """One webhook address for both gateways: each request goes to the next one in turn that
    answers (a gateway that is down is skipped, as a load balancer's health check would)."""

    targets: list[str] = field(default_factory=list)
    sent: Counter[str] = field(default_factory=Counter)
    turn: int = 0
    runner: web.AppRunner | None = None
    url: str = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self.session = aiohttp.ClientSession()
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def forward(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",
                   "content-length", "transfer-encoding")}  # fmt: skip
        for _ in range(len(self.targets)):
            target = self.targets[self.turn % len(self.targets)]
            self.turn += 1
            try:
                # The path and query byte for byte (re-encoded, the signed URL would differ).
                url = URL(target + request.raw_path, encoded=True)
                async with self.session.request(request.method, url, data=body,
                                                headers=headers) as answer:  # fmt: skip
                    self.sent[target] += 1
                    return web.Response(body=await answer.read(), status=answer.status,
                                        content_type=answer.content_type)  # fmt: skip
            except aiohttp.ClientConnectionError:
                continue
        return web.Response(status=502)

    async def stop(self) -> None:
        await self.session.close()
        if self.runner is not None:
            await self.runner.cleanup()


@dataclass
class Pair:
    carrier: MockCarrier
    front: Front
    gateways: list[Runtime]
    prefix: str
    dead: set[int] = field(default_factory=set)

    def cluster(self, index: int) -> Cluster:
        cluster = self.gateways[index].manager.cluster
        assert cluster is not None
        return cluster

    def record(self, call_id: str) -> CallRecord:
        for index, gateway in enumerate(self.gateways):
            found = None if index in self.dead else gateway.manager.get(call_id)
            if found is not None:
                return found
        raise AssertionError(f"no call {call_id}")


async def start_gateway(carrier: MockCarrier, front: Front, prefix: str) -> Runtime:
    config = {
        "provider": "twilio", "fromNumber": "+15550000000", "inboundPolicy": "open",
        "maxConcurrentCalls": 10, "publicUrl": front.url + "/voice/webhook",
        "serve": {"port": 0, "bind": "127.0.0.1"},
        "store": REDIS_URL, "redis": {"keyPrefix": prefix, "leaseSeconds": 2},
        "twilio": {**carrier.credentials, "apiBaseUrl": carrier.api_base},
    }  # fmt: skip
    runtime = await start_runtime(RuntimeConfig(raw=config), catalog=Catalog(), port=0)
    front.targets.append(f"http://127.0.0.1:{runtime.runner.addresses[0][1]}")
    return runtime


async def ended(pair: Pair, call_id: str) -> CallRecord:
    async with asyncio.timeout(GENEROUS_S):
        while not (record := pair.record(call_id)).ended:
            await asyncio.sleep(0.05)
    return record


async def waiting_for_agent(pair: Pair, call_id: str) -> CallRecord:
    async with asyncio.timeout(GENEROUS_S):
        while True:
            record = pair.record(call_id)
            if record.waiting is not None and record.waiting.kind == "converse":
                return record
            await asyncio.sleep(0.05)


def hangups(carrier: MockCarrier) -> int:
    return sum(1 for r in carrier.requests if r.method == "POST" and "/Calls/" in r.path
               and isinstance(r.body, dict) and r.body.get("Status") == "completed")  # fmt: skip


TALK = Script(caller=(Step(action="answer"), Step(action="say", value="Hi"),
                      Step(action="say", value="Fine, thanks")))  # fmt: skip
