"""Random input at validly signed webhooks (hypothesis): random bytes, forms, JSON, headers,
hosts, timestamps and queries, half of them aimed at a stored call where it waits, each signed
with the carrier's real algorithm. Never a 5xx; the store changes only on a 200; a replay of
the same bytes changes nothing."""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.runtime.hostile_support import (
    EVERY,
    FORM,
    GENEROUS_S,
    PATH,
    Header,
    Target,
    exchange,
    form_headers,
    http,
    inbound_pairs,
    nested,
    start_target,
    telnyx_event,
)
from voicecall.runtime.urls import encode_state

T = TypeVar("T")


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
