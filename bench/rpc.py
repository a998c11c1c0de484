"""Gateway RPC round trip on loopback with 50 live calls (`make bench --only rpc`).

Starts `voicecall gateway` as a process on the mock carrier (its patient callee keeps every
call up), places 50 conversation calls through `voicecall.initiate`, waits until each is
listening, then times request-to-response on one WebSocket connection, one request at a time:
`voicecall.status` for one call, `voicecall.status` listing the 50, and `voicecall.flows`.
The webhooks of the 50 held calls keep flowing meanwhile, as on a busy host.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp

CALLS = 50
TOKEN = "bench-token"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(folder: Path) -> Path:
    config = {
        "gateway": {"port": _free_port(), "auth": {"mode": "token", "token": TOKEN}},
        "plugins": {"entries": {"voice-call": {"config": {
            "provider": "mock", "store": str(folder / "store"), "toNumber": "+15550001111",
            "maxConcurrentCalls": CALLS + 10,
            "serve": {"port": _free_port(), "bind": "127.0.0.1", "path": "/voice/webhook"},
        }}}},
    }  # fmt: skip
    path = folder / "openclaw.json"
    path.write_text(json.dumps(config))
    return path


class Connection:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.n = 1

    async def call(self, method: str, params: dict[str, Any] | None = None) -> Any:
        self.n += 1
        frame: dict[str, Any] = {"type": "req", "id": f"{self.n}:{uuid.uuid4()}",
                                 "method": method, "params": params or {}}  # fmt: skip
        await self.ws.send_json(frame)
        while True:
            reply = json.loads((await self.ws.receive()).data)
            if reply.get("type") == "res" and reply["id"] == frame["id"]:
                if not reply["ok"]:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["payload"]


async def _connect(session: aiohttp.ClientSession, url: str) -> Connection:
    ws = await session.ws_connect(url, max_msg_size=0)
    challenge = json.loads((await ws.receive()).data)
    assert challenge["event"] == "connect.challenge", challenge
    params = {"minProtocol": 4, "maxProtocol": 4, "role": "operator",
              "scopes": ["operator.read", "operator.write"], "caps": [],
              "client": {"id": "cli", "version": "bench", "platform": "linux", "mode": "cli"},
              "auth": {"token": TOKEN}}  # fmt: skip
    await ws.send_json({"type": "req", "id": "1:connect", "method": "connect", "params": params})
    hello = json.loads((await ws.receive()).data)
    assert hello["ok"], hello
    return Connection(ws)


CASES = ("status_one", "status_all", "flows")


def _request(name: str, call_id: str) -> tuple[str, dict[str, Any] | None]:
    if name == "status_one":
        return "voicecall.status", {"callId": call_id}
    return ("voicecall.status" if name == "status_all" else "voicecall.flows"), None


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return {"p50_ms": round(at(0.50), 3), "p99_ms": round(at(0.99), 3), "n": len(samples)}


async def _measure(url: str, repeat: int) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        conn = await _connect(session, url)
        ids = [(await conn.call("voicecall.initiate", {"message": f"Call {i}",
                                                        "mode": "conversation"}))["callId"]
               for i in range(CALLS)]  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            calls = (await conn.call("voicecall.status"))["calls"]
            if sum(c["state"] == "listening" for c in calls) == CALLS:
                break
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("the 50 calls did not all reach listening in 60 s")
        out: dict[str, Any] = {"live_calls": CALLS}
        for name in CASES:
            samples = []
            for i in range(repeat):
                method, params = _request(name, ids[i % CALLS])
                start = time.perf_counter()
                await conn.call(method, params)
                samples.append(time.perf_counter() - start)
            out[name] = _percentiles(samples)
        for call_id in ids:
            await conn.call("voicecall.end", {"callId": call_id})
        await conn.ws.close()
    return out


def run(repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = _config(Path(tmp))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "VOICECALL_"))}
        proc = subprocess.Popen(
            [sys.executable, "-m", "voicecall.plugin.cli_main", "gateway", "--config", str(config)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**env, "HOME": tmp},
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline() or "{}")
            if not ready.get("ready"):
                raise RuntimeError("the gateway did not start")
            return asyncio.run(_measure(str(ready["gateway"]), max(200, repeat * 10)))
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def report(r: dict[str, Any]) -> None:
    print(f"gateway RPC round trip, loopback, one connection, {r['live_calls']} live calls")
    for name in CASES:
        s = r[name]
        print(f"  {name:<12} p50 {s['p50_ms']:7.3f} ms   p99 {s['p99_ms']:7.3f} ms   ({s['n']})")
