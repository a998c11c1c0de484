"""Webhook delivery: real HTTP POSTs (or GETs), signed the way each carrier signs them.

Every attempt is recorded as a :class:`Delivery`. Fault injection for tests: a webhook can be
sent twice (``duplicate_next()`` or ``duplicate_rate``), the second copy identical (same body,
signature, Telnyx event id, Twilio idempotency token), as a carrier's retry would be; a Telnyx
event can be redelivered (``redeliver_next()``): the same event under a new event id.
"""

from __future__ import annotations

import json
import random
import secrets
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp
from nacl.signing import SigningKey
from yarl import URL

from voicecall.runtime.clock import Clock

from .model import Delivery, MockCall
from .signing import plivo_v3_headers, telnyx_headers, twilio_signature

# What the carriers send as User-Agent (Twilio's is documented; the others are ours).
_USER_AGENTS = {"twilio": "TwilioProxy/1.1", "plivo": "PlivoHTTP/1.0", "telnyx": "telnyx-webhooks"}


class WebhookSender:
    """Signs and sends one carrier's webhooks; counts what is in flight."""

    def __init__(
        self,
        provider: str,
        credentials: Mapping[str, str],
        signing_key: SigningKey | None,
        *,
        clock: Clock,
        timeout_s: float,
        in_flight: Callable[[int], None],
    ):
        self.provider = provider
        self.credentials = credentials
        self.signing_key = signing_key
        self.clock = clock
        self.deliveries: list[Delivery] = []
        self.duplicate_rate = 0.0
        self.random = random.Random(0)
        self._duplicate_next = 0
        self._redeliver_next = 0
        self._in_flight = in_flight
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def duplicate_next(self, count: int = 1) -> None:
        """Sends each of the next ``count`` webhooks twice."""
        self._duplicate_next += count

    def redeliver_next(self, count: int = 1) -> None:
        """Sends each of the next ``count`` Telnyx events again under a new event id."""
        self._redeliver_next += count

    def _twice(self) -> bool:
        if self._duplicate_next > 0:
            self._duplicate_next -= 1
            return True
        return self.duplicate_rate > 0 and self.random.random() < self.duplicate_rate

    # --- requests ------------------------------------------------------------------------------

    async def form(
        self, call: MockCall, url: str, params: Mapping[str, str], *, method: str, event: str
    ) -> Delivery:
        """Sends a Twilio or Plivo webhook; returns the first delivery (its reply is used)."""
        method = method.upper()
        fields = {k: v for k, v in params.items() if v is not None}
        if method == "GET":
            target = f"{url}{'&' if '?' in url else '?'}{urlencode(fields)}" if fields else url
            body, signed = b"", {}
        else:
            target, body, signed = url, urlencode(fields).encode(), fields
        headers = {"User-Agent": _USER_AGENTS[self.provider], **self._form_signature(
            method, target, signed)}  # fmt: skip
        if method == "POST":
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.provider == "twilio":
            headers["I-Twilio-Idempotency-Token"] = secrets.token_hex(16)
        return await self._send(call, _Outgoing(method, target, headers, body, fields, event))

    def _form_signature(self, method: str, url: str, params: Mapping[str, str]) -> dict[str, str]:
        token = self.credentials["authToken"]
        if self.provider == "twilio":
            return {"X-Twilio-Signature": twilio_signature(token, url, params)}
        return plivo_v3_headers(token, method, url, params)

    async def event(self, call: MockCall, url: str, payload: Mapping[str, Any]) -> Delivery:
        """Sends a Telnyx webhook (a JSON envelope)."""
        first = await self._event_once(call, url, payload)
        if self._redeliver_next > 0:
            self._redeliver_next -= 1
            data = {**payload.get("data", {}), "id": str(uuid.uuid4())}
            await self._event_once(call, url, {**payload, "data": data})
        return first

    async def _event_once(self, call: MockCall, url: str, payload: Mapping[str, Any]) -> Delivery:
        assert self.signing_key is not None
        body = json.dumps(payload, separators=(",", ":")).encode()
        headers = {
            "User-Agent": _USER_AGENTS[self.provider],
            "Content-Type": "application/json",
            **telnyx_headers(self.signing_key, body, int(self.clock.now())),
        }
        event = str(payload.get("data", {}).get("event_type", ""))
        return await self._send(call, _Outgoing("POST", url, headers, body, {}, event))

    async def _send(self, call: MockCall, out: _Outgoing) -> Delivery:
        first = await self._attempt(call, out, duplicate=False)
        if self._twice():
            await self._attempt(call, out, duplicate=True)
        return first

    async def _attempt(self, call: MockCall, out: _Outgoing, *, duplicate: bool) -> Delivery:
        assert self._session is not None, "the carrier is not started"
        status: int | None = None
        reply, error = b"", ""
        self._in_flight(1)
        try:
            async with self._session.request(
                out.method, URL(out.url, encoded=True), data=out.body or None, headers=out.headers
            ) as response:
                status, reply = response.status, await response.read()
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"
        finally:
            self._in_flight(-1)
        delivery = Delivery(
            provider=self.provider, call=call.provider_call_id, method=out.method, url=out.url,
            headers=out.headers, body=out.body, params=dict(out.params), event=out.event,
            status=status, reply=reply, error=error, duplicate=duplicate,
        )  # fmt: skip
        self.deliveries.append(delivery)
        return delivery


@dataclass(frozen=True, slots=True)
class _Outgoing:
    """A signed request, ready to be sent (once or twice)."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    params: Mapping[str, str]
    event: str
