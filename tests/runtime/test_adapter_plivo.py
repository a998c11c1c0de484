"""The Plivo adapter: V3 and V2 signatures, event parsing, XML documents, REST through the SDK."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlencode

import plivo.rest.client
import pytest
from plivo.utils import validate_signature, validate_v3_signature
from pytest_aiohttp import AiohttpServer

from tests.runtime.adapter_support import (
    FakeApi,
    form_request,
    plivo_v2_signature,
    plivo_v3_signature,
    settings,
    skip_key,
)
from voicecall.runtime.providers.base import (
    BadRequest,
    CallStatus,
    Event,
    EventKind,
    WebhookRequest,
)
from voicecall.runtime.providers.errors import ProviderError
from voicecall.runtime.providers.plivo import PlivoAdapter
from voicecall.runtime.providers.registry import get_adapter

AUTH_ID = "MA" + "ABCDEFGHIJ12345678"
TOKEN = "plivo-test-token-5678"
CREDS = {"authId": AUTH_ID, "authToken": TOKEN}
BASE = "https://voice.example.com/voice/webhook"
URL = f"{BASE}?call=c1&kind=input&block=greet&step=1"
FORM = {"CallUUID": "uuid-1", "From": "+15550001111", "To": "+15550002222",
        "Direction": "outbound", "InputType": "dtmf", "Digits": "7"}  # fmt: skip
NONCE = "12345678901234567890"


def adapter(**options: object) -> PlivoAdapter:
    return PlivoAdapter(settings(CREDS, **options))


def v3_headers(url: str, form: dict[str, str], nonce: str = NONCE, method: str = "POST",
               token: str = TOKEN) -> dict[str, str]:  # fmt: skip
    signature = plivo_v3_signature(token, method, url, form, nonce)
    return {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-Ma-V3": signature,
            "X-Plivo-Signature-V3-Nonce": nonce}  # fmt: skip


def signed(url: str = URL, form: dict[str, str] | None = None, *, sign_url: str | None = None,
           nonce: str = NONCE) -> WebhookRequest:  # fmt: skip
    form = FORM if form is None else form
    return form_request(url, form, v3_headers(sign_url or url, form, nonce))


# --- the signers and the SDK agree ----------------------------------------------------------------


@pytest.mark.parametrize(
    "method, url, params",
    [
        ("POST", URL, FORM),
        ("POST", URL, {}),
        ("POST", BASE, FORM),
        ("POST", "https://h.example:8443/w?b=2&a=1", {"X": "y z", "A": "é&="}),
        ("GET", f"{URL}&CallUUID=u", {}),
        ("GET", BASE, {}),
    ],
)
def test_v3_signer_matches_sdk(method: str, url: str, params: dict[str, str]) -> None:
    signature = plivo_v3_signature(TOKEN, method, url, params, NONCE)
    assert validate_v3_signature(method, url, NONCE, TOKEN, signature, dict(params))
    assert not validate_v3_signature(method, url, "other", TOKEN, signature, dict(params))


def test_v2_signer_matches_sdk() -> None:
    assert validate_signature(URL, NONCE, plivo_v2_signature(TOKEN, URL, NONCE), TOKEN)


# --- verify ---------------------------------------------------------------------------------------


def test_verify_v3() -> None:
    result = adapter().verify(signed())
    assert result.ok and result.key and not result.reason


def test_verify_v3_main_account_header_alone() -> None:
    headers = v3_headers(URL, FORM)
    del headers["X-Plivo-Signature-V3"]
    assert adapter().verify(form_request(URL, FORM, headers)).ok


def test_verify_v3_one_of_several_signatures() -> None:
    headers = v3_headers(URL, FORM)
    wrong = plivo_v3_signature("other", "POST", URL, FORM, NONCE)
    headers["X-Plivo-Signature-V3"] = f"{wrong},{headers['X-Plivo-Signature-V3']}"
    headers["X-Plivo-Signature-Ma-V3"] = wrong  # a subaccount: signed with a token we lack
    assert adapter().verify(form_request(URL, FORM, headers)).ok


def test_verify_v3_get() -> None:
    url = f"{URL}&CallUUID=uuid-1"
    request = form_request(url, {}, v3_headers(url, {}, method="GET"), method="GET")
    assert adapter().verify(request).ok


def test_verify_rejects_bad_v3_without_leaking_the_token() -> None:
    request = form_request(URL, FORM, v3_headers(URL, FORM, token="other"))
    result = adapter().verify(request)
    assert not result.ok and "bad X-Plivo-Signature-V3" in result.reason
    assert TOKEN not in result.reason and not result.key


def test_verify_rejects_a_changed_field() -> None:
    request = form_request(URL, {**FORM, "Digits": "8"}, v3_headers(URL, FORM))
    assert not adapter().verify(request).ok


def test_verify_accepts_a_reordered_query() -> None:
    # V3 signs the query sorted, so its order does not matter (unlike Twilio).
    reordered = f"{BASE}?step=1&block=greet&kind=input&call=c1"
    first, second = adapter().verify(signed()), adapter().verify(signed(reordered, sign_url=URL))
    assert second.ok and second.key == first.key


@pytest.mark.parametrize(
    "signed_url, requested_url, ok",
    [
        ("https://voice.example.com:8443/w?call=c1", "https://voice.example.com:8443/w?call=c1",
         True),
        ("https://voice.example.com:443/w?call=c1", "https://voice.example.com/w?call=c1", False),
        ("https://voice.example.com/w?call=c1", "https://voice.example.com:443/w?call=c1", False),
    ],
)  # fmt: skip
def test_verify_port_must_match(signed_url: str, requested_url: str, ok: bool) -> None:
    # Plivo signs scheme://netloc/path as requested: no port variants (unlike Twilio's SDK).
    assert adapter().verify(signed(requested_url, sign_url=signed_url)).ok is ok


def v2_headers(url: str = URL, nonce: str = NONCE, token: str = TOKEN) -> dict[str, str]:
    return {"X-Plivo-Signature-V2": plivo_v2_signature(token, url, nonce),
            "X-Plivo-Signature-V2-Nonce": nonce}  # fmt: skip


def test_v2_is_refused_by_default() -> None:
    result = adapter().verify(form_request(URL, FORM, v2_headers()))
    assert not result.ok and "allowV2Signatures is off" in result.reason


def test_verify_v2_when_allowed() -> None:
    headers = v2_headers()
    result = adapter(allow_v2_signatures=True).verify(form_request(URL, FORM, headers))
    assert result.ok and result.key and result.once_key and result.once_key != result.key
    headers["X-Plivo-Signature-V2"] = plivo_v2_signature("other", URL, NONCE)
    assert not adapter(allow_v2_signatures=True).verify(form_request(URL, FORM, headers)).ok


def test_a_v2_pair_has_one_key_whatever_the_body_and_query() -> None:
    # V2 signs neither: another body or query under the same pair must be the same event.
    plivo_ = adapter(allow_v2_signatures=True)
    first = plivo_.verify(form_request(URL, FORM, v2_headers()))
    forged_form = {**FORM, "From": "+19990000000"}
    forged = plivo_.verify(form_request(f"{BASE}?call=c9&kind=answer", forged_form, v2_headers()))
    assert forged.ok and (forged.key, forged.once_key) == (first.key, first.once_key)
    other = plivo_.verify(form_request(URL, FORM, v2_headers(nonce="4242")))
    assert other.once_key != first.once_key


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Plivo-Signature-V2": "\udcff\udcfe", "X-Plivo-Signature-V2-Nonce": NONCE},
        {**v2_headers(), "X-Plivo-Signature-V2-Nonce": "12\udcff"},
        {"X-Plivo-Signature-V2": "not base64!", "X-Plivo-Signature-V2-Nonce": NONCE},
    ],
)
def test_v2_odd_bytes_are_refused_not_raised(headers: dict[str, str]) -> None:
    # aiohttp hands undecodable header bytes on as lone surrogates (surrogateescape).
    assert not adapter(allow_v2_signatures=True).verify(form_request(URL, FORM, headers)).ok


@pytest.mark.parametrize("host", ["voice.example.com:abc", "voice.example.com:99999", "[::1",
                                  "voice.\udcffexample.com", ""])  # fmt: skip
@pytest.mark.parametrize("version", ["V2", "V3"])
def test_a_bad_host_is_refused_not_raised(host: str, version: str) -> None:
    url = f"https://{host}/voice/webhook?call=c1&kind=answer"
    headers = v2_headers() if version == "V2" else v3_headers(BASE, FORM)
    request = replace(form_request(BASE, FORM, headers), url=url)  # as the server builds it
    result = adapter(allow_v2_signatures=True).verify(request)
    assert not result.ok and ("URL" in result.reason or "malformed" in result.reason)


def test_v3_signatures_separated_by_comma_and_space() -> None:
    headers = v3_headers(URL, FORM)
    wrong = plivo_v3_signature("other", "POST", URL, FORM, NONCE)
    headers["X-Plivo-Signature-V3"] = f"{wrong}, {headers['X-Plivo-Signature-V3']}"
    headers["X-Plivo-Signature-Ma-V3"] = f"{wrong} ,  {wrong}"
    assert adapter().verify(form_request(URL, FORM, headers)).ok


def test_v3_with_a_non_ascii_query_value() -> None:
    # The SDK's URL helper cannot decode one (UnicodeEncodeError); the adapter builds its own.
    url = f"{BASE}?call=c1&kind=input&block=caf%C3%A9&step=1"
    assert adapter().verify(signed(url)).ok


def test_v3_over_a_form_repeating_a_field() -> None:
    # Plivo signs every value of a repeated field (sorted), as the SDK's signer does.
    pairs = (("CallUUID", "uuid-1"), ("Digits", "7"), ("Digits", "1"))
    query = "block=greet&call=c1&kind=input&step=1"  # sorted
    signed_string = f"{BASE}?{query}.CallUUIDuuid-1Digits1Digits7.{NONCE}"
    digest = hmac.new(TOKEN.encode(), signed_string.encode(), hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    headers = {"X-Plivo-Signature-V3": signature, "X-Plivo-Signature-V3-Nonce": NONCE}
    request = replace(form_request(URL, dict(pairs), headers), form_pairs=pairs,
                      body=urlencode(pairs).encode())  # fmt: skip
    assert adapter().verify(request).ok
    assert not adapter().verify(replace(request, form_pairs=pairs[:2])).ok


def test_bad_v3_does_not_fall_back_to_v2() -> None:
    headers = {**v3_headers(URL, FORM, token="other"),
               "X-Plivo-Signature-V2": plivo_v2_signature(TOKEN, URL, NONCE),
               "X-Plivo-Signature-V2-Nonce": NONCE}  # fmt: skip
    assert not adapter().verify(form_request(URL, FORM, headers)).ok


@pytest.mark.parametrize(
    "drop, message",
    [
        (("X-Plivo-Signature-V3-Nonce",), "missing X-Plivo-Signature-V3-Nonce header"),
        (("X-Plivo-Signature-V3", "X-Plivo-Signature-Ma-V3"), "missing X-Plivo-Signature-V3 "),
        (("X-Plivo-Signature-V3", "X-Plivo-Signature-Ma-V3", "X-Plivo-Signature-V3-Nonce"),
         "missing X-Plivo-Signature-V3 and X-Plivo-Signature-V3-Nonce headers"),
    ],
)  # fmt: skip
def test_verify_names_missing_headers(drop: tuple[str, ...], message: str) -> None:
    headers = {k: v for k, v in v3_headers(URL, FORM).items() if k not in drop}
    result = adapter().verify(form_request(URL, FORM, headers))
    assert not result.ok and result.reason.startswith(message)


def test_pre_auth_gate_wants_v3_unless_v2_is_allowed() -> None:
    v3 = {"X-Plivo-Signature-V3": "s", "X-Plivo-Signature-V3-Nonce": "n"}
    v2 = {"X-Plivo-Signature-V2": "s", "X-Plivo-Signature-V2-Nonce": "n"}
    assert adapter().missing_signature_headers(v3) == []
    assert adapter().missing_signature_headers(v2) == list(v3)
    assert adapter(allow_v2_signatures=True).missing_signature_headers(v2) == []
    assert adapter(allow_v2_signatures=True).missing_signature_headers({}) == list(v3)


def test_verify_without_a_token_fails_closed() -> None:
    assert not PlivoAdapter(settings({"authId": AUTH_ID})).verify(signed()).ok


def test_replay_keys_are_stable_and_distinct() -> None:
    plivo_ = adapter()
    first, again = plivo_.verify(signed()), plivo_.verify(signed())
    other_nonce = plivo_.verify(signed(nonce="99999"))
    other_body = plivo_.verify(signed(form={**FORM, "Digits": "9"}))
    assert first.key == again.key
    assert len({first.key, other_nonce.key, other_body.key}) == 3


def test_skip_signature() -> None:
    request = form_request(URL, FORM)
    result = adapter(skip_signature=True).verify(request)
    assert result.ok and result.key == skip_key(request)


# --- parse ----------------------------------------------------------------------------------------


def parse(url: str, form: dict[str, str]) -> list[Event]:
    return adapter().parse(form_request(url, form))


def test_inbound_answer_is_a_fetch() -> None:
    form = {"CallUUID": "u9", "From": "+15550003333", "To": "+15550004444",
            "Direction": "inbound", "CallStatus": "ringing"}  # fmt: skip
    (event,) = parse(BASE, form)
    assert (event.kind, event.provider, event.provider_call_id) == (EventKind.FETCH, "plivo", "u9")
    assert (event.call_id, event.direction, event.previous_provider_call_id) == (
        None, "inbound", None)  # fmt: skip
    assert (event.from_number, event.to_number) == ("+15550003333", "+15550004444")


@pytest.mark.parametrize("field", ["RequestUUID", "ALegRequestUUID"])
def test_outbound_answer_links_the_request_uuid(field: str) -> None:
    form = {"CallUUID": "u1", field: "req-1", "Direction": "outbound", "CallStatus": "in-progress"}
    (event,) = parse(f"{BASE}?call=c1&kind=answer", form)
    assert event.kind is EventKind.FETCH
    assert (event.provider_call_id, event.previous_provider_call_id) == ("u1", "req-1")
    assert (event.call_id, event.direction) == ("c1", "outbound")


def test_live_is_a_fetch() -> None:
    (event,) = parse(f"{BASE}?call=c1&kind=live", {"CallUUID": "u1"})
    assert event.kind is EventKind.FETCH and event.call_id == "c1"


@pytest.mark.parametrize(
    "status, direction, reason",
    [
        ("completed", "outbound", "completed"),
        ("busy", "outbound", "busy"),
        ("no-answer", "outbound", "no-answer"),
        ("failed", "outbound", "failed"),
        ("timeout", "outbound", "failed"),
        ("cancel", "outbound", "hangup-bot"),
        ("cancel", "inbound", "hangup-user"),
        ("", "outbound", "completed"),
    ],
)
def test_hangup(status: str, direction: str, reason: str) -> None:
    form = {"CallUUID": "u1", "CallStatus": status, "Direction": direction,
            "HangupCause": "NORMAL_CLEARING", "RequestUUID": "req-1"}  # fmt: skip
    (event,) = parse(f"{BASE}?call=c1&kind=hangup", form)
    assert (event.kind, event.status) == (EventKind.ENDED, reason)
    assert "NORMAL_CLEARING" in event.detail and event.previous_provider_call_id == "req-1"


@pytest.mark.parametrize(
    "form, digits, text, confidence",
    [
        ({"InputType": "dtmf", "Digits": "123"}, "123", None, None),
        ({"InputType": "speech", "Speech": "yes", "SpeechConfidenceScore": "0.8"}, None, "yes",
         0.8),
        ({"InputType": "speech", "Speech": "", "Digits": ""}, None, None, None),
        ({}, None, None, None),
    ],
)  # fmt: skip
def test_input(
    form: dict[str, str], digits: str | None, text: str | None, confidence: float | None
) -> None:
    (event,) = parse(URL, {"CallUUID": "u1", **form})
    assert event.kind is EventKind.INPUT
    assert (event.digits, event.text, event.confidence) == (digits, text, confidence)
    assert (event.call_id, event.block, event.step) == ("c1", "greet", 1)


@pytest.mark.parametrize(
    "dial, status",
    [("completed", "completed"), ("busy", "busy"), ("failed", "failed"),
     ("timeout", "no-answer"), ("no-answer", "no-answer"), ("odd", "failed")],
)  # fmt: skip
def test_dial(dial: str, status: str) -> None:
    (event,) = parse(f"{BASE}?call=c1&kind=dial", {"CallUUID": "u1", "DialStatus": dial})
    assert (event.kind, event.status, event.detail) == (EventKind.DIAL_ENDED, status, dial)


@pytest.mark.parametrize(
    "url, form, message",
    [
        (URL, {"Digits": "1"}, "CallUUID"),
        (f"{BASE}?call=c1", {"CallUUID": "u1"}, "no kind"),
        (f"{BASE}?call=c1&kind=status", {"CallUUID": "u1"}, "kind 'status'"),
        (f"{BASE}?call=c1&kind=dial", {"CallUUID": "u1"}, "DialStatus"),
        (URL, {"CallUUID": "u1", "SpeechConfidenceScore": "x"}, "SpeechConfidenceScore"),
    ],
)
def test_malformed_requests(url: str, form: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse(url, form)


def test_documents() -> None:
    reply = adapter().document(['<Speak language="en-US">Hi</Speak>'])
    assert reply.content_type == "application/xml"
    assert reply.body == b'<Response><Speak language="en-US">Hi</Speak></Response>'
    assert adapter().empty().body == b"<Response></Response>"
    assert get_adapter("plivo") is PlivoAdapter


# --- REST -----------------------------------------------------------------------------------------

ACCOUNT = f"/v1/Account/{AUTH_ID}"


@pytest.fixture
async def api(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[FakeApi, PlivoAdapter]]:
    fake = FakeApi()
    server = await aiohttp_server(fake.app())
    plivo_ = adapter(api_base=str(server.make_url("")))
    yield fake, plivo_
    await plivo_.aclose()


async def test_create_call(api: tuple[FakeApi, PlivoAdapter]) -> None:
    fake, plivo_ = api
    fake.reply("POST", f"{ACCOUNT}/Call/", 201,
               {"api_id": "a", "message": "call fired", "request_uuid": "req-1"})  # fmt: skip
    uuid = await plivo_.create_call(call_id="c1", to="+15550002222", from_="+15550001111",
                                    webhook_base=BASE, timeout_s=25)  # fmt: skip
    assert uuid == "req-1"
    (request,) = fake.requests
    assert (request.method, request.path) == ("POST", f"{ACCOUNT}/Call/")
    assert request.headers["Authorization"].startswith("Basic ")
    body = request.json()
    assert body["from"] == "+15550001111" and body["to"] == "+15550002222"
    assert body["answer_url"] == f"{BASE}?call=c1&kind=answer"
    assert body["hangup_url"] == f"{BASE}?call=c1&kind=hangup"
    assert (body["answer_method"], body["hangup_method"], body["ring_timeout"]) == (
        "POST", "POST", 25)  # fmt: skip


async def test_create_call_errors(api: tuple[FakeApi, PlivoAdapter]) -> None:
    fake, plivo_ = api
    fake.reply("POST", f"{ACCOUNT}/Call/", 400, {"api_id": "a", "error": f"bad to {TOKEN}"})
    with pytest.raises(ProviderError) as caught:
        await plivo_.create_call(call_id="c1", to="+1", from_="+2", webhook_base=BASE,
                                 timeout_s=5)  # fmt: skip
    assert (caught.value.provider, caught.value.status) == ("plivo", 400)
    assert "bad to" in str(caught.value) and TOKEN not in str(caught.value)


async def test_server_error_is_not_retried(api: tuple[FakeApi, PlivoAdapter]) -> None:
    fake, plivo_ = api
    fake.reply("POST", f"{ACCOUNT}/Call/u1/", 500, {"error": "down"})
    with pytest.raises(ProviderError, match="HTTP 500"):
        await plivo_.redirect("u1", BASE)
    assert len(fake.requests) == 1


async def test_hangup_deletes_the_call_or_cancels_the_request(
    api: tuple[FakeApi, PlivoAdapter],
) -> None:
    fake, plivo_ = api
    fake.reply("DELETE", f"{ACCOUNT}/Call/u1/", 204)
    fake.reply("DELETE", f"{ACCOUNT}/Call/req-1/", 404, {"error": "not found"})
    fake.reply("DELETE", f"{ACCOUNT}/Request/req-1/", 204)
    fake.reply("DELETE", f"{ACCOUNT}/(Call|Request)/gone/", 404, {"error": "not found"})
    await plivo_.hangup("u1")
    await plivo_.hangup("req-1")  # not answered yet: known by its request uuid
    await plivo_.hangup("gone")
    assert [(r.method, r.path) for r in fake.requests] == [
        ("DELETE", f"{ACCOUNT}/Call/u1/"),
        ("DELETE", f"{ACCOUNT}/Call/req-1/"),
        ("DELETE", f"{ACCOUNT}/Request/req-1/"),
        ("DELETE", f"{ACCOUNT}/Call/gone/"),
        ("DELETE", f"{ACCOUNT}/Request/gone/"),
    ]


async def test_hangup_error(api: tuple[FakeApi, PlivoAdapter]) -> None:
    fake, plivo_ = api
    fake.reply("DELETE", f"{ACCOUNT}/Call/u1/", 401, {"error": "auth"})
    with pytest.raises(ProviderError, match="HTTP 401"):
        await plivo_.hangup("u1")


async def test_redirect_transfers_the_a_leg(api: tuple[FakeApi, PlivoAdapter]) -> None:
    fake, plivo_ = api
    fake.reply("POST", f"{ACCOUNT}/Call/u1/", 202, {"message": "call transferred"})
    await plivo_.redirect("u1", f"{BASE}?call=c1&kind=live")
    (request,) = fake.requests
    assert request.path == f"{ACCOUNT}/Call/u1/"
    body = request.json()
    assert (body["legs"], body["aleg_url"], body["aleg_method"]) == (
        "aleg", f"{BASE}?call=c1&kind=live", "POST")  # fmt: skip


@pytest.mark.parametrize(
    "live, queued, expected",
    [
        ((200, {"call_status": "in-progress"}), None, CallStatus.ACTIVE),
        ((200, {"call_status": "completed"}), None, CallStatus.ENDED),
        ((404, {"error": "not found"}), (200, {"call_status": "queued"}), CallStatus.ACTIVE),
        ((404, {"error": "not found"}), (404, {"error": "not found"}), CallStatus.ENDED),
        ((404, {"error": "not found"}), (401, {"error": "auth"}), CallStatus.UNKNOWN),
        ((401, {"error": "auth"}), None, CallStatus.UNKNOWN),
    ],
)
async def test_call_status(
    api: tuple[FakeApi, PlivoAdapter],
    live: tuple[int, object],
    queued: tuple[int, object] | None,
    expected: CallStatus,
) -> None:
    fake, plivo_ = api
    fake.reply("GET", f"{ACCOUNT}/Call/u1/", *live, query={"status": "live"})
    if queued is not None:
        fake.reply("GET", f"{ACCOUNT}/Call/u1/", *queued, query={"status": "queued"})
    assert await plivo_.call_status("u1") == expected
    asked = [r.query["status"] for r in fake.requests]
    assert asked == (["live"] if queued is None else ["live", "queued"])


def test_bad_auth_id_never_echoed() -> None:
    plivo_ = PlivoAdapter(settings({"authId": "secret-looking-id", "authToken": TOKEN}))
    with pytest.raises(ProviderError) as caught:
        plivo_._client()
    assert "secret-looking-id" not in str(caught.value) and "MA or SA" in str(caught.value)


async def test_two_adapters_do_not_share_a_base(aiohttp_server: AiohttpServer) -> None:
    fakes = [FakeApi(), FakeApi()]
    adapters = []
    for fake in fakes:
        fake.reply("POST", rf"{ACCOUNT}/Call/\w+/", 202, {"message": "ok"})
        server = await aiohttp_server(fake.app())
        adapters.append(adapter(api_base=str(server.make_url(""))))
    constants = (plivo.rest.client.PLIVO_API_BASE_URI, plivo.rest.client.API_VOICE_BASE_URI)
    try:
        await adapters[0].redirect("a", BASE)
        await adapters[1].redirect("b", BASE)
        await adapters[0].redirect("c", BASE)
    finally:
        for one in adapters:
            await one.aclose()
    assert [r.path[-2] for r in fakes[0].requests] == ["a", "c"]
    assert [r.path[-2] for r in fakes[1].requests] == ["b"]
    assert constants == (plivo.rest.client.PLIVO_API_BASE_URI, plivo.rest.client.API_VOICE_BASE_URI)


def test_a_signature_moved_between_fields_and_nonce_is_the_same_event() -> None:
    # V3 signs "<url>.<fields>.<nonce>": the same signature holds when the text after a dot
    # in a field moves into the nonce header. Speech "yes. cancel it" becomes "yes": the
    # replay key must be the signed string's, or the cut-down request is a new event.
    said = {**FORM, "InputType": "speech", "Speech": "yes. cancel it"}
    del said["Digits"]
    original = signed(form=said)
    cut = {k: v for k, v in said.items() if k != "To"} | {"Speech": "yes"}
    headers = dict(original.headers)
    headers["X-Plivo-Signature-V3-Nonce"] = f" cancel itTo{said['To']}.{NONCE}"
    forged = form_request(URL, cut, headers)
    plivo_ = adapter()
    first, second = plivo_.verify(original), plivo_.verify(forged)
    assert first.ok
    assert not second.ok or second.key == first.key
