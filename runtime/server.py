"""The webhook server: the carrier's way into the runtime.

One exact path, POST only. On every request, in this order: the signature headers' presence
(401, before the body is read; with ``Expect: 100-continue`` also the declared size, 413, before
``100 Continue``), the body size and read time (413, 408), the signature (401), the per-IP cap
on verified requests in flight (429), the replay check (a replay gets the stored reply and
causes nothing), parsing (400 on malformed input), then the call's state change. The cap counts
only verified requests: behind a tunnel every carrier request comes from one address, and
unsigned requests that trickle their bodies must not crowd the carrier out (they are bounded by
the body read time and the connection cap instead). Every rejection is logged with
its reason, in one line; malformed input is never a 500.

Below HTTP, :class:`GuardedSite` bounds connections: how many are open, how long a request head
may take to arrive, how long an idle connection is kept. What it refuses or closes before an
answer of ours is counted by reason (``voicecall_connections_refused_total``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, cast
from urllib.parse import unquote_plus

import redis
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong

from voicecall.runtime.cluster import Unrouted
from voicecall.runtime.forwarding import ForwardingTrust, signed_url
from voicecall.runtime.logs import webhook_context
from voicecall.runtime.manager import CallManager
from voicecall.runtime.media.streams import StreamEndpoint
from voicecall.runtime.ops import LOOPBACK, OPS, Network, Ops, event_kind, networks, ops_of
from voicecall.runtime.providers.base import (
    Adapter,
    BadRequest,
    Reply,
    Verification,
    WebhookRequest,
)
from voicecall.runtime.store import StoredReply
from voicecall.runtime.store.redis import NotOwner

log = logging.getLogger("voicecall.webhook")

MANAGER = web.AppKey("manager", CallManager)
GATE: web.AppKey[_Gate] = web.AppKey("gate")

FormPairs = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    path: str = "/voice/webhook"
    public_url: str | None = None  # the webhook's public URL, as the carrier signs it
    max_body: int = 64 * 1024  # serve.maxBodyBytes
    read_timeout_s: float = 5.0  # serve.bodyTimeoutMs: the body, once the head has arrived
    max_in_flight_per_ip: int = 8
    skip_signature: bool = False
    # Connections (GuardedSite): serve.headerTimeoutMs, serve.keepAliveTimeoutMs,
    # serve.maxConnections. Carriers send a request head at once and reuse connections
    # for seconds, not minutes.
    header_timeout_s: float = 10.0  # from a request's first byte to the end of its head
    keepalive_timeout_s: float = 15.0  # an open connection with no request
    max_connections: int = 512  # beyond: 503 and closed (each is a file descriptor)
    # webhookSecurity: which forwarded headers may shape the signed URL (without public_url).
    forwarding: ForwardingTrust = field(default_factory=ForwardingTrust)
    # serve.metrics.allowFrom: who may read /metrics, /healthz, /readyz (never through a proxy).
    ops_allow_from: tuple[Network, ...] = networks(LOOPBACK)


def make_app(
    manager: CallManager, settings: ServerSettings, streams: StreamEndpoint | None = None
) -> web.Application:
    """The webhook application (plain aiohttp: run it, or mount it in a bigger app); with
    ``streams``, also the media-stream WebSocket endpoint at its path."""
    app = web.Application(client_max_size=settings.max_body + 1)
    app[MANAGER] = manager
    gate = _Gate(manager.adapter, settings)
    app[GATE] = gate
    app[OPS] = ops = Ops(manager, settings.ops_allow_from)  # /metrics, /healthz, /readyz
    ops.routes(app)
    app.router.add_route("*", settings.path, gate.handle, expect_handler=gate.expect)
    if streams is not None:
        streams.count_refusal = ops.refused_stream
        app.router.add_get(streams.settings.path, streams.handle)
        app.on_shutdown.append(streams.shutdown)
    return app


def set_public_url(app: web.Application, public_url: str | None) -> None:
    """The webhook's public URL once known (a tunnel opens after the server has bound its
    port): signatures are checked against it from the next request on."""
    gate = app[GATE]
    gate.settings = replace(gate.settings, public_url=public_url)


class _Gate:
    def __init__(self, adapter: Adapter, settings: ServerSettings):
        self.adapter = adapter
        self.settings = settings
        self.in_flight: Counter[str] = Counter()

    async def expect(self, request: web.Request) -> web.StreamResponse | None:
        """``Expect: 100-continue``: refuse what would be refused anyway before the client
        sends its body (aiohttp's default answers ``100 Continue`` to anything)."""
        early = self.refusal_before_body(request)
        if early is not None:
            early.force_close()
            return early
        if request.headers.get("Expect", "").lower() != "100-continue":
            return _reject(request, 417, "only Expect: 100-continue is understood", close=True)
        if request.version >= (1, 1):
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.writer.output_size = 0  # what follows is the response proper
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _reject(request, 405, "only POST is accepted")
        started = time.perf_counter()
        try:
            return await self.checked(request)
        finally:
            request.app[OPS].answered(request, started)

    def refusal_before_body(self, request: web.Request) -> web.Response | None:
        """What is refused on the head alone: method, signature headers, declared size."""
        if request.method != "POST":
            return _reject(request, 405, "only POST is accepted")
        if not self.settings.skip_signature:
            missing = self.adapter.missing_signature_headers(request.headers)
            if missing:
                return _reject(request, 401, f"missing signature header {', '.join(missing)}")
        if (request.content_length or 0) > self.settings.max_body:
            return _reject(request, 413, f"body of {request.content_length} bytes is over "
                           f"{self.settings.max_body}", close=True)  # fmt: skip
        return None

    async def checked(self, request: web.Request) -> web.StreamResponse:
        early = self.refusal_before_body(request)
        if early is not None:
            return early
        try:
            body = _body_at_hand(request, self.settings.max_body + 1)
            if body is None:
                async with asyncio.timeout(self.settings.read_timeout_s):
                    body = await _read_body(request, self.settings.max_body + 1)
        except TimeoutError:
            return _reject(request, 408, f"body not received in {self.settings.read_timeout_s}s",
                           close=True)  # fmt: skip
        except (ConnectionError, web.RequestPayloadError) as exc:
            # The client reset the connection or broke the body's framing: nobody to answer.
            return _reject(request, 400, f"body not received: {_one_line(exc)}", close=True)
        if len(body) > self.settings.max_body:
            return _reject(request, 413, f"body over {self.settings.max_body} bytes", close=True)
        return await self.verified(request, self.webhook_request(request, body))

    async def verified(self, request: web.Request, incoming: WebhookRequest) -> web.StreamResponse:
        verification = self.adapter.verify(incoming)
        if not verification.ok:
            return _reject(request, 401, f"signature rejected: {verification.reason}")
        ip = request.remote or "?"
        if self.in_flight[ip] >= self.settings.max_in_flight_per_ip:
            return _reject(request, 429, f"more than {self.settings.max_in_flight_per_ip} "
                           f"verified requests in flight from {ip}")  # fmt: skip
        self.in_flight[ip] += 1
        try:
            return await self.applied(request, incoming, verification)
        except STORE_ERRORS as exc:  # nothing was committed: the carrier's retry finds it new
            return _reject(request, 503, f"the store failed ({_one_line(exc)}); the carrier "
                           "retries")  # fmt: skip
        finally:
            self.in_flight[ip] -= 1
            if self.in_flight[ip] <= 0:
                del self.in_flight[ip]

    async def applied(
        self, request: web.Request, incoming: WebhookRequest, verification: Verification
    ) -> web.StreamResponse:
        manager = request.app[MANAGER]
        if verification.once_key and not await manager.store.commit_event(
            verification.once_key, None, None
        ):
            # A signature usable once (it does not cover the whole request) seen before:
            # whatever this request changed, it is that earlier event again.
            return self.replay(request, await manager.store.seen(verification.key))
        stored = await manager.store.seen(verification.key)
        if stored is not None:  # read once: a networked store answers it in a round trip
            return self.replay(request, stored)
        if incoming.malformed:
            return _reject(request, 400, f"malformed {self.adapter.name} webhook: "
                           f"{incoming.malformed}")  # fmt: skip
        try:
            events = self.adapter.parse(incoming)
        except BadRequest as exc:
            return _reject(request, 400, f"malformed {self.adapter.name} webhook: {exc}")
        Ops.note_kind(request, event_kind(events))
        with webhook_context(manager, self.adapter.name, events):
            try:
                reply = await manager.handle(events, verification.key)
            except Unrouted as exc:  # another gateway owns the call and did not answer
                return _reject(request, 503, f"not applied: {exc}; the carrier retries")
        return web.Response(body=reply.body, status=reply.status,
                            content_type=_mime(reply.content_type))  # fmt: skip

    def replay(self, request: web.Request, stored: StoredReply | None) -> web.Response:
        """The reply a processed event got (``stored``), again; no side effect."""
        reply = Reply(stored.body, stored.content_type) if stored else self.adapter.empty()
        Ops.note_kind(request, "replay")
        request.app[OPS].replays.inc()
        log.info("%s %s: replay acknowledged with the earlier reply, no side effect",
                 request.method, request.path)  # fmt: skip
        return web.Response(body=reply.body, content_type=_mime(reply.content_type))

    def webhook_request(self, request: web.Request, body: bytes) -> WebhookRequest:
        raw_query = request.raw_path.partition("?")[2]
        if self.settings.public_url:
            url = self.settings.public_url + (f"?{raw_query}" if raw_query else "")
        else:
            # The adapter checks that this makes a URL (the Host header is the client's).
            url = signed_url(scheme=request.scheme, host=request.host, raw_path=request.raw_path,
                             headers=request.headers, remote=request.remote or "",
                             provider=self.adapter.name,
                             trust=self.settings.forwarding)  # fmt: skip
        pairs: FormPairs = ()
        malformed = ""
        if request.content_type == "application/x-www-form-urlencoded":
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                # Checked for its signature first (over the text as decoded here, which no
                # carrier signed), refused as malformed only after that.
                text, malformed = body.decode("utf-8", "replace"), "the form body is not UTF-8"
            pairs = parse_form_pairs(text)
        return WebhookRequest(method=request.method, url=url, query=dict(request.query),
                              headers=request.headers, body=body, form=dict(pairs),
                              form_pairs=pairs, malformed=malformed,
                              remote=request.remote or "")  # fmt: skip


def parse_form_pairs(text: str) -> FormPairs:
    """An urlencoded form's fields in order, repeats kept, as ``parse_qsl`` reads them but
    faster: only the parts that need it are unquoted (carriers send a dozen plain fields)."""
    out: list[tuple[str, str]] = []
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "%" in key or "+" in key:
            key = _unquote(key)
        if "%" in value or "+" in value:
            value = _unquote(value)
        out.append((key, value))
    return tuple(out)


def _unquote(text: str) -> str:
    """``unquote_plus``, remembered for short texts: a call's webhooks repeat its numbers."""
    return _unquote_short(text) if len(text) <= 64 else unquote_plus(text)


_unquote_short = functools.lru_cache(maxsize=4096)(unquote_plus)  # at most ~1 MB


def parse_form(text: str) -> dict[str, str]:
    """An urlencoded form, the last value of a repeated name winning."""
    return dict(parse_form_pairs(text))


def _body_at_hand(request: web.Request, limit: int) -> bytes | None:
    """The body (to ``limit`` bytes) when all of it has arrived, as a carrier's small form
    usually does with the head: nothing to wait for, so no timer; else None."""
    content = request.content
    return content.read_nowait(limit) if content.is_eof() else None


async def _read_body(request: web.Request, limit: int) -> bytes:
    """The body, read to its end or to ``limit`` bytes, whichever comes first."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await request.content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _mime(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip() or "text/plain"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:200]


def _reject(request: web.Request, status: int, reason: str, *, close: bool = False) -> web.Response:
    log.warning("webhook %s %s from %s rejected with %d: %s", request.method, request.path,
                request.remote, status, reason)  # fmt: skip
    request.app[OPS].rejected_webhook(status, reason)
    response = web.Response(status=status, text=f"{reason}\n")
    if close:  # the body may be unread or still coming: do not wait for it
        response.force_close()
    return response


# A store that cannot be read or written (disk full, Redis down), or that refuses a write for
# a call another gateway took over meanwhile: 503 (the carrier retries), never a 500.
STORE_ERRORS = (sqlite3.Error, redis.RedisError, NotOwner)


# --- connections ----------------------------------------------------------------------------------

REFUSED = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
HEAD_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are bounded (aiohttp has no header timeout of its own):

    - at most ``max_connections`` open; one more is answered 503 and closed;
    - a request head must be complete ``header_timeout_s`` after its first byte, else 408
      and closed (one header line every few seconds would hold a connection forever);
    - a connection with no request in progress is closed after ``keepalive_timeout_s``
      (aiohttp's own keep-alive timer, which also runs from the moment it opens, so a
      silent connection is closed too).

    Its connections log nothing per request (no access log) and one line per malformed one.
    """

    def __init__(self, runner: web.BaseRunner, host: str, port: int,
                 settings: ServerSettings):  # fmt: skip
        super().__init__(runner)
        self._host = host
        self._port = port
        self._settings = settings
        self.connections: _Connections | None = None

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None, "runner.setup() first"
        app = getattr(self._runner, "app", None)  # an AppRunner's (a bare server has none)
        ops = ops_of(app) if isinstance(app, web.Application) else None
        count = ops.refused_connection if ops is not None else _uncounted
        self.connections = _Connections(server, self._settings, count)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self.connections.protocol, self._host,
                                                self._port, reuse_address=True)  # fmt: skip


def _uncounted(reason: str) -> None:
    pass


class _Connections:
    """The open connections of one site, and the protocol factory that counts them.

    ``count`` is told the reason of each connection refused or closed before our answer.
    """

    def __init__(self, server: web.Server, settings: ServerSettings,
                 count: Callable[[str], None] = _uncounted):  # fmt: skip
        self.server = server
        self.settings = settings
        self.count = count
        self.open: set[_GuardedProtocol] = set()
        self._refused = 0
        self._refusal_logged = 0.0

    def protocol(self) -> _GuardedProtocol:
        return _GuardedProtocol(self.server, loop=asyncio.get_running_loop(), connections=self,
                                keepalive_timeout=self.settings.keepalive_timeout_s,
                                access_log=None)  # fmt: skip

    def refuse(self, transport: asyncio.Transport) -> None:
        transport.write(REFUSED)
        transport.close()
        self.count("max_connections")
        self._refused += 1
        now = time.monotonic()
        if now - self._refusal_logged >= 1.0:  # one line a second under a flood
            log.warning("refused %d connection(s): %d open is serve.maxConnections",
                        self._refused, self.settings.max_connections)  # fmt: skip
            self._refused, self._refusal_logged = 0, now


class _GuardedProtocol(web.RequestHandler):
    """aiohttp's HTTP protocol, counted, with a timer on each request head.

    The head timer starts with the first byte received while the connection waits for a
    request, and stops once aiohttp's parser has produced the request (``_messages``).
    """

    def __init__(self, manager: web.Server, *, connections: _Connections, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._connections = connections
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if len(self._connections.open) >= self._connections.settings.max_connections:
            self._refused = True
            # uvloop's TCP transport has write() but is no asyncio.Transport subclass.
            self._connections.refuse(cast(asyncio.Transport, transport))
            return
        self._connections.open.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            return
        self._connections.open.discard(self)
        self._stop_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        # Waiting for a request: aiohttp's request loop awaits its next message.
        waiting = self._waiter is not None and not self._waiter.done()
        super().data_received(data)
        if self._messages:
            self._stop_head_timer()
        elif waiting and self._head_timer is None and self.transport is not None:
            timeout = self._connections.settings.header_timeout_s
            self._head_timer = self._loop.call_later(timeout, self._head_timed_out)
            # A head on its way is the head timer's to judge: aiohttp's keep-alive timer
            # (which reschedules itself to this time) would close it without an answer.
            deadline = self._loop.time() + timeout + 1.0
            self._next_keepalive_close_time = max(self._next_keepalive_close_time, deadline)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        transport = self.transport
        if transport is None or self._messages:
            return
        peer = transport.get_extra_info("peername")
        log.warning("connection from %s closed with 408: request head not complete in %gs "
                    "(serve.headerTimeoutMs)", peer[0] if peer else "?",
                    self._connections.settings.header_timeout_s)  # fmt: skip
        transport.write(HEAD_TIMEOUT)
        self.force_close()
        self._connections.count("header_timeout")

    def _process_keepalive(self) -> None:
        """aiohttp's idle timer: a connection it closes having sent nothing is counted."""
        closed_before = self._force_close
        super()._process_keepalive()
        if self._force_close and not closed_before and self._request_count == 0:
            self._connections.count("silent")

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:  # fmt: skip
        """aiohttp's answer to what it could not parse (400), counted by kind."""
        if isinstance(exc, HttpProcessingError):
            self._connections.count(_malformed_reason(exc))
        return super().handle_error(request, status, exc, message)

    def log_exception(self, *args: Any, **kwargs: Any) -> None:
        """Malformed HTTP (answered 400 by aiohttp) in one line, not a traceback."""
        exc = kwargs.get("exc_info")
        if isinstance(exc, HttpProcessingError):
            peer = self.transport.get_extra_info("peername") if self.transport else None
            log.warning("malformed HTTP from %s rejected with %d: %s", peer[0] if peer else "?",
                        exc.code, _one_line(exc))  # fmt: skip
            return
        super().log_exception(*args, **kwargs)


def _malformed_reason(exc: HttpProcessingError) -> str:
    if isinstance(exc, LineTooLong) or "too many headers" in exc.message.lower():
        return "head_too_large"
    if isinstance(exc, BadHttpMethod):
        return "not_http"
    return "malformed_http"
