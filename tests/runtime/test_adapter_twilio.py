"""The Twilio adapter: X-Twilio-Signature, event parsing, TwiML documents, REST through the SDK."""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import AsyncIterator
from dataclasses import replace
from urllib.parse import urlencode

import pytest
from multidict import MultiDict
from pytest_aiohttp import AiohttpServer
from twilio.request_validator import RequestValidator

from tests.runtime.adapter_support import (
    Captured,
    FakeApi,
    form_request,
    settings,
    skip_key,
    twilio_form_schema,
    twilio_signature,
)
from voicecall.runtime.app import RuntimeConfig
from voicecall.runtime.providers.base import (
    BadRequest,
    CallStatus,
    Event,
    EventKind,
    WebhookRequest,
)
from voicecall.runtime.providers.errors import ProviderError
from voicecall.runtime.providers.registry import get_adapter
from voicecall.runtime.providers.twilio import TwilioAdapter

# twilio 9.13 passes aiohttp.BasicAuth, which aiohttp 3.14 deprecates: not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*deprecated.*:DeprecationWarning:twilio")

SID = "AC" + "0123456789abcdef" * 2
TOKEN = "twilio-test-token-1234"
CREDS = {"accountSid": SID, "authToken": TOKEN}
BASE = "https://voice.example.com/voice/webhook"
URL = f"{BASE}?call=c1&kind=input&block=greet&step=1"
FORM = {"CallSid": "CA1", "AccountSid": SID, "From": "+15550001111", "To": "+15550002222",
        "Digits": "12", "Direction": "outbound-api"}  # fmt: skip

# Twilio's documented example (providers.md §4, twilio.com/docs/usage/security).
DOC_TOKEN = "12345"
DOC_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
DOC_PARAMS = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}  # fmt: skip
DOC_SIGNATURE = "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def adapter(**options: object) -> TwilioAdapter:
    return TwilioAdapter(settings(CREDS, **options))


def signed(
    url: str = URL, form: dict[str, str] | None = None, *, sign_url: str | None = None
) -> WebhookRequest:
    form = FORM if form is None else form
    signature = twilio_signature(TOKEN, sign_url or url, form)
    return form_request(url, form, {"X-Twilio-Signature": signature})


# --- the signer and the SDK agree -----------------------------------------------------------------


def test_docs_vector() -> None:
    assert twilio_signature(DOC_TOKEN, DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    assert RequestValidator(DOC_TOKEN).compute_signature(DOC_URL, DOC_PARAMS) == DOC_SIGNATURE
    request = form_request(DOC_URL, DOC_PARAMS, {"X-Twilio-Signature": DOC_SIGNATURE})
    assert TwilioAdapter(settings({"authToken": DOC_TOKEN})).verify(request).ok


@pytest.mark.parametrize(
    "url, form",
    [(URL, FORM), (BASE, {}), ("http://127.0.0.1:8080/w?call=x&kind=status", {"A": "b c&d=é"})],
)
def test_signer_matches_sdk_validator(url: str, form: dict[str, str]) -> None:
    assert RequestValidator(TOKEN).validate(url, form, twilio_signature(TOKEN, url, form))


# --- verify ---------------------------------------------------------------------------------------


def test_verify_accepts_a_signed_request() -> None:
    result = adapter().verify(signed())
    assert result.ok and result.key and not result.reason


def test_verify_rejects_a_bad_signature_without_leaking_the_token() -> None:
    request = form_request(URL, FORM, {"X-Twilio-Signature": twilio_signature("other", URL, FORM)})
    result = adapter().verify(request)
    assert not result.ok and "bad X-Twilio-Signature" in result.reason
    assert TOKEN not in result.reason and not result.key


def test_verify_rejects_a_changed_field() -> None:
    request = signed()
    tampered = form_request(URL, {**FORM, "Digits": "99"}, dict(request.headers))
    assert not adapter().verify(tampered).ok


def test_verify_names_a_missing_header() -> None:
    result = adapter().verify(form_request(URL, FORM))
    assert not result.ok and result.reason == "missing X-Twilio-Signature header"
    assert TwilioAdapter.signature_headers == ("X-Twilio-Signature",)


def test_verify_without_a_token_fails_closed() -> None:
    result = TwilioAdapter(settings({"accountSid": SID})).verify(signed())
    assert not result.ok and "authToken" in result.reason


def test_verify_rejects_a_reordered_query() -> None:
    reordered = f"{BASE}?kind=input&call=c1&block=greet&step=1"
    assert not adapter().verify(signed(reordered, sign_url=URL)).ok


def test_verify_rejects_another_scheme() -> None:
    assert not adapter().verify(signed(URL.replace("https", "http"), sign_url=URL)).ok


@pytest.mark.parametrize(
    "signed_url, requested_url",
    [
        ("https://voice.example.com:443/voice/webhook?call=c1&kind=input",
         "https://voice.example.com/voice/webhook?call=c1&kind=input"),
        ("https://voice.example.com/voice/webhook?call=c1&kind=input",
         "https://voice.example.com:443/voice/webhook?call=c1&kind=input"),
        ("https://voice.example.com/voice/webhook?call=c1&kind=input",
         "https://voice.example.com:8443/voice/webhook?call=c1&kind=input"),
    ],
)  # fmt: skip
def test_verify_accepts_port_variants(signed_url: str, requested_url: str) -> None:
    assert adapter().verify(signed(requested_url, sign_url=signed_url)).ok


def test_verify_get_request_signs_the_url_only() -> None:
    url = f"{URL}&CallSid=CA1&From=%2B1555"
    request = form_request(url, {}, {"X-Twilio-Signature": twilio_signature(TOKEN, url, {})},
                           method="GET")  # fmt: skip
    assert adapter().verify(request).ok


def test_replay_keys_are_stable_and_distinct() -> None:
    twilio = adapter()
    first, again = twilio.verify(signed()), twilio.verify(signed())
    other = twilio.verify(signed(form={**FORM, "Digits": "3"}))
    assert first.key == again.key
    assert other.ok and other.key != first.key
    with_port = twilio.verify(signed(URL.replace(".com/", ".com:443/"), sign_url=URL))
    assert with_port.key == first.key  # the same signed request, whatever the port


def test_a_body_split_differently_under_the_same_signature_is_the_same_event() -> None:
    # "ab=c" and "a=bc" sign the same string (URL + "abc"): one signature, one event.
    twilio = adapter()
    one = twilio.verify(signed(form={"CallSid": "CA1", "ab": "c"}))
    two = twilio.verify(replace(signed(form={"CallSid": "CA1", "ab": "c"}),
                                form={"CallSid": "CA1", "a": "bc"}))  # fmt: skip
    assert one.ok and two.ok and one.key == two.key


def multi(pairs: tuple[tuple[str, str], ...], url: str = URL) -> WebhookRequest:
    """A form repeating names, signed as Twilio signs it (each name's sorted distinct values)."""
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    data = url + "".join(n + v for n in sorted(values) for v in sorted(set(values[n])))
    digest = hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest()
    headers = {"X-Twilio-Signature": base64.b64encode(digest).decode()}
    return replace(form_request(url, dict(pairs), headers), form_pairs=pairs,
                   body=urlencode(pairs).encode())  # fmt: skip


def test_a_form_repeating_a_name_is_checked_over_every_value() -> None:
    pairs = (("CallSid", "CA1"), ("Digits", "1"), ("Digits", "2"))
    request = multi(pairs)
    assert RequestValidator(TOKEN).validate(URL, MultiDict(pairs),
                                            request.headers["X-Twilio-Signature"])  # fmt: skip
    assert adapter().verify(request).ok
    assert not adapter().verify(replace(request, form_pairs=pairs[:2])).ok  # a value dropped


@pytest.mark.parametrize("host", ["127.0.0.1:abc", "127.0.0.1:99999", "[::1", "[::1]:x",
                                  "h\udcff.example.com", ""])  # fmt: skip
def test_a_host_that_makes_no_url_is_refused_not_raised(host: str) -> None:
    request = replace(signed(), url=f"http://{host}/voice/webhook?call=c1")  # as the server builds
    result = adapter().verify(request)
    assert not result.ok and "URL" in result.reason


def test_skip_signature_accepts_anything_with_a_key_over_the_request() -> None:
    request = form_request(URL, FORM)
    result = adapter(skip_signature=True).verify(request)
    assert result.ok and result.key == skip_key(request)


# --- parse ----------------------------------------------------------------------------------------


def parse(url: str, form: dict[str, str]) -> list[Event]:
    return adapter().parse(form_request(url, form))


def test_inbound_first_request_is_a_fetch() -> None:
    form = {"CallSid": "CA9", "From": "+15550003333", "To": "+15550004444",
            "Direction": "inbound", "CallStatus": "ringing"}  # fmt: skip
    (event,) = parse(BASE, form)
    assert event.kind is EventKind.FETCH and event.call_id is None
    assert (event.provider, event.provider_call_id, event.direction) == ("twilio", "CA9", "inbound")
    assert (event.from_number, event.to_number) == ("+15550003333", "+15550004444")


@pytest.mark.parametrize(
    "kind, direction, expected",
    [("answer", "outbound-api", "outbound"), ("live", "outbound-dial", "outbound"),
     ("answer", "inbound", "inbound")],
)  # fmt: skip
def test_answer_and_live_are_fetches(kind: str, direction: str, expected: str) -> None:
    (event,) = parse(f"{BASE}?call=c1&kind={kind}", {"CallSid": "CA1", "Direction": direction})
    assert event.kind is EventKind.FETCH
    assert (event.call_id, event.direction) == ("c1", expected)


@pytest.mark.parametrize(
    "status, kind, reason",
    [
        ("queued", EventKind.INITIATED, None),
        ("initiated", EventKind.INITIATED, None),
        ("ringing", EventKind.RINGING, None),
        ("in-progress", EventKind.ANSWERED, None),
        ("answered", EventKind.ANSWERED, None),
        ("completed", EventKind.ENDED, "completed"),
        ("busy", EventKind.ENDED, "busy"),
        ("no-answer", EventKind.ENDED, "no-answer"),
        ("failed", EventKind.ENDED, "failed"),
        ("canceled", EventKind.ENDED, "hangup-bot"),
    ],
)
def test_status_callbacks(status: str, kind: EventKind, reason: str | None) -> None:
    (event,) = parse(f"{BASE}?call=c1&kind=status", {"CallSid": "CA1", "CallStatus": status})
    assert (event.kind, event.status, event.detail, event.call_id) == (kind, reason, status, "c1")


def test_unknown_status_gives_no_event() -> None:
    assert parse(f"{BASE}?call=c1&kind=status", {"CallSid": "CA1", "CallStatus": "paused"}) == []


@pytest.mark.parametrize(
    "form, digits, text, confidence",
    [
        ({"Digits": "42"}, "42", None, None),
        ({"SpeechResult": "yes please", "Confidence": "0.91"}, None, "yes please", 0.91),
        ({}, None, None, None),
        ({"Digits": "", "SpeechResult": ""}, None, None, None),
    ],
)
def test_input(
    form: dict[str, str], digits: str | None, text: str | None, confidence: float | None
) -> None:
    (event,) = parse(URL, {"CallSid": "CA1", **form})
    assert event.kind is EventKind.INPUT
    assert (event.digits, event.text, event.confidence) == (digits, text, confidence)
    assert (event.call_id, event.block, event.step) == ("c1", "greet", 1)


@pytest.mark.parametrize(
    "dial, status",
    [("completed", "completed"), ("answered", "answered"), ("busy", "busy"),
     ("no-answer", "no-answer"), ("failed", "failed"), ("canceled", "failed")],
)  # fmt: skip
def test_dial_outcomes(dial: str, status: str) -> None:
    (event,) = parse(f"{BASE}?call=c1&kind=dial&block=b&step=2",
                     {"CallSid": "CA1", "DialCallStatus": dial})  # fmt: skip
    assert (event.kind, event.status, event.detail) == (EventKind.DIAL_ENDED, status, dial)


@pytest.mark.parametrize(
    "url, form, message",
    [
        (URL, {"Digits": "1"}, "CallSid"),
        (f"{BASE}?call=c1", {"CallSid": "CA1"}, "no kind"),
        (f"{BASE}?call=c1&kind=event", {"CallSid": "CA1"}, "kind 'event'"),
        (f"{BASE}?call=c1&kind=status", {"CallSid": "CA1"}, "CallStatus"),
        (f"{BASE}?call=c1&kind=dial", {"CallSid": "CA1"}, "DialCallStatus"),
        (URL, {"CallSid": "CA1", "Confidence": "high"}, "Confidence"),
        (f"{BASE}?call=c1&kind=input&step=\u00b2", {"CallSid": "CA1"}, "step"),  # isdigit()
        (f"{BASE}?call=c1&kind=input&step={'9' * 5000}", {"CallSid": "CA1"}, "step"),
        (f"{BASE}?call=c1&kind=input&step=-1", {"CallSid": "CA1"}, "step"),
        (f"{BASE}?call=c1&kind=input&step=", {"CallSid": "CA1"}, "step"),
    ],
)
def test_malformed_requests(url: str, form: dict[str, str], message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        parse(url, form)


# --- documents ------------------------------------------------------------------------------------


def test_document_wraps_fragments() -> None:
    reply = adapter().document(["<Say>Hi</Say>", "<Hangup/>"])
    assert reply.content_type == "text/xml" and reply.status == 200
    assert reply.body == (b'<?xml version="1.0" encoding="UTF-8"?>'
                          b"<Response><Say>Hi</Say><Hangup/></Response>")  # fmt: skip
    assert adapter().empty().body == b'<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def test_registry_finds_it() -> None:
    assert get_adapter("twilio") is TwilioAdapter
    with pytest.raises(KeyError, match="did you mean 'twilio'"):
        get_adapter("twilo")


# --- REST -----------------------------------------------------------------------------------------

CALLS = f"/2010-04-01/Accounts/{SID}/Calls"


@pytest.fixture
async def api(aiohttp_server: AiohttpServer) -> AsyncIterator[tuple[FakeApi, TwilioAdapter]]:
    fake = FakeApi()
    server = await aiohttp_server(fake.app())
    twilio = adapter(api_base=str(server.make_url("")))
    yield fake, twilio
    await twilio.aclose()


def _check_form(request: Captured, path: str) -> dict[str, list[str]]:
    schema = twilio_form_schema(path)
    fields: dict[str, list[str]] = {}
    for name, value in request.form():
        fields.setdefault(name, []).append(value)
    undeclared = set(fields) - set(schema["properties"])
    assert not undeclared, f"fields not in the spec: {undeclared}"
    assert set(schema.get("required", ())) <= set(fields)
    return fields


async def test_create_call(api: tuple[FakeApi, TwilioAdapter]) -> None:
    fake, twilio = api
    fake.reply("POST", rf"{CALLS}\.json", 201, {"sid": "CA777", "status": "queued"})
    sid = await twilio.create_call(call_id="c1", to="+15550002222", from_="+15550001111",
                                   webhook_base=BASE, timeout_s=25)  # fmt: skip
    assert sid == "CA777"
    (request,) = fake.requests
    assert request.method == "POST" and request.path == f"{CALLS}.json"
    assert request.headers["Authorization"].startswith("Basic ")
    fields = _check_form(request, "/2010-04-01/Accounts/{AccountSid}/Calls.json")
    assert fields == {
        "To": ["+15550002222"], "From": ["+15550001111"],
        "Url": [f"{BASE}?call=c1&kind=answer"], "Method": ["POST"],
        "StatusCallback": [f"{BASE}?call=c1&kind=status"], "StatusCallbackMethod": ["POST"],
        "StatusCallbackEvent": ["initiated", "ringing", "answered", "completed"],
        "Timeout": ["25"],
    }  # fmt: skip


async def test_create_call_error_is_a_provider_error(api: tuple[FakeApi, TwilioAdapter]) -> None:
    fake, twilio = api
    fake.reply("POST", rf"{CALLS}\.json", 400,
               {"code": 21211, "message": f"Invalid 'To' ({TOKEN})", "status": 400})  # fmt: skip
    with pytest.raises(ProviderError) as caught:
        await twilio.create_call(call_id="c1", to="bad", from_="+1555", webhook_base=BASE,
                                 timeout_s=30)  # fmt: skip
    assert (caught.value.provider, caught.value.status) == ("twilio", 400)
    assert "Invalid 'To'" in str(caught.value) and TOKEN not in str(caught.value)


async def test_hangup_and_redirect(api: tuple[FakeApi, TwilioAdapter]) -> None:
    fake, twilio = api
    fake.reply("POST", rf"{CALLS}/CAgone\.json", 404,
               {"code": 20404, "message": "not found", "status": 404})  # fmt: skip
    fake.reply("POST", rf"{CALLS}/CA\w+\.json", 200, {"sid": "CA1", "status": "in-progress"})
    await twilio.hangup("CA1")
    await twilio.hangup("CAgone")  # already ended: fine
    await twilio.redirect("CA1", f"{BASE}?call=c1&kind=live")
    path = "/2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json"
    forms = [_check_form(r, path) for r in fake.requests]
    assert [r.path for r in fake.requests] == [f"{CALLS}/CA1.json", f"{CALLS}/CAgone.json",
                                               f"{CALLS}/CA1.json"]  # fmt: skip
    assert forms == [{"Status": ["completed"]}, {"Status": ["completed"]},
                     {"Url": [f"{BASE}?call=c1&kind=live"], "Method": ["POST"]}]  # fmt: skip


async def test_hangup_error(api: tuple[FakeApi, TwilioAdapter]) -> None:
    fake, twilio = api
    fake.reply("POST", rf"{CALLS}/CA1\.json", 401, {"code": 20003, "message": "Authenticate"})
    with pytest.raises(ProviderError, match="HTTP 401"):
        await twilio.hangup("CA1")


@pytest.mark.parametrize(
    "status, body, expected",
    [
        (200, {"sid": "CA1", "status": "in-progress"}, CallStatus.ACTIVE),
        (200, {"sid": "CA1", "status": "ringing"}, CallStatus.ACTIVE),
        (200, {"sid": "CA1", "status": "completed"}, CallStatus.ENDED),
        (200, {"sid": "CA1", "status": "canceled"}, CallStatus.ENDED),
        (404, {"code": 20404, "message": "not found"}, CallStatus.ENDED),
        (500, {"message": "oops"}, CallStatus.UNKNOWN),
    ],
)
async def test_call_status(
    api: tuple[FakeApi, TwilioAdapter], status: int, body: dict[str, object], expected: CallStatus
) -> None:
    fake, twilio = api
    fake.reply("GET", rf"{CALLS}/CA1\.json", status, body)
    assert await twilio.call_status("CA1") == expected
    assert fake.requests[-1].method == "GET"


async def test_unreachable_api() -> None:
    twilio = adapter(api_base="http://127.0.0.1:9")  # discard port: nothing listens
    try:
        with pytest.raises(ProviderError, match="cannot reach") as caught:
            await twilio.redirect("CA1", BASE)
        assert caught.value.status is None
        assert await twilio.call_status("CA1") == CallStatus.UNKNOWN
    finally:
        await twilio.aclose()


@pytest.mark.parametrize(
    ("region", "host"),
    [(None, "api.twilio.com"), ("us1", "api.twilio.com"), ("ie1", "api.ie1.twilio.com"),
     ("au1", "api.au1.twilio.com")],
)  # fmt: skip
async def test_region_picks_twilios_regional_host(region: str | None, host: str) -> None:
    creds = {**CREDS, "region": region} if region else CREDS
    twilio = TwilioAdapter(settings(creds))
    try:
        url = twilio._client().get_hostname("https://api.twilio.com/2010-04-01/Accounts")
        assert url == f"https://{host}/2010-04-01/Accounts"
    finally:
        await twilio.aclose()


def test_twilio_region_reaches_the_adapter_from_the_config() -> None:
    config = RuntimeConfig(raw={"twilio": {"accountSid": SID, "authToken": TOKEN, "region": "au1"}})
    assert config.credentials("twilio")["region"] == "au1"
    assert "region" not in RuntimeConfig(raw={"twilio": {"accountSid": SID}}).credentials("twilio")
