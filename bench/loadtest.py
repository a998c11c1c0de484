"""Load and fault test (`make loadtest`): whole calls on real gateways, loopback only.

The three carriers run at once, one gateway (or two behind a round-robin front, on Redis)
per carrier, each on its own store: a gateway serves one provider, and running the three
side by side puts the mixed load of a real deployment on the machine at the same time, with
one ramp for all. The carriers are the project's mock carrier (runtime.sim.carrier): their
webhooks are signed as each carrier signs them and checked by the gateways (signature
verification on), and the gateways' REST commands go to its fake carrier APIs
(``<provider>.apiBaseUrl``).

Calls start on a linear ramp (the rate rises from zero to its peak over ``--ramp`` seconds),
round-robin over the carriers; one in five is outbound, placed through the Gateway RPC
(``voicecall.start``), the others are inbound. Each call plays a small flow: a greeting, a
spoken question, a keypad question, a goodbye, the bot's hang-up. Faults:

- 5 % of webhooks are sent twice (the copy must get the same reply and change nothing);
- 5 % are delivered out of order (Telnyx events held back after the next one; Twilio and Plivo
  callbacks whose reply the carrier ignores delayed past the call's next webhook);
- one slow store: the Plivo gateway's SQLite file is locked by another writer for 1 s in
  every 3 s during the middle of the ramp (on Redis: a latency proxy in front of it);
- one gateway restart: the Twilio gateway is killed (SIGKILL) half-way through the ramp and
  started again on the same store; the carrier retries the webhooks it could not deliver.

Afterwards the stores are read and checked against what the carriers saw (bench.loadtest_checks):
every call stored once and ended once, no transcript line lost or doubled, no prompt heard
twice, no second hang-up. The report gives p50/p95/p99 per webhook kind, error rates, and each
gateway's CPU and RSS over time. Exit status 1 when a check fails.

    python -m bench.loadtest [--calls 500] [--store sqlite|redis] [--gateways 1|2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadtest_carrier import LoadCarrier, WebhookStats
from bench.loadtest_checks import Findings, StoredCall, check, read_redis, read_sqlite
from bench.loadtest_procs import (
    Front,
    Gateway,
    LatencyProxy,
    Sampler,
    SlowSQLite,
    free_port,
    kill_all,
)
from bench.rpc import TOKEN, Connection, _connect
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.state import TERMINAL

PROVIDERS = ("twilio", "plivo", "telnyx")
RESTARTED = "twilio"  # the provider whose gateway is killed and started again
SLOW = "plivo"  # the provider whose store is slowed down
OUTBOUND_EVERY = 5  # one call in five is outbound
DUPLICATE_RATE = 0.05
REORDER_RATE = 0.05
RETRY_S = 30.0  # how long a carrier keeps retrying a webhook that found no gateway
SETTLE_S = 60.0  # after the ramp: the calls' ends, a hang guard
REDIS_URL = "redis://127.0.0.1:6379/0"
OWN = {"twilio": "+15550100001", "plivo": "+15550100002", "telnyx": "+15550100003"}
FLOW = """\
version: 1
name: {name}
description: Load test - a spoken question, a keypad question, a goodbye.
direction: {direction}
{admit}start: greet
nodes:
  greet:
    - say: Hello, this is the load test.
    - ask:
        prompt: What is your name?
        input: [speech]
        timeout: 5s
        save_as: name
        on_no_input: bye
    - ask:
        prompt: Press 1 to confirm.
        input: [dtmf]
        num_digits: 1
        timeout: 5s
        save_as: key
        on_no_input: bye
    - goto: bye
  bye:
    - say: Goodbye.
    - hangup
"""


def script(think_s: float) -> Script:
    """The caller (inbound) or callee (outbound): a name, then a key, each after a pause."""
    return Script(caller=(Step(action="answer", after_s=0.3),
                          Step(action="say", value="Ann Smith", after_s=think_s),
                          Step(action="press", value="1", after_s=think_s)))  # fmt: skip


@dataclass(slots=True)
class Options:
    calls: int = 500
    store: str = "sqlite"
    gateways: int = 1
    ramp_s: float = 0.0  # 0: calls / 12.5 (500 calls: 40 s, a peak of 25 calls a second)
    restart: bool = True
    slow_store: bool = True
    duplicate_rate: float = DUPLICATE_RATE
    reorder_rate: float = REORDER_RATE
    seed: int = 1
    redis_url: str = REDIS_URL
    think_s: float = 1.0  # the caller's pause before each answer

    @property
    def ramp(self) -> float:
        return self.ramp_s or max(2.0, self.calls / 12.5)


@dataclass(slots=True)
class Site:
    """One provider: its carrier, its gateways (and front), its store."""

    provider: str
    carrier: LoadCarrier
    gateways: list[Gateway]
    store: str  # the folder (SQLite) or the URL (Redis)
    prefix: str = ""  # Redis key prefix
    front: Front | None = None
    rpc: dict[str, Connection] = field(default_factory=dict)
    rpc_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    turn: int = 0

    @property
    def webhook_url(self) -> str:
        return self.front.url if self.front is not None else self.gateways[0].webhook_url


class StoreUnavailable(RuntimeError):
    """The store asked for is not in this build."""


def redis_available() -> bool:
    try:
        import voicecall.runtime.store.redis  # noqa: F401
    except ImportError:
        return False
    return True


def _write_flows(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, direction, admit in (("loadtest", "inbound", "admit:\n  policy: open\n"),
                                   ("loadtest-out", "outbound", "")):  # fmt: skip
        text = FLOW.format(name=name, direction=direction, admit=admit)
        (folder / f"{name}.yaml").write_text(text, "utf-8")


def _config(
    folder: Path, site_store: str, provider: str, carrier: LoadCarrier, opts: Options,
    *, prefix: str, public_url: str | None, redis_port: int | None,
) -> Path:  # fmt: skip
    serve_port = free_port()
    plugin: dict[str, Any] = {
        "provider": provider, "fromNumber": OWN[provider], "inboundFlow": "loadtest",
        "flows": [str(folder.parent.parent / "flows")], "maxConcurrentCalls": 2000,
        # The carriers' webhooks come from a pool of addresses; here all from 127.0.0.1.
        "serve": {"port": serve_port, "bind": "127.0.0.1", "path": "/voice/webhook",
                  "maxInFlightPerIp": 4096},
        "store": site_store,
        provider: {**carrier.credentials, "apiBaseUrl": carrier.api_base},
    }  # fmt: skip
    if public_url:
        plugin["publicUrl"] = public_url
    if opts.store == "redis":
        assert redis_port is not None
        plugin["store"] = f"redis://127.0.0.1:{redis_port}/0"
        plugin["redis"] = {"keyPrefix": prefix, "leaseSeconds": 5,
                           "nodeUrl": f"http://127.0.0.1:{serve_port}"}  # fmt: skip
    config = {"gateway": {"port": free_port(), "auth": {"mode": "token", "token": TOKEN}},
              "plugins": {"entries": {"voice-call": {"config": plugin}}}}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "openclaw.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class Run:
    """One load test run, from the gateways' start to the report's numbers."""

    def __init__(self, opts: Options, root: Path):
        self.opts = opts
        self.root = root
        self.stats = WebhookStats()
        self.rpc_latency: dict[tuple[str, str], list[float]] = {}
        self.rpc_errors: dict[str, int] = {}
        self.sites: dict[str, Site] = {}
        self.placed: dict[str, int] = dict.fromkeys(PROVIDERS, 0)
        self.place_errors: list[str] = []
        self.faults: dict[str, Any] = {}
        self.proxy: LatencyProxy | None = None
        self.sampler: Sampler | None = None
        self.began = 0.0

    # --- setting up ----------------------------------------------------------------------------

    async def start(self) -> None:
        _write_flows(self.root / "flows")
        redis_port: int | None = None
        if self.opts.store == "redis":
            host, port = _redis_address(self.opts.redis_url)
            self.proxy = LatencyProxy(host, port)
            await self.proxy.start()
        for i, provider in enumerate(PROVIDERS):
            carrier = LoadCarrier(provider, self.stats, seed=self.opts.seed * 10 + i,
                                  duplicate_rate=self.opts.duplicate_rate,
                                  reorder_rate=self.opts.reorder_rate, retry_s=RETRY_S)  # fmt: skip
            carrier.script = script(self.opts.think_s)
            await carrier.start()
            prefix = f"loadtest-{uuid.uuid4().hex[:8]}-{provider}:"
            store = str(self.root / provider / "store")
            if self.opts.store == "redis":
                redis_port = self._redis_port(provider)
                store = self.opts.redis_url
            site = Site(provider, carrier, [], store, prefix)
            count = self.opts.gateways
            public = None
            if count > 1:
                site.front = Front(site.gateways)
                await site.front.start()
                public = site.front.url
            for n in range(count):
                name = f"{provider}-{n + 1}" if count > 1 else provider
                config = _config(self.root / provider / name, store, provider, carrier,
                                 self.opts, prefix=prefix, public_url=public,
                                 redis_port=redis_port)  # fmt: skip
                site.gateways.append(Gateway(name, config))
            self.sites[provider] = site
        gateways = [gw for s in self.sites.values() for gw in s.gateways]
        await asyncio.gather(*(gw.start() for gw in gateways))
        for site in self.sites.values():
            site.carrier.webhook_url = site.webhook_url  # Telnyx: the connection's URL
        self.sampler = Sampler(gateways)

    def _redis_port(self, provider: str) -> int:
        """The slow provider's gateways reach Redis through the latency proxy."""
        host_port = _redis_address(self.opts.redis_url)[1]
        if provider == SLOW and self.proxy is not None and self.opts.slow_store:
            return self.proxy.listen_port
        return host_port

    async def stop(self) -> None:
        for site in self.sites.values():
            for conn in site.rpc.values():
                with contextlib.suppress(Exception):
                    await conn.ws.close()
            codes = await asyncio.gather(*(asyncio.to_thread(gw.terminate)
                                           for gw in site.gateways))  # fmt: skip
            self.faults.setdefault("exit_codes", {}).update(
                {gw.name: c for gw, c in zip(site.gateways, codes, strict=True)})  # fmt: skip
            if site.front is not None:
                await site.front.stop()
            await site.carrier.stop()
        if self.proxy is not None:
            await self.proxy.stop()

    # --- the load ------------------------------------------------------------------------------

    def start_times(self) -> list[float]:
        """Call i starts at ramp·sqrt(i/N): a rate rising linearly from zero to 2N/ramp."""
        n, ramp = self.opts.calls, self.opts.ramp
        return [ramp * math.sqrt(i / n) for i in range(n)]

    async def drive(self) -> None:
        """The ramp, the faults, then waits until every call has ended."""
        assert self.sampler is not None
        self.began = time.perf_counter()
        sampling = asyncio.get_running_loop().create_task(self.sampler.run(self.began))
        faults = [asyncio.get_running_loop().create_task(f) for f in self._faults()]
        calls: list[asyncio.Task[None]] = []

        async def ramp() -> None:
            for i, at in enumerate(self.start_times()):
                delay = self.began + at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                provider = PROVIDERS[i % len(PROVIDERS)]
                calls.append(asyncio.get_running_loop().create_task(self.one_call(i, provider)))
            await asyncio.gather(*calls)
            self.faults["ramp_s"] = round(time.perf_counter() - self.began, 2)

        placing = asyncio.get_running_loop().create_task(ramp())
        try:
            # A fault that fails (a gateway that does not start again) ends the run at once.
            await asyncio.gather(placing, *faults)
        except BaseException:
            for task in (placing, *calls, *faults, sampling):
                task.cancel()
            await asyncio.gather(placing, *calls, *faults, sampling, return_exceptions=True)
            raise
        try:
            async with asyncio.timeout(SETTLE_S):
                for site in self.sites.values():
                    await site.carrier.settle()
                await self._stores_settled()
        except TimeoutError:
            self.faults["settle_timeout"] = True
        self.faults["run_s"] = round(time.perf_counter() - self.began, 2)
        sampling.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampling

    async def one_call(self, i: int, provider: str) -> None:
        site = self.sites[provider]
        number = f"+1555{2000000 + i:07d}"
        if i % OUTBOUND_EVERY == OUTBOUND_EVERY - 1:
            await self.place_outbound(site, number)
        else:
            await site.carrier.place_inbound(
                number, OWN[provider], site.webhook_url,
                status_callback=f"{site.webhook_url}?kind=status",
                hangup_url=f"{site.webhook_url}?kind=hangup",
            )  # fmt: skip
            self.placed[provider] += 1

    async def place_outbound(self, site: Site, number: str) -> None:
        """``voicecall.start`` on the site's gateways in turn, once the gateway is up."""
        gw = site.gateways[site.turn % len(site.gateways)]
        site.turn += 1
        async with site.rpc_lock:
            await asyncio.wait_for(gw.up.wait(), RETRY_S)
            started = time.perf_counter()
            try:
                conn = site.rpc.get(gw.name)
                if conn is None or conn.ws.closed:
                    conn = site.rpc[gw.name] = await _connect(
                        site.carrier.stream_client, f"ws://127.0.0.1:{gw.rpc_port}/")  # fmt: skip
                await conn.call("voicecall.start", {"to": number, "flow": "loadtest-out"})
            except Exception as exc:  # a gateway killed mid-request: counted, not retried
                site.rpc.pop(gw.name, None)
                why = f"{site.provider} voicecall.start: {type(exc).__name__}: {exc}"[:160]
                self.rpc_errors[why] = self.rpc_errors.get(why, 0) + 1
                return
            self.rpc_latency.setdefault((site.provider, "rpc voicecall.start"), []).append(
                time.perf_counter() - started)  # fmt: skip
            self.placed[site.provider] += 1

    def _faults(self) -> list[Any]:
        out = []
        ramp = self.opts.ramp
        if self.opts.restart:
            out.append(self._restart(self.sites[RESTARTED].gateways[0], ramp * 0.5))
        if self.opts.slow_store:
            out.append(self._slow(ramp * 0.2, ramp * 0.8))
        return out

    async def _restart(self, gw: Gateway, at: float) -> None:
        await asyncio.sleep(max(0.0, self.began + at - time.perf_counter()))
        site = self.sites[RESTARTED]
        live = sum(not c.ended for c in site.carrier.calls.values())
        in_flight = site.carrier._in_flight
        # No call is placed through it meanwhile: a start cut off by the kill would be
        # neither refused nor confirmed (the RPC client waits for the gateway to be back).
        async with site.rpc_lock:
            conn = site.rpc.pop(gw.name, None)
            if conn is not None:
                await conn.ws.close()
            killed = time.perf_counter()
            await asyncio.to_thread(gw.kill)
            await gw.start()
        self.faults["restart"] = {"gateway": gw.name, "at_s": round(killed - self.began, 2),
                                  "down_s": round(time.perf_counter() - killed, 2),
                                  "calls_live_at_kill": live,
                                  "webhooks_in_flight_at_kill": in_flight}  # fmt: skip

    async def _slow(self, begin: float, end: float) -> None:
        await asyncio.sleep(max(0.0, self.began + begin - time.perf_counter()))
        site = self.sites[SLOW]
        if self.opts.store == "redis":
            assert self.proxy is not None
            self.proxy.slow = True
            await asyncio.sleep(max(0.0, self.began + end - time.perf_counter()))
            self.proxy.slow = False
            self.faults["slow_store"] = {
                "provider": SLOW, "how": "Redis latency proxy",
                "delay_ms": self.proxy.delay_s * 1000, "from_s": round(begin, 1),
                "to_s": round(end, 1),
            }  # fmt: skip
            return
        slow = SlowSQLite(Path(site.store) / "calls.sqlite")
        slow.start()
        await asyncio.sleep(max(0.0, self.began + end - time.perf_counter()))
        await asyncio.to_thread(slow.stop)
        self.faults["slow_store"] = {"provider": SLOW, "how": "SQLite write lock held",
                                     "holds": slow.holds, "held_s": round(slow.held_s, 1),
                                     "hold_s": slow.hold_s, "gap_s": slow.gap_s,
                                     "from_s": round(begin, 1), "to_s": round(end, 1)}  # fmt: skip

    async def _stores_settled(self) -> None:
        """Waits until the stores hold every call ended (the last status may be in commit)."""
        while True:
            stored = await self.read_stores()
            if all(s.state in TERMINAL and s.ended_at for calls in stored.values()
                   for s in calls):  # fmt: skip
                return
            await asyncio.sleep(0.25)

    async def read_stores(self) -> dict[str, list[StoredCall]]:
        out = {}
        for provider, site in self.sites.items():
            if self.opts.store == "redis":
                out[provider] = await read_redis(self.opts.redis_url, site.prefix)
            else:
                db = Path(site.store) / "calls.sqlite"
                out[provider] = await asyncio.to_thread(read_sqlite, db) if db.exists() else []
        return out

    async def cleanup_redis(self) -> None:
        if self.opts.store != "redis":
            return
        import redis.asyncio as aioredis

        client = aioredis.from_url(self.opts.redis_url)
        try:
            for site in self.sites.values():
                keys = [k async for k in client.scan_iter(match=f"{site.prefix}*", count=1000)]
                for i in range(0, len(keys), 500):
                    await client.delete(*keys[i : i + 500])
        finally:
            await client.aclose()

    # --- the result ----------------------------------------------------------------------------

    async def result(self) -> dict[str, Any]:
        stored = await self.read_stores()
        findings = Findings()
        for provider, site in self.sites.items():
            check(provider, site.carrier.calls.values(), site.carrier.requests,
                  stored[provider], findings)  # fmt: skip
        endpoints = []
        keys = sorted(set(self.stats.latencies) | set(self.rpc_latency))
        for key in keys:
            samples = self.stats.latencies.get(key) or self.rpc_latency.get(key, [])
            errors = self.stats.errors.get(key, 0)
            endpoints.append({"provider": key[0], "kind": key[1], "n": len(samples),
                              "errors": errors, **_percentiles(samples)})  # fmt: skip
        rest = {p: _rest_counts(s.carrier) for p, s in self.sites.items()}
        ends_logged = {p: _ends_logged(site, stored[p]) for p, site in self.sites.items()}
        assert self.sampler is not None
        resources = {name: _resource_summary(samples)
                     for name, samples in self.sampler.samples.items()}  # fmt: skip
        s = self.stats
        requests = s.sent + sum(len(v) for v in self.rpc_latency.values())
        errors = sum(s.errors.values()) + sum(self.rpc_errors.values())
        return {
            "settings": {
                "calls": self.opts.calls,
                "store": self.opts.store,
                "gateways_per_provider": self.opts.gateways,
                "ramp_s": self.opts.ramp,
                "outbound_share": 1 / OUTBOUND_EVERY,
                "duplicate_rate": self.opts.duplicate_rate,
                "reorder_rate": self.opts.reorder_rate,
                "cores": os.cpu_count(),
            },
            "placed": self.placed,
            "endpoints": endpoints,
            "requests": requests,
            "errors": errors,
            "error_rate": errors / requests if requests else 0.0,
            "error_kinds": {**s.error_kinds, **self.rpc_errors},
            "webhooks": {
                "sent": s.sent,
                "retried": s.retried,
                "duplicated": s.duplicated,
                "duplicate_same_reply": s.duplicate_same_reply,
                "duplicate_other_reply": s.duplicate_other_reply[:10],
                "duplicate_cut_off": s.duplicated
                - s.duplicate_same_reply
                - len(s.duplicate_other_reply),
                "reordered": s.reordered,
                "answered_5xx_then_retried": s.answered_5xx,
                "front_failovers": {
                    p: x.front.failovers for p, x in self.sites.items() if x.front is not None
                },
            },
            "rest_commands": rest,
            "resources": resources,
            "series": {
                name: [(round(x.t, 1), round(x.cpu, 3), round(x.rss_mb, 1)) for x in samples]
                for name, samples in self.sampler.samples.items()
            },
            "faults": self.faults,
            "checks": findings.as_dict(),
            "ends_logged_not_once": ends_logged,
            # A webhook refused (non-2xx) fails the call at its carrier: the checks see it too.
            "ok": not any(findings.failures.values())
            and not s.duplicate_other_reply
            and not s.errors,
        }


def _redis_address(url: str) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        if not ordered:
            return 0.0
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99),
            "max_ms": round(ordered[-1] * 1000, 2) if ordered else 0.0}  # fmt: skip


_ENDED = re.compile(r"call ([0-9a-f-]{36}): ended \(")


def _ends_logged(site: Site, stored: list[StoredCall]) -> dict[str, int]:
    """Stored calls whose end the gateways logged other than once ("call …: ended (…)"), by
    count. Informational: the line is written just before the end's commit, so a kill in
    between, or a commit refused to a gateway that lost the call, repeats it harmlessly."""
    seen: Counter[str] = Counter()
    for gw in site.gateways:
        if gw.log.exists():
            seen.update(_ENDED.findall(gw.log.read_text(errors="replace")))
    out: Counter[str] = Counter(str(seen[call.call_id]) for call in stored)
    out.pop("1", None)
    return dict(out)


def _rest_counts(carrier: LoadCarrier) -> dict[str, int]:
    """The fake carrier API's requests by method and resource (ids left out)."""
    out: dict[str, int] = {}
    for r in carrier.requests:
        parts = [p for p in r.path.split("/") if p]
        if carrier.provider == "telnyx":
            name = f"{r.method} {parts[-1] if 'actions' in parts else '/'.join(parts[:2])}"
        elif carrier.provider == "twilio":
            name = f"{r.method} Calls" + ("" if parts[-1] == "Calls.json" else "/{sid}")
            if isinstance(r.body, dict) and r.body.get("Status"):
                name += f" Status={r.body['Status']}"
        else:
            name = f"{r.method} Call" + ("" if parts[-1] == "Call" else "/{uuid}")
        out[name] = out.get(name, 0) + 1
    return dict(sorted(out.items()))


def _resource_summary(samples: Sequence[Any]) -> dict[str, Any]:
    if not samples:
        return {}
    cpu = [s.cpu for s in samples]
    rss = [s.rss_mb for s in samples]
    return {"samples": len(samples), "cpu_mean": sum(cpu) / len(cpu), "cpu_max": max(cpu),
            "rss_start_mb": rss[0], "rss_max_mb": max(rss), "rss_end_mb": rss[-1]}  # fmt: skip


# --- the report ---------------------------------------------------------------------------------


OTHER_CHECKS = ("stored_twice", "ended_twice", "lines_other", "prompts_missing", "orphans",
                "not_stored")  # fmt: skip


def report(r: dict[str, Any]) -> None:
    """The readable tables: settings and faults, latency per endpoint, resources, checks."""
    _report_faults(r)
    _report_endpoints(r)
    _report_resources(r)
    _report_checks(r)


def _report_faults(r: dict[str, Any]) -> None:
    s = r["settings"]
    print(f"load test: {s['calls']} calls on {s['store']}, {s['gateways_per_provider']} "
          f"gateway(s) per provider, ramp {s['ramp_s']:.0f} s, "
          f"{s['outbound_share']:.0%} outbound, {s['duplicate_rate']:.0%} duplicated, "
          f"{s['reorder_rate']:.0%} reordered; {s['cores']} cores")  # fmt: skip
    f = r["faults"]
    if "restart" in f:
        x = f["restart"]
        print(f"  restart: {x['gateway']} killed (SIGKILL) at {x['at_s']} s with "
              f"{x['calls_live_at_kill']} calls live and {x['webhooks_in_flight_at_kill']} "
              f"webhooks in flight, serving again {x['down_s']} s later")  # fmt: skip
    if "slow_store" in f:
        x = f["slow_store"]
        extra = (f"{x['holds']} holds of {x['hold_s']} s every {x['hold_s'] + x['gap_s']} s"
                 if "holds" in x else f"+{x['delay_ms']:.0f} ms per chunk")  # fmt: skip
        print(f"  slow store: {x['provider']} ({x['how']}: {extra}) "
              f"from {x['from_s']} s to {x['to_s']} s")  # fmt: skip
    print(
        f"  ramp {f.get('ramp_s', 0)} s, all calls ended after {f.get('run_s', 0)} s"
        + ("  (SETTLE TIMEOUT)" if f.get("settle_timeout") else "")
    )


def _report_endpoints(r: dict[str, Any]) -> None:
    print()
    print(f"  {'provider':<8} {'endpoint':<28} {'n':>6} {'err':>4} {'p50 ms':>8} "
          f"{'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}")  # fmt: skip
    for e in r["endpoints"]:
        print(f"  {e['provider']:<8} {e['kind']:<28} {e['n']:>6} {e['errors']:>4} "
              f"{e['p50_ms']:>8.1f} {e['p95_ms']:>8.1f} {e['p99_ms']:>8.1f} "
              f"{e['max_ms']:>8.1f}")  # fmt: skip
    w = r["webhooks"]
    print(f"  requests {r['requests']}, errors {r['errors']} ({r['error_rate']:.2%}); webhooks "
          f"retried {w['retried']}, duplicated {w['duplicated']} (same reply "
          f"{w['duplicate_same_reply']}, other {len(w['duplicate_other_reply'])}, second copy "
          f"cut off by the call's end {w['duplicate_cut_off']}), reordered "
          f"{w['reordered']}")  # fmt: skip
    for why, n in list(r["error_kinds"].items())[:8]:
        print(f"    error: {why} ×{n}")
    if w["front_failovers"]:
        print(
            "  round-robin front: requests sent on to the other gateway (the first was down): "
            + ", ".join(f"{p} {n}" for p, n in w["front_failovers"].items())
        )
    retried_5xx = w["answered_5xx_then_retried"]
    if retried_5xx:
        print(f"  answered 5xx, then retried: {sum(retried_5xx.values())} attempts")
        for why, n in sorted(retried_5xx.items(), key=lambda kv: -kv[1])[:6]:
            print(f"    {why} ×{n}")
    for line in w["duplicate_other_reply"][:5]:
        print(f"    duplicate answered differently: {line}")
    for provider, counts in r["rest_commands"].items():
        print(
            f"  {provider} REST commands received: "
            + ", ".join(f"{name} {n}" for name, n in counts.items())
        )


def _report_resources(r: dict[str, Any]) -> None:
    print()
    print(f"  {'gateway':<10} {'CPU mean':>8} {'CPU max':>8} {'RSS start':>10} {'RSS max':>8} "
          f"{'RSS end':>8}   CPU % / RSS MB over time")  # fmt: skip
    for name, x in r["resources"].items():
        if not x:
            continue
        series = r["series"][name]
        step = max(1, len(series) // 8)
        points = " ".join(f"{c * 100:.0f}/{m:.0f}" for _, c, m in series[::step][:9])
        print(f"  {name:<10} {x['cpu_mean']:>8.0%} {x['cpu_max']:>8.0%} "
              f"{x['rss_start_mb']:>8.1f}MB {x['rss_max_mb']:>6.1f}MB {x['rss_end_mb']:>6.1f}MB"
              f"   {points}")  # fmt: skip


def _report_checks(r: dict[str, Any]) -> None:
    print()
    c = r["checks"]
    print(f"  {'provider':<8} {'placed':>6} {'carried':>7} {'stored':>6} {'ended':>6} "
          f"{'lines':>6} {'lost':>5} {'doubled':>7} {'prompts x2':>10} {'hangup x2':>9} "
          f"{'other':>5}")  # fmt: skip
    for p in PROVIDERS:
        ended = c["stored_calls"].get(p, 0) - c["not_ended"].get(p, 0)
        other = sum(c[k].get(p, 0) for k in OTHER_CHECKS)
        print(f"  {p:<8} {r['placed'][p]:>6} {c['carrier_calls'].get(p, 0):>7} "
              f"{c['stored_calls'].get(p, 0):>6} {ended:>6} {c['lines_expected'].get(p, 0):>6} "
              f"{c['lines_lost'].get(p, 0):>5} {c['lines_doubled'].get(p, 0):>7} "
              f"{c['prompts_doubled'].get(p, 0):>10} {c['hangups_doubled'].get(p, 0):>9} "
              f"{other:>5}")  # fmt: skip
    print("  (carried: calls the carrier had; lines: the transcript lines they had, which the "
          "store must hold once each;\n   other: calls not stored, stored twice or ended twice, "
          "prompts never heard, lines out of order, stored calls no carrier had)")  # fmt: skip
    reasons = ", ".join(f"{k} {v}" for k, v in sorted(c["end_reasons"].items()))
    odd = {p: n for p, n in r["ends_logged_not_once"].items() if n}
    print(
        "  calls whose end a gateway log shows other than once (informational): "
        + (
            "; ".join(
                f"{p}: " + ", ".join(f"{n} logged {k}x" for k, n in counts.items())
                for p, counts in odd.items()
            )
            if odd
            else "none"
        )
    )
    print(f"  end states: {reasons}")
    for example in c["examples"][:10]:
        print(f"    {example}")
    print(f"  {'PASS' if r['ok'] else 'FAIL'}: every call stored once and ended once, "
          f"no transcript line lost or doubled, no side effect twice")  # fmt: skip


async def run_async(opts: Options, keep: Path | None = None) -> dict[str, Any]:
    """One run; ``keep``: the folder for the configs, stores and gateway logs (kept), else a
    temporary one."""
    with contextlib.ExitStack() as stack:
        if keep is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="voicecall-loadtest-"))
        else:
            keep.mkdir(parents=True, exist_ok=True)
            tmp = str(keep)
        run = Run(opts, Path(tmp))
        try:
            await run.start()
            await run.drive()
        except BaseException:
            await run.stop()
            await run.cleanup_redis()
            raise
        await run.stop()
        try:
            return await run.result()
        finally:
            await run.cleanup_redis()


def run(opts: Options, keep: Path | None = None) -> dict[str, Any]:
    if opts.store == "redis" and not redis_available():
        raise StoreUnavailable("redis store not available in this build "
                               "(voicecall.runtime.store.redis is missing)")  # fmt: skip
    return asyncio.run(run_async(opts, keep))


def _stopped(signum: int, frame: object) -> None:
    kill_all()
    os._exit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=500, help="how many calls (default 500)")
    parser.add_argument("--store", choices=("sqlite", "redis"), default="sqlite")
    parser.add_argument("--gateways", type=int, choices=(1, 2), default=None,
                        help="gateways per provider (default: 1; 2 on redis)")  # fmt: skip
    parser.add_argument("--ramp", type=float, default=0.0,
                        help="seconds of ramp (default: calls / 12.5)")  # fmt: skip
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument("--no-restart", action="store_true", help="no gateway restart")
    parser.add_argument("--no-slow-store", action="store_true", help="no slow store")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--keep", metavar="DIR", type=Path,
                        help="keep the configs, stores and gateway logs in DIR")  # fmt: skip
    args = parser.parse_args(argv)
    gateways = args.gateways or (2 if args.store == "redis" else 1)
    if args.store == "sqlite" and gateways != 1:
        print("loadtest: --gateways 2 needs a shared store (--store redis)", file=sys.stderr)
        return 2
    if args.calls < 1:
        print("loadtest: --calls must be at least 1", file=sys.stderr)
        return 2
    opts = Options(calls=args.calls, store=args.store, gateways=gateways, ramp_s=args.ramp,
                   restart=not args.no_restart, slow_store=not args.no_slow_store,
                   seed=args.seed, redis_url=args.redis_url)  # fmt: skip
    # Stopped (SIGTERM, Ctrl-C): no gateway is left behind.
    signal.signal(signal.SIGTERM, _stopped)
    try:
        result = run(opts, args.keep)
    except KeyboardInterrupt:
        kill_all()
        return 130
    except StoreUnavailable as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 2
    except (RuntimeError, OSError) as exc:
        print(f"loadtest: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        report(result)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
