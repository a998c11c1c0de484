"""The Gateway client against a small server written from the reference's captured frames."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from voicecall.plugin import cli_calls
from voicecall.plugin.gateway import client as gw
from voicecall.plugin.host import GatewayError

ID = re.compile(r"^(\d+):[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TOKEN = "s3cret-token"


@dataclass
class FakeGateway:
    """Answers like the stub Gateway of the reference: challenge, hello-ok, then scripted res."""

    replies: dict[str, Any] = field(default_factory=dict)  # method -> payload or GatewayError
    events: list[dict[str, Any]] = field(default_factory=list)  # pushed after hello-ok
    frames: list[dict[str, Any]] = field(default_factory=list)  # what clients sent
    tick_ms: int = 30000
    silent_after_hello: bool = False
    connections: int = 0

    async def handler(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.connections += 1
        challenge = {"nonce": "738b8bfa-424c", "ts": 1795962486800}
        await ws.send_json({"type": "event", "event": "connect.challenge", "payload": challenge})
        connect = await self._next(ws)
        if connect is None:
            return ws
        auth = connect.get("params", {}).get("auth", {})
        if auth.get("token") != TOKEN and auth.get("password") != TOKEN:
            await ws.send_json({"type": "res", "id": connect["id"], "ok": False, "error": {
                "code": "INVALID_REQUEST", "message": "unauthorized: gateway token mismatch",
                "details": {"code": "AUTH_TOKEN_MISMATCH"}}})  # fmt: skip
            await ws.close(code=1008)
            return ws
        await ws.send_json(
            {
                "type": "res",
                "id": connect["id"],
                "ok": True,
                "payload": {
                    "type": "hello-ok",
                    "protocol": 4,
                    "policy": {"tickIntervalMs": self.tick_ms},
                },
            }
        )
        for event in self.events:
            await ws.send_json({"type": "event", **event})
        if self.silent_after_hello:
            await asyncio.sleep(30)
        while (frame := await self._next(ws)) is not None:
            await ws.send_json(self._answer(frame))
        return ws

    async def _next(self, ws: web.WebSocketResponse) -> dict[str, Any] | None:
        msg = await ws.receive()
        if msg.type is not WSMsgType.TEXT:
            return None
        frame: dict[str, Any] = json.loads(msg.data)
        self.frames.append(frame)
        return frame

    def _answer(self, frame: dict[str, Any]) -> dict[str, Any]:
        method = frame["method"]
        if method not in self.replies:
            return {
                "type": "res",
                "id": frame["id"],
                "ok": False,
                "error": {"code": "INVALID_REQUEST", "message": f"unknown method: {method}"},
            }
        reply = self.replies[method]
        if isinstance(reply, list):  # one answer per request, the last one repeated
            reply = reply.pop(0) if len(reply) > 1 else reply[0]
        if isinstance(reply, GatewayError):
            return {"type": "res", "id": frame["id"], "ok": False, "error": reply.shape()}
        return {"type": "res", "id": frame["id"], "ok": True, "payload": reply}


class Serve(Protocol):
    def __call__(self, fake: FakeGateway, token: str | None = ...) -> Awaitable[gw.Target]: ...


@pytest.fixture
async def serve() -> Any:
    servers: list[TestServer] = []

    async def start(fake: FakeGateway, token: str | None = TOKEN) -> gw.Target:
        app = web.Application()
        app.router.add_get("/", fake.handler)
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return gw.Target(url=f"ws://127.0.0.1:{server.port}", token=token, needs_auth=True)

    yield start
    for server in servers:
        await server.close()


async def test_one_rpc_is_one_connection_with_the_clis_frames(serve: Serve) -> None:
    fake = FakeGateway(replies={"voicecall.status": {"found": True, "calls": []}})
    target = await serve(fake)
    assert await gw.call(target, "voicecall.status") == {"found": True, "calls": []}
    connect, req = fake.frames
    assert connect["method"] == "connect" and ID.match(connect["id"])[1] == "1"  # type: ignore[index]
    params = connect["params"]
    assert params["minProtocol"] == params["maxProtocol"] == 4
    assert params["client"]["id"] == params["client"]["mode"] == "cli"
    assert params["auth"] == {"token": TOKEN} and params["role"] == "operator"
    assert "operator.write" in params["scopes"] and "operator.read" in params["scopes"]
    assert ID.match(req["id"])[1] == "2"  # type: ignore[index]
    assert req["method"] == "voicecall.status" and "params" not in req  # omitted, as the original
    await gw.call(target, "voicecall.status", {"callId": "c1"})
    assert fake.frames[-1]["params"] == {"callId": "c1"} and fake.connections == 2


async def test_a_refused_request_is_a_gateway_error_with_its_code(serve: Serve) -> None:
    fake = FakeGateway(replies={"voicecall.end": GatewayError("UNAVAILABLE", "Call not found")})
    target = await serve(fake)
    with pytest.raises(GatewayError) as info:
        await gw.call(target, "voicecall.end", {"callId": "x"})
    assert (info.value.code, info.value.message) == ("UNAVAILABLE", "Call not found")
    with pytest.raises(GatewayError) as unknown:
        await gw.call(target, "voicecall.continue.start", {"callId": "x", "message": "hi"})
    assert gw.is_unknown_method(unknown.value, "voicecall.continue.start")
    assert not gw.is_unknown_method(info.value, "voicecall.end")


async def test_a_bad_token_is_refused_at_connect(serve: Serve) -> None:
    target = await serve(FakeGateway(), token="wrong")
    with pytest.raises(GatewayError) as info:
        await gw.call(target, "voicecall.status")
    assert info.value.message == "unauthorized: gateway token mismatch"
    assert info.value.details == {"code": "AUTH_TOKEN_MISMATCH"}


async def test_a_password_is_sent_as_the_password(serve: Serve) -> None:
    fake = FakeGateway(replies={"voicecall.status": {"found": False}})
    target = await serve(fake, token=None)
    target = gw.Target(url=target.url, password=TOKEN, needs_auth=True)
    assert await gw.call(target, "voicecall.status", {"callId": "x"}) == {"found": False}
    assert fake.frames[0]["params"]["auth"] == {"password": TOKEN}


async def test_no_credentials_fails_before_opening_a_socket(serve: Serve) -> None:
    fake = FakeGateway()
    target = await serve(fake, token=None)
    with pytest.raises(gw.CredentialsMissing, match=r"voicecall\.status requires credentials"):
        await gw.call(target, "voicecall.status")
    assert fake.connections == 0
    open_target = gw.Target(url=target.url, needs_auth=False)  # auth mode none: no auth block
    with pytest.raises(GatewayError):
        await gw.call(open_target, "voicecall.status")
    assert "auth" not in fake.frames[0]["params"]


async def test_nothing_listening_is_unreachable_and_says_how_to_start_it() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connection refused
        target = gw.Target(url=f"ws://127.0.0.1:{port}", token=TOKEN)
        with pytest.raises(gw.GatewayUnreachable) as info:
            await gw.call(target, "voicecall.status")
    assert "voicecall gateway" in str(info.value) and str(port) in str(info.value)


async def test_events_are_received_on_a_kept_connection(serve: Serve) -> None:
    call = {"callId": "c1", "state": "ringing"}
    fake = FakeGateway(events=[{"event": "tick", "payload": {"ts": 1}},
                               {"event": "voicecall.call", "payload": call, "seq": 3}])  # fmt: skip
    target = await serve(fake)
    client = await gw.connect(target)
    try:
        seen = []
        async for event in client.events():
            seen.append(event)
            if event.event == "voicecall.call":
                break
    finally:
        await client.close()
    assert [e.event for e in seen] == ["tick", "voicecall.call"]
    assert seen[1].payload == call and seen[1].seq == 3


async def test_a_silent_gateway_is_given_up_after_two_ticks(serve: Serve) -> None:
    target = await serve(FakeGateway(tick_ms=50, silent_after_hello=True))
    client = await gw.connect(target)
    try:
        with pytest.raises(gw.GatewayTransportError, match="tick timeout"):
            async for _ in client.events():
                pass
    finally:
        await client.close()


async def test_a_server_that_is_not_a_gateway_is_named(aiohttp_server: Any) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", page)
    server = await aiohttp_server(app)
    target = gw.Target(url=f"ws://127.0.0.1:{server.port}", token=TOKEN)
    with pytest.raises(gw.GatewayTransportError, match="is not a Gateway"):
        await gw.call(target, "voicecall.status")


def test_target_precedence_flags_env_config() -> None:
    config = {"gateway": {"port": 19999, "auth": {"mode": "token", "token": "from-config"}}}
    assert gw.resolve_target(config, env={}) == gw.Target(
        url="ws://127.0.0.1:19999", token="from-config", needs_auth=True)  # fmt: skip
    env = {"OPENCLAW_GATEWAY_TOKEN": "from-env", "OPENCLAW_GATEWAY_PORT": "20001"}
    assert gw.resolve_target(config, env=env).token == "from-env"
    assert gw.resolve_target(config, env=env).url == "ws://127.0.0.1:20001"
    flags = gw.resolve_target(config, env=env, token="flag", port=20002)
    assert (flags.token, flags.url) == ("flag", "ws://127.0.0.1:20002")
    assert gw.resolve_target({}, env={}).url == "ws://127.0.0.1:18789"
    assert gw.resolve_target({}, env={}, fallback_port=19001).url == "ws://127.0.0.1:19001"
    assert gw.resolve_target(config, env={}, fallback_port=19001).url.endswith(":19999")
    # An explicit URL does not reuse the config's secret (OpenClaw's rule).
    assert gw.resolve_target(config, env={}, url="ws://127.0.0.1:1").token is None
    password = {"gateway": {"auth": {"mode": "password", "password": "pw"}}}
    assert gw.resolve_target(password, env={}).password == "pw"
    assert not gw.resolve_target({"gateway": {"auth": {"mode": "none"}}}, env={}).needs_auth
    assert "from-config" not in repr(gw.resolve_target(config, env={}))


async def test_plain_ws_to_another_host_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCLAW_ALLOW_INSECURE_PRIVATE_WS", raising=False)
    target = gw.Target(url="ws://gateway.example.com:18789", token=TOKEN)
    with pytest.raises(gw.GatewayTransportError, match="SECURITY ERROR"):
        await gw.call(target, "voicecall.status")


# --- `voicecall continue`: the operation, polled; the blocking method as a fallback -------------

PENDING = {"operationId": "op-1", "status": "pending", "pollTimeoutMs": 60_000}
TURN = {"callId": "c1", "message": "Thursday at ten?"}


@pytest.fixture
def fast_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli_calls, "POLL_S", 0.01)


async def test_continue_polls_the_operation_until_it_completes(
    serve: Serve, fast_poll: None
) -> None:
    done = {"operationId": "op-1", "status": "completed",
            "result": {"success": True, "transcript": "Yes."}}  # fmt: skip
    fake = FakeGateway(replies={"voicecall.continue.start": PENDING,
                                "voicecall.continue.result": [PENDING, PENDING, done]})  # fmt: skip
    result = await cli_calls.continue_call(await serve(fake), TURN, fallback_s=5)
    assert result == {"success": True, "transcript": "Yes."}
    methods = [f["method"] for f in fake.frames if f["method"] != "connect"]
    assert methods == ["voicecall.continue.start", *["voicecall.continue.result"] * 3]
    assert fake.frames[1]["params"] == TURN
    assert fake.frames[-1]["params"] == {"operationId": "op-1"}


async def test_continue_reports_a_failed_operation(serve: Serve, fast_poll: None) -> None:
    failed = {"operationId": "op-1", "status": "failed", "error": "call ended"}
    fake = FakeGateway(replies={"voicecall.continue.start": PENDING,
                                "voicecall.continue.result": failed})  # fmt: skip
    with pytest.raises(GatewayError, match="call ended"):
        await cli_calls.continue_call(await serve(fake), TURN, fallback_s=5)


async def test_continue_gives_up_after_poll_timeout(serve: Serve, fast_poll: None) -> None:
    short = {**PENDING, "pollTimeoutMs": 50}
    fake = FakeGateway(replies={"voicecall.continue.start": short,
                                "voicecall.continue.result": PENDING})  # fmt: skip
    with pytest.raises(GatewayError, match="continue timed out"):
        await cli_calls.continue_call(await serve(fake), TURN, fallback_s=5)


async def test_continue_falls_back_to_the_blocking_method(serve: Serve) -> None:
    fake = FakeGateway(replies={"voicecall.continue": {"success": True, "transcript": "Hi."}})
    result = await cli_calls.continue_call(await serve(fake), TURN, fallback_s=5)
    assert result == {"success": True, "transcript": "Hi."}
    assert [f["method"] for f in fake.frames if f["method"] != "connect"] == [
        "voicecall.continue.start", "voicecall.continue"]  # fmt: skip


async def test_other_continue_errors_do_not_fall_back(serve: Serve) -> None:
    fake = FakeGateway(replies={"voicecall.continue.start": GatewayError(
        "INVALID_REQUEST", "Call not found"), "voicecall.continue": {"success": True}})  # fmt: skip
    with pytest.raises(GatewayError, match="Call not found"):
        await cli_calls.continue_call(await serve(fake), TURN, fallback_s=5)
    assert "voicecall.continue" not in [f["method"] for f in fake.frames]
