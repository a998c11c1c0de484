"""Building hostile webhooks for the runtime as `start_runtime` serves it: a target (the runtime
on the mock carrier's credentials, signatures on, small limits), raw HTTP requests byte for byte,
and requests signed with each carrier's real algorithm."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from nacl.signing import SigningKey

from voicecall.runtime.app import Runtime, RuntimeConfig, start_runtime
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.sim.carrier.signing import (
    plivo_v3_headers,
    telnyx_headers,
    twilio_signature,
)

GENEROUS_S = 30.0  # how long an answer may take on a loaded machine (not a speed limit)
PATH = "/voice/webhook"
MAX_BODY = 16384
LIMITS = {"maxBodyBytes": MAX_BODY, "bodyTimeoutMs": 300, "headerTimeoutMs": 300,
          "keepAliveTimeoutMs": 600}  # fmt: skip
EVERY = ("twilio", "plivo", "telnyx")
FORMS = ("twilio", "plivo")  # form-encoded carriers
CALLER, US = "+15551230000", "+15550000000"


# --- the target: a runtime on the mock carrier's credentials --------------------------------------


@dataclass
class Target:
    provider: str
    runtime: Runtime
    port: int
    credentials: dict[str, str]
    signing_key: SigningKey | None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, target: str, host: str | None = None) -> str:
        return f"http://{host or self.host}{target}"

    def now(self) -> int:
        return int(self.runtime.manager.clock.now())

    async def places(self) -> list[tuple[str, str, int, str]]:
        """(call id, block, step, carrier id) of the calls in the store, to aim events at."""
        records = self.runtime.store.recent(20)
        return [(r.call_id, r.waiting.block if r.waiting else "start",
                 r.waiting.step if r.waiting else 0, r.provider_call_id or "")
                for r in records]  # fmt: skip

    async def snapshot(self) -> str:
        """Everything the store holds, once the manager's background work is done."""
        await self.runtime.manager.drain()
        store = self.runtime.sqlite
        store.flush()
        return hashlib.sha256("\n".join(store.db.iterdump()).encode()).hexdigest()


async def start_target(provider: str, store: Path | str, **extra: Any) -> Target:
    raw = {"provider": "mock", "store": str(store), "inboundPolicy": "open",
           "maxConcurrentCalls": 100, "serve": dict(LIMITS), **extra}  # fmt: skip
    runtime = await start_runtime(RuntimeConfig(raw=raw), clock=VirtualClock(),
                                  mock_backend=provider.split("+", maxsplit=1)[0], port=0,
                                  restore=False)  # fmt: skip
    port = runtime.runner.addresses[0][1]
    carrier = runtime.carrier
    credentials, key = dict(carrier.credentials), carrier.signing_key
    return Target(provider=provider, runtime=runtime, port=port, credentials=credentials,
                  signing_key=key)  # fmt: skip


def config_for(provider: str) -> dict[str, Any]:
    return {"plivo": {"allowV2Signatures": True}} if provider == "plivo+v2" else {}


# --- raw HTTP -------------------------------------------------------------------------------------

Header = tuple[str | bytes, str | bytes]


def _b(value: str | bytes) -> bytes:
    # Lone surrogates stand for undecodable bytes, as aiohttp reads them (surrogateescape).
    return value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")


def http(
    target: str,
    headers: Sequence[Header],
    body: bytes = b"",
    *,
    host: str | bytes,
    method: str = "POST",
    length: bool = True,
) -> bytes:
    """One HTTP/1.1 request, byte for byte (Connection: close: one request a connection)."""
    lines = [f"{method} {target} HTTP/1.1".encode(), b"Host: " + _b(host), b"Connection: close"]
    lines += [_b(k) + b": " + _b(v) for k, v in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}".encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


async def exchange(port: int, data: bytes) -> int:
    """Sends ``data`` on a fresh connection; the status of the first line answered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), GENEROUS_S)
    except TimeoutError:
        return 0  # no answer at all
    finally:
        writer.close()
    return int(line.split()[1]) if line.startswith(b"HTTP/") else 0


# --- signed requests ------------------------------------------------------------------------------

FORM = "application/x-www-form-urlencoded"
Pairs = Sequence[tuple[str, str]]


def multi_values(pairs: Pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def form_headers(t: Target, url: str, pairs: Pairs, nonce: str | None = None) -> list[Header]:
    """The provider's signature headers over a form POST to ``url``."""
    token = t.credentials["authToken"]
    if t.provider == "twilio":
        return [("X-Twilio-Signature", twilio_signature(token, url, multi_values(pairs)))]
    headers = plivo_v3_headers(token, "POST", url, multi_values(pairs), nonce=nonce)
    return list(headers.items())


def v2_headers(t: Target, url: str, nonce: str) -> list[Header]:
    """Plivo's legacy V2: base64(HMAC-SHA256(token, URL without query + nonce))."""
    base = url.partition("?")[0]
    digest = hmac.new(t.credentials["authToken"].encode(), (base + nonce).encode(), "sha256")
    return [("X-Plivo-Signature-V2", base64.b64encode(digest.digest()).decode()),
            ("X-Plivo-Signature-V2-Nonce", nonce)]  # fmt: skip


def signed_form(
    t: Target,
    pairs: Pairs,
    target: str = PATH,
    *,
    host: str | bytes | None = None,
    body: bytes | None = None,
    sign_url: str | None = None,
) -> bytes:
    """A validly signed form POST (``body`` overrides the encoded fields)."""
    url = sign_url or t.url(target)
    nonce = hashlib.sha256(repr(pairs).encode()).hexdigest()[:20]  # the same request, the same
    headers = [("Content-Type", FORM), *form_headers(t, url, pairs, nonce)]
    encoded = urlencode(list(pairs)).encode() if body is None else body
    return http(target, headers, encoded, host=host or t.host)


def inbound_pairs(t: Target, sid: str = "1") -> list[tuple[str, str]]:
    if t.provider == "twilio":
        return [("CallSid", f"CA{sid:0>32}"), ("AccountSid", t.credentials["accountSid"]),
                ("From", CALLER), ("To", US), ("Direction", "inbound"),
                ("CallStatus", "ringing")]  # fmt: skip
    return [("CallUUID", f"{sid:0>8}-0000-4000-8000-000000000000"), ("From", CALLER),
            ("To", US), ("Direction", "inbound"), ("CallStatus", "ringing")]  # fmt: skip


def telnyx_event(event_type: str = "call.initiated", **payload: Any) -> dict[str, Any]:
    base = {"call_control_id": "v3:hostile-1", "call_leg_id": "leg-1",
            "call_session_id": "sess-1", "connection_id": "1", "from": CALLER, "to": US,
            "direction": "incoming", "state": "parked"}  # fmt: skip
    event_id = hashlib.sha256(repr(sorted(payload.items())).encode()).hexdigest()[:16]
    return {"data": {"record_type": "event", "event_type": event_type, "id": event_id,
                     "occurred_at": "2026-01-01T00:00:00.000000Z",
                     "payload": {**base, **payload}}}  # fmt: skip


def signed_json(
    t: Target, body: bytes, *, timestamp: str | None = None, extra: Sequence[Header] = ()
) -> bytes:
    assert t.signing_key is not None
    headers = telnyx_headers(t.signing_key, body, t.now())
    if timestamp is not None:  # signed over this timestamp text, whatever it is
        signature = t.signing_key.sign(timestamp.encode() + b"|" + body).signature
        headers = {"telnyx-signature-ed25519": base64.b64encode(signature).decode(),
                   "telnyx-timestamp": timestamp}  # fmt: skip
    all_headers: list[Header] = [("Content-Type", "application/json"), *headers.items(), *extra]
    return http(f"{PATH}?call=c1&kind=event", all_headers, body, host=t.host)


def valid(t: Target, sid: str = "1") -> bytes:
    """A valid new event: an inbound call's first request."""
    if t.provider == "telnyx":
        event = telnyx_event(call_control_id=f"v3:hostile-{sid}")
        return signed_json(t, json.dumps(event).encode())
    if t.provider == "plivo+v2":
        pairs = inbound_pairs(t, sid)
        headers = [("Content-Type", FORM), *v2_headers(t, t.url(PATH), nonce=f"nonce{sid}")]
        return http(PATH, headers, urlencode(pairs).encode(), host=t.host)
    return signed_form(t, inbound_pairs(t, sid))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth
