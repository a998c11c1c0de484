"""The webhook server: the carrier's way into the runtime.

One exact path, POST only. On every request, in this order: the per-IP in-flight cap (429),
the signature headers' presence (401, before the body is read), the body size and read time
(413, 408), the signature (401), the replay check (a replay gets the stored reply and causes
nothing), parsing (400 on malformed input), then the call's state change. Every rejection is
logged with its reason; malformed input is never a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from dataclasses import dataclass
from urllib.parse import unquote_plus

from aiohttp import web

from voicecall.runtime.manager import CallManager
from voicecall.runtime.providers.base import Adapter, BadRequest, WebhookRequest

log = logging.getLogger("voicecall.webhook")

MANAGER = web.AppKey("manager", CallManager)


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSettings:
    path: str = "/voice/webhook"
    public_url: str | None = None  # the webhook's public URL, as the carrier signs it
    max_body: int = 64 * 1024
    read_timeout_s: float = 5.0
    max_in_flight_per_ip: int = 8
    skip_signature: bool = False


def make_app(manager: CallManager, settings: ServerSettings) -> web.Application:
    """The webhook application (plain aiohttp: run it, or mount it in a bigger app)."""
    app = web.Application(client_max_size=settings.max_body + 1)
    app[MANAGER] = manager
    gate = _Gate(manager.adapter, settings)
    app.router.add_route("*", settings.path, gate.handle)
    return app


class _Gate:
    def __init__(self, adapter: Adapter, settings: ServerSettings):
        self.adapter = adapter
        self.settings = settings
        self.in_flight: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _reject(request, 405, "only POST is accepted")
        ip = request.remote or "?"
        if self.in_flight[ip] >= self.settings.max_in_flight_per_ip:
            return _reject(request, 429, f"more than {self.settings.max_in_flight_per_ip} "
                           f"requests in flight from {ip}")  # fmt: skip
        self.in_flight[ip] += 1
        try:
            return await self.checked(request)
        finally:
            self.in_flight[ip] -= 1
            if self.in_flight[ip] <= 0:
                del self.in_flight[ip]

    async def checked(self, request: web.Request) -> web.StreamResponse:
        if not self.settings.skip_signature:
            missing = self.adapter.missing_signature_headers(request.headers)
            if missing:
                return _reject(request, 401, f"missing signature header {', '.join(missing)}")
        if (request.content_length or 0) > self.settings.max_body:
            return _reject(request, 413, f"body of {request.content_length} bytes is over "
                           f"{self.settings.max_body}")  # fmt: skip
        try:
            async with asyncio.timeout(self.settings.read_timeout_s):
                body = await _read_body(request, self.settings.max_body + 1)
        except TimeoutError:
            return _reject(request, 408, f"body not received in {self.settings.read_timeout_s}s")
        if len(body) > self.settings.max_body:
            return _reject(request, 413, f"body over {self.settings.max_body} bytes")
        incoming = self.webhook_request(request, body)
        if incoming is None:
            return _reject(request, 400, "the form body is not valid UTF-8")
        return await self.verified(request, incoming)

    async def verified(self, request: web.Request, incoming: WebhookRequest) -> web.StreamResponse:
        manager = request.app[MANAGER]
        verification = self.adapter.verify(incoming)
        if not verification.ok:
            return _reject(request, 401, f"signature rejected: {verification.reason}")
        stored = manager.store.seen(verification.key)
        if stored is not None:
            log.info("%s %s: replay acknowledged with the earlier reply, no side effect",
                     request.method, request.path)  # fmt: skip
            return web.Response(body=stored.body, content_type=_mime(stored.content_type))
        try:
            events = self.adapter.parse(incoming)
        except BadRequest as exc:
            return _reject(request, 400, f"malformed {self.adapter.name} webhook: {exc}")
        reply = await manager.handle(events, verification.key)
        return web.Response(body=reply.body, status=reply.status,
                            content_type=_mime(reply.content_type))  # fmt: skip

    def webhook_request(self, request: web.Request, body: bytes) -> WebhookRequest | None:
        raw_query = request.raw_path.partition("?")[2]
        if self.settings.public_url:
            url = self.settings.public_url + (f"?{raw_query}" if raw_query else "")
        else:
            url = f"{request.scheme}://{request.host}{request.raw_path}"
        form: dict[str, str] = {}
        if request.content_type == "application/x-www-form-urlencoded":
            try:
                form = parse_form(body.decode("utf-8"))
            except UnicodeDecodeError:
                return None
        return WebhookRequest(method=request.method, url=url, query=dict(request.query),
                              headers=request.headers, body=body, form=form,
                              remote=request.remote or "")  # fmt: skip


def parse_form(text: str) -> dict[str, str]:
    """An urlencoded form (the last value wins), as ``parse_qsl`` reads it but faster: only
    the parts that need it are unquoted (carriers send a dozen plain fields per webhook)."""
    out: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        key, _, value = pair.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key)
        if "%" in value or "+" in value:
            value = unquote_plus(value)
        out[key] = value
    return out


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


def _reject(request: web.Request, status: int, reason: str) -> web.Response:
    log.warning("webhook %s %s from %s rejected with %d: %s", request.method, request.path,
                request.remote, status, reason)  # fmt: skip
    return web.Response(status=status, text=f"{reason}\n")
