"""The mock carrier: signatures against the SDKs, its REST API, and each executor end to end.

Each end-to-end test runs a tiny bot (``carrier_support.Bot``) on 127.0.0.1 that answers the
carrier's webhooks with canned documents (Twilio, Plivo) or sends commands back through the
carrier's REST API (Telnyx), while ``drive`` advances the virtual clock whenever the carrier
is idle.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import plivo
import pytest
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey
from plivo.utils import validate_v3_signature
from twilio.request_validator import RequestValidator

from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.sim.carrier import MockCarrier, generate_credentials
from voicecall.runtime.sim.carrier.signing import (
    plivo_v3_headers,
    public_key_b64,
    telnyx_headers,
    twilio_signature,
)
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.urls import encode_state

from .carrier_support import Bot, Handler, Hit, drive, rest

TO, FROM = "+15550001111", "+15550002222"


def script(*items: str | tuple[str, str] | tuple[str, str, float]) -> Script:
    """A caller script from ("say", "yes") pairs, bare words, or (action, value, after_s)."""
    steps = []
    for item in items:
        if isinstance(item, str):
            steps.append(Step(action=item))
        else:
            after = item[2] if len(item) == 3 else 0.0
            steps.append(Step(action=item[0], value=item[1], after_s=after))
    return Script(caller=tuple(steps))


@asynccontextmanager
async def running(
    provider: str, handler: Handler, caller: Script | None = None
) -> AsyncIterator[tuple[MockCarrier, Bot, VirtualClock]]:
    clock = VirtualClock()
    carrier = MockCarrier(provider, clock)
    bot = Bot(handler)
    await carrier.start()
    await bot.start()
    if caller is not None:
        carrier.script = caller
    try:
        yield carrier, bot, clock
    finally:
        await carrier.stop()
        await bot.stop()
    assert carrier.errors == []


def timeline(carrier: MockCarrier, key: str) -> list[tuple[str, str]]:
    call = carrier.find(key)
    assert call is not None
    return [(e.who, e.what) for e in call.timeline if e.what != "status"]


async def settle(carrier: MockCarrier) -> None:
    """Lets everything in flight finish without advancing the clock."""
    for _ in range(200):
        await asyncio.sleep(0)
        if carrier.idle:
            return
    raise AssertionError("the carrier did not settle")


# --- signatures --------------------------------------------------------------------------------


def test_twilio_signature_matches_the_sdk() -> None:
    # Twilio's documented test vector.
    params = {"CallSid": "CA1234567890ABCDE", "Caller": "+12349013030", "Digits": "1234",
              "From": "+12349013030", "To": "+18005551212"}  # fmt: skip
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, params) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
    local = "http://127.0.0.1:8123/voice/webhook?call=c1&kind=input&block=greet&step=1"
    signature = twilio_signature("tok", local, params)
    assert RequestValidator("tok").validate(local, params, signature)
    assert not RequestValidator("other").validate(local, params, signature)


@pytest.mark.parametrize("method", ["POST", "GET"])
@pytest.mark.parametrize("query", ["", "?call=c1&kind=input&block=a&step=2"])
@pytest.mark.parametrize("params", [{}, {"CallUUID": "abc-123", "Digits": "42", "From": "+1"}])
def test_plivo_v3_signature_matches_the_sdk(
    method: str, query: str, params: dict[str, str]
) -> None:
    url = f"http://127.0.0.1:8123/plivo/answer{query}"
    headers = plivo_v3_headers("token", method, url, params, main_auth_token="main")
    nonce = headers["X-Plivo-Signature-V3-Nonce"]
    sdk = validate_v3_signature
    assert sdk(method, url, nonce, "token", headers["X-Plivo-Signature-V3"], dict(params))
    assert sdk(method, url, nonce, "main", headers["X-Plivo-Signature-Ma-V3"], dict(params))
    assert not sdk(method, url, nonce, "other", headers["X-Plivo-Signature-V3"], dict(params))


def test_telnyx_signature_verifies_with_pynacl() -> None:
    key = SigningKey.generate()
    body = b'{"data":{"event_type":"call.answered"}}'
    headers = telnyx_headers(key, body, 1_767_225_600)
    assert headers["telnyx-timestamp"] == "1767225600"
    # Exactly the check of Telnyx's SDK (webhooks.unwrap): Ed25519 over "timestamp|body".
    verify = VerifyKey(base64.b64decode(public_key_b64(key)))
    raw = base64.b64decode(headers["telnyx-signature-ed25519"])
    verify.verify(b"1767225600|" + body, raw)
    with pytest.raises(BadSignatureError):
        verify.verify(b"1767225600|" + body.replace(b"answered", b"hangup"), raw)


def test_generated_credentials_have_the_carriers_formats() -> None:
    twilio = generate_credentials("twilio")[0]
    assert twilio["accountSid"].startswith("AC") and len(twilio["accountSid"]) == 34
    plivo_creds = generate_credentials("plivo")[0]
    assert plivo_creds["authId"].startswith("MA") and len(plivo_creds["authId"]) == 20
    telnyx, key = generate_credentials("telnyx")
    assert key is not None and base64.b64decode(telnyx["publicKey"]) == bytes(key.verify_key)
    assert set(telnyx) == {"apiKey", "connectionId", "publicKey"}


def check_signature(carrier: MockCarrier, hit: Hit) -> None:
    creds = carrier.credentials
    if carrier.provider == "twilio":
        twilio = hit.headers["X-Twilio-Signature"]
        assert RequestValidator(creds["authToken"]).validate(hit.url, hit.form, twilio)
    elif carrier.provider == "plivo":
        nonce, token = hit.headers["X-Plivo-Signature-V3-Nonce"], creds["authToken"]
        assert validate_v3_signature(hit.method, hit.url, nonce, token,
                                     hit.headers["X-Plivo-Signature-V3"], hit.form)  # fmt: skip
    else:
        verify = VerifyKey(base64.b64decode(creds["publicKey"]))
        stamp = hit.headers["Telnyx-Timestamp"]
        ed25519 = base64.b64decode(hit.headers["Telnyx-Signature-Ed25519"])
        verify.verify(f"{stamp}|".encode() + hit.body, ed25519)
        assert int(stamp) >= 1_767_225_600  # the carrier's (virtual) clock


# --- REST ------------------------------------------------------------------------------------

PATHS = {
    "twilio": ("POST", "/2010-04-01/Accounts/{account}/Calls/CAdeadbeef.json"),
    "plivo": ("DELETE", "/v1/Account/{account}/Call/0000-unknown/"),
    "telnyx": ("POST", "/v2/calls/v3:unknown/actions/hangup"),
}


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_rest_auth_and_unknown_calls(provider: str) -> None:
    async with running(provider, lambda hit: "") as (carrier, _bot, _clock):
        account = carrier.credentials.get("accountSid") or carrier.credentials.get("authId", "")
        method, path = PATHS[provider]
        path = path.format(account=account)
        async with rest(carrier) as client, client.request(method, path, json={}) as response:
            assert response.status == 404
            body = await response.json()
        async with (
            rest(carrier) as client,
            client.request(method, path, headers={"Authorization": "Basic eDp5"}) as bad,
        ):
            assert bad.status == 401
            error = await bad.json()
    shapes = {"twilio": {"code", "message", "more_info", "status"}, "plivo": {"api_id", "error"},
              "telnyx": {"errors"}}  # fmt: skip
    assert set(body) == set(error) == shapes[provider]
    assert carrier.requests[-1].headers["Authorization"] == "Basic <redacted>"
    assert carrier.requests[0].path == path


async def test_rest_validates_create_requests() -> None:
    async with running("twilio", lambda hit: "") as (carrier, _bot, _clock):
        path = f"/2010-04-01/Accounts/{carrier.credentials['accountSid']}/Calls.json"
        async with rest(carrier) as client, client.post(path, data={"To": TO}) as response:
            assert response.status == 400
            assert (await response.json())["code"] == 21213
    async with (
        running("telnyx", lambda hit: "") as (carrier, _bot, _clock),
        rest(carrier) as client,
        client.post("/v2/calls", json={"to": TO}) as response,
    ):
        assert response.status == 422
        assert (await response.json())["errors"][0]["detail"].startswith("The 'connection_id'")


# --- Twilio ----------------------------------------------------------------------------------


async def twilio_call(carrier: MockCarrier, bot: Bot, **form: str) -> str:
    fields = [("To", TO), ("From", FROM), ("Url", bot.url("/voice", call="c1", kind="answer")),
              ("StatusCallback", bot.url("/voice", call="c1", kind="status"))]  # fmt: skip
    fields += [
        ("StatusCallbackEvent", e) for e in ("initiated", "ringing", "answered", "completed")
    ]
    fields += list(form.items())
    path = f"/2010-04-01/Accounts/{carrier.credentials['accountSid']}/Calls.json"
    async with rest(carrier) as client, client.post(path, data=fields) as response:
        assert response.status == 201
        resource = await response.json()
    assert resource["status"] == "queued" and resource["direction"] == "outbound-api"
    return str(resource["sid"])


def by_kind(docs: dict[str, str]) -> Handler:
    """Answers each webhook with the document for its ``kind`` (nothing for the others)."""
    return lambda hit: docs.get(hit.kind, "")


def twiml(*verbs: str) -> str:
    return "<Response>" + "".join(verbs) + "</Response>"


async def test_twilio_gather_digits_end_to_end() -> None:
    docs = {
        "answer": twiml("<Say>Hello</Say>", '<Gather action="/voice?call=c1&amp;kind=input" '
                        'numDigits="2"><Say>Enter the code</Say></Gather>',
                        "<Redirect>/voice?call=c1&amp;kind=none</Redirect>"),
        "input": twiml("<Say>Thanks</Say>", '<Pause length="2"/>', "<Hangup/>"),
    }  # fmt: skip
    caller = script("answer", ("press", "42#", 3.0))
    async with running("twilio", by_kind(docs), caller) as (
        carrier,
        bot,
        clock,
    ):
        hooked: list[tuple[str, str, str, Any]] = []
        carrier.on_request = lambda *request: hooked.append(request)
        sid = await twilio_call(carrier, bot)
        call = await drive(clock, carrier, carrier.wait_ended("c1"))
    assert call.provider_call_id == sid and call.end_reason == "hangup-bot"
    assert timeline(carrier, sid) == [
        ("caller", "answer"), ("bot", "say"), ("bot", "gather"), ("bot", "say"),
        ("caller", "press"), ("bot", "say"), ("bot", "pause"), ("bot", "hangup"),
    ]  # fmt: skip
    assert call.said() == ["Hello", "Enter the code", "Thanks"]
    assert call.timeline[-1].t == 5.0  # 3 s before pressing, then the 2 s pause
    statuses = bot.of("status")
    assert [h.form["CallStatus"] for h in statuses] == ["initiated", "ringing", "in-progress",
                                                        "completed"]  # fmt: skip
    assert [h.form["SequenceNumber"] for h in statuses] == ["0", "1", "2", "3"]
    assert statuses[-1].form["CallDuration"] == "5"
    answer = bot.of("answer")[0].form
    assert answer["Direction"] == "outbound-api" and answer["CallStatus"] == "in-progress"
    assert answer["AccountSid"] == carrier.credentials["accountSid"] and answer["To"] == TO
    assert bot.of("input")[0].form["Digits"] == "42"
    assert not bot.of("none")
    for hit in bot.hits:
        check_signature(carrier, hit)
    assert hooked[0][:3] == ("twilio", "POST", hooked[0][2])
    assert hooked[0][3]["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]


async def test_twilio_speech_and_empty_results() -> None:
    gather = ('<Gather input="speech" actionOnEmptyResult="true" timeout="4" '
              'action="/voice?call=c1&amp;kind=input"><Say>Talk to me</Say></Gather>')  # fmt: skip

    def reply(hit: Hit) -> str:
        if hit.kind == "answer" or (hit.kind == "input" and "SpeechResult" in hit.form):
            return twiml(gather)
        return twiml("<Say>Bye</Say>") if hit.kind == "input" else ""

    caller = script("answer", ("say", "yes please"), "silence")
    async with running("twilio", reply, caller) as (carrier, bot, clock):
        await twilio_call(carrier, bot)
        call = await drive(clock, carrier, carrier.wait_ended("c1"))
    first, second = bot.of("input")
    assert first.form["SpeechResult"] == "yes please" and first.form["Confidence"] == "0.92"
    assert "SpeechResult" not in second.form and "Digits" not in second.form
    assert call.timeline[-1].t == 4.0  # the empty result came after the gather's timeout
    assert call.end_reason == "hangup-bot"  # the end of the document hangs up
    assert call.entries("carrier", "end-of-document")


async def test_twilio_silence_falls_through_and_the_caller_hangs_up() -> None:
    docs = {
        "answer": twiml('<Gather action="/voice?call=c1&amp;kind=input"><Say>Press</Say></Gather>',
                        '<Redirect method="POST">/voice?call=c1&amp;kind=retry</Redirect>'),
        "retry": twiml('<Gather action="/voice?call=c1&amp;kind=input"><Say>Again</Say></Gather>'),
    }  # fmt: skip
    caller = script("answer", "silence", ("hangup", "", 1.0))
    async with running("twilio", by_kind(docs), caller) as (
        carrier,
        bot,
        clock,
    ):
        await twilio_call(carrier, bot)
        call = await drive(clock, carrier, carrier.wait_ended("c1"))
    assert [h.kind for h in bot.hits if h.kind != "status"] == ["answer", "retry"]
    assert call.end_reason == "hangup-user" and call.state == "completed"
    assert call.timeline[-1].t == 6.0  # 5 s default timeout, then 1 s before hanging up
    assert bot.of("status")[-1].form["CallStatus"] == "completed"


@pytest.mark.parametrize(("opener", "status", "seconds"), [("no-answer", "no-answer", 20.0),
                                                           ("busy", "busy", 0.0)])  # fmt: skip
async def test_twilio_calls_not_answered(opener: str, status: str, seconds: float) -> None:
    async with running("twilio", lambda hit: "", script(opener)) as (carrier, bot, clock):
        await twilio_call(carrier, bot, Timeout="20")
        call = await drive(clock, carrier, carrier.wait_ended("c1"))
    assert call.state == status and call.end_reason == opener and not bot.of("answer")
    assert bot.of("status")[-1].form["CallStatus"] == status
    assert call.timeline[-1].t == seconds


@pytest.mark.parametrize(
    ("steps", "dial_status", "end_reason"),
    [
        ((("dial", "busy"),), "busy", "hangup-bot"),
        ((("dial", "no-answer"),), "no-answer", "hangup-bot"),
        ((("dial", "answered"), ("hangup", "", 30.0)), "completed", "completed"),
        ((("say", "unrelated", 12.0),), "completed", "completed"),  # no dial step: answered
    ],
)
async def test_twilio_dial_outcomes(
    steps: tuple[tuple[str, str] | tuple[str, str, float], ...], dial_status: str, end_reason: str
) -> None:
    docs = {
        "answer": twiml("<Say>Connecting</Say>", '<Dial action="/voice?call=c1&amp;kind=dial" '
                        'timeout="15"><Number>+15550003333</Number></Dial>'),
        "dial": twiml("<Say>Sorry</Say>", "<Hangup/>"),
    }  # fmt: skip
    async with running("twilio", by_kind(docs), script("answer", *steps)) as (
        carrier, bot, clock,
    ):  # fmt: skip
        await twilio_call(carrier, bot)
        call = await drive(clock, carrier, carrier.wait_ended("c1"))
    dial = bot.of("dial")[0].form
    assert dial["DialCallStatus"] == dial_status and dial["DialCallSid"].startswith("CA")
    assert call.end_reason == end_reason
    if dial_status == "completed":
        assert dial["CallStatus"] == "completed" and call.entries("carrier", "bridged")
        assert dial["DialCallDuration"] == str(int(call.timeline[-1].t))
    else:
        assert call.said() == ["Connecting", "Sorry"]
        assert call.timeline[-1].t == (15.0 if dial_status == "no-answer" else 0.0)


async def test_twilio_rest_update_abandons_the_document() -> None:
    docs = {
        "answer": twiml("<Say>Please hold</Say>", '<Pause length="60"/>', "<Say>Never</Say>"),
        "live": twiml("<Say>The agent says hi</Say>", '<Pause length="60"/>'),
    }
    async with running("twilio", by_kind(docs), script("answer")) as (
        carrier, bot, clock,
    ):  # fmt: skip
        sid = await twilio_call(carrier, bot)
        await settle(carrier)
        assert carrier.idle and clock.next_due() == clock.now() + 60  # in the pause
        path = f"/2010-04-01/Accounts/{carrier.credentials['accountSid']}/Calls/{sid}.json"
        async with rest(carrier) as client:
            url = bot.url("/voice", call="c1", kind="live")
            async with client.post(path, data={"Url": url, "Method": "POST"}) as response:
                assert response.status == 200
            await settle(carrier)
            async with client.post(path, data={"Status": "completed"}) as response:
                assert (await response.json())["status"] == "completed"
            call = await drive(clock, carrier, carrier.wait_ended(sid))
            async with client.post(path, data={"Url": url}) as response:
                assert response.status == 400 and (await response.json())["code"] == 21220
    assert call.said() == ["Please hold", "The agent says hi"]
    assert call.end_reason == "hangup-bot" and call.timeline[-1].t == 0.0
    assert bot.of("live")[0].form["CallStatus"] == "in-progress"


@pytest.mark.parametrize("reply", [(500, "oops"), (200, "<Response><Say>unclosed</Response>")])
async def test_twilio_webhook_failure_ends_the_call(reply: tuple[int, str]) -> None:
    handler: Handler = lambda hit: reply if hit.kind == "answer" else ""  # noqa: E731
    async with running("twilio", handler, script("answer")) as (carrier, bot, clock):
        await twilio_call(carrier, bot)
        call = await drive(clock, carrier, carrier.wait_ended("c1"))
    error = call.entries("carrier", "error")[0].detail
    assert call.end_reason == "error" and call.state == "completed"
    assert error["failure"] == ("webhook" if reply[0] == 500 else "document")
    assert bot.of("status")[-1].form["CallStatus"] == "completed"


async def test_twilio_inbound_call() -> None:
    def reply(hit: Hit) -> str:
        return twiml("<Say>Welcome</Say>") if hit.path == "/incoming" else ""

    async with running("twilio", reply, script("answer")) as (carrier, bot, clock):
        call = await carrier.place_inbound(FROM, TO, bot.url("/incoming"),
                                           status_callback=bot.url("/status"))  # fmt: skip
        await drive(clock, carrier, carrier.wait_ended(call.provider_call_id))
    first = bot.hits[0]
    assert first.query == {} and first.form["Direction"] == "inbound"
    assert first.form["CallStatus"] == "ringing" and first.form["From"] == FROM
    assert call.said() == ["Welcome"] and call.end_reason == "hangup-bot"
    assert bot.hits[-1].path == "/status" and bot.hits[-1].form["CallStatus"] == "completed"


async def test_twilio_inline_twiml_and_a_voicemail_opener() -> None:
    gather = '<Gather action="/voice?call=c1&amp;kind=input" timeout="3"><Say>Hi</Say></Gather>'
    async with running("twilio", lambda hit: "", script("voicemail", ("say", "unheard"))) as (
        carrier, bot, clock,
    ):  # fmt: skip
        sid = await twilio_call(carrier, bot, Twiml=twiml(gather, '<Pause length="x"/>'),
                                MachineDetection="Enable")  # fmt: skip
        call = await drive(clock, carrier, carrier.wait_ended(sid))
    # The machine stays silent: the gather times out, falls through to the bad Pause.
    assert [e.what for e in call.entries("caller")] == ["voicemail", "silence"]
    error = call.entries("carrier", "error")[0].detail
    assert call.end_reason == "error" and error["error"].startswith("<Pause>")
    assert bot.of("status")[-1].form["AnsweredBy"] == "machine_start"
    assert not bot.of("answer")  # the document came with the create request


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiohttp BasicAuth, in twilio's client
async def test_twilio_sdk_talks_to_the_carrier() -> None:
    from twilio.http.async_http_client import AsyncTwilioHttpClient
    from twilio.rest import Client

    async with running("twilio", lambda hit: twiml("<Pause length='5'/>")) as (carrier, bot, _):
        creds = carrier.credentials
        http = AsyncTwilioHttpClient()
        client = Client(creds["accountSid"], creds["authToken"], http_client=http)
        client.api.base_url = carrier.api_base
        try:
            created = await client.calls.create_async(
                to=TO, from_=FROM, url=bot.url("/voice", call="c2", kind="answer"),
                status_callback=bot.url("/voice", call="c2", kind="status"),
                status_callback_event=["initiated", "completed"], timeout=20,
            )  # fmt: skip
            await settle(carrier)
            updated = await client.calls(created.sid).update_async(status="completed")
        finally:
            await http.close()
        call = await carrier.wait_ended("c2")
    assert created.status == "queued" and updated.status == "completed"
    assert call.end_reason == "hangup-bot" and call.call_id == "c2"


# --- Plivo -----------------------------------------------------------------------------------


async def plivo_call(carrier: MockCarrier, bot: Bot, **extra: str) -> str:
    body = {"from": FROM, "to": TO, "answer_url": bot.url("/plivo", call="p1", kind="answer"),
            "answer_method": "POST", "hangup_url": bot.url("/plivo", call="p1", kind="hangup"),
            "ring_url": bot.url("/plivo", call="p1", kind="ring"), **extra}  # fmt: skip
    path = f"/v1/Account/{carrier.credentials['authId']}/Call/"
    async with rest(carrier) as client, client.post(path, json=body) as response:
        assert response.status == 201
        reply = await response.json()
    assert reply["message"] == "call fired" and set(reply) == {"api_id", "message", "request_uuid"}
    return str(reply["request_uuid"])


def plivo_xml(*elements: str) -> str:
    return "<Response>" + "".join(elements) + "</Response>"


async def test_plivo_getinput_speech_end_to_end() -> None:
    docs = {
        "answer": plivo_xml("<Speak>Hi</Speak>", '<GetInput action="/plivo?call=p1&amp;kind='
                            'input" inputType="speech dtmf" executionTimeout="6" redirect="true">'
                            "<Speak>Say yes</Speak></GetInput>",
                            "<Redirect>/plivo?call=p1&amp;kind=none</Redirect>"),
        "input": plivo_xml("<Speak>Thanks</Speak>", "<Hangup/>"),
    }  # fmt: skip
    caller = script("answer", ("say", "yes"))
    async with running("plivo", by_kind(docs), caller) as (
        carrier,
        bot,
        clock,
    ):
        request_uuid = await plivo_call(carrier, bot)
        call = await drive(clock, carrier, carrier.wait_ended(request_uuid))
    assert call.call_id == "p1" and call.request_uuid == request_uuid
    ring, answer, given, hangup = bot.hits
    assert ring.form["CallStatus"] == "ringing" and ring.form["Event"] == "Ring"
    assert answer.form["CallUUID"] == call.provider_call_id != request_uuid
    assert answer.form["RequestUUID"] == request_uuid and answer.form["Event"] == "StartApp"
    assert answer.form["Direction"] == "outbound" and answer.form["CallStatus"] == "in-progress"
    assert given.form["InputType"] == "speech" and given.form["Speech"] == "yes"
    assert given.form["SpeechConfidenceScore"] == "0.92" and given.form["Digits"] == ""
    assert hangup.form["CallStatus"] == "completed" and hangup.form["HangupSource"] == "Answer XML"
    assert hangup.form["HangupCause"] == "NORMAL_CLEARING" and hangup.form["Event"] == "Hangup"
    for hit in bot.hits:
        check_signature(carrier, hit)
        assert validate_v3_signature(hit.method, hit.url, hit.headers["X-Plivo-Signature-V3-Nonce"],
                                     carrier.credentials["authToken"],
                                     hit.headers["X-Plivo-Signature-Ma-V3"], hit.form)  # fmt: skip
    assert call.said() == ["Hi", "Say yes", "Thanks"]


async def test_plivo_no_input_goes_on_with_the_next_element() -> None:
    get_input = ('<GetInput action="/plivo?call=p1&amp;kind=input" inputType="dtmf" '
                 'executionTimeout="5"><Speak>Your code?</Speak></GetInput>')  # fmt: skip
    docs = {
        "answer": plivo_xml(get_input, "<Redirect>/plivo?call=p1&amp;kind=retry</Redirect>"),
        "retry": plivo_xml(get_input),
        "input": plivo_xml("<Speak>Got it</Speak>"),
    }
    caller = script("answer", "silence", ("press", "42#"))
    async with running("plivo", by_kind(docs), caller) as (
        carrier,
        bot,
        clock,
    ):
        request_uuid = await plivo_call(carrier, bot)
        call = await drive(clock, carrier, carrier.wait_ended(request_uuid))
    assert [h.kind for h in bot.hits] == ["ring", "answer", "retry", "input", "hangup"]
    assert bot.of("retry")[0].form["Event"] == "Redirect"
    given = bot.of("input")[0].form
    assert given["InputType"] == "dtmf" and given["Digits"] == "42"
    hangup = bot.of("hangup")[0].form
    assert hangup["HangupCauseName"] == "End Of XML Instructions"
    assert hangup["HangupSource"] == "Plivo" and hangup["Duration"] == "5"
    assert call.timeline[-1].t == 5.0


async def test_plivo_dial_transfer_and_hangup_through_rest() -> None:
    docs = {
        "answer": plivo_xml('<Dial action="/plivo?call=p1&amp;kind=dial" timeout="20">'
                            "<Number>+15550003333</Number></Dial>"),
        "dial": plivo_xml("<Speak>Nobody there</Speak>", '<Wait length="30"/>'),
        "live": plivo_xml("<Speak>Transferred</Speak>", '<Wait length="30"/>'),
    }  # fmt: skip
    caller = script("answer", ("dial", "no-answer"))
    async with running("plivo", by_kind(docs), caller) as (
        carrier,
        bot,
        clock,
    ):
        request_uuid = await plivo_call(carrier, bot)
        await drive(clock, carrier, _until(lambda: bool(bot.of("dial"))))
        await settle(carrier)
        call = carrier.find(request_uuid)
        assert call is not None
        path = f"/v1/Account/{carrier.credentials['authId']}/Call/{call.provider_call_id}/"
        async with rest(carrier) as client:
            body = {"legs": "aleg", "aleg_url": bot.url("/plivo", call="p1", kind="live")}
            async with client.post(path, json=body) as response:
                assert response.status == 202
            await settle(carrier)
            async with client.get(path) as response:
                assert (await response.json())["call_status"] == "in-progress"
            async with client.delete(path) as response:
                assert response.status == 204
            await carrier.wait_ended(request_uuid)
            async with client.delete(path) as response:
                assert response.status == 404
    dial = bot.of("dial")[0].form
    assert dial["DialStatus"] == "no-answer" and dial["DialBLegUUID"] == ""
    assert dial["DialALegUUID"] == call.provider_call_id
    assert call.said() == ["Nobody there", "Transferred"]
    assert bot.of("hangup")[0].form["HangupSource"] == "API Request"
    assert call.timeline[-1].t == 20.0  # the dial rang for its timeout


async def test_plivo_inbound_call() -> None:
    def reply(hit: Hit) -> str:
        return plivo_xml("<Speak>Welcome</Speak>", "<Hangup/>") if hit.path == "/answer" else ""

    async with running("plivo", reply) as (carrier, bot, clock):
        call = await carrier.place_inbound(FROM, TO, bot.url("/answer"),
                                           hangup_url=bot.url("/hangup"))  # fmt: skip
        await drive(clock, carrier, carrier.wait_ended(call.provider_call_id))
    answer, hangup = bot.hits
    assert answer.form["Direction"] == "inbound" and answer.form["CallStatus"] == "ringing"
    assert answer.form["CallUUID"] == call.provider_call_id and "RequestUUID" not in answer.form
    assert hangup.form["HangupSource"] == "Answer XML" and call.said() == ["Welcome"]


async def test_plivo_sdk_talks_to_the_carrier(monkeypatch: pytest.MonkeyPatch) -> None:
    async with running("plivo", lambda hit: plivo_xml('<Wait length="9"/>')) as (carrier, bot, _):
        base = carrier.api_base + "/v1/Account"
        for name in ("PLIVO_API_BASE_URI", "API_VOICE_BASE_URI", "API_VOICE_BASE_URI_FALLBACK_1",
                     "API_VOICE_BASE_URI_FALLBACK_2"):  # fmt: skip
            monkeypatch.setattr(plivo.rest.client, name, base)
        creds = carrier.credentials
        client = plivo.RestClient(creds["authId"], creds["authToken"])
        created = await asyncio.to_thread(
            client.calls.create, from_=FROM, to_=TO,
            answer_url=bot.url("/plivo", call="p2", kind="answer"), answer_method="POST",
        )  # fmt: skip
        await settle(carrier)
        call = carrier.find(created.request_uuid)
        assert call is not None and call.answered
        await asyncio.to_thread(client.calls.delete, call.provider_call_id)
        await carrier.wait_ended("p2")
    assert call.end_reason == "hangup-bot" and carrier.requests[0].body["answer_method"] == "POST"


# --- Telnyx ----------------------------------------------------------------------------------


Reactions = dict[str, list[tuple[str, dict[str, Any]]]]


class TelnyxBot:
    """Reacts to Telnyx events by sending commands through the carrier's REST API (before
    answering the webhook, so that the clock never moves while a command is on its way)."""

    def __init__(self, reactions: Reactions):
        self.reactions = reactions
        self.carrier: MockCarrier | None = None

    async def __call__(self, hit: Hit) -> str:
        assert self.carrier is not None
        call_control_id = hit.payload["call_control_id"]
        async with rest(self.carrier) as client:
            for action, body in self.reactions.get(hit.event, []):
                path = f"/v2/calls/{call_control_id}/actions/{action}"
                async with client.post(path, json=body) as response:
                    assert response.status == 200, await response.text()
                    assert await response.json() == {"data": {"result": "ok"}}
        return ""


@asynccontextmanager
async def telnyx(
    reactions: Reactions, caller: Script | None = None
) -> AsyncIterator[tuple[MockCarrier, Bot, VirtualClock]]:
    handler = TelnyxBot(reactions)
    async with running("telnyx", handler, caller) as (carrier, bot, clock):
        handler.carrier = carrier
        carrier.webhook_url = bot.url("/telnyx")
        yield carrier, bot, clock


async def telnyx_dial(carrier: MockCarrier, **extra: Any) -> dict[str, Any]:
    body = {"connection_id": carrier.credentials["connectionId"], "to": TO, "from": FROM,
            "client_state": encode_state("t1"), **extra}  # fmt: skip
    async with rest(carrier) as client, client.post("/v2/calls", json=body) as response:
        assert response.status == 200
        data: dict[str, Any] = (await response.json())["data"]
    assert data["call_control_id"].startswith("v3:") and data["is_alive"] is True
    return data


def events(bot: Bot) -> list[str]:
    return [hit.event for hit in bot.hits]


async def test_telnyx_speak_and_gather_with_retries() -> None:
    gather = {"payload": "Press 1 or 2", "voice": "female", "valid_digits": "12",
              "maximum_digits": 1, "maximum_tries": 2, "invalid_payload": "Try again",
              "client_state": "Z2F0aGVy"}  # fmt: skip
    reactions: Reactions = {
        "call.answered": [("speak", {"payload": "Hello", "voice": "female"}),
                          ("gather_using_speak", gather)],
        "call.gather.ended": [("hangup", {"client_state": "ZW5k"})],
    }  # fmt: skip
    caller = script("answer", ("press", "7"), ("press", "2", 2.0))
    async with telnyx(reactions, caller) as (carrier, bot, clock):
        data = await telnyx_dial(carrier)
        call = await drive(clock, carrier, carrier.wait_ended("t1"))
    assert call.provider_call_id == data["call_control_id"]
    assert events(bot) == ["call.initiated", "call.answered", "call.speak.started",
                           "call.speak.ended", "call.gather.ended", "call.hangup"]  # fmt: skip
    initiated, answered, *_, ended, hangup = (hit.payload for hit in bot.hits)
    assert initiated["direction"] == "outgoing" and initiated["state"] == "bridging"
    assert initiated["client_state"] == answered["client_state"] == encode_state("t1")
    assert ended["digits"] == "2" and ended["status"] == "valid"
    assert ended["client_state"] == "Z2F0aGVy"
    assert hangup["hangup_cause"] == "normal_clearing" and hangup["hangup_source"] == "caller"
    assert hangup["client_state"] == "ZW5k"
    assert len({hit.json()["data"]["id"] for hit in bot.hits}) == len(bot.hits)
    assert call.said() == ["Hello", "Press 1 or 2", "Try again"]
    assert [e.detail.get("digits") for e in call.entries("caller", "press")] == ["7", "2"]
    assert call.timeline[-1].t == 2.0
    for hit in bot.hits:
        check_signature(carrier, hit)
        assert int(hit.headers["Telnyx-Timestamp"]) >= 1_767_225_600


async def test_telnyx_gather_timeout_then_transcription() -> None:
    gather = {"payload": "Press 1", "voice": "female", "maximum_tries": 1, "timeout_millis": 6000}
    reactions: Reactions = {
        "call.answered": [("transcription_start", {"transcription_engine": "Google"}),
                          ("gather_using_speak", gather)],
        "call.gather.ended": [("speak", {"payload": "Say it then", "voice": "female"})],
        "call.transcription": [("transcription_stop", {}), ("hangup", {})],
    }  # fmt: skip
    caller = script("answer", "silence", ("say", "yes please", 1.0))
    async with telnyx(reactions, caller) as (carrier, bot, clock):
        await telnyx_dial(carrier)
        call = await drive(clock, carrier, carrier.wait_ended("t1"))
    assert events(bot)[-4:] == ["call.speak.started", "call.speak.ended", "call.transcription",
                                "call.hangup"]  # fmt: skip
    ended = bot.of("call.gather.ended")[0].payload
    assert ended["status"] == "timeout" and ended["digits"] == ""
    data = bot.of("call.transcription")[0].payload["transcription_data"]
    assert data == {"transcript": "yes please", "is_final": True, "confidence": 0.92,
                    "transcription_track": "inbound"}  # fmt: skip
    # 6 s gather timeout, 0.5 s reaction after the prompt, 1 s before speaking.
    assert call.entries("caller", "say")[0].t == 7.5


async def test_telnyx_inbound_answer_then_the_caller_hangs_up() -> None:
    reactions: Reactions = {
        "call.initiated": [("answer", {"client_state": encode_state("t9")})],
        "call.answered": [("speak", {"payload": "How can I help?", "voice": "female"}),
                          ("gather_using_speak", {"payload": "Press a key", "voice": "female"})],
    }  # fmt: skip
    async with telnyx(reactions) as (carrier, bot, clock):
        call = await carrier.place_inbound(FROM, TO, bot.url("/telnyx"), script=script("hangup"))
        await drive(clock, carrier, carrier.wait_ended("t9"))
    initiated = bot.hits[0].payload
    assert initiated["direction"] == "incoming" and initiated["state"] == "parked"
    assert initiated["client_state"] is None and initiated["from"] == FROM
    hangup = bot.of("call.hangup")[0].payload
    assert hangup["hangup_source"] == "caller" and hangup["client_state"] == encode_state("t9")
    assert call.end_reason == "hangup-user" and call.call_id == "t9"


@pytest.mark.parametrize("report", [False, True])
async def test_telnyx_transfer(report: bool) -> None:
    reactions: Reactions = {
        "call.answered": [("transfer", {"to": "+15550003333", "timeout_secs": 10})]
    }
    caller = script("answer", ("dial", "busy"))
    async with telnyx(reactions, caller) as (carrier, bot, clock):
        carrier.report_failed_transfer = report
        data = await telnyx_dial(carrier)
        await drive(clock, carrier, _until(lambda: carrier.idle and bool(bot.hits)))
        await settle(carrier)
        call = carrier.find("t1")
        assert call is not None and not call.ended  # the call stays up after a failed transfer
        path = f"/v2/calls/{data['call_control_id']}/actions/hangup"
        async with rest(carrier) as client, client.post(path, json={}) as response:
            assert response.status == 200
        await carrier.wait_ended("t1")
        async with rest(carrier) as client, client.post(path, json={}) as response:
            assert (
                response.status == 422 and (await response.json())["errors"][0]["code"] == "90018"
            )
    failed = [h.payload for h in bot.of("call.hangup")[:-1]]
    if report:
        assert failed[0]["hangup_cause"] == "user_busy"
        assert failed[0]["call_control_id"] != data["call_control_id"]
    else:
        assert failed == []


async def test_telnyx_answered_transfer_bridges_until_the_callers_next_step() -> None:
    reactions: Reactions = {
        "call.answered": [("transfer", {"to": "+15550003333", "client_state": "eA=="})]
    }
    caller = script("answer", ("dial", "answered"), ("hangup", "", 42.0))
    async with telnyx(reactions, caller) as (carrier, bot, clock):
        await telnyx_dial(carrier)
        call = await drive(clock, carrier, carrier.wait_ended("t1"))
    assert events(bot) == ["call.initiated", "call.answered", "call.bridged", "call.hangup"]
    assert bot.of("call.bridged")[0].payload["client_state"] == "eA=="
    assert call.end_reason == "completed" and call.timeline[-1].t == 42.0
    assert bot.of("call.hangup")[0].payload["hangup_source"] == "callee"


async def test_telnyx_no_answer() -> None:
    async with telnyx({}, script("no-answer")) as (carrier, bot, clock):
        await telnyx_dial(carrier, timeout_secs=10)
        call = await drive(clock, carrier, carrier.wait_ended("t1"))
    assert events(bot) == ["call.initiated", "call.hangup"]
    assert bot.hits[1].payload["hangup_cause"] == "timeout" and call.timeline[-1].t == 10.0


# --- fault injection and idleness --------------------------------------------------------------


async def test_duplicates_are_identical_copies() -> None:
    async with telnyx({"call.answered": [("hangup", {})]}) as (carrier, bot, clock):
        carrier.duplicate_next()
        await telnyx_dial(carrier)
        await drive(clock, carrier, carrier.wait_ended("t1"))
    assert events(bot)[:2] == ["call.initiated", "call.initiated"]
    assert bot.hits[0].body == bot.hits[1].body
    assert bot.hits[0].headers["Telnyx-Signature-Ed25519"] == bot.hits[1].headers[
        "Telnyx-Signature-Ed25519"]  # fmt: skip
    assert [d.duplicate for d in carrier.deliveries[:2]] == [False, True]


async def test_reordered_telnyx_events() -> None:
    reactions: Reactions = {"call.answered": [("speak", {"payload": "Hi", "voice": "female"})],
                 "call.speak.ended": [("hangup", {})]}  # fmt: skip
    async with telnyx(reactions) as (carrier, bot, clock):
        carrier.reorder_telnyx = True
        await telnyx_dial(carrier)
        await drive(clock, carrier, carrier.wait_ended("t1"))
    sent = events(bot)
    # Each pair swaps: call.answered overtakes call.initiated, speak.ended overtakes started.
    assert sent.index("call.answered") < sent.index("call.initiated")
    assert sent.index("call.speak.ended") < sent.index("call.speak.started")
    assert sorted(sent) == sorted(["call.initiated", "call.answered", "call.speak.started",
                                   "call.speak.ended", "call.hangup"])  # fmt: skip


async def test_idle_while_the_call_waits_on_the_clock() -> None:
    async with running("twilio", lambda hit: twiml('<Pause length="30"/>'), script("answer")) as (
        carrier, bot, clock,
    ):  # fmt: skip
        sid = await twilio_call(carrier, bot)
        assert carrier.work.busy > 0  # the call has started ringing
        await settle(carrier)
        assert carrier.idle and carrier.calls[sid].state == "in-progress"
        clock.advance(30)
        assert carrier.work.busy == 1  # the woken call counts as busy at once
        call = await drive(clock, carrier, carrier.wait_ended(sid))
    assert call.timeline[-1].t == 30.0 and json.loads(json.dumps(call.timeline[-1].detail))


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0)
