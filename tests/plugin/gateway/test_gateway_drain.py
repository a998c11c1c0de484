"""SIGTERM drains `voicecall gateway`: the request in flight finishes, nothing is lost, and a
restarted gateway on the same store carries the call on.

The carrier runs in the test (a MockCarrier speaking Twilio's API), so the call outlives the
gateway process as a real call outlives a restart.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from voicecall.runtime.clock import RealClock
from voicecall.runtime.sim.carrier.carrier import MockCarrier
from voicecall.runtime.sim.script import Script, Step

from .support import GUARD_S, GatewayProcess, client, write_config

pytestmark = pytest.mark.e2e

CALLEE = "+15550002222"


def stored_lines(db: Path, call_id: str) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT speaker, text FROM lines WHERE call_id = ? ORDER BY seq",
                            (call_id,)).fetchall()  # fmt: skip
    return [(str(s), str(t)) for s, t in rows]


def lines_seen(events: list[dict[str, Any]], call_id: str) -> list[tuple[str, str]]:
    mine = [e["payload"] for e in events if e.get("event") == "voicecall.transcript"]
    return [(p["speaker"], p["text"]) for p in mine if p["callId"] == call_id]


async def test_sigterm_finishes_the_request_in_flight_then_a_restart_carries_the_call_on(
    tmp_path: Path,
) -> None:
    async with MockCarrier("twilio", RealClock()) as carrier:
        # The callee answers, then takes a moment over its first reply: long enough for the
        # SIGTERM to land while `voicecall.continue` waits for it.
        carrier.script = Script(caller=(Step(action="answer"),
                                        Step(action="say", value="Fine, thanks.", after_s=1.5)),
                                patient=True)  # fmt: skip
        config = write_config(tmp_path, {
            "provider": "twilio", "fromNumber": "+15550000000",
            "twilio": {**carrier.credentials, "apiBaseUrl": carrier.api_base},
        })  # fmt: skip
        first = GatewayProcess(config)
        second: GatewayProcess | None = None
        try:
            await asyncio.to_thread(first.wait_ready)  # the carrier runs on this loop
            call_id, seen = await place_and_stop_mid_turn(first)
            db = tmp_path / "store" / "calls.sqlite"
            assert seen and stored_lines(db, call_id)[: len(seen)] == seen  # nothing lost

            second = GatewayProcess(config)  # same ports, same store
            await asyncio.to_thread(second.wait_ready)
            async with client(second) as c:
                status = await c.ok("voicecall.status", {"callId": call_id})
                assert status["found"] is True and "endedAt" not in status["call"]
                again = await c.ok(
                    "voicecall.continue", {"callId": call_id, "message": "Still there?"}
                )
                assert again["success"] is True
                assert await c.ok("voicecall.end", {"callId": call_id}) == {"success": True}
            assert await asyncio.to_thread(second.terminate) == 0
        finally:
            first.kill()
            if second is not None:
                second.kill()
    assert [s for s, _ in stored_lines(db, call_id)].count("user") >= 2


async def place_and_stop_mid_turn(gw: GatewayProcess) -> tuple[str, list[tuple[str, str]]]:
    """Places a conversation call, sends SIGTERM while a continue waits for the caller;
    returns the call id and the transcript lines the events showed."""
    async with client(gw) as c:
        params = {"message": "Hello, a quick question.", "to": CALLEE, "mode": "conversation"}
        placed = await c.ok("voicecall.initiate", params)
        call_id = placed["callId"]
        await c.until_event(lambda e: e.get("event") == "voicecall.call"
                            and e["payload"]["state"] == "listening")  # fmt: skip
        pending = await c.send("voicecall.continue", {"callId": call_id, "message": "How are you?"})
        await c.until_event(lambda e: e.get("event") == "voicecall.transcript"
                            and e["payload"]["text"] == "How are you?")  # fmt: skip
        gw.proc.send_signal(15)
        res = await c.response(pending)  # answered during the drain, not cut off
        assert res["ok"] is True and res["payload"] == {"success": True,
                                                        "transcript": "Fine, thanks."}  # fmt: skip
        shutdown = await c.until_event(lambda e: e.get("event") == "shutdown")
        assert shutdown["payload"]["reason"]
        while (
            msg := await asyncio.wait_for(c.ws.receive(), GUARD_S)
        ).type is aiohttp.WSMsgType.TEXT:
            c.events.append(json.loads(msg.data))  # events still flowing during the drain
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1012
        seen = lines_seen(c.events, call_id)
    assert await asyncio.to_thread(gw.proc.wait, GUARD_S) == 0
    return call_id, seen
