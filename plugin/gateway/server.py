"""The Gateway WebSocket server: aiohttp moves frames between the socket and the protocol.

Each connection gets a ``GatewayConnection`` (the rules) and an outbox drained by one writer
task, so responses, events and ticks go out in order and a slow client cannot make the server
buffer without bound: when its outbox is full it is closed. Requests run as tasks (a blocking
``voicecall.continue`` must not stop the connection from reading), at most a few per
connection. ``drain`` stops admitting connections and requests and waits for the requests in
flight; ``close`` then says goodbye to every client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from voicecall.plugin.gateway.auth import AuthSettings, Challenge, authenticate
from voicecall.plugin.gateway.protocol import (
    CLOSE_POLICY,
    CLOSE_RESTART,
    PROTOCOL_VERSION,
    CloseConnection,
    ConnectRequested,
    Event,
    GatewayConnection,
    RequestReceived,
    SendFrame,
    error_response,
    response,
)
from voicecall.plugin.host import (
    INVALID_REQUEST,
    UNAVAILABLE,
    ClientInfo,
    GatewayError,
    GatewayMethod,
    RequestContext,
)

BASE_EVENTS = ("tick", "shutdown")


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    """Where the Gateway listens and the bounds it keeps."""

    host: str = "127.0.0.1"
    port: int = 18789
    auth: AuthSettings = field(default_factory=AuthSettings)
    tick_interval_ms: int = 30_000
    handshake_timeout_ms: int = 10_000  # from the upgrade to an accepted `connect`
    max_frame_bytes: int = 1 << 20  # a request frame; voicecall params are small
    max_connections: int = 64
    max_in_flight: int = 16  # requests running at once on one connection
    max_outbox: int = 1024  # frames queued for one client before it counts as stuck
    version: str = "0"


@dataclass(slots=True, kw_only=True)
class _Client:
    conn: GatewayConnection
    ws: web.WebSocketResponse
    outbox: asyncio.Queue[dict[str, Any] | CloseConnection]
    tasks: set[asyncio.Task[None]] = field(default_factory=set)  # ticker, requests
    requests: set[asyncio.Task[None]] = field(default_factory=set)


class GatewayServer:
    """Serves ``methods`` to Gateway clients and pushes events to them.

    Args:
        methods: the registered Gateway methods (a host's ``Registry.methods``).
        events: the event names a plugin emits, listed in ``hello-ok.features``.
    """

    def __init__(
        self,
        methods: Mapping[str, GatewayMethod],
        settings: ServerSettings,
        *,
        events: Iterable[str] = (),
        logger: logging.Logger | None = None,
    ) -> None:
        self.methods = methods
        self.settings = settings
        self.events = (*BASE_EVENTS, *(e for e in events if e not in BASE_EVENTS))
        self.log = logger or logging.getLogger("voicecall.gateway")
        self.boot_id = str(uuid.uuid4())
        self.started = time.monotonic()
        self.clients: dict[str, _Client] = {}
        self.draining = False
        self._in_flight: set[asyncio.Task[None]] = set()

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self.handle)
        return app

    # ---- connections -------------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=self.settings.max_frame_bytes, autoping=True)
        if not ws.can_prepare(request).ok:
            return web.Response(status=426, text="this is the OpenClaw Gateway WebSocket\n")
        if self.draining or len(self.clients) >= self.settings.max_connections:
            reason = "shutting down" if self.draining else "too many connections"
            self.log.warning("gateway: refused a connection from %s: %s", request.remote, reason)
            return web.Response(status=503, text=f"gateway {reason}\n")
        await ws.prepare(request)
        conn = GatewayConnection(conn_id=str(uuid.uuid4()), nonce=str(uuid.uuid4()),
                                 now_ms=_now_ms(), methods=self._scopes(),
                                 max_frame_bytes=self.settings.max_frame_bytes,
                                 remote=request.remote or "")  # fmt: skip
        client = _Client(conn=conn, ws=ws, outbox=asyncio.Queue(self.settings.max_outbox))
        self.clients[conn.conn_id] = client
        writer = asyncio.create_task(self._write(client))
        try:
            self._send(client, conn.challenge())
            await self._read(client)
        finally:
            self.clients.pop(conn.conn_id, None)
            conn.closed()
            for task in client.tasks:
                task.cancel()
            with contextlib.suppress(asyncio.QueueFull):
                client.outbox.put_nowait(CloseConnection(code=1000, reason=""))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(writer, 5)
            writer.cancel()
        return ws

    def _scopes(self) -> dict[str, Any]:
        return {name: m.scope for name, m in self.methods.items()}

    async def _read(self, client: _Client) -> None:
        timeout = self.settings.handshake_timeout_ms / 1000
        try:
            async with asyncio.timeout(timeout) as deadline:
                async for msg in client.ws:
                    if msg.type is WSMsgType.TEXT:
                        await self._dispatch(client, client.conn.receive(msg.data))
                    elif msg.type is WSMsgType.BINARY:
                        self._close(client, CLOSE_POLICY, "binary frames are not supported")
                    if client.conn.client is not None:
                        deadline.reschedule(None)  # connected: no more handshake clock
                    if client.conn.phase.value == "closed":
                        return
        except TimeoutError:
            self.log.info("gateway: %s sent no accepted connect in time", client.conn.remote)
            self._close(client, CLOSE_POLICY, "handshake timeout")

    async def _dispatch(self, client: _Client, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, SendFrame):
                self._send(client, event.frame)
            elif isinstance(event, CloseConnection):
                self._close(client, event.code, event.reason)
            elif isinstance(event, ConnectRequested):
                self._connect(client, event)
            elif isinstance(event, RequestReceived):
                self._start_request(client, event)

    def _connect(self, client: _Client, event: ConnectRequested) -> None:
        conn, params = client.conn, event.params
        challenge = Challenge(nonce=conn.nonce, ts=conn.now_ms)
        try:
            role = params.get("role") or "operator"
            if role != "operator":
                raise GatewayError(INVALID_REQUEST, f"unsupported role: {role} (this gateway "
                                   "serves operators only)")  # fmt: skip
            method = authenticate(self.settings.auth, params, remote=conn.remote,
                                  challenge=challenge, now_ms=_now_ms())  # fmt: skip
        except GatewayError as exc:
            self.log.warning("gateway: refused connect from %s: %s", conn.remote, exc.message)
            for out in conn.reject(event.request_id, exc):
                self._dispatch_now(client, out)
            return
        scopes = frozenset(params.get("scopes") or ())
        info = ClientInfo(conn_id=conn.conn_id, client_id=str(params["client"]["id"]),
                          mode=str(params["client"]["mode"]), role=role, scopes=scopes,
                          remote=conn.remote)  # fmt: skip
        self._send(client, conn.accept(info, self.hello(info, method), event.request_id))
        device = params.get("device")
        signed = f", device {str(device['id'])[:12]} verified" if device else ""
        self.log.info(
            "gateway: %s connected (%s, %s%s)", info.client_id, conn.remote, method, signed
        )
        _spawn(client.tasks, self._tick(client))

    def _dispatch_now(self, client: _Client, event: Event) -> None:
        if isinstance(event, SendFrame):
            self._send(client, event.frame)
        elif isinstance(event, CloseConnection):
            self._close(client, event.code, event.reason)

    def hello(self, info: ClientInfo, method: str) -> dict[str, Any]:
        """The full ``hello-ok`` payload of protocol 4."""
        s = self.settings
        return {
            "type": "hello-ok",
            "protocol": PROTOCOL_VERSION,
            "server": {"version": s.version, "bootId": self.boot_id, "connId": info.conn_id},
            "features": {"methods": sorted(self.methods), "events": list(self.events)},
            "snapshot": {
                "presence": [],
                "health": {},
                "stateVersion": {"presence": 0, "health": 0},
                "uptimeMs": int((time.monotonic() - self.started) * 1000),
                "authMode": s.auth.mode,
            },
            "auth": {"method": method, "role": info.role, "scopes": sorted(info.scopes)},
            "policy": {
                "maxPayload": s.max_frame_bytes,
                "maxBufferedBytes": 2 * s.max_frame_bytes,
                "tickIntervalMs": s.tick_interval_ms,
            },
        }

    # ---- requests ----------------------------------------------------------------------
    def _start_request(self, client: _Client, event: RequestReceived) -> None:
        if self.draining:
            error = GatewayError(UNAVAILABLE, "gateway is shutting down", retryable=True,
                                 retry_after_ms=1000)  # fmt: skip
            self._send(client, error_response(event.request_id, error))
        elif len(client.requests) >= self.settings.max_in_flight:
            error = GatewayError(UNAVAILABLE, "too many requests in flight on this connection",
                                 retryable=True, retry_after_ms=100)  # fmt: skip
            self._send(client, error_response(event.request_id, error))
        else:
            task = _spawn(client.tasks, self._run(client, event))
            client.requests.add(task)
            task.add_done_callback(client.requests.discard)
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _run(self, client: _Client, event: RequestReceived) -> None:
        method = self.methods[event.method]
        context = RequestContext(method=event.method, request_id=event.request_id,
                                 client=event.client)  # fmt: skip
        try:
            payload = await method.handler(event.params, context)
            frame = response(event.request_id, payload)
            json.dumps(frame)  # a handler bug must not surface as a dead connection
        except GatewayError as exc:
            frame = error_response(event.request_id, exc)
        except asyncio.CancelledError:
            error = GatewayError(UNAVAILABLE, "gateway is shutting down", retryable=True)
            self._send(client, error_response(event.request_id, error))
            raise
        except Exception as exc:  # a bug in a handler: one log line, the client gets an error
            self.log.error("gateway: %s failed: %s: %s", event.method, type(exc).__name__, exc)
            frame = error_response(
                event.request_id, GatewayError(UNAVAILABLE, f"{event.method} failed")
            )
        self._send(client, frame)

    # ---- output ------------------------------------------------------------------------
    def broadcast(self, event: str, payload: Mapping[str, Any]) -> None:
        """Pushes an event to every connected client that holds operator.read."""
        for client in list(self.clients.values()):
            frame = client.conn.event(event, dict(payload))
            if frame is not None:
                self._send(client, frame)

    async def _tick(self, client: _Client) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_interval_ms / 1000)
            frame = client.conn.tick(_now_ms())
            if frame is None:
                return
            self._send(client, frame)

    def _send(self, client: _Client, frame: dict[str, Any]) -> None:
        try:
            client.outbox.put_nowait(frame)
        except asyncio.QueueFull:
            self.log.warning("gateway: closing %s: it does not read its frames", client.conn.remote)
            client.conn.closed()
            self._abort(client)

    def _close(self, client: _Client, code: int, reason: str) -> None:
        client.conn.closed()
        try:
            client.outbox.put_nowait(CloseConnection(code=code, reason=reason))
        except asyncio.QueueFull:
            self._abort(client)

    def _abort(self, client: _Client) -> None:
        _spawn(client.tasks, self._hang_up(client))

    async def _hang_up(self, client: _Client) -> None:
        await client.ws.close(code=CLOSE_POLICY, message=b"slow consumer")

    async def _write(self, client: _Client) -> None:
        while True:
            item = await client.outbox.get()
            if isinstance(item, CloseConnection):
                await client.ws.close(code=item.code, message=_close_reason(item.reason))
                return
            text = json.dumps(item, ensure_ascii=False, separators=(",", ":"))
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                # A lone surrogate a client sent (JSON may escape one) and we echo back (an
                # id, a method or property name): escaped, as a JavaScript server writes it.
                text = json.dumps(item, separators=(",", ":"))
            try:
                await client.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                return

    # ---- stopping ----------------------------------------------------------------------
    async def drain(self, timeout_s: float) -> int:
        """Stops admitting connections and requests; waits up to ``timeout_s`` for the
        requests in flight, then cancels the rest (they answer UNAVAILABLE, retryable).

        Returns:
            How many requests had to be cancelled.
        """
        self.draining = True
        self.broadcast("shutdown", {"reason": "gateway stopping"})
        pending = set(self._in_flight)
        if pending:
            _done, pending = await asyncio.wait(pending, timeout=timeout_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
        return len(pending)

    async def close(self) -> None:
        """Says goodbye (1012, service restart) to every client."""
        for client in list(self.clients.values()):
            self._close(client, CLOSE_RESTART, "gateway stopping")
        for _ in range(500):  # the handlers' finally blocks remove them
            if not self.clients:
                return
            await asyncio.sleep(0.01)


def _spawn(tasks: set[asyncio.Task[None]], coro: Any) -> asyncio.Task[None]:
    task: asyncio.Task[None] = asyncio.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return task


def _close_reason(reason: str) -> bytes:
    """At most 120 bytes of valid UTF-8 (RFC 6455: 123), whatever the reason quotes."""
    raw = reason.encode("utf-8", "backslashreplace")[:120]
    return raw.decode("utf-8", "ignore").encode("utf-8")


def _now_ms() -> int:
    return int(time.time() * 1000)
