"""`voicecall gateway` as a subprocess on the mock provider, driven with raw protocol-4 frames
written from the reference (openclaw-gateway.md §2, §3, §6)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .frames import connect, request
from .support import GUARD_S, TOKEN, GatewayProcess, client, raw, write_config

pytestmark = pytest.mark.e2e

CALLEE = "+15550001234"
METHODS = ["health", "voicecall.continue", "voicecall.continue.result", "voicecall.continue.start",
           "voicecall.dtmf", "voicecall.end", "voicecall.flows", "voicecall.initiate",
           "voicecall.speak", "voicecall.start", "voicecall.status"]  # fmt: skip


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    tmp = tmp_path_factory.mktemp("gateway")
    process = GatewayProcess(write_config(tmp, {"provider": "mock"}), tick_ms=150)
    try:
        process.wait_ready()
        yield process
    finally:
        process.kill()


# ---- handshake --------------------------------------------------------------------------
async def test_challenge_then_hello_ok_with_the_full_shape(gw: GatewayProcess) -> None:
    async with raw(gw) as c:
        challenge = await c.recv()
        assert challenge["type"] == "event" and challenge["event"] == "connect.challenge"
        assert challenge["payload"]["nonce"] and challenge["payload"]["ts"] > 0
        frame = connect(token=TOKEN)
        await c.ws.send_json(frame)
        res = await c.recv()
    assert res["type"] == "res" and res["id"] == frame["id"] and res["ok"] is True
    hello = res["payload"]
    assert (hello["type"], hello["protocol"]) == ("hello-ok", 4)
    assert hello["features"]["methods"] == METHODS
    assert hello["features"]["events"] == ["tick", "shutdown", "voicecall.call",
                                           "voicecall.transcript"]  # fmt: skip
    assert set(hello["server"]) >= {"version", "connId"}
    assert set(hello["snapshot"]) >= {"presence", "health", "stateVersion", "uptimeMs"}
    assert hello["auth"]["method"] == "token" and hello["auth"]["role"] == "operator"
    assert hello["policy"]["tickIntervalMs"] == 150


async def refused(gw: GatewayProcess, frame: dict[str, Any]) -> dict[str, Any]:
    async with raw(gw) as c:
        await c.recv()
        await c.ws.send_json(frame)
        res = await c.recv()
        close = await asyncio.wait_for(c.ws.receive(), 60)
    assert close.type is aiohttp.WSMsgType.CLOSE and close.data == 1008
    assert res["id"] == frame["id"] and res["ok"] is False
    error: dict[str, Any] = res["error"]
    return error


async def test_a_bad_token_is_refused_with_the_original_text(gw: GatewayProcess) -> None:
    assert await refused(gw, connect(token="wrong")) == {
        "code": "INVALID_REQUEST", "message": "unauthorized: gateway token mismatch",
        "details": {"code": "AUTH_TOKEN_MISMATCH"}}  # fmt: skip
    assert (await refused(gw, connect()))["details"] == {"code": "AUTH_TOKEN_MISSING"}


async def test_protocol_mismatch(gw: GatewayProcess) -> None:
    error = await refused(gw, connect(token=TOKEN, min_protocol=5, max_protocol=6))
    assert error["details"] == {"code": "PROTOCOL_MISMATCH", "expectedProtocol": 4}


async def test_the_first_request_must_be_connect(gw: GatewayProcess) -> None:
    error = await refused(gw, request("voicecall.status", {}, n=1))
    assert error == {"code": "INVALID_REQUEST",
                     "message": "invalid handshake: first request must be connect"}  # fmt: skip


async def test_invalid_connect_params(gw: GatewayProcess) -> None:
    frame = connect(token=TOKEN)
    del frame["params"]["client"]
    error = await refused(gw, frame)
    assert (
        error["message"] == "invalid connect params: at root: must have required property 'client'"
    )


async def test_password_mode(tmp_path: Path) -> None:
    config = write_config(tmp_path, {"provider": "mock"},
                          auth={"mode": "password", "password": "pa55-word"})  # fmt: skip
    gw = GatewayProcess(config)
    try:
        gw.wait_ready()
        async with client(gw, password="pa55-word") as c:
            assert c.hello["auth"]["method"] == "password"  # type: ignore[attr-defined]
            assert (await c.ok("voicecall.status", {}))["found"] is True
        error = await refused(gw, connect(password="nope"))
        assert error["details"] == {"code": "AUTH_PASSWORD_MISMATCH"}
        assert (await refused(gw, connect(token=TOKEN)))["details"][
            "code"
        ] == "AUTH_PASSWORD_MISSING"
    finally:
        gw.kill()
    assert "pa55-word" not in gw.log.read_text()


# ---- methods ----------------------------------------------------------------------------
async def test_unknown_method_and_scopes(gw: GatewayProcess) -> None:
    async with client(gw) as c:
        res = await c.call("voicecall.nosuch", {})
        assert res["error"] == {
            "code": "INVALID_REQUEST",
            "message": "unknown method: voicecall.nosuch",
        }
    async with client(gw, scopes=["operator.read"]) as reader:
        assert (await reader.ok("voicecall.status"))["found"] is True
        for method in ("voicecall.initiate", "voicecall.end", "voicecall.continue.start"):
            res = await reader.call(method, {})
            assert res["error"] == {"code": "FORBIDDEN", "message": "missing scope: operator.write"}
    async with client(gw, scopes=[]) as nobody:
        res = await nobody.call("voicecall.status")
        assert res["error"] == {"code": "FORBIDDEN", "message": "missing scope: operator.read"}


IR = "INVALID_REQUEST"
BAD_PARAMS = [
    ("voicecall.initiate", {}, IR, "message required"),
    ("voicecall.initiate", {"message": "  "}, IR, "message required"),
    ("voicecall.initiate", {"message": "hi"}, IR, "to required"),
    ("voicecall.start", {"message": "hi"}, IR, "to required"),
    ("voicecall.continue", {"callId": "x"}, IR, "callId and message required"),
    ("voicecall.continue", {"callId": "nope", "message": "hi"}, IR, "Call not found"),
    ("voicecall.continue.start", {"message": "hi"}, IR, "callId and message required"),
    ("voicecall.continue.result", {}, IR, "operationId required"),
    ("voicecall.continue.result", {"operationId": "nope"}, IR, "operation not found"),
    ("voicecall.speak", {"callId": "x"}, IR, "callId and message required"),
    ("voicecall.speak", {"callId": "nope", "message": "hi"}, IR, "Call not found"),
    ("voicecall.dtmf", {"callId": "x"}, IR, "callId and digits required"),
    ("voicecall.end", {}, IR, "callId required"),
    ("voicecall.end", {"callId": "nope"}, "UNAVAILABLE", "Call not found"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "params", "code", "message"), BAD_PARAMS)
async def test_bad_params_get_the_original_errors(
    gw: GatewayProcess, method: str, params: dict[str, Any], code: str, message: str
) -> None:
    async with client(gw) as c:
        res = await c.call(method, params)
    assert res["ok"] is False
    assert (res["error"]["code"], res["error"]["message"]) == (code, message)


async def test_health_as_openclaw_health_asks_it(gw: GatewayProcess) -> None:
    async with client(gw, scopes=["operator.read"]) as c:
        health = await c.ok("health")
    assert health["ok"] is True and health["plugins"] == {"loaded": ["voice-call"], "errors": []}


async def test_status_of_an_unknown_call(gw: GatewayProcess) -> None:
    async with client(gw) as c:
        assert await c.ok("voicecall.status", {"callId": "nope"}) == {"found": False}
        assert (await c.ok("voicecall.status"))["found"] is True  # no params at all


async def test_flows_lists_the_named_flows(gw: GatewayProcess) -> None:
    async with client(gw) as c:
        flows = {f["name"]: f for f in (await c.ok("voicecall.flows", {}))["flows"]}
    reminder = flows["appointment-reminder"]
    assert reminder["direction"] == "outbound"
    assert [p["name"] for p in reminder["params"]] == ["patient", "when"]


async def test_a_whole_call_through_every_method_with_its_events(gw: GatewayProcess) -> None:
    async with client(gw) as watcher, client(gw) as c:
        params = {"message": "Hello from the test", "to": CALLEE, "mode": "conversation"}
        started = await c.ok("voicecall.initiate", params)
        assert started["initiated"] is True
        call_id = started["callId"]
        one = await c.ok("voicecall.status", {"callId": call_id})
        assert one["found"] is True and one["call"]["callId"] == call_id
        assert "to" not in one["call"] and "transcript" not in one["call"]  # the redacted view
        listed = await c.ok("voicecall.status", {})
        assert call_id in [x["callId"] for x in listed["calls"]]
        await c.until_event(lambda e: e.get("event") == "voicecall.call"
                            and e["payload"]["callId"] == call_id
                            and e["payload"]["state"] == "listening")  # fmt: skip
        answer = await c.ok("voicecall.continue", {"callId": call_id, "message": "How are you?"})
        assert answer["success"] is True and answer["transcript"]
        op = await c.ok("voicecall.continue.start", {"callId": call_id, "message": "And then?"})
        assert op["status"] == "pending" and op["pollTimeoutMs"] > 0
        result = await poll(c, op["operationId"])
        assert result["status"] == "completed" and result["result"]["success"] is True
        assert await c.ok("voicecall.speak", {"callId": call_id, "message": "Noted."}) == {
            "success": True
        }
        assert await c.ok("voicecall.dtmf", {"callId": call_id, "digits": "12#"}) == {
            "success": True
        }
        assert await c.ok("voicecall.end", {"callId": call_id}) == {"success": True}
        ended = await watcher.until_event(lambda e: e.get("event") == "voicecall.call"
                                          and e["payload"]["callId"] == call_id
                                          and "endedAt" in e["payload"])  # fmt: skip
    assert ended["payload"]["endReason"]
    mine = [e for e in watcher.events if e.get("payload", {}).get("callId") == call_id]
    states = [e["payload"]["state"] for e in mine if e["event"] == "voicecall.call"]
    assert states[0] == "initiated" and {"ringing", "answered"} <= set(states)
    lines = [(e["payload"]["speaker"], e["payload"]["text"]) for e in mine
             if e["event"] == "voicecall.transcript"]  # fmt: skip
    assert ("bot", "Hello from the test") in lines and ("bot", "How are you?") in lines
    assert ("user", answer["transcript"]) in lines
    seqs = [e["seq"] for e in watcher.events if e.get("event", "").startswith("voicecall.")]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def poll(c: Any, operation_id: str) -> dict[str, Any]:
    while True:
        result: dict[str, Any] = await c.ok(
            "voicecall.continue.result", {"operationId": operation_id}
        )
        if result["status"] != "pending":
            return result
        await asyncio.sleep(0.05)


async def test_a_flow_call_with_params_and_a_bad_param(gw: GatewayProcess) -> None:
    async with client(gw) as c:
        bad = await c.call("voicecall.initiate", {"to": CALLEE, "flow": "appointment-reminder",
                                                  "params": {"patient": "Ann"}})  # fmt: skip
        assert bad["error"]["code"] == "INVALID_REQUEST" and "when" in bad["error"]["message"]
        params = {"patient": "Ann", "when": "today"}
        good = await c.ok("voicecall.start", {"to": CALLEE, "flow": "appointment-reminder",
                                              "params": params})  # fmt: skip
        assert good["initiated"] is True
        await c.ok("voicecall.end", {"callId": good["callId"]})


async def test_tick_arrives_every_interval(gw: GatewayProcess) -> None:
    async with client(gw) as c:
        first = await c.until_event(lambda e: e.get("event") == "tick")
        second = await c.until_event(lambda e: e.get("event") == "tick" and e is not first)
    assert second["payload"]["ts"] >= first["payload"]["ts"]
    assert "seq" not in first


async def test_plain_http_and_a_missing_secret_in_logs(gw: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{gw.port}/") as r:
        assert r.status == 426
    assert TOKEN not in gw.log.read_text()


def test_a_webhook_port_in_use_is_one_line_naming_serve_port(tmp_path: Path) -> None:
    # It used to print the bind error without its key, then asyncio's "Unclosed client
    # session" lines: the carrier, adapter and store opened before the bind were left open.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, {"provider": "mock", "serve": {"port": port}})
        gw = GatewayProcess(config)
        try:
            code = gw.proc.wait(GUARD_S)
        finally:
            gw.kill()
    err = gw.log.read_text()
    assert code == 1
    assert err.count("\n") == 1, err
    assert f"127.0.0.1:{port} (serve.port)" in err and "already in use" in err
