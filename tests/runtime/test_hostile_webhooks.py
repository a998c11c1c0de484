"""Hostile webhooks against the runtime as `start_runtime` serves it (signatures on, the mock
carrier's credentials): a table of requests per provider, each with the status it must get and
whether it may change the store. Requests go over raw sockets, so the HTTP framing is ours too.
Never a 5xx, and nothing changes unless the request was a valid new event.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from nacl.signing import SigningKey

from tests.runtime.hostile_support import (
    EVERY,
    FORM,
    FORMS,
    PATH,
    US,
    Header,
    Pairs,
    Target,
    config_for,
    exchange,
    form_headers,
    http,
    inbound_pairs,
    multi_values,
    nested,
    signed_form,
    signed_json,
    start_target,
    telnyx_event,
    v2_headers,
    valid,
)
from voicecall.runtime.sim.carrier.signing import (
    plivo_v3_headers,
    telnyx_headers,
)
from voicecall.runtime.sim.script import Script
from voicecall.runtime.sim.script import Step as CallerStep
from voicecall.runtime.sim.simulate import Simulator

# --- the table ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    build: Callable[[Target], bytes]
    status: int
    changes: bool = False  # a valid new event: the store may change


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
                                    multi_values(pairs), nonce="777"))  # fmt: skip
    wrong = plivo_v3_headers("not-the-token", "POST", t.url(PATH), multi_values(pairs), nonce="777")
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


@pytest.mark.parametrize("field", ["call_control_id", "from", "client_state"])
async def test_a_lone_surrogate_in_signed_json_is_400(targets: Any, field: str) -> None:
    # JSON may escape half a UTF-16 pair ("\ud800"): Python reads it into a str that no
    # UTF-8 codec (SQLite's) accepts. Validly signed, it is malformed input, not a 500.
    t = await targets("telnyx")
    body = json.dumps(telnyx_event(**{field: "\ud800"})).encode()
    assert b"\\ud800" in body
    got = await run_steps(t, [Step(lambda t: signed_json(t, body), 400)])
    assert got == [(400, False)]


async def test_a_telnyx_gather_result_redelivered_late_does_not_answer_the_next_gather() -> None:
    # The caller presses 3 at the menu and hears the hours, then a question of its own. The
    # menu's result arrives a second time under a new event id (so not a replay) while that
    # question is asked: its client_state names the menu, so it must not answer the hours
    # question ("3" is no choice there: the flow would say goodbye and hang up on the caller).
    async with Simulator("telnyx") as sim:
        assert sim.runtime is not None
        sender = sim.runtime.carrier.sender
        send = sender.event
        redelivered: list[bool] = []

        async def event(call: Any, url: str, payload: Any) -> Any:
            if payload["data"]["event_type"] == "call.gather.ended" and not redelivered:
                redelivered.append(True)
                sender.redeliver_next(1)
            return await send(call, url, payload)

        sender.event = event
        caller = (CallerStep(action="answer"), CallerStep(action="press", value="3"))
        result = await sim.call("ivr-menu", script=Script(caller=caller, agent=(), model=()))
    assert redelivered and result.record is not None
    assert result.record.visited == ["menu", "hours"]
    assert result.record.end_reason == "hangup-user"


@pytest.mark.parametrize("state", ['{"c": "\\ud800"}', '{"c": "c1", "b": "\\udfff"}'])
async def test_a_lone_surrogate_inside_client_state_names_no_call(targets: Any, state: str) -> None:
    # client_state is base64 (ASCII) around JSON of our own: half a UTF-16 pair escaped in
    # it is not ours, so the event names no call of ours (and is not a 500 from SQLite).
    t = await targets("telnyx")
    client_state = base64.b64encode(state.encode()).decode()
    body = json.dumps(telnyx_event("call.answered", client_state=client_state)).encode()
    got = await run_steps(t, [Step(lambda t: signed_json(t, body), 200)])
    assert got == [(200, False)]
