"""The Gateway client: protocol 4 over a WebSocket, as OpenClaw's own CLI speaks it.

Like the original CLI, a command opens one connection per RPC: wait for the server's
``connect.challenge``, send ``connect`` (token or password), read ``hello-ok``, send one
``req``, read its ``res``, close. Request ids are ``"<n>:<uuid4>"`` with a per-connection
counter, so ``connect`` is always ``1:…`` and the first RPC ``2:…``. A connection may instead be
kept open to receive the events the Gateway pushes (``call --follow``, ``tail``); ``tick``
frames keep it alive, and a silent server is given up after two tick intervals.

Failures are typed: a refused request is a :class:`GatewayError` (the server's code and
message), nothing listening is :class:`GatewayUnreachable`, anything else on the way is
:class:`GatewayTransportError`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from voicecall.plugin.host import GatewayError

PROTOCOL = 4
DEFAULT_PORT = 18789
CALL_TIMEOUT_S = 5.0  # the original CLI's timeout for one RPC
HANDSHAKE_TIMEOUT_S = 15.0  # the Node client's pre-auth limit
MAX_QUEUED_EVENTS = 1000  # events that arrive while a response is awaited
MAX_FRAME_BYTES = 25 * 1024 * 1024  # the server's policy.maxPayload
CLOSE_TICK_TIMEOUT = 4000
# What the original CLI asks for: every voicecall.* method is unclassified by the core.
SCOPES = (
    "operator.admin",
    "operator.read",
    "operator.write",
    "operator.approvals",
    "operator.questions",
    "operator.pairing",
    "operator.talk.secrets",
)
START_HINT = "start it with `voicecall gateway` (or `voicecall gateway --config FILE`)"


class GatewayTransportError(Exception):
    """The request never got an answer: the socket closed, timed out or was not a Gateway."""


class GatewayUnreachable(GatewayTransportError):
    """Nothing listens at the Gateway's address (connection refused)."""

    def __init__(self, url: str):
        super().__init__(f"no Gateway at {url} (connection refused): {START_HINT}")
        self.url = url


class CredentialsMissing(GatewayTransportError):
    """The Gateway wants a token or password and none was given (checked before connecting)."""

    def __init__(self, method: str):
        super().__init__(
            f"gateway {method} requires credentials before opening a websocket; "
            "set gateway.auth.token/password in the config, OPENCLAW_GATEWAY_TOKEN / "
            "OPENCLAW_GATEWAY_PASSWORD, or pass --token/--password"
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """Where the Gateway is and how to authenticate to it."""

    url: str
    token: str | None = None
    password: str | None = None
    needs_auth: bool = False  # auth mode token/password: refuse to connect without a secret

    def __repr__(self) -> str:  # never a secret in a log line or a traceback
        return f"Target(url={self.url!r}, token={'***' if self.token else None}, " \
               f"password={'***' if self.password else None})"  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """An event frame the Gateway pushed."""

    event: str
    payload: Any
    seq: int | None = None


def resolve_target(
    host_config: Mapping[str, Any] | None = None,
    *,
    url: str | None = None,
    port: int | None = None,
    token: str | None = None,
    password: str | None = None,
    env: Mapping[str, str] | None = None,
    fallback_port: int = DEFAULT_PORT,
) -> Target:
    """The Gateway to talk to, with OpenClaw's precedence (reference §1.2, §1.3).

    URL: ``url``, else $OPENCLAW_GATEWAY_URL (unless a port is given), else
    ``ws://127.0.0.1:<port>`` with the port from ``port``, $OPENCLAW_GATEWAY_PORT,
    ``gateway.port`` or ``fallback_port`` (18789; another under a named OpenClaw profile).
    Secrets: the flags, else the environment, else
    ``gateway.auth`` (not reused for an explicit URL, as in OpenClaw).
    """
    env = os.environ if env is None else env
    gateway = _mapping((host_config or {}).get("gateway"))
    auth = _mapping(gateway.get("auth"))
    explicit = url or (None if port else env.get("OPENCLAW_GATEWAY_URL"))
    if not explicit:
        chosen = port or _int(env.get("OPENCLAW_GATEWAY_PORT")) or _int(gateway.get("port"))
        explicit = f"ws://127.0.0.1:{chosen or fallback_port}"
    mode = str(auth.get("mode") or ("password" if auth.get("password") else "token"))
    from_config = not (url or env.get("OPENCLAW_GATEWAY_URL"))
    token = token or env.get("OPENCLAW_GATEWAY_TOKEN") or None
    password = password or env.get("OPENCLAW_GATEWAY_PASSWORD") or None
    if from_config and mode == "token":
        token = token or _str(auth.get("token"))
    if from_config and mode == "password":
        password = password or _str(auth.get("password"))
    return Target(url=explicit, token=token, password=password, needs_auth=mode != "none")


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def client_version() -> str:
    try:
        return version("voicecall")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0"


class GatewayClient:
    """One authenticated connection to the Gateway (use :func:`connect`)."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self._session = session
        self._ws = ws
        self._counter = 0
        self._events: deque[Event] = deque(maxlen=MAX_QUEUED_EVENTS)
        self.hello: dict[str, Any] = {}
        self.tick_s = 30.0

    def next_id(self) -> str:
        self._counter += 1
        return f"{self._counter}:{uuid.uuid4()}"

    async def handshake(self, target: Target, timeout_s: float) -> None:
        """Challenge, connect, hello-ok; raises GatewayError if the server refuses."""
        async with asyncio.timeout(timeout_s):
            frame = await self._frame()
            while not (frame.get("type") == "event" and frame.get("event") == "connect.challenge"):
                frame = await self._frame()
            nonce = _mapping(frame.get("payload")).get("nonce")
            if not isinstance(nonce, str) or not nonce:
                await self._ws.close(code=1008, message=b"connect challenge missing nonce")
                raise GatewayTransportError("the Gateway's challenge has no nonce")
            hello = await self._request("connect", connect_params(target))
        self.hello = hello if isinstance(hello, dict) else {}
        self._events.clear()  # the challenge is not news for whoever reads events()
        policy = _mapping(self.hello.get("policy"))
        tick_ms = policy.get("tickIntervalMs")
        if isinstance(tick_ms, int | float) and tick_ms > 0:
            self.tick_s = float(tick_ms) / 1000

    async def request(
        self, method: str, params: Mapping[str, Any] | None = None, *, timeout_s: float
    ) -> Any:
        """Sends one request and returns its payload; raises GatewayError on ``ok: false``."""
        async with asyncio.timeout(timeout_s):
            return await self._request(method, params)

    async def _request(self, method: str, params: Mapping[str, Any] | None) -> Any:
        rid = self.next_id()
        frame: dict[str, Any] = {"type": "req", "id": rid, "method": method}
        if params is not None:  # the original omits params for a status of every call
            frame["params"] = dict(params)
        await self._ws.send_str(json.dumps(frame))
        while True:
            reply = await self._frame()
            if reply.get("type") == "res" and reply.get("id") == rid:
                return _payload(reply)

    async def events(self) -> AsyncIterator[Event]:
        """The events pushed to this connection, until it closes (ticks included)."""
        while True:
            while self._events:
                yield self._events.popleft()
            await self._frame()

    async def _frame(self) -> dict[str, Any]:
        """The next frame (events are queued as they pass); any frame proves the server alive."""
        try:
            msg = await self._ws.receive(timeout=2 * self.tick_s)
        except TimeoutError:
            await self._ws.close(code=CLOSE_TICK_TIMEOUT, message=b"tick timeout")
            raise GatewayTransportError("the Gateway went silent (tick timeout)") from None
        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                        aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):  # fmt: skip
            raise GatewayTransportError(_closed(self._ws, msg))
        if msg.type is not aiohttp.WSMsgType.TEXT:
            return {}
        try:
            frame = json.loads(msg.data)
        except ValueError:
            return {}  # the client's frame guards ignore what they cannot read
        if not isinstance(frame, dict):
            return {}
        event = frame.get("event")
        if frame.get("type") == "event" and isinstance(event, str) and event:
            seq = frame.get("seq")
            self._events.append(Event(event=event, payload=frame.get("payload"),
                                      seq=seq if isinstance(seq, int) else None))  # fmt: skip
        return frame

    async def close(self) -> None:
        await self._ws.close()
        await self._session.close()


def connect_params(target: Target) -> dict[str, Any]:
    """The ``connect`` params the OpenClaw CLI sends (reference §2.2), auth only if given."""
    params: dict[str, Any] = {
        "minProtocol": PROTOCOL,
        "maxProtocol": PROTOCOL,
        "client": {
            "id": "cli",
            "version": client_version(),
            "platform": sys.platform,
            "mode": "cli",
            "instanceId": str(uuid.uuid4()),
        },
        "caps": [],
        "role": "operator",
        "scopes": list(SCOPES),
    }
    if target.token:
        params["auth"] = {"token": target.token}
    elif target.password:
        params["auth"] = {"password": target.password}
    return params


def _payload(reply: Mapping[str, Any]) -> Any:
    if reply.get("ok") is True:
        return reply.get("payload")
    error = _mapping(reply.get("error"))
    code = str(error.get("code") or "UNAVAILABLE")
    message = str(error.get("message") or "the Gateway refused the request")
    details = error.get("details")
    retry = error.get("retryAfterMs")
    raise GatewayError(
        code,
        message,
        details=details if isinstance(details, Mapping) else None,
        retryable=bool(error.get("retryable", False)),
        retry_after_ms=retry if isinstance(retry, int) else None,
    )


def _closed(ws: aiohttp.ClientWebSocketResponse, msg: aiohttp.WSMessage) -> str:
    code = ws.close_code if ws.close_code is not None else msg.data
    reason = msg.extra if isinstance(msg.extra, str) and msg.extra else ""
    return f"the Gateway closed the connection ({code}{': ' + reason if reason else ''})"


async def connect(
    target: Target, *, method: str = "connect", timeout_s: float = HANDSHAKE_TIMEOUT_S
) -> GatewayClient:
    """Opens and authenticates one connection.

    Raises:
        CredentialsMissing: auth is required and no token or password is known.
        GatewayUnreachable: nothing listens at the address.
        GatewayTransportError: the socket failed, timed out, or is not a Gateway.
        GatewayError: the Gateway refused the connect (bad token, protocol mismatch, …).
    """
    if target.needs_auth and not (target.token or target.password):
        raise CredentialsMissing(method)
    _check_url(target.url)
    session = aiohttp.ClientSession()
    try:
        ws = await asyncio.wait_for(
            session.ws_connect(target.url, max_msg_size=MAX_FRAME_BYTES, autoping=True),
            timeout_s,
        )
        client = GatewayClient(session, ws)
        await client.handshake(target, timeout_s)
    except BaseException as exc:
        await session.close()
        raise _transport_error(exc, target.url) from exc
    return client


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise GatewayTransportError(f"not a Gateway URL: {url!r} (expected ws://host:port)")
    loopback = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if (
        parts.scheme == "ws"
        and not loopback
        and not os.environ.get("OPENCLAW_ALLOW_INSECURE_PRIVATE_WS")
    ):
        # OpenClaw's rule: the token would cross the network in clear text.
        raise GatewayTransportError(
            f"SECURITY ERROR: refusing plain ws:// to {parts.hostname}; use wss:// "
            "(or set OPENCLAW_ALLOW_INSECURE_PRIVATE_WS=1 on a trusted network)"
        )


def _transport_error(exc: BaseException, url: str) -> BaseException:
    if isinstance(exc, GatewayError | GatewayTransportError | asyncio.CancelledError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorError):
        return GatewayUnreachable(url)
    if isinstance(exc, aiohttp.WSServerHandshakeError):
        return GatewayTransportError(f"{url} is not a Gateway (HTTP {exc.status} to the upgrade)")
    if isinstance(exc, TimeoutError):
        return GatewayTransportError(f"the Gateway at {url} did not complete the handshake")
    if isinstance(exc, aiohttp.ClientError | OSError):
        return GatewayTransportError(f"cannot talk to the Gateway at {url}: {exc}")
    return exc


async def call(
    target: Target,
    method: str,
    params: Mapping[str, Any] | None = None,
    *,
    timeout_s: float = CALL_TIMEOUT_S,
) -> Any:
    """One RPC on its own connection, as the OpenClaw CLI makes it; returns the payload."""
    client = await connect(target, method=method, timeout_s=min(timeout_s, HANDSHAKE_TIMEOUT_S))
    try:
        return await client.request(method, params, timeout_s=timeout_s)
    except TimeoutError:
        raise GatewayTransportError(f"{method}: no answer from the Gateway in "
                                    f"{timeout_s:g} s") from None  # fmt: skip
    except (aiohttp.ClientError, OSError) as exc:
        raise GatewayTransportError(f"{method}: {exc}") from exc
    finally:
        await client.close()


def is_unknown_method(exc: BaseException, method: str) -> bool:
    """Whether the Gateway said it has no ``method`` (the exact text the original matches)."""
    return isinstance(exc, GatewayError) and exc.message == f"unknown method: {method}"
