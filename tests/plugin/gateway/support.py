"""`voicecall gateway` as a subprocess, and a raw-frame client for it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from .frames import connect, request

TOKEN = "gw-test-token-5f1e"
GUARD_S = 60  # a hang guard only, never a speed check


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def write_config(tmp: Path, plugin: dict[str, Any], *, auth: dict[str, Any] | None = None,
                 port: int | None = None) -> Path:  # fmt: skip
    """An OpenClaw config file: the gateway section and the voice-call plugin's section."""
    config = {
        "gateway": {"port": port or free_port(), "auth": auth or {"mode": "token", "token": TOKEN}},
        "plugins": {"entries": {"voice-call": {"config": {
            "serve": {"port": free_port(), "bind": "127.0.0.1", "path": "/voice/webhook"},
            "store": str(tmp / "store"),
            **plugin,
        }}}},
    }  # fmt: skip
    path = tmp / "openclaw.json"
    path.write_text(json.dumps(config, indent=2))
    return path


class GatewayProcess:
    """One `voicecall gateway --config F` process; its stderr goes to a file."""

    def __init__(self, config: Path, *, tick_ms: int = 30_000, env: dict[str, str] | None = None):
        self.config = config
        self.port = json.loads(config.read_text())["gateway"]["port"]
        self.log = config.parent / f"gateway-{free_port()}.log"
        clean = {
            k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "VOICECALL_"))
        }
        clean.update({"HOME": str(config.parent), "VOICECALL_GATEWAY_TICK_MS": str(tick_ms),
                      **(env or {})})  # fmt: skip
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "voicecall.plugin.cli_main", "gateway",
                 "--config", str(config)],
                stdout=subprocess.PIPE, stderr=err, env=clean,
            )  # fmt: skip
        self.ready: dict[str, Any] | None = None

    def wait_ready(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        box: list[bytes] = []
        reader = threading.Thread(target=lambda: box.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
        reader.start()
        reader.join(GUARD_S)
        line = box[0] if box else b""
        if not line:
            code = self.proc.wait(GUARD_S)
            raise AssertionError(f"the gateway did not start (exit {code}): {self.log.read_text()}")
        self.ready = json.loads(line)
        return self.ready

    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(GUARD_S)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Client:
    """A connected Gateway client that keeps the events it sees."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse):
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def recv(self) -> dict[str, Any]:
        msg = await asyncio.wait_for(self.ws.receive(), GUARD_S)
        assert msg.type is aiohttp.WSMsgType.TEXT, msg
        frame: dict[str, Any] = json.loads(msg.data)
        return frame

    async def send(self, method: str, params: Any = None) -> str:
        frame = request(method, params)
        await self.ws.send_json(frame)
        return str(frame["id"])

    async def response(self, request_id: str) -> dict[str, Any]:
        while True:
            frame = await self.recv()
            if frame["type"] == "res" and frame["id"] == request_id:
                return frame
            self.events.append(frame)

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        return await self.response(await self.send(method, params))

    async def ok(self, method: str, params: Any = None) -> Any:
        res = await self.call(method, params)
        assert res["ok"] is True, res
        return res["payload"]

    async def until_event(self, check: Any) -> dict[str, Any]:
        for event in self.events:
            if check(event):
                return event
        while True:
            frame = await self.recv()
            self.events.append(frame)
            if check(frame):
                return frame


@asynccontextmanager
async def client(gw: GatewayProcess, **connect_args: Any) -> AsyncIterator[Client]:
    """A client past the handshake (token auth unless other credentials are given)."""
    if not {"token", "password"} & connect_args.keys():
        connect_args["token"] = TOKEN
    async with aiohttp.ClientSession() as session, session.ws_connect(gw.url()) as ws:
        c = Client(ws)
        assert (await c.recv())["event"] == "connect.challenge"
        await ws.send_json(connect(**connect_args))
        hello = await c.recv()
        assert hello["ok"] is True, hello
        c.hello = hello["payload"]  # type: ignore[attr-defined]
        yield c


@asynccontextmanager
async def raw(gw: GatewayProcess) -> AsyncIterator[Client]:
    """A socket just opened: the challenge not read yet."""
    async with aiohttp.ClientSession() as session, session.ws_connect(gw.url()) as ws:
        yield Client(ws)
