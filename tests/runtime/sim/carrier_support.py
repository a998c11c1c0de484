"""Helpers for the mock carrier's tests: a tiny bot (webhook receiver) and a clock driver."""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, web
from multidict import CIMultiDict

from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.sim.carrier import MockCarrier


@dataclass
class Hit:
    """One webhook the bot received."""

    method: str
    path: str
    url: str  # as the carrier requested (and signed) it
    query: dict[str, str]
    headers: Mapping[str, str]  # case-insensitive
    form: dict[str, str]
    body: bytes

    @property
    def kind(self) -> str:
        return self.query.get("kind", "")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def event(self) -> str:
        return str(self.json()["data"]["event_type"])

    @property
    def payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = self.json()["data"]["payload"]
        return payload


Reply = tuple[int, str] | str
Handler = Callable[[Hit], Reply | Awaitable[Reply]]


@dataclass
class Bot:
    """A webhook receiver on 127.0.0.1:0 that records requests and answers from ``handler``
    (a document string, or (status, body))."""

    handler: Handler
    hits: list[Hit] = field(default_factory=list)
    base: str = ""
    _runner: web.AppRunner | None = None

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base = f"http://{host}:{port}"
        return self.base

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str, **query: str) -> str:
        text = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{self.base}{path}{'?' + text if text else ''}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        form = {}
        if request.content_type == "application/x-www-form-urlencoded":
            form = {k: str(v) for k, v in (await request.post()).items()}
        hit = Hit(method=request.method, path=request.path, url=self.base + request.raw_path,
                  query=dict(request.query), headers=CIMultiDict(request.headers), form=form,
                  body=body)  # fmt: skip
        self.hits.append(hit)
        reply = self.handler(hit)
        if inspect.isawaitable(reply):
            reply = await reply
        status, text = reply if isinstance(reply, tuple) else (200, reply)
        content_type = "application/xml" if text.startswith("<") else "text/plain"
        return web.Response(status=status, text=text, content_type=content_type)

    def of(self, kind: str) -> list[Hit]:
        """The requests whose query says ``kind=…`` (or, for Telnyx, of that event type)."""
        return [h for h in self.hits if h.kind == kind or (h.body[:1] == b"{" and h.event == kind)]


async def drive(clock: VirtualClock, carrier: MockCarrier, awaitable: Awaitable[Any],
                timeout: float = 5.0) -> Any:  # fmt: skip
    """Runs ``awaitable`` while advancing the clock whenever the carrier is idle, as the
    simulator does (the bot here answers within the carrier's requests, so the carrier's
    idleness is everybody's)."""
    task = asyncio.ensure_future(awaitable)
    async with asyncio.timeout(timeout):
        while not task.done():
            for _ in range(3):
                await asyncio.sleep(0)
            if carrier.idle and not task.done():
                clock.advance_to_next()
    return task.result()


def rest(carrier: MockCarrier) -> ClientSession:
    """An HTTP session authenticated for the carrier's REST API."""
    creds = carrier.credentials
    if carrier.provider == "telnyx":
        headers = {"Authorization": f"Bearer {creds['apiKey']}"}
        return ClientSession(base_url=carrier.api_base, headers=headers)
    user = creds["accountSid" if carrier.provider == "twilio" else "authId"]
    basic = base64.b64encode(f"{user}:{creds['authToken']}".encode()).decode()
    return ClientSession(base_url=carrier.api_base, headers={"Authorization": f"Basic {basic}"})
