"""The Telnyx adapter: Ed25519 signatures, event parsing, Call Control REST through the SDK.

Every event fixture is checked against the webhook schema of Telnyx's OpenAPI spec, and every
JSON body the adapter sends against the spec's request schema.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nacl.signing import SigningKey
from pytest_aiohttp import AiohttpServer

from tests.compiler.conftest import telnyx_validator
from tests.runtime.adapter_support import (
    NOW,
    FakeApi,
    json_request,
    settings,
    skip_key,
    telnyx_schema,
)
from voicecall.runtime.providers.base import (
    BadRequest,
    CallStatus,
    Event,
    EventKind,
    WebhookRequest,
)
from voicecall.runtime.providers.errors import ProviderError
from voicecall.runtime.providers.registry import get_adapter
from voicecall.runtime.providers.telnyx import TelnyxAdapter
from voicecall.runtime.urls import decode_state, encode_state

SIGNER = SigningKey(bytes(range(32)))
PUBLIC_KEY = base64.b64encode(bytes(SIGNER.verify_key)).decode()
API_KEY = "KEY0123-telnyx-secret"
CREDS = {"apiKey": API_KEY, "connectionId": "conn-1", "publicKey": PUBLIC_KEY}
URL = "https://voice.example.com/voice/webhook?call=c1&kind=event"
CCID = "v3:AbC-123_xyz"
STATE = encode_state("c1", "greet", 2)
TS = int(NOW)


def adapter(**options: Any) -> TelnyxAdapter:
    return TelnyxAdapter(settings(CREDS, **options))


def envelope(event_type: str, payload: dict[str, Any], event_id: str = "ev-1") -> dict[str, Any]:
    base = {"call_control_id": CCID, "call_leg_id": "leg-1", "call_session_id": "sess-1",
            "connection_id": "conn-1", "client_state": STATE}  # fmt: skip
    return {"data": {"record_type": "event", "event_type": event_type, "id": event_id,
                     "occurred_at": "2026-01-01T00:00:00.000000Z",
                     "payload": {**base, **payload}}}  # fmt: skip


def sign(body: bytes, timestamp: int = TS, key: SigningKey = SIGNER) -> dict[str, str]:
    """Telnyx's signature headers: base64(Ed25519 over "timestamp|body")."""
    signature = key.sign(f"{timestamp}|".encode() + body).signature
    return {"telnyx-signature-ed25519": base64.b64encode(signature).decode(),
            "telnyx-timestamp": str(timestamp)}  # fmt: skip


def signed(event: dict[str, Any] | None = None, timestamp: int = TS) -> WebhookRequest:
    body = json.dumps(event or envelope("call.answered", {})).encode()
    return json_request(URL, body, sign(body, timestamp))


# --- the signer and the SDK agree -----------------------------------------------------------------


def test_signer_matches_sdk_unwrap() -> None:
    from telnyx import Telnyx

    client = Telnyx(api_key="k", public_key=PUBLIC_KEY)
    body = json.dumps(envelope("call.answered", {})).encode()
    now = int(time.time())  # the SDK checks the window against the real clock
    event = client.webhooks.unwrap(body.decode(), headers=sign(body, now))
    assert event.model_dump()["data"]["event_type"] == "call.answered"
    with pytest.raises(ValueError, match="Signature verification failed"):
        client.webhooks.unwrap(body.decode() + " ", headers=sign(body, now))


# --- verify ---------------------------------------------------------------------------------------


def test_verify_accepts_a_signed_event() -> None:
    result = adapter().verify(signed())
    assert result.ok and result.key and not result.reason


def test_verify_accepts_base64url_signatures() -> None:
    request = signed()
    headers = dict(request.headers)
    b64 = headers["telnyx-signature-ed25519"]
    headers["telnyx-signature-ed25519"] = b64.replace("+", "-").replace("/", "_").rstrip("=")
    again = adapter().verify(json_request(URL, request.body, headers))
    assert again.ok and again.key == adapter().verify(request).key


@pytest.mark.parametrize(
    "key",
    [
        PUBLIC_KEY,
        base64.b64encode(bytes.fromhex("302a300506032b6570032100")
                         + bytes(SIGNER.verify_key)).decode(),
        "-----BEGIN PUBLIC KEY-----\n"
        + base64.b64encode(bytes.fromhex("302a300506032b6570032100")
                           + bytes(SIGNER.verify_key)).decode()
        + "\n-----END PUBLIC KEY-----\n",
    ],
    ids=["raw", "der", "pem"],
)  # fmt: skip
def test_public_key_forms(key: str) -> None:
    assert TelnyxAdapter(settings({**CREDS, "publicKey": key})).verify(signed()).ok


def test_verify_rejects_another_key_and_a_changed_body() -> None:
    body = json.dumps(envelope("call.answered", {})).encode()
    other = json_request(URL, body, sign(body, key=SigningKey(bytes(32))))
    result = adapter().verify(other)
    assert not result.ok and result.reason == "bad telnyx-signature-ed25519 signature"
    tampered = json_request(URL, body.replace(b"ev-1", b"ev-2"), sign(body))
    assert not adapter().verify(tampered).ok
    retimed = json_request(URL, body, {**sign(body), "telnyx-timestamp": str(TS + 1)})
    assert not adapter().verify(retimed).ok


@pytest.mark.parametrize(
    "offset, ok, reason",
    [
        (0, True, ""),
        (-300, True, ""),
        (300, True, ""),
        (-301, False, "telnyx-timestamp stale by 301 s"),
        (301, False, "telnyx-timestamp in the future by 301 s"),
    ],
)
def test_timestamp_window(offset: int, ok: bool, reason: str) -> None:
    result = adapter().verify(signed(timestamp=TS + offset))
    assert (result.ok, result.reason) == (ok, reason)


@pytest.mark.parametrize(
    "drop, reason",
    [
        ("telnyx-signature-ed25519", "missing telnyx-signature-ed25519 header"),
        ("telnyx-timestamp", "missing telnyx-timestamp header"),
    ],
)
def test_verify_names_missing_headers(drop: str, reason: str) -> None:
    request = signed()
    headers = {k: v for k, v in request.headers.items() if k != drop}
    result = adapter().verify(json_request(URL, request.body, headers))
    assert (result.ok, result.reason) == (False, reason)
    assert drop in TelnyxAdapter.signature_headers


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({"telnyx-timestamp": "soon"}, "telnyx-timestamp is not a Unix time"),
        ({"telnyx-timestamp": "\u00b2"}, "telnyx-timestamp is not a Unix time"),  # isdigit()
        ({"telnyx-timestamp": "9" * 5000}, "telnyx-timestamp is not a Unix time"),
        ({"telnyx-timestamp": "\u0661\u0667"}, "telnyx-timestamp is not a Unix time"),
        ({"telnyx-signature-ed25519": "%%%"}, "telnyx-signature-ed25519 is not base64"),
        ({"telnyx-signature-ed25519": "AAAA"}, "bad telnyx-signature-ed25519 signature"),
    ],
)
def test_verify_rejects_malformed_headers(headers: dict[str, str], reason: str) -> None:
    request = signed()
    result = adapter().verify(json_request(URL, request.body, {**request.headers, **headers}))
    assert (result.ok, result.reason) == (False, reason)


@pytest.mark.parametrize("key", ["", "not base64!", base64.b64encode(b"short").decode()])
def test_verify_without_a_usable_key_fails_closed(key: str) -> None:
    result = TelnyxAdapter(settings({**CREDS, "publicKey": key})).verify(signed())
    assert not result.ok and "publicKey" in result.reason


def test_replay_keys_are_stable_and_distinct() -> None:
    telnyx = adapter()
    first, again = telnyx.verify(signed()), telnyx.verify(signed())
    later = telnyx.verify(signed(timestamp=TS + 5))
    other = telnyx.verify(signed(envelope("call.answered", {}, event_id="ev-2")))
    assert first.key == again.key
    assert len({first.key, later.key, other.key}) == 3


def test_skip_signature() -> None:
    request = json_request(URL, b'{"data": {}}', {})
    result = adapter(skip_signature=True).verify(request)
    assert result.ok and result.key == skip_key(request)


# --- parse ----------------------------------------------------------------------------------------

# event type -> the spec's schema for its webhook
SCHEMAS = {
    "call.initiated": "CallInitiatedEvent",
    "call.answered": "CallAnsweredEvent",
    "call.hangup": "CallHangupEvent",
    "call.speak.ended": "CallSpeakEndedEvent",
    "call.playback.ended": "CallPlaybackEndedEvent",
    "call.gather.ended": "CallGatherEndedEvent",
    "call.transcription": "TranscriptionEvent",
    "call.dtmf.received": "CallDtmfReceivedEvent",
    "call.bridged": "CallBridgedEvent",
}


def parse(event_type: str, payload: dict[str, Any], *, check: bool = True) -> Event:
    document = envelope(event_type, payload)
    if check:
        telnyx_schema(SCHEMAS[event_type]).validate(document)
    (event,) = adapter().parse(json_request(URL, json.dumps(document).encode(), {}))
    return event


def test_common_fields_come_from_the_envelope_and_client_state() -> None:
    event = parse("call.answered", {"from": "+15550001111", "to": "+15550002222"})
    assert event.kind is EventKind.ANSWERED
    assert (event.provider, event.provider_call_id, event.event_id) == ("telnyx", CCID, "ev-1")
    assert (event.call_id, event.block, event.step) == ("c1", "greet", 2)
    assert (event.from_number, event.to_number, event.detail) == (
        "+15550001111", "+15550002222", "call.answered")  # fmt: skip


@pytest.mark.parametrize("direction, expected", [("incoming", "inbound"), ("outgoing", "outbound")])
def test_initiated(direction: str, expected: str) -> None:
    payload = {"direction": direction, "from": "+15550001111", "to": "+15550002222",
               "state": "parked", "client_state": None}  # fmt: skip
    payload.pop("client_state")
    event = parse("call.initiated", payload)
    assert (event.kind, event.direction, event.from_number) == (
        EventKind.INITIATED, expected, "+15550001111")  # fmt: skip


def test_inbound_event_without_client_state_has_no_call() -> None:
    document = envelope("call.initiated", {"direction": "incoming"})
    del document["data"]["payload"]["client_state"]
    (event,) = adapter().parse(json_request(URL, json.dumps(document).encode(), {}))
    assert event.call_id is None and event.provider_call_id == CCID


@pytest.mark.parametrize(
    "cause, reason",
    [
        ("normal_clearing", "completed"),
        ("originator_cancel", "hangup-bot"),
        ("call_rejected", "busy"),
        ("user_busy", "busy"),
        ("no_answer", "no-answer"),
        ("timeout", "no-answer"),
        ("time_limit", "timeout"),
        ("not_found", "failed"),
        ("unspecified", "completed"),
    ],
)
def test_hangup(cause: str, reason: str) -> None:
    event = parse("call.hangup", {"hangup_cause": cause, "hangup_source": "callee"})
    assert (event.kind, event.status, event.detail) == (EventKind.ENDED, reason, cause)


@pytest.mark.parametrize(
    "cause, reason",
    [("machine_detected", "voicemail"), ("user_hangup", "hangup-user"),
     ("service_unavailable", "failed"), ("something_new", "completed")],
)  # fmt: skip
def test_hangup_causes_outside_the_spec_enum(cause: str, reason: str) -> None:
    assert parse("call.hangup", {"hangup_cause": cause}, check=False).status == reason


@pytest.mark.parametrize("event_type", ["call.speak.ended", "call.playback.ended"])
def test_command_ended(event_type: str) -> None:
    event = parse(event_type, {"status": "completed"})
    assert (event.kind, event.detail, event.status) == (
        EventKind.COMMAND_ENDED, event_type, "completed")  # fmt: skip


@pytest.mark.parametrize(
    "status, digits, expected_digits",
    [
        ("valid", "12", "12"),
        ("invalid", "9", "9"),
        ("timeout", "", None),
        ("cancelled", "", None),
        ("call_hangup", "1", None),
        ("valid", "", None),
    ],
)
def test_gather_ended(status: str, digits: str, expected_digits: str | None) -> None:
    event = parse("call.gather.ended", {"status": status, "digits": digits})
    assert (event.kind, event.digits, event.status) == (EventKind.INPUT, expected_digits, status)


def test_transcription() -> None:
    data = {"transcript": "yes please", "is_final": True, "confidence": 0.93,
            "transcription_track": "inbound"}  # fmt: skip
    event = parse("call.transcription", {"transcription_data": data})
    assert (event.kind, event.text, event.final, event.confidence) == (
        EventKind.SPEECH, "yes please", True, 0.93)  # fmt: skip
    partial = parse("call.transcription", {"transcription_data": {**data, "is_final": False}})
    assert partial.final is False


def test_transcription_older_payload() -> None:
    payload = {"transcription": "no", "is_final": True, "confidence": 1}
    event = parse("call.transcription", payload, check=False)
    assert (event.text, event.final, event.confidence) == ("no", True, 1.0)


def test_dtmf_and_bridged() -> None:
    dtmf = parse("call.dtmf.received", {"digit": "#"})
    assert (dtmf.kind, dtmf.digits) == (EventKind.DTMF, "#")
    bridged = parse("call.bridged", {"from": "+1", "to": "+2"})
    assert (bridged.kind, bridged.status) == (EventKind.DIAL_ENDED, "answered")


def test_unknown_event_types_give_no_events() -> None:
    body = json.dumps(envelope("call.recording.saved", {})).encode()
    assert adapter().parse(json_request(URL, body, {})) == []


@pytest.mark.parametrize(
    "body, message",
    [
        (b"not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[]", "no data"),
        (b'{"data": []}', "no data"),
        (b'{"data": {"id": "x"}}', "event_type"),
        (b'{"data": {"event_type": "call.answered", "payload": []}}', "payload"),
        (b'{"data": {"event_type": "call.answered", "payload": {}}}', "call_control_id"),
        (json.dumps(envelope("call.dtmf.received", {"digit": 5})).encode(), "digit"),
        (json.dumps(envelope("call.transcription", {"transcription_data": {
            "transcript": "x", "confidence": "high"}})).encode(), "confidence"),
        (json.dumps(envelope("call.transcription", {"transcription_data": {
            "transcript": "x", "is_final": "yes"}})).encode(), "is_final"),
    ],
)  # fmt: skip
def test_malformed_bodies(body: bytes, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        adapter().parse(json_request(URL, body, {}))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "body",
    [
        ('{"data": ' + nested(100_000) + "}").encode(),
        json.dumps(envelope("call.answered", {"x": None})).replace("null", nested(5000)).encode(),
        json.dumps(envelope("call.answered", {
            "client_state": base64.b64encode(('{"c": ' + nested(100_000) + "}").encode()).decode()
        })).encode(),
    ],
    ids=["envelope", "payload", "client_state"],
)  # fmt: skip
def test_deep_json_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest, match="nested too deeply"):
        adapter().parse(json_request(URL, body, {}))


def test_documents_are_plain_acknowledgements() -> None:
    for reply in (adapter().empty(), adapter().document(["<Say/>"])):
        assert (reply.status, reply.body) == (200, b"")
    assert get_adapter("telnyx") is TelnyxAdapter


# --- REST -----------------------------------------------------------------------------------------

OK = {"data": {"result": "ok"}}


@pytest.fixture
async def api(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[FakeApi, TelnyxAdapter]]:
    fake = FakeApi()
    server = await aiohttp_server(fake.app())
    telnyx = TelnyxAdapter(settings(CREDS, api_base=str(server.make_url(""))), max_retries=0)
    yield fake, telnyx
    await telnyx.aclose()


async def test_create_call(api: tuple[FakeApi, TelnyxAdapter]) -> None:
    fake, telnyx = api
    fake.reply("POST", "/v2/calls", 200, {"data": {"call_control_id": CCID, "call_leg_id": "l",
               "call_session_id": "s", "is_alive": False, "record_type": "call"}})  # fmt: skip
    ccid = await telnyx.create_call(
        call_id="c1", to="+15550002222", from_="+15550001111",
        webhook_base="https://voice.example.com/w", timeout_s=25,
    )  # fmt: skip
    assert ccid == CCID
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", "/v2/calls")
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    body = request.json()
    telnyx_schema("CallRequest").validate(body)
    assert body == {
        "connection_id": "conn-1", "from": "+15550001111", "to": "+15550002222",
        "webhook_url": "https://voice.example.com/w?call=c1&kind=event",
        "webhook_url_method": "POST", "client_state": encode_state("c1"), "timeout_secs": 25,
    }  # fmt: skip
    assert decode_state(body["client_state"]).call_id == "c1"


async def test_create_call_needs_a_connection(api: tuple[FakeApi, TelnyxAdapter]) -> None:
    _fake, telnyx = api
    telnyx.settings = settings({"apiKey": API_KEY}, api_base=telnyx.settings.api_base)
    with pytest.raises(ProviderError, match="connectionId"):
        await telnyx.create_call(call_id="c1", to="+1", from_="+2", webhook_base=URL, timeout_s=5)


COMMANDS = [
    ("speak", {"payload": "Hello", "payload_type": "text", "voice": "AWS.Polly.Joanna",
               "client_state": STATE, "command_id": "c1:greet:0:0"}),
    ("gather_using_speak", {"payload": "Press 1", "voice": "female", "valid_digits": "12",
                            "minimum_digits": 1, "maximum_digits": 1, "timeout_millis": 6000}),
    ("transcription_start", {"transcription_engine": "Google", "transcription_tracks": "inbound",
                             "client_state": STATE}),
    ("transfer", {"to": "+15550100200", "timeout_secs": 20}),
    ("answer", {"client_state": STATE}),
]  # fmt: skip


@pytest.mark.parametrize("command, body", COMMANDS, ids=[c for c, _ in COMMANDS])
async def test_command_sends_the_body_as_given(
    api: tuple[FakeApi, TelnyxAdapter], command: str, body: dict[str, object]
) -> None:
    fake, telnyx = api
    fake.reply("POST", rf"/v2/calls/[^/]+/actions/{command}", 200, OK)
    await telnyx.command(CCID, command, body)
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", f"/v2/calls/{CCID}/actions/{command}")
    assert request.json() == body
    telnyx_validator(command).validate(request.json())


async def test_client_state_update_is_a_put(api: tuple[FakeApi, TelnyxAdapter]) -> None:
    fake, telnyx = api
    fake.reply("PUT", r"/v2/calls/[^/]+/actions/client_state_update", 200, OK)
    await telnyx.command(CCID, "client_state_update", {"client_state": STATE})
    assert [(r.method, r.json()) for r in fake.requests] == [("PUT", {"client_state": STATE})]


async def test_command_names_are_checked(api: tuple[FakeApi, TelnyxAdapter]) -> None:
    _fake, telnyx = api
    with pytest.raises(ValueError, match="not a Call Control command"):
        await telnyx.command(CCID, "../hangup", {})


async def test_command_errors(api: tuple[FakeApi, TelnyxAdapter]) -> None:
    fake, telnyx = api
    invalid = {"code": "10015", "title": "Invalid parameter", "detail": f"voice {API_KEY}"}
    fake.reply("POST", r"/v2/calls/[^/]+/actions/speak", 422, {"errors": [invalid]})
    fake.reply("POST", r"/v2/calls/[^/]+/actions/playback_start", 500, {"errors": []})
    with pytest.raises(ProviderError) as caught:
        await telnyx.command(CCID, "speak", {"payload": "x", "voice": "nobody"})
    assert (caught.value.provider, caught.value.status) == ("telnyx", 422)
    assert "Invalid parameter" in str(caught.value) and API_KEY not in str(caught.value)
    with pytest.raises(ProviderError, match="HTTP 500"):
        await telnyx.command(CCID, "playback_start", {"audio_url": "https://x/a.mp3"})
    assert len(fake.requests) == 2  # max_retries=0: no retry, no back-off sleep


@pytest.mark.parametrize(
    "status, body, raises",
    [
        (200, OK, False),
        (404, {"errors": [{"code": "90015", "title": "Call not found"}]}, False),
        (422, {"errors": [{"code": "90018", "title": "Call has already ended"}]}, False),
        (422, {"errors": [{"code": "90020", "title": "Something else"}]}, True),
        (401, {"errors": [{"code": "10009", "title": "Authentication failed"}]}, True),
    ],
)
async def test_hangup_command(
    api: tuple[FakeApi, TelnyxAdapter], status: int, body: dict[str, Any], raises: bool
) -> None:
    fake, telnyx = api
    fake.reply("POST", r"/v2/calls/[^/]+/actions/hangup", status, body)
    if raises:
        with pytest.raises(ProviderError):
            await telnyx.hangup(CCID)
    else:
        await telnyx.hangup(CCID)
    (request,) = fake.requests
    assert request.path == f"/v2/calls/{CCID}/actions/hangup" and request.json() == {}
    telnyx_validator("hangup").validate(request.json())


@pytest.mark.parametrize(
    "status, body, expected",
    [
        (200, {"data": {"call_control_id": CCID, "is_alive": True}}, CallStatus.ACTIVE),
        (200, {"data": {"call_control_id": CCID, "is_alive": False}}, CallStatus.ENDED),
        (404, {"errors": [{"title": "not found"}]}, CallStatus.ENDED),
        (500, {"errors": [{"title": "oops"}]}, CallStatus.UNKNOWN),
    ],
)
async def test_call_status(
    api: tuple[FakeApi, TelnyxAdapter], status: int, body: dict[str, Any], expected: CallStatus
) -> None:
    fake, telnyx = api
    fake.reply("GET", r"/v2/calls/[^/]+", status, body)
    assert await telnyx.call_status(CCID) == expected
    assert [(r.method, r.path) for r in fake.requests] == [("GET", f"/v2/calls/{CCID}")]


async def test_unreachable_api() -> None:
    telnyx = TelnyxAdapter(settings(CREDS, api_base="http://127.0.0.1:9"), max_retries=0)
    try:
        with pytest.raises(ProviderError, match="cannot reach") as caught:
            await telnyx.command(CCID, "speak", {"payload": "x", "voice": "female"})
        assert caught.value.status is None
    finally:
        await telnyx.aclose()
