"""The Gateway WebSocket server in process, with a few methods registered through a Registry."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from nacl.signing import SigningKey

from voicecall.plugin.gateway.auth import AuthSettings
from voicecall.plugin.gateway.server import GatewayServer, ServerSettings
from voicecall.plugin.host import READ, WRITE, Registry, RequestContext, invalid

from .frames import connect, request, sign_device

TOKEN = "tok-123"


class Fixture:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.registry = Registry()
        r = self.registry
        r.register_gateway_method("test.echo", self.echo, scope=READ)
        r.register_gateway_method("test.block", self.block, scope=WRITE)
        r.register_gateway_method("test.fail", self.fail, scope=READ)
        r.register_gateway_method("test.crash", self.crash, scope=READ)
        self.started = asyncio.Event()

    async def echo(self, params: Mapping[str, Any], ctx: RequestContext) -> Any:
        return {"params": dict(params), "client": ctx.client.client_id, "method": ctx.method}

    async def block(self, params: Mapping[str, Any], ctx: RequestContext) -> Any:
        self.started.set()
        await self.release.wait()
        return {"released": True}

    async def fail(self, params: Mapping[str, Any], ctx: RequestContext) -> Any:
        raise invalid("callId required")

    async def crash(self, params: Mapping[str, Any], ctx: RequestContext) -> Any:
        raise RuntimeError("boom")


async def serving(settings: ServerSettings) -> tuple[Fixture, GatewayServer, TestServer]:
    fx = Fixture()
    server = GatewayServer(fx.registry.methods, settings, events=["voicecall.call"])
    test_server = TestServer(server.app(), host="127.0.0.1")
    await test_server.start_server()
    return fx, server, test_server


@pytest.fixture
async def gw() -> AsyncIterator[tuple[Fixture, GatewayServer, TestServer]]:
    settings = ServerSettings(auth=AuthSettings(mode="token", token=TOKEN), tick_interval_ms=60_000)
    fx, server, test_server = await serving(settings)
    yield fx, server, test_server
    fx.release.set()
    await server.close()
    await test_server.close()


async def recv(ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any]:
    msg = await asyncio.wait_for(ws.receive(), 30)  # a hang guard, not a speed check
    assert msg.type is aiohttp.WSMsgType.TEXT, msg
    frame: dict[str, Any] = json.loads(msg.data)
    return frame


async def open_ws(
    session: aiohttp.ClientSession, ts: TestServer
) -> aiohttp.ClientWebSocketResponse:
    return await session.ws_connect(str(ts.make_url("/")))


async def connected(session: aiohttp.ClientSession, ts: TestServer,
                    **kw: Any) -> aiohttp.ClientWebSocketResponse:  # fmt: skip
    ws = await open_ws(session, ts)
    assert (await recv(ws))["event"] == "connect.challenge"
    await ws.send_json(connect(token=TOKEN, **kw))
    hello = await recv(ws)
    assert hello["ok"], hello
    return ws


async def call(ws: aiohttp.ClientWebSocketResponse, method: str, params: Any = None) -> Any:
    frame = request(method, params)
    await ws.send_json(frame)
    while True:
        out = await recv(ws)
        if out["type"] == "res":
            assert out["id"] == frame["id"]
            return out


async def test_handshake_and_the_full_hello(gw: Any) -> None:
    _fx, _server, ts = gw
    async with aiohttp.ClientSession() as session, await open_ws(session, ts) as ws:
        challenge = await recv(ws)
        assert challenge["event"] == "connect.challenge"
        assert challenge["payload"]["nonce"] and isinstance(challenge["payload"]["ts"], int)
        frame = connect(token=TOKEN)
        await ws.send_json(frame)
        res = await recv(ws)
    assert res["id"] == frame["id"] and res["ok"] is True
    hello = res["payload"]
    assert hello["type"] == "hello-ok" and hello["protocol"] == 4
    assert hello["features"] == {
        "methods": ["test.block", "test.crash", "test.echo", "test.fail"],
        "events": ["tick", "shutdown", "voicecall.call"],
    }
    assert hello["server"]["connId"] and hello["server"]["version"]
    assert hello["snapshot"]["stateVersion"] == {"presence": 0, "health": 0}
    assert hello["snapshot"]["authMode"] == "token"
    assert hello["auth"]["method"] == "token" and hello["auth"]["role"] == "operator"
    assert "operator.write" in hello["auth"]["scopes"]
    assert hello["policy"]["tickIntervalMs"] == 60_000
    assert hello["policy"]["maxPayload"] > 0


async def test_a_wrong_token_gets_the_original_error_then_1008(gw: Any) -> None:
    _fx, _server, ts = gw
    async with aiohttp.ClientSession() as session, await open_ws(session, ts) as ws:
        await recv(ws)
        await ws.send_json(connect(token="nope"))
        res = await recv(ws)
        close = await ws.receive()
    assert res["error"] == {
        "code": "INVALID_REQUEST",
        "message": "unauthorized: gateway token mismatch",
        "details": {"code": "AUTH_TOKEN_MISMATCH"},
    }
    assert close.type is aiohttp.WSMsgType.CLOSE and close.data == 1008


async def test_requests_and_errors(gw: Any) -> None:
    _fx, _server, ts = gw
    async with aiohttp.ClientSession() as session, await connected(session, ts) as ws:
        ok = await call(ws, "test.echo", {"callId": "x"})
        assert ok["ok"] is True
        assert ok["payload"] == {"params": {"callId": "x"}, "client": "cli", "method": "test.echo"}
        bad = await call(ws, "test.fail", {})
        assert bad["error"] == {"code": "INVALID_REQUEST", "message": "callId required"}
        crash = await call(ws, "test.crash", {})
        assert crash["error"] == {"code": "UNAVAILABLE", "message": "test.crash failed"}
        unknown = await call(ws, "voicecall.nosuch", {})
        assert unknown["error"]["message"] == "unknown method: voicecall.nosuch"
        assert (await call(ws, "test.echo"))["ok"]  # still open after all that


async def test_scopes_decide_per_method(gw: Any) -> None:
    _fx, _server, ts = gw
    async with (
        aiohttp.ClientSession() as session,
        await connected(session, ts, scopes=["operator.read"]) as ws,
    ):
        denied = await call(ws, "test.block", {})
        assert denied["error"] == {"code": "FORBIDDEN", "message": "missing scope: operator.write"}
        assert (await call(ws, "test.echo", {}))["ok"]


async def test_a_blocking_request_does_not_hold_the_others(gw: Any) -> None:
    fx, _server, ts = gw
    async with aiohttp.ClientSession() as session, await connected(session, ts) as ws:
        blocking = request("test.block", {})
        await ws.send_json(blocking)
        await fx.started.wait()
        assert (await call(ws, "test.echo", {"n": 1}))["payload"]["params"] == {"n": 1}
        fx.release.set()
        res = await recv(ws)
        assert res["id"] == blocking["id"] and res["payload"] == {"released": True}


async def test_events_reach_readers_only(gw: Any) -> None:
    _fx, server, ts = gw
    async with aiohttp.ClientSession() as session:
        reader = await connected(session, ts)
        other = await connected(session, ts, scopes=["operator.pairing"])
        server.broadcast("voicecall.call", {"callId": "c1", "state": "ringing"})
        event = await recv(reader)
        assert event == {"type": "event", "event": "voicecall.call",
                         "payload": {"callId": "c1", "state": "ringing"}, "seq": 1}  # fmt: skip
        # The other client got nothing: its next frame is the answer to its own request.
        assert (await call(other, "test.echo", {}))["error"]["code"] == "FORBIDDEN"
        await reader.close()
        await other.close()


async def test_tick_every_interval() -> None:
    settings = ServerSettings(auth=AuthSettings(mode="none"), tick_interval_ms=20)
    _fx, server, ts = await serving(settings)
    try:
        async with aiohttp.ClientSession() as session, await connected(session, ts) as ws:
            first, second = await recv(ws), await recv(ws)
        assert first["event"] == second["event"] == "tick"
        assert second["payload"]["ts"] >= first["payload"]["ts"]
    finally:
        await server.close()
        await ts.close()


async def test_no_connect_in_time_closes_1008() -> None:
    settings = ServerSettings(auth=AuthSettings(mode="none"), handshake_timeout_ms=50)
    _fx, server, ts = await serving(settings)
    try:
        async with aiohttp.ClientSession() as session, await open_ws(session, ts) as ws:
            await recv(ws)
            close = await asyncio.wait_for(ws.receive(), 30)
        assert close.type is aiohttp.WSMsgType.CLOSE and close.data == 1008
        assert close.extra == "handshake timeout"
    finally:
        await server.close()
        await ts.close()


async def test_connections_are_bounded_and_plain_http_is_told_what_this_is() -> None:
    settings = ServerSettings(auth=AuthSettings(mode="none"), max_connections=1)
    _fx, server, ts = await serving(settings)
    try:
        async with aiohttp.ClientSession() as session, await open_ws(session, ts):
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await open_ws(session, ts)
            assert caught.value.status == 503
            async with session.get(ts.make_url("/")) as plain:
                assert plain.status == 426
    finally:
        await server.close()
        await ts.close()


async def test_a_signed_device_connects(gw: Any) -> None:
    _fx, _server, ts = gw
    async with aiohttp.ClientSession() as session, await open_ws(session, ts) as ws:
        challenge = (await recv(ws))["payload"]
        frame = sign_device(connect(token=TOKEN), SigningKey.generate(), nonce=challenge["nonce"],
                            signed_at=challenge["ts"])  # fmt: skip
        await ws.send_json(frame)
        assert (await recv(ws))["ok"] is True


async def test_a_device_signed_for_another_challenge_is_refused(gw: Any) -> None:
    _fx, _server, ts = gw
    async with aiohttp.ClientSession() as session, await open_ws(session, ts) as ws:
        challenge = (await recv(ws))["payload"]
        frame = sign_device(connect(token=TOKEN), SigningKey.generate(), nonce="replayed",
                            signed_at=challenge["ts"])  # fmt: skip
        await ws.send_json(frame)
        res = await recv(ws)
    assert res["error"]["details"]["code"] == "DEVICE_AUTH_NONCE_MISMATCH"


async def test_drain_finishes_requests_in_flight_and_admits_nothing_new(gw: Any) -> None:
    fx, server, ts = gw
    async with aiohttp.ClientSession() as session, await connected(session, ts) as ws:
        blocking = request("test.block", {})
        await ws.send_json(blocking)
        await fx.started.wait()
        drain = asyncio.create_task(server.drain(60))
        shutdown = await recv(ws)
        assert shutdown["event"] == "shutdown"
        refused = await call(ws, "test.echo", {})
        assert refused["error"] == {"code": "UNAVAILABLE", "message": "gateway is shutting down",
                                    "retryable": True, "retryAfterMs": 1000}  # fmt: skip
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await open_ws(session, ts)
        fx.release.set()
        assert (await recv(ws))["payload"] == {"released": True}
        assert await drain == 0


async def test_drain_gives_up_on_requests_that_outlast_it(gw: Any) -> None:
    fx, server, ts = gw
    async with aiohttp.ClientSession() as session, await connected(session, ts) as ws:
        blocking = request("test.block", {})
        await ws.send_json(blocking)
        await fx.started.wait()
        assert await server.drain(0.01) == 1
        await recv(ws)  # shutdown
        res = await recv(ws)
        assert res["id"] == blocking["id"]
        assert res["error"]["code"] == "UNAVAILABLE" and res["error"]["retryable"] is True


async def test_close_says_goodbye_with_1012(gw: Any) -> None:
    _fx, server, ts = gw
    async with aiohttp.ClientSession() as session, await connected(session, ts) as ws:
        await server.close()
        close = await asyncio.wait_for(ws.receive(), 30)
    assert close.type is aiohttp.WSMsgType.CLOSE and close.data == 1012


def test_app_is_an_aiohttp_application() -> None:
    server = GatewayServer({}, ServerSettings())
    assert isinstance(server.app(), web.Application)


async def test_a_client_that_falls_behind_is_closed_not_buffered_without_bound() -> None:
    settings = ServerSettings(auth=AuthSettings(mode="none"), max_outbox=3)
    _fx, server, ts = await serving(settings)
    try:
        async with aiohttp.ClientSession() as session, await connected(session, ts) as ws:
            for n in range(10):  # faster than any writer: nothing yields in between
                server.broadcast("voicecall.call", {"n": n})
            frames = []
            while (msg := await asyncio.wait_for(ws.receive(), 30)).type is aiohttp.WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1008
        assert len(frames) <= 3
    finally:
        await server.close()
        await ts.close()


async def test_a_lone_surrogate_echoed_back_does_not_kill_the_connection(gw: Any) -> None:
    # JSON may escape a lone surrogate; the server echoes ids, method and property names,
    # which used to crash its writer (a traceback in the log, the client never answered).
    _fx, _server, ts = gw
    async with aiohttp.ClientSession() as session:
        async with await open_ws(session, ts) as ws:
            await recv(ws)
            frame = connect(token=TOKEN)
            frame["params"]["\ud800"] = 1
            await ws.send_str(json.dumps(frame))
            refused = await recv(ws)
            close = await ws.receive()
        assert refused["error"]["message"].startswith("invalid connect params")
        assert close.type is aiohttp.WSMsgType.CLOSE and close.data == 1008
        async with await connected(session, ts) as ws:
            unknown = await call(ws, "\udfffx", {})
            assert unknown["error"]["message"] == "unknown method: \udfffx"
            echoed = await call(ws, "test.echo", {"k": "\ud800"})
            assert echoed["payload"]["params"] == {"k": "\ud800"}
            assert (await call(ws, "test.echo"))["ok"]


async def test_a_close_reason_is_cut_on_a_character_boundary(gw: Any) -> None:
    _fx, _server, ts = gw
    async with aiohttp.ClientSession() as session, await open_ws(session, ts) as ws:
        await recv(ws)
        await ws.send_json(connect(token=TOKEN, role="a" + "é" * 100))
        refused = await recv(ws)
        close = await ws.receive()
    assert refused["error"]["message"].startswith("unsupported role: aé")
    assert close.type is aiohttp.WSMsgType.CLOSE and close.data == 1008, close
    reason = str(close.extra)
    assert reason.startswith("unsupported role: aé") and len(reason.encode()) <= 120
