"""The load test's processes and faults: gateways, a round-robin front, /proc sampling, a slow
store (a concurrent SQLite writer holding the lock, or a TCP latency proxy in front of Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from bench.longrun import rss_kb
from bench.webhooks import _cpu_seconds

READY_S = 60.0  # a hang guard for a gateway's start, never a speed check
_HOP_HEADERS = frozenset({"host", "content-length", "connection", "keep-alive",
                          "transfer-encoding"})  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


STARTED: set[subprocess.Popen[bytes]] = set()  # every gateway process, for kill_all()


def kill_all() -> None:
    """SIGKILL to every gateway process still running (the load test is being stopped: one
    left behind would hold its ports and store)."""
    for proc in list(STARTED):
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        STARTED.discard(proc)


class Gateway:
    """One `voicecall gateway --config F` process, restartable on the same config (ports, store).

    Its stderr is appended to a log file next to the config; ``up`` is set while it serves.
    """

    def __init__(self, name: str, config: Path, env: dict[str, str] | None = None):
        self.name = name
        self.config = config
        raw = json.loads(config.read_text())
        self.rpc_port = int(raw["gateway"]["port"])
        plugin = raw["plugins"]["entries"]["voice-call"]["config"]
        self.serve_port = int(plugin["serve"]["port"])
        self.log = config.parent / f"{name}.log"
        self.env = {k: v for k, v in os.environ.items()
                    if not k.startswith(("OPENCLAW_", "VOICECALL_"))}  # fmt: skip
        self.env.update({"HOME": str(config.parent), **(env or {})})
        self.proc: subprocess.Popen[bytes] | None = None
        self.up = asyncio.Event()
        self.starts = 0

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else 0

    @property
    def webhook_url(self) -> str:
        return f"http://127.0.0.1:{self.serve_port}/voice/webhook"

    async def start(self) -> None:
        """Starts the process and waits until it says it is ready."""
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voicecall.plugin.cli_main", "gateway",
                 "--config", str(self.config)],
                stdout=subprocess.PIPE, stderr=err, env=self.env,
            )  # fmt: skip
        STARTED.add(self.proc)
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(self.proc.stdout.readline), READY_S)
        except TimeoutError:
            line = b""
        try:
            ready = json.loads(line or b"{}")
        except ValueError:
            ready = {}
        if not ready.get("ready"):
            self.kill()
            tail = self.log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"gateway {self.name} did not start:\n{tail}")
        self.starts += 1
        self.up.set()

    def kill(self) -> None:
        """SIGKILL: no drain, nothing flushed beyond what was committed."""
        self.up.clear()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._close()

    def terminate(self) -> int:
        """SIGTERM (a drain), then the exit code (-9 if it had to be killed)."""
        self.up.clear()
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()
        return int(self.proc.returncode)

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()


class Front:
    """A round-robin reverse proxy: the one webhook address of several gateways.

    A request goes to the next gateway in turn; one that refuses the connection or drops it
    (restarting) is skipped for the next, as a load balancer's health check would.
    """

    def __init__(self, gateways: list[Gateway]):
        self.gateways = gateways
        self.port = 0
        self.failovers = 0  # requests sent on to the next gateway (the first was down)
        self._next = 0
        self._runner: web.AppRunner | None = None
        self._client: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._client = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=30),
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False,
        )  # fmt: skip
        app = web.Application(client_max_size=1 << 20)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/voice/webhook"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._client is not None
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        last: Exception | None = None
        first = self._next
        self._next += 1
        for n in range(len(self.gateways)):  # each gateway once, from this request's turn
            gateway = self.gateways[(first + n) % len(self.gateways)]
            target = f"http://127.0.0.1:{gateway.serve_port}{request.rel_url}"
            try:
                async with self._client.request(request.method, target, data=body or None,
                                                headers=headers) as resp:  # fmt: skip
                    payload = await resp.read()
                    out = {k: v for k, v in resp.headers.items()
                           if k.lower() not in _HOP_HEADERS}  # fmt: skip
                    return web.Response(status=resp.status, body=payload, headers=out)
            except (aiohttp.ClientError, TimeoutError) as exc:
                # Down, or gone mid-request (killed): the next one. A webhook is safe to send
                # twice (the stores keep its reply), as a carrier's retry would.
                last = exc
                self.failovers += 1
        raise web.HTTPBadGateway(text=f"no gateway answered: {last}")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._client is not None:
            await self._client.close()


@dataclass(slots=True)
class Sample:
    t: float  # seconds since the run began
    cpu: float  # share of one core since the previous sample
    rss_mb: float  # VmRSS


@dataclass(slots=True)
class Sampler:
    """CPU and RSS of every gateway, from /proc, every ``every_s`` (a restarted gateway's new
    process continues its series)."""

    gateways: list[Gateway]
    every_s: float = 0.5
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    async def run(self, began: float) -> None:
        last: dict[str, tuple[int, float, float]] = {}
        while True:
            now = time.perf_counter()
            for gw in self.gateways:
                pid = gw.pid
                if not pid:
                    continue
                cpu_s = _cpu_seconds(pid)
                before = last.get(gw.name)
                last[gw.name] = (pid, now, cpu_s)
                if before is None or before[0] != pid or now <= before[1]:
                    continue
                share = (cpu_s - before[2]) / (now - before[1])
                rss = rss_kb(pid, "VmRSS") / 1024
                if not rss:  # the process has just gone (killed)
                    continue
                self.samples.setdefault(gw.name, []).append(
                    Sample(now - began, share, rss))  # fmt: skip
            await asyncio.sleep(self.every_s)


class SlowSQLite:
    """Another writer on a gateway's SQLite file: holds the write lock for ``hold_s`` (a
    ``BEGIN IMMEDIATE`` and nothing written, rolled back), then lets go for ``gap_s``, over
    and over until stopped. The gateway's writes wait meanwhile (its busy timeout is 5 s)."""

    def __init__(self, path: Path, hold_s: float = 1.0, gap_s: float = 2.0):
        self.path = path
        self.hold_s = hold_s
        self.gap_s = gap_s
        self.holds = 0
        self.held_s = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            while not self._stop.is_set():
                db.execute("BEGIN IMMEDIATE")
                took = time.perf_counter()
                self._stop.wait(self.hold_s)
                db.execute("ROLLBACK")
                self.holds += 1
                self.held_s += time.perf_counter() - took
                self._stop.wait(self.gap_s)
        finally:
            db.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


class LatencyProxy:
    """A TCP proxy in front of Redis that delays every chunk by ``delay_s`` while ``slow``."""

    def __init__(self, host: str, port: int, delay_s: float = 0.02):
        self.host = host
        self.port = port
        self.delay_s = delay_s
        self.slow = False
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.listen_port = int(self._server.sockets[0].getsockname()[1])

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        for task in (self._pipe(reader, up_writer), self._pipe(up_reader, writer)):
            t = asyncio.get_running_loop().create_task(task)
            self._tasks.add(t)
            t.add_done_callback(self._tasks.discard)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.slow:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def status_line(gateways: list[Gateway]) -> dict[str, Any]:
    """Each gateway's pid and start count (for the JSON result)."""
    return {gw.name: {"pid": gw.pid, "starts": gw.starts} for gw in gateways}
