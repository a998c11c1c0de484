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

import pytest

from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.sim.carrier.carrier import MockCarrier
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.store import SQLiteStore

pytestmark = pytest.mark.e2e

NUMBERS = ["+15550001001", "+15550001002", "+15550001003"]
PARAMS = ["--param", "patient=Ann", "--param", "when=today"]  # each belongs to its --call


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


async def start(config: Path, *calls: list[str]) -> subprocess.Popen[bytes]:
    args = [sys.executable, "-m", "voicecall.runtime.serve", "--config", str(config)]
    for call in calls:
        args += ["--call", *call]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    PROCESSES.append(proc)
    assert proc.stdout is not None
    line = await asyncio.to_thread(proc.stdout.readline)  # {"ready": true, ...}
    assert json.loads(line)["ready"] is True
    for _ in calls:
        json.loads(await asyncio.to_thread(proc.stdout.readline))
    return proc


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
        config = tmp_path / "config.json"
        config.write_text(json.dumps({
            "provider": "twilio", "fromNumber": "+15550000000", "maxConcurrentCalls": 5,
            "store": str(tmp_path / "store"),
            "serve": {"port": free_port(), "bind": "127.0.0.1", "path": "/voice/webhook"},
            "twilio": {**carrier.credentials, "apiBaseUrl": carrier.api_base},
        }))  # fmt: skip
        db = tmp_path / "store" / "calls.sqlite"
        first = await start(config, *[["appointment-reminder", n, *PARAMS] for n in NUMBERS])

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
