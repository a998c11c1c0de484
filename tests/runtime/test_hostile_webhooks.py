"""Hostile webhooks against the runtime as `start_runtime` serves it (signatures on, the mock
carrier's credentials): a table of requests per provider, each with the status it must get and
whether it may change the store, and a property test throwing random bodies, headers and JSON
at validly signed requests. Requests go over raw sockets, so the HTTP framing is ours too.

Never a 5xx, and nothing changes unless the request was a valid new event.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from voicecall.runtime.app import Runtime, RuntimeConfig, start_runtime
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.sim.carrier.signing import (
    plivo_v3_headers,
    telnyx_headers,
    twilio_signature,
)
from voicecall.runtime.urls import encode_state

T = TypeVar("T")
GENEROUS_S = 30.0  # how long an answer may take on a loaded machine (not a speed limit)
PATH = "/voice/webhook"
MAX_BODY = 16384
LIMITS = {"maxBodyBytes": MAX_BODY, "bodyTimeoutMs": 300, "headerTimeoutMs": 300,
          "keepAliveTimeoutMs": 600}  # fmt: skip
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
        store = self.runtime.store
        store.flush()
        return hashlib.sha256("\n".join(store.db.iterdump()).encode()).hexdigest()


async def start_target(provider: str, store: Path, **extra: Any) -> Target:
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


def _multi(pairs: Pairs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in pairs:
        out.setdefault(name, []).append(value)
    return out


def form_headers(t: Target, url: str, pairs: Pairs, nonce: str | None = None) -> list[Header]:
    """The provider's signature headers over a form POST to ``url``."""
    token = t.credentials["authToken"]
    if t.provider == "twilio":
        return [("X-Twilio-Signature", twilio_signature(token, url, _multi(pairs)))]
    headers = plivo_v3_headers(token, "POST", url, _multi(pairs), nonce=nonce)
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


# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    build: Callable[[Target], bytes]
    status: int
    changes: bool = False  # a valid new event: the store may change


FORMS = ("twilio", "plivo")
EVERY = ("twilio", "plivo", "telnyx")


def _callback(t: Target, step: str) -> bytes:
    target = f"{PATH}?call=c1&kind=input&block=b&step={quote(step)}"
    pairs = [*inbound_pairs(t)[:1], ("Digits", "1")]
    return signed_form(t, pairs, target)


def _wrong_signature(t: Target) -> bytes:
    if t.provider == "telnyx":
        body = json.dumps(telnyx_event()).encode()
        other = SigningKey.generate()
        signed: list[Header] = list(telnyx_headers(other, body, t.now()).items())
        return http(PATH, [("Content-Type", "application/json"), *signed], body, host=t.host)
    pairs = inbound_pairs(t)
    headers = form_headers(t, t.url(PATH), [*pairs, ("X", "y")])  # signed over other fields
    return http(PATH, [("Content-Type", FORM), *headers], urlencode(pairs).encode(), host=t.host)


def _no_signature(t: Target) -> bytes:
    return http(PATH, [("Content-Type", FORM)], urlencode(inbound_pairs(t)).encode(), host=t.host)


def _resplit(t: Target, body: bool) -> bytes:
    # "CallerName=x" and "Caller=Namex" sign the same string: one signature, one event.
    pairs = [*inbound_pairs(t), ("CallerName", "x")]
    resplit = [*inbound_pairs(t), ("Caller", "Namex")]
    return signed_form(t, pairs, body=urlencode(resplit).encode() if body else None)


def _repeated(t: Target) -> bytes:
    return signed_form(t, [*inbound_pairs(t, "7"), ("Extra", "b"), ("Extra", "a")])


def _not_utf8(t: Target, signed_over_text: bool) -> bytes:
    body = urlencode(inbound_pairs(t)).encode() + b"&Caller=\xff\xfe"
    text = body.decode("utf-8", "replace")
    pairs = parse_qsl(text, keep_blank_values=True) if signed_over_text else inbound_pairs(t)
    return signed_form(t, pairs, body=body)


def _bad_host(host: bytes) -> Callable[[Target], bytes]:
    def build(t: Target) -> bytes:
        return signed_form(t, inbound_pairs(t), host=host, sign_url=t.url(PATH))

    return build


def _v2(t: Target, *, target: str = PATH, pairs: Pairs | None = None, nonce: str = "n1",
        signature: bytes | None = None, nonce_header: bytes | None = None,
        host: bytes | None = None) -> bytes:  # fmt: skip
    headers = v2_headers(t, t.url(PATH), nonce)
    if signature is not None:
        headers[0] = ("X-Plivo-Signature-V2", signature)
    if nonce_header is not None:
        headers[1] = ("X-Plivo-Signature-V2-Nonce", nonce_header)
    body = urlencode(list(pairs or inbound_pairs(t, "2"))).encode()
    return http(target, [("Content-Type", FORM), *headers], body, host=host or t.host)


def _v3_comma_space(t: Target) -> bytes:
    pairs = inbound_pairs(t, "3")
    headers = dict(plivo_v3_headers(t.credentials["authToken"], "POST", t.url(PATH),
                                    _multi(pairs), nonce="777"))  # fmt: skip
    wrong = plivo_v3_headers("not-the-token", "POST", t.url(PATH), _multi(pairs), nonce="777")
    headers["X-Plivo-Signature-V3"] = f"{wrong['X-Plivo-Signature-V3']}, " \
                                      f"{headers['X-Plivo-Signature-V3']}"  # fmt: skip
    headers["X-Plivo-Signature-Ma-V3"] = wrong["X-Plivo-Signature-Ma-V3"]
    return http(PATH, [("Content-Type", FORM), *headers.items()], urlencode(pairs).encode(),
                host=t.host)  # fmt: skip


def _deep_client_state(t: Target) -> bytes:
    state = base64.b64encode(('{"c": ' + nested(3000) + "}").encode()).decode()
    return signed_json(t, json.dumps(telnyx_event(client_state=state)).encode())


def _framing(head: bytes) -> Callable[[Target], bytes]:
    def build(t: Target) -> bytes:
        return head.replace(b"{host}", t.host.encode())

    return build


SIGNATURE_HEADERS = {
    "twilio": [b"X-Twilio-Signature"],
    "plivo": [b"X-Plivo-Signature-V3", b"X-Plivo-Signature-V3-Nonce"],
    "telnyx": [b"telnyx-signature-ed25519", b"telnyx-timestamp"],
}


def _signed_head(extra: bytes) -> Callable[[Target], bytes]:
    """A head with a (any) signature header set for the provider, and ``extra`` lines."""

    def build(t: Target) -> bytes:
        names = SIGNATURE_HEADERS[t.provider.split("+")[0]]
        sig = b"".join(n + b": x\r\n" for n in names)
        return (b"POST " + PATH.encode() + b" HTTP/1.1\r\nHost: " + t.host.encode() + b"\r\n"
                + sig + extra)  # fmt: skip

    return build


TABLE: dict[str, tuple[tuple[str, ...], tuple[Step, ...]]] = {
    "valid new event": (EVERY, (Step(valid, 200, changes=True),)),
    "identical replay": (EVERY, (Step(valid, 200, changes=True), Step(valid, 200))),
    "no signature header": (FORMS, (Step(_no_signature, 401),)),
    "wrong signature": (EVERY, (Step(_wrong_signature, 401),)),
    "GET": (EVERY, (Step(lambda t: http(PATH, [], host=t.host, method="GET"), 405),)),
    "other path": (EVERY, (Step(lambda t: http(PATH + "/x", [], host=t.host), 404),)),
    "Content-Length over the limit": (
        EVERY, (Step(_signed_head(b"Content-Length: 999999\r\n\r\n"), 413),)),
    "Expect: 100-continue, over the limit": (
        EVERY, (Step(_signed_head(b"Expect: 100-continue\r\nContent-Length: 999999\r\n\r\n"),
                     413),)),
    "chunked body over the limit": (
        EVERY, (Step(_signed_head(b"Transfer-Encoding: chunked\r\n\r\n" + (
            b"400\r\n" + b"x" * 1024 + b"\r\n") * 20 + b"0\r\n\r\n"), 413),)),
    "body slower than bodyTimeoutMs": (
        EVERY, (Step(_signed_head(b"Content-Length: 100\r\n\r\nabc"), 408),)),
    "head slower than headerTimeoutMs": (
        EVERY, (Step(_framing(b"POST /voice/webhook HTTP/1.1\r\nHost: {host}\r\nX-A: 1\r\n"),
                     408),)),
    "two Host headers": (
        EVERY, (Step(_framing(b"POST /voice/webhook HTTP/1.1\r\nHost: {host}\r\nHost: b\r\n"
                              b"Content-Length: 0\r\n\r\n"), 400),)),
    "chunked and Content-Length": (
        EVERY, (Step(_framing(b"POST /voice/webhook HTTP/1.1\r\nHost: {host}\r\n"
                              b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
                              b"0\r\n\r\n"), 400),)),
    "Host 127.0.0.1:abc": (FORMS, (Step(_bad_host(b"127.0.0.1:abc"), 401),)),
    "Host 127.0.0.1:99999": (FORMS, (Step(_bad_host(b"127.0.0.1:99999"), 401),)),
    "Host [::1": (FORMS, (Step(_bad_host(b"[::1"), 401),)),
    "Host with a 0xff byte": (FORMS, (Step(_bad_host(b"127.0.0.\xff"), 401),)),
    "signed step=\u00b2": (FORMS, (Step(lambda t: _callback(t, "\u00b2"), 400),)),
    "signed 5,000-digit step": (FORMS, (Step(lambda t: _callback(t, "9" * 5000), 400),)),
    "non-UTF-8 form, bad signature": (FORMS, (Step(lambda t: _not_utf8(t, False), 401),)),
    "non-UTF-8 form, valid signature": (FORMS, (Step(lambda t: _not_utf8(t, True), 400),)),
    "form repeating a field": (FORMS, (Step(_repeated, 200, changes=True),)),
    "same signature, body re-split": (
        ("twilio",), (Step(lambda t: _resplit(t, False), 200, changes=True),
                      Step(lambda t: _resplit(t, True), 200))),
    "V2 signature (V2 not allowed)": (("plivo",), (Step(_v2, 401),)),
    "V2 0xff in signature": (
        ("plivo", "plivo+v2"), (Step(lambda t: _v2(t, signature=b"\xff\xfe=="), 401),)),
    "V2 0xff in nonce": (
        ("plivo", "plivo+v2"), (Step(lambda t: _v2(t, nonce_header=b"12\xff"), 401),)),
    "V2 Host [::1": (("plivo", "plivo+v2"), (Step(lambda t: _v2(t, host=b"[::1"), 401),)),
    # A pair first seen on a request that changed nothing (a hangup of an unknown call),
    # then reused on a forged inbound call from a number of the attacker's choosing.
    "V2 pair reused with a forged body and query": (
        ("plivo+v2",), (Step(lambda t: _v2(t, target=f"{PATH}?call=gone&kind=hangup",
                                           pairs=[*inbound_pairs(t, "8")[:1],
                                                  ("CallStatus", "completed")]), 200,
                             changes=True),
                        Step(lambda t: _v2(t, pairs=[*inbound_pairs(t, "9")[:1],
                                                     ("From", "+19995550000"), ("To", US),
                                                     ("Direction", "inbound")]), 200))),
    "V3 signatures joined by \", \"": (("plivo",), (Step(_v3_comma_space, 200, changes=True),)),
    "telnyx-timestamp \u00b2": (
        ("telnyx",), (Step(lambda t: signed_json(t, b"{}", timestamp="\u00b2"), 401),)),
    "telnyx-timestamp of 5,000 digits": (
        ("telnyx",), (Step(lambda t: signed_json(t, b"{}", timestamp="9" * 5000), 401),)),
    "stale telnyx-timestamp": (
        ("telnyx",), (Step(lambda t: signed_json(t, b"{}", timestamp=str(t.now() - 900)), 401),)),
    "signed JSON nested 1,500 deep": (
        ("telnyx",), (Step(lambda t: signed_json(t, ('{"data": ' + nested(1500) + "}").encode()),
                           400),)),
    "signed client_state nested 3,000 deep": (("telnyx",), (Step(_deep_client_state, 400),)),
    # Validly signed events a call is not waiting for (its greeting is being spoken).
    "speech result while nothing asks": (
        ("telnyx",), (Step(valid, 200, changes=True),
                      Step(lambda t: signed_json(t, json.dumps(telnyx_event(
                          "call.transcription", transcription_data={
                              "transcript": "hello", "is_final": True})).encode()), 200,
                           changes=True))),
    "gather result while nothing asks": (
        ("telnyx",), (Step(valid, 200, changes=True),
                      Step(lambda t: signed_json(t, json.dumps(telnyx_event(
                          "call.gather.ended", digits="1", status="valid")).encode()), 200,
                           changes=True))),
    "signed body that is not JSON": (("telnyx",), (Step(lambda t: signed_json(t, b"\xff{"), 400),)),
}  # fmt: skip

CASES = [(kind, provider) for kind, (providers, _) in TABLE.items() for provider in providers]


async def run_steps(t: Target, steps: Sequence[Step]) -> list[tuple[int, bool]]:
    """Each step's status and whether the store changed."""
    results = []
    for step in steps:
        before = await t.snapshot()
        status = await exchange(t.port, step.build(t))
        results.append((status, await t.snapshot() != before))
    return results


@pytest.fixture
async def targets(tmp_path: Path) -> AsyncIterator[Callable[[str], Any]]:
    started: list[Target] = []

    async def start(provider: str) -> Target:
        target = await start_target(provider, tmp_path / provider, **config_for(provider))
        started.append(target)
        return target

    yield start
    for target in started:
        await target.runtime.stop()


@pytest.mark.parametrize("kind, provider", CASES, ids=[f"{p}: {k}" for k, p in CASES])
async def test_hostile_request(targets: Any, kind: str, provider: str) -> None:
    t = await targets(provider)
    steps = TABLE[kind][1]
    got = await run_steps(t, steps)
    assert [status for status, _ in got] == [s.status for s in steps]
    for step, (_, changed) in zip(steps, got, strict=True):
        assert step.changes or not changed, f"{kind}: a rejected or replayed request changed it"


# --- random input at validly signed requests ------------------------------------------------------


class Loop:
    """One runtime on an event loop in a thread, for hypothesis (whose tests are sync)."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(GENEROUS_S * 2)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(GENEROUS_S)
        self.loop.close()


@pytest.fixture(scope="module", params=EVERY)
def fuzzed(request: pytest.FixtureRequest, tmp_path_factory: Any) -> Iterator[tuple[Loop, Target]]:
    loop = Loop()
    target = loop.run(start_target(request.param, tmp_path_factory.mktemp(request.param)))
    yield loop, target
    loop.run(target.runtime.stop())
    loop.close()


TOKEN_CHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
header_names = st.text(TOKEN_CHARS, min_size=1, max_size=20).filter(
    lambda n: n.lower() not in {"host", "content-length", "transfer-encoding", "connection",
                                "content-type", "expect", "upgrade"})  # fmt: skip
header_values = st.binary(max_size=60).map(
    lambda b: bytes(c for c in b if c >= 0x20 or c == 0x09).strip()  # no CR, LF, NUL
)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                 max_size=4),
    max_leaves=20,
)  # fmt: skip
query_values = (
    st.text(max_size=12)
    | st.sampled_from(["answer", "status", "input", "hangup", "dial", "1"])
    | st.text("0123456789\u00b2\u0663", min_size=1, max_size=12)
    | st.integers(10, 5000).map(lambda n: "9" * n)
)
queries = st.dictionaries(st.sampled_from(["call", "kind", "block", "step", "x"]), query_values,
                          max_size=3)  # fmt: skip
TELNYX_FIELDS = ["call_control_id", "client_state", "direction", "from", "to", "digits",
                 "hangup_cause", "status", "transcription_data", "digit"]  # fmt: skip
EVENT_TYPES = ["call.initiated", "call.answered", "call.hangup", "call.gather.ended",
               "call.transcription", "call.dtmf.received", "call.speak.ended", "other"]  # fmt: skip


def random_body(t: Target, data: st.DataObject) -> tuple[bytes, str]:
    """A body and its content type: random bytes, random JSON, or (most often) a valid first
    request of an inbound call with fields changed, dropped or added at random."""
    content_type = "application/json" if t.provider == "telnyx" else FORM
    shape = data.draw(st.sampled_from(["bytes", "json", "deep", "mutated", "mutated"]))
    if shape == "bytes":
        return data.draw(st.binary(max_size=600)), content_type
    if shape == "json":
        return json.dumps(data.draw(json_values)).encode(), content_type
    if shape == "deep" and t.provider == "telnyx":
        depth = data.draw(st.integers(1, 4000))
        where = data.draw(st.sampled_from(["body", "payload", "client_state"]))
        if where == "client_state":
            state = base64.b64encode(('{"c": ' + nested(depth) + "}").encode()).decode()
            return json.dumps(telnyx_event(client_state=state)).encode(), content_type
        text = json.dumps(telnyx_event(x=None) if where == "payload" else {"data": None})
        return text.replace("null", nested(depth), 1).encode(), content_type
    sid = data.draw(st.text("0123456789abcdef", min_size=1, max_size=6))
    if t.provider == "telnyx":
        event = telnyx_event(call_control_id=f"v3:fuzz-{sid}")
        payload = event["data"]["payload"]
        for key in data.draw(st.lists(st.sampled_from(sorted(payload)), max_size=3)):
            payload.pop(key, None)
        payload.update(data.draw(st.dictionaries(st.sampled_from(TELNYX_FIELDS), json_values,
                                                 max_size=3)))  # fmt: skip
        if data.draw(st.booleans()):
            event["data"]["event_type"] = data.draw(st.sampled_from(EVENT_TYPES))
        return json.dumps(event).encode(), content_type
    pairs = inbound_pairs(t, sid)
    for index in data.draw(st.lists(st.integers(0, len(pairs) - 1), max_size=2)):
        pairs[index] = (pairs[index][0], data.draw(st.text(max_size=16)))
    names = st.sampled_from(
        [
            "Digits",
            "SpeechResult",
            "Confidence",
            "DialCallStatus",
            "DialStatus",
            "RequestUUID",
            "CallStatus",
            "Direction",
            "x",
        ]
    )
    pairs += data.draw(st.lists(st.tuples(names, st.text(max_size=16)), max_size=3))
    return urlencode(pairs).encode(), content_type


hosts = st.just("") | st.text("0123456789.:[]abcf\u00e9", max_size=16)  # "" = the real one
timestamps = st.just("") | st.text("0123456789\u00b2\u0663-+ ", max_size=20) | st.integers(
    10**4, 10**5).map(lambda n: "9" * n)  # fmt: skip


def aim_telnyx(body: bytes, call_id: str, block: str, step: int, carrier_id: str) -> bytes:
    """A Telnyx event body aimed at a stored call: its client_state and call_control_id."""
    try:
        event = json.loads(body)
        payload = event["data"]["payload"]
    except (ValueError, KeyError, TypeError, RecursionError):
        return body
    if not isinstance(payload, dict):
        return body
    payload.update(client_state=encode_state(call_id, block, step), call_control_id=carrier_id)
    return json.dumps(event).encode()


def sign_random(
    t: Target, target: str, body: bytes, content_type: str, *, host: str, timestamp: str
) -> list[Header]:
    """Signature headers over ``body`` with the real algorithm, as the server reads it (for
    Telnyx over ``timestamp`` when one is drawn; for the others over the URL at ``host``)."""
    if t.provider == "telnyx":
        assert t.signing_key is not None
        stamp = timestamp or str(t.now())
        signature = t.signing_key.sign(stamp.encode() + b"|" + body).signature
        return [("telnyx-signature-ed25519", base64.b64encode(signature).decode()),
                ("telnyx-timestamp", stamp)]  # fmt: skip
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
    signed = pairs if content_type == FORM else []
    try:
        return form_headers(t, t.url(target, host or None), signed)
    except ValueError:  # a host urlsplit refuses ("[::1"): signed for the real one
        return form_headers(t, t.url(target), signed)


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_random_input_at_a_signed_request_is_never_a_5xx(
    fuzzed: tuple[Loop, Target], data: st.DataObject
) -> None:
    loop, t = fuzzed
    query = data.draw(queries)
    # Half the time aimed at a call in the store, where it waits (drawn whatever the store
    # holds, so that hypothesis can replay the draws).
    aim, pick = data.draw(st.booleans()), data.draw(st.integers(0, 19))
    kind = data.draw(st.sampled_from(["input", "status", "dial", "hangup", "live", "answer"]))
    places = loop.run(t.places())
    aimed = aim and bool(places)
    if aimed:
        call_id, block, step, carrier_id = places[pick % len(places)]
        query.update(call=call_id, block=block, step=str(step))
        query.setdefault("kind", "event" if t.provider == "telnyx" else kind)
    target = PATH + (f"?{urlencode(query)}" if query else "")
    body, content_type = random_body(t, data)
    if aimed and t.provider == "telnyx" and content_type == "application/json":
        body = aim_telnyx(body, call_id, block, step, carrier_id)
    elif aimed:
        body = body.replace(b"CallSid=CA", b"CallSid=" + carrier_id.encode() + b"&x=", 1)
        body = body.replace(b"CallUUID=", b"CallUUID=" + carrier_id.encode() + b"&x=", 1)
    host, timestamp = data.draw(hosts), data.draw(timestamps)
    extra = data.draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    signature = sign_random(t, target, body, content_type, host=host, timestamp=timestamp)
    if t.provider == "plivo" and data.draw(st.booleans()):  # legacy V2, refused by default
        nonce = data.draw(st.text("0123456789\udcff\u00e9", min_size=1, max_size=8))
        signed = t.url(PATH).encode() + nonce.encode("utf-8", "surrogateescape")
        digest = hmac.new(t.credentials["authToken"].encode(), signed, "sha256").digest()
        signature = [("X-Plivo-Signature-V2", base64.b64encode(digest).decode()),
                     ("X-Plivo-Signature-V2-Nonce", nonce)]  # fmt: skip
    headers: list[Header] = [("Content-Type", content_type), *signature, *extra]
    request = http(target, headers, body, host=host or t.host)
    before = loop.run(t.snapshot())
    status = loop.run(exchange(t.port, request))
    changed = loop.run(t.snapshot()) != before
    assert 0 < status < 500
    assert status == 200 or not changed
    if data.draw(st.booleans()):  # the same request again: a replay, never a second effect
        settled = loop.run(t.snapshot())
        assert 0 < loop.run(exchange(t.port, request)) < 500
        assert loop.run(t.snapshot()) == settled
