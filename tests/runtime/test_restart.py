"""A gateway process killed with SIGKILL in the middle of calls, restarted on the same SQLite
file: every call is restored and finished, no event is applied twice, no transcript line lost."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.plugin.gateway.frames import connect, request
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.sim.carrier.carrier import MockCarrier
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.store import SQLiteStore

pytestmark = pytest.mark.e2e

NUMBERS = ["+15550001001", "+15550001002", "+15550001003"]
PARAMS = {"patient": "Ann", "when": "today"}
TOKEN = "restart-test-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


PROCESSES: list[subprocess.Popen[bytes]] = []


@pytest.fixture(autouse=True)
def _no_leftover_processes() -> Any:
    yield
    while PROCESSES:  # even when the test failed half-way
        proc = PROCESSES.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def start(config: Path) -> subprocess.Popen[bytes]:
    """`python -m voicecall.runtime.serve` (the gateway under its old name), once ready."""
    args = [sys.executable, "-m", "voicecall.runtime.serve", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "VOICECALL_"))}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
    PROCESSES.append(proc)
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)  # {"ready": true, "gateway": ...}
    assert json.loads(line)["ready"] is True
    return proc


async def place_calls(port: int) -> None:
    """Each call placed through the Gateway, as `voicecall start --flow` does."""
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(f"ws://127.0.0.1:{port}/") as ws,
    ):
        await ws.receive_json()  # connect.challenge
        await ws.send_json(connect(token=TOKEN))
        assert (await ws.receive_json())["ok"] is True
        for number in NUMBERS:
            frame = request("voicecall.start", {"to": number, "flow": "appointment-reminder",
                                                "params": PARAMS})  # fmt: skip
            await ws.send_json(frame)
            while (res := await ws.receive_json())["type"] != "res":
                pass  # call events
            assert res["ok"] is True, res


def transcripts(db: Path) -> dict[str, list[tuple[str, str]]]:
    out: dict[str, list[tuple[str, str]]] = {}
    for call_id, speaker, text in rows(db, "SELECT call_id, speaker, text FROM lines "
                                           "ORDER BY call_id, seq"):  # fmt: skip
        out.setdefault(call_id, []).append((speaker, text))
    return out


def rows(db: Path, sql: str) -> list[Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


async def wait_for(check: Any, what: str) -> None:
    # Only a safety net against a hang, not a speed check: generous for a loaded machine.
    for _ in range(6000):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_kill_9_then_restart_loses_nothing_and_repeats_nothing(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with MockCarrier("twilio", clock) as carrier:
        # Each callee answers, then takes 30 s (virtual) to press 1.
        carrier.script = Script(caller=(Step(action="answer"),
                                        Step(action="press", value="1", after_s=30)))  # fmt: skip
        config = tmp_path / "openclaw.json"
        gateway_port = free_port()
        config.write_text(json.dumps({
            "gateway": {"port": gateway_port, "auth": {"mode": "token", "token": TOKEN}},
            "plugins": {"entries": {"voice-call": {"config": {
                "provider": "twilio", "fromNumber": "+15550000000", "maxConcurrentCalls": 5,
                "store": str(tmp_path / "store"),
                "serve": {"port": free_port(), "bind": "127.0.0.1", "path": "/voice/webhook"},
                "twilio": {**carrier.credentials, "apiBaseUrl": carrier.api_base},
            }}}},
        }))  # fmt: skip
        db = tmp_path / "store" / "calls.sqlite"
        first = await start(config)
        await place_calls(gateway_port)

        def all_listening() -> bool:
            return db.exists() and sorted(r[0] for r in rows(
                db, "SELECT state FROM calls")) == ["listening"] * 3  # fmt: skip

        await wait_for(all_listening, "three calls waiting for their answer")
        before = transcripts(db)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()

        second = await start(config)  # same port, same SQLite file: restores the calls
        carrier.duplicate_next(3)  # and the carrier delivers the next webhooks twice
        clock.advance(31)
        await wait_for(lambda: all(c.ended for c in carrier.calls.values()), "calls to end")
        await wait_for(lambda: sorted(r[0] for r in rows(db, "SELECT state FROM calls"))
                       == ["hangup-bot"] * 3, "the runtime to record the ends")  # fmt: skip
        second.send_signal(signal.SIGTERM)
        second.wait(timeout=10)

    after = transcripts(db)
    for call_id, said in after.items():
        assert said[: len(before[call_id])] == before[call_id]  # nothing lost
        assert said[2:] == [("user", "1"), ("bot", "Thank you, see you then.")]  # once each
    store = SQLiteStore(db)
    assert [c.visited for c in store.recent(10)] == [["greet", "confirmed"]] * 3
    store.close()
    deliveries = [d for d in carrier.deliveries if d.status == 200]
    unique = {(d.url, d.body) for d in deliveries}
    assert len(deliveries) >= len(unique) + 3  # the duplicates were delivered, and answered
    events = rows(db, "SELECT count(*) FROM events")[0][0]
    # Each was applied once (the transcripts above); those that changed nothing (a late
    # status callback) need no processed-event row.
    assert 0 < events <= len(unique)
