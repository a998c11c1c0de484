"""The carriers' REST APIs, the subset the runtime's adapters use, served by aiohttp.

Every request is recorded (authorization values removed) and passed to ``on_request``; then
authentication is checked (HTTP Basic with the account id and token for Twilio and Plivo, a
Bearer API key for Telnyx: 401 otherwise). Replies have the carriers' JSON shapes and status
codes, errors included (Twilio ``{code, message, more_info, status}``, Plivo
``{api_id, error}``, Telnyx ``{errors: [{code, title, detail}]}``).

Twilio: https://www.twilio.com/docs/voice/api/call-resource — Plivo:
https://www.plivo.com/docs/voice/api/call — Telnyx: https://developers.telnyx.com/api/call-control
"""

from __future__ import annotations

import base64
import json
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .documents import Goto
from .model import MockCall
from .plivoxml import PlivoSession, plivo_time
from .telnyx import Command, TelnyxSession, new_call_control_id
from .twiml import API_VERSION, TwilioSession, format_datetime_at, new_sid

if TYPE_CHECKING:
    from .carrier import MockCarrier

CARRIER: web.AppKey[MockCarrier] = web.AppKey("carrier")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

TWILIO = f"/{API_VERSION}/Accounts/{{account}}"
PLIVO = "/v1/Account/{account}"
# Telnyx actions acknowledged without a behaviour of their own (recorded on the timeline).
TELNYX_OTHER_ACTIONS = frozenset({
    "playback_stop", "speak_stop", "streaming_start", "streaming_stop", "record_start",
    "record_stop", "record_pause", "record_resume", "client_state_update", "bridge",
    "fork_start", "fork_stop", "suppression_start", "suppression_stop",
})  # fmt: skip


def create_app(carrier: MockCarrier) -> web.Application:
    """The REST app of one carrier."""
    app = web.Application(middlewares=[_middleware])
    app[CARRIER] = carrier
    ROUTES[carrier.provider](app.router)
    return app


# --- recording and authentication ------------------------------------------------------------


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    carrier = request.app[CARRIER]
    with carrier.work.holding():
        body = await request_body(request)
        carrier.record_request(request.method, request.path, dict(request.query),
                               _redacted(request), body)  # fmt: skip
        if not _authorized(carrier, request):
            return ERRORS[carrier.provider](401, "authentication failed")
        return await handler(request)


async def request_body(request: web.Request) -> Any:
    """The parsed form or JSON body (aiohttp caches the read, so handlers read it again)."""
    if not request.body_exists:
        return {}
    if request.content_type == "application/json":
        return json.loads(await request.read() or b"{}")
    form = await request.post()
    parsed: dict[str, Any] = {}
    for key in form:
        values = [str(v) for v in form.getall(key)]
        parsed[key] = values if len(values) > 1 else values[0]
    return parsed


def _redacted(request: web.Request) -> dict[str, str]:
    headers = dict(request.headers)
    if "Authorization" in headers:
        headers["Authorization"] = headers["Authorization"].split(" ")[0] + " <redacted>"
    return headers


def _authorized(carrier: MockCarrier, request: web.Request) -> bool:
    header = request.headers.get("Authorization", "")
    creds = carrier.credentials
    if carrier.provider == "telnyx":
        return header == f"Bearer {creds['apiKey']}"
    user = creds["accountSid" if carrier.provider == "twilio" else "authId"]
    expected = base64.b64encode(f"{user}:{creds['authToken']}".encode()).decode()
    return header == f"Basic {expected}"


def _twilio_error(status: int, message: str, code: int | None = None) -> web.Response:
    code = code or {401: 20003, 404: 20404}.get(status, 21200)
    return web.json_response({"code": code, "message": message, "status": status,
                              "more_info": f"https://www.twilio.com/docs/errors/{code}"},
                             status=status)  # fmt: skip


def _plivo_error(status: int, message: str) -> web.Response:
    return web.json_response({"api_id": str(uuid.uuid4()), "error": message}, status=status)


def _telnyx_error(status: int, message: str, code: str | None = None) -> web.Response:
    code = code or {401: "10009", 404: "10005", 422: "10015"}.get(status, "10000")
    title = {401: "Authentication failed", 404: "Resource not found"}.get(status, "Invalid request")
    return web.json_response({"errors": [{"code": code, "title": title, "detail": message}]},
                             status=status)  # fmt: skip


ERRORS: dict[str, Callable[[int, str], web.Response]] = {
    "twilio": _twilio_error, "plivo": _plivo_error, "telnyx": _telnyx_error,
}  # fmt: skip


def _account_ok(request: web.Request) -> bool:
    carrier = request.app[CARRIER]
    key = "accountSid" if carrier.provider == "twilio" else "authId"
    return request.match_info["account"] == carrier.credentials[key]


def _session(request: web.Request, name: str = "call") -> tuple[MockCall, Any] | None:
    carrier = request.app[CARRIER]
    call = carrier.calls.get(request.match_info[name])
    if call is None or not _account_ok(request):
        return None
    return call, carrier.sessions[call.provider_call_id]


# --- Twilio ----------------------------------------------------------------------------------


def _twilio_routes(router: web.UrlDispatcher) -> None:
    router.add_post(f"{TWILIO}/Calls.json", twilio_create)
    router.add_post(f"{TWILIO}/Calls/{{call}}.json", twilio_update)
    router.add_get(f"{TWILIO}/Calls/{{call}}.json", twilio_fetch)


def twilio_resource(carrier: MockCarrier, call: MockCall) -> dict[str, Any]:
    account = carrier.credentials["accountSid"]
    duration = None
    if call.answered_at is not None and call.ended_at is not None:
        duration = str(int(call.ended_at - call.answered_at))
    return {
        "sid": call.provider_call_id, "account_sid": account, "to": call.to,
        "to_formatted": call.to, "from": call.from_, "from_formatted": call.from_,
        "status": call.state, "api_version": API_VERSION,
        "direction": "outbound-api" if call.direction == "outbound" else "inbound",
        "date_created": format_datetime_at(call.started_at),
        "date_updated": format_datetime_at(carrier.clock.now()),
        "start_time": format_datetime_at(call.answered_at),
        "end_time": format_datetime_at(call.ended_at), "duration": duration,
        "parent_call_sid": None, "phone_number_sid": None, "price": None, "price_unit": "USD",
        "answered_by": None, "caller_name": None, "forwarded_from": None, "group_sid": None,
        "queue_time": "0", "trunk_sid": None, "annotation": None,
        "uri": f"/{API_VERSION}/Accounts/{account}/Calls/{call.provider_call_id}.json",
    }  # fmt: skip


def _first(value: Any) -> str:
    return str(value[0] if isinstance(value, list) else value)


async def twilio_create(request: web.Request) -> web.StreamResponse:
    carrier = request.app[CARRIER]
    form: dict[str, Any] = await request_body(request)
    if not _account_ok(request):
        return _twilio_error(404, f"The requested resource {request.path} was not found")
    for field, code, message in (("To", 21201, "No 'To' number is specified"),
                                 ("From", 21213, "No 'From' number is specified")):  # fmt: skip
        if not form.get(field):
            return _twilio_error(400, message, code)
    if not (form.get("Url") or form.get("Twiml")):  # (an ApplicationSid is not supported)
        return _twilio_error(400, "Url parameter is required.", 21205)
    inline = None
    if form.get("Twiml"):
        try:
            inline = ET.fromstring(_first(form["Twiml"]))
        except ET.ParseError:
            return _twilio_error(400, "Twiml is not valid XML", 12100)
    events = form.get("StatusCallbackEvent") or []
    call = carrier.new_call(new_sid(), "outbound", _first(form["From"]), _first(form["To"]),
                            urls=[_first(form.get("Url", "")),
                                  _first(form.get("StatusCallback", ""))])  # fmt: skip
    session = TwilioSession(
        carrier, call, url=_first(form.get("Url", "")), method=_first(form.get("Method", "POST")),
        status_callback=_first(form["StatusCallback"]) if form.get("StatusCallback") else None,
        status_events=[events] if isinstance(events, str) else events,
        status_method=_first(form.get("StatusCallbackMethod", "POST")),
        machine_detection=_first(form.get("MachineDetection", "")) or None,
    )  # fmt: skip
    session.inline = inline
    session.send_digits = _first(form.get("SendDigits", ""))
    carrier.launch(session, session.run_outbound(float(_first(form.get("Timeout", 60)))))
    return web.json_response(twilio_resource(carrier, call), status=201)


async def twilio_update(request: web.Request) -> web.StreamResponse:
    carrier = request.app[CARRIER]
    found = _session(request)
    if found is None:
        return _twilio_error(404, f"The requested resource {request.path} was not found")
    call, session = found
    form: dict[str, Any] = await request_body(request)
    status = _first(form.get("Status", ""))
    if status in ("completed", "canceled"):
        if not call.ended and (status == "completed" or not call.answered):
            session.record("bot", "hangup", via="api")
            session.end("hangup-bot" if call.answered else "canceled", "api")
        return web.json_response(twilio_resource(carrier, call))
    if call.ended:
        return _twilio_error(400, "Call is not in-progress. Cannot redirect.", 21220)
    if form.get("Twiml"):
        try:
            root = ET.fromstring(_first(form["Twiml"]))
        except ET.ParseError:
            return _twilio_error(400, "Twiml is not valid XML", 12100)
        session.update(Goto(url=session.doc_url, root=root, event="update"))
    elif form.get("Url"):
        url, method = _first(form["Url"]), _first(form.get("Method", "POST"))
        session.record("bot", "redirect", url=url, via="api")
        session.update(Goto(url=url, method=method, event="update"))
    return web.json_response(twilio_resource(carrier, call))


async def twilio_fetch(request: web.Request) -> web.StreamResponse:
    found = _session(request)
    if found is None:
        return _twilio_error(404, f"The requested resource {request.path} was not found")
    return web.json_response(twilio_resource(request.app[CARRIER], found[0]))


# --- Plivo -----------------------------------------------------------------------------------


def _plivo_routes(router: web.UrlDispatcher) -> None:
    router.add_post(f"{PLIVO}/Call/", plivo_create)
    router.add_post(f"{PLIVO}/Call/{{call}}/", plivo_transfer)
    router.add_delete(f"{PLIVO}/Call/{{call}}/", plivo_hangup)
    router.add_post(f"{PLIVO}/Call/{{call}}/DTMF/", plivo_dtmf)
    router.add_get(f"{PLIVO}/Call/{{call}}/", plivo_fetch)
    router.add_delete(f"{PLIVO}/Request/{{request_uuid}}/", plivo_cancel)


async def plivo_create(request: web.Request) -> web.StreamResponse:
    carrier = request.app[CARRIER]
    body: dict[str, Any] = await request_body(request)
    if not _account_ok(request):
        return _plivo_error(404, "not found")
    for field in ("from", "to", "answer_url"):
        if not body.get(field):
            return _plivo_error(400, f"Missing mandatory parameter '{field}'")
    urls = [str(body["answer_url"]), str(body.get("hangup_url") or "")]
    call = carrier.new_call(str(uuid.uuid4()), "outbound", str(body["from"]), str(body["to"]),
                            urls=urls)  # fmt: skip
    call.request_uuid = str(uuid.uuid4())
    session = PlivoSession(
        carrier, call, url=str(body["answer_url"]), method=str(body.get("answer_method") or "POST"),
        hangup_url=body.get("hangup_url"), hangup_method=str(body.get("hangup_method") or "POST"),
        ring_url=body.get("ring_url"), ring_method=str(body.get("ring_method") or "POST"),
    )  # fmt: skip
    session.send_digits = str(body.get("send_digits") or "")
    carrier.launch(session, session.run_outbound(float(body.get("ring_timeout") or 120)))
    reply = {"api_id": str(uuid.uuid4()), "message": "call fired",
             "request_uuid": call.request_uuid}  # fmt: skip
    return web.json_response(reply, status=201)


async def plivo_transfer(request: web.Request) -> web.StreamResponse:
    found = _session(request)
    if found is None or found[0].ended:
        return _plivo_error(404, "call not found")
    session = found[1]
    body: dict[str, Any] = await request_body(request)
    url = body.get("aleg_url")
    if not url:
        return _plivo_error(400, "aleg_url is required to transfer the A leg")
    session.record("bot", "redirect", url=url, via="api")
    method = str(body.get("aleg_method") or "POST")
    session.update(Goto(url=str(url), method=method, event="update"))
    return web.json_response({"api_id": str(uuid.uuid4()), "message": "call transferred"},
                             status=202)  # fmt: skip


async def plivo_dtmf(request: web.Request) -> web.StreamResponse:
    """POST Call/{uuid}/DTMF/: the tones play on the live call; its XML goes on."""
    found = _session(request)
    if found is None or found[0].ended:
        return _plivo_error(404, "call not found")
    body: dict[str, Any] = await request_body(request)
    digits = str(body.get("digits") or "")
    if not digits:
        return _plivo_error(400, "Missing mandatory parameter 'digits'")
    found[1].record("bot", "dtmf", digits=digits, via="api")
    return web.json_response({"api_id": str(uuid.uuid4()), "message": "digits sent"},
                             status=202)  # fmt: skip


async def plivo_hangup(request: web.Request) -> web.StreamResponse:
    found = _session(request)
    if found is None or found[0].ended:
        return _plivo_error(404, "call not found")
    call, session = found
    session.record("bot", "hangup", via="api")
    session.end("hangup-bot" if call.answered else "canceled", "api")
    return web.Response(status=204)


async def plivo_cancel(request: web.Request) -> web.StreamResponse:
    carrier = request.app[CARRIER]
    call = carrier.find(request.match_info["request_uuid"])
    if call is None or call.ended or call.answered or not _account_ok(request):
        return _plivo_error(404, "request not found")
    session = carrier.sessions[call.provider_call_id]
    session.record("bot", "hangup", via="api")
    session.end("canceled", "api")
    return web.Response(status=204)


async def plivo_fetch(request: web.Request) -> web.StreamResponse:
    found = _session(request)
    live = request.query.get("status") == "live"
    if found is None or (live and found[0].ended):
        return _plivo_error(404, "call not found")
    call = found[0]
    return web.json_response({
        "api_id": str(uuid.uuid4()), "call_uuid": call.provider_call_id,
        "request_uuid": call.request_uuid, "direction": call.direction,
        "from_number": call.from_, "to_number": call.to,
        "call_status": "cancel" if call.state == "canceled" else call.state,
        "call_state": "ANSWER" if call.answered and not call.ended else call.state.upper(),
        "initiation_time": plivo_time(call.started_at), "answer_time": plivo_time(call.answered_at),
        "end_time": plivo_time(call.ended_at),
    })  # fmt: skip


# --- Telnyx ----------------------------------------------------------------------------------


def _telnyx_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v2/calls", telnyx_dial)
    router.add_post("/v2/calls/{call}/actions/{action}", telnyx_action)
    router.add_put("/v2/calls/{call}/actions/{action}", telnyx_action)
    router.add_get("/v2/calls/{call}", telnyx_fetch)


def telnyx_call_data(session: TelnyxSession) -> dict[str, Any]:
    call = session.call
    return {
        "call_control_id": call.provider_call_id, "call_leg_id": session.leg_id,
        "call_session_id": session.session_id, "is_alive": not call.ended,
        "record_type": "call", "client_state": session.client_state,
    }  # fmt: skip


async def telnyx_dial(request: web.Request) -> web.StreamResponse:
    carrier = request.app[CARRIER]
    body: dict[str, Any] = await request_body(request)
    for field in ("connection_id", "to", "from"):
        if not body.get(field):
            return _telnyx_error(422, f"The '{field}' parameter is required.")
    if str(body["connection_id"]) != carrier.credentials["connectionId"]:
        return _telnyx_error(422, "Invalid connection_id.")
    webhook_url = body.get("webhook_url") or carrier.webhook_url
    if not webhook_url:
        return _telnyx_error(422, "The connection has no webhook URL and none was given.")
    state = body.get("client_state")
    call = carrier.new_call(new_call_control_id(), "outbound", str(body["from"]),
                            str(body["to"]), urls=[str(webhook_url)], state=state)  # fmt: skip
    session = TelnyxSession(
        carrier, call, webhook_url=str(webhook_url), connection_id=str(body["connection_id"]),
        client_state=state, machine_detection=body.get("answering_machine_detection"),
        timeout_s=float(body.get("timeout_secs") or 30),
    )  # fmt: skip
    carrier.launch(session, session.run_outbound())
    return web.json_response({"data": telnyx_call_data(session)})


async def telnyx_action(request: web.Request) -> web.StreamResponse:
    carrier = request.app[CARRIER]
    call = carrier.calls.get(request.match_info["call"])
    action = request.match_info["action"]
    known = action in TelnyxSession.commands or action in TELNYX_OTHER_ACTIONS
    if call is None or not known:
        return _telnyx_error(404, f"Call {request.match_info['call']} or action {action} not found")
    if call.ended:
        return _telnyx_error(422, "This call is no longer active and can't receive commands.",
                             "90018")  # fmt: skip
    session = carrier.sessions[call.provider_call_id]
    assert isinstance(session, TelnyxSession)
    body = await request_body(request)
    body = body if isinstance(body, dict) else {}
    carrier.learn_call_id(call, state=body.get("client_state"))
    session.submit(Command(action, body))
    return web.json_response({"data": {"result": "ok"}})


async def telnyx_fetch(request: web.Request) -> web.StreamResponse:
    carrier = request.app[CARRIER]
    call = carrier.calls.get(request.match_info["call"])
    if call is None:
        return _telnyx_error(404, f"Call {request.match_info['call']} not found")
    session = carrier.sessions[call.provider_call_id]
    assert isinstance(session, TelnyxSession)
    data = telnyx_call_data(session)
    data["call_duration"] = int((call.ended_at or carrier.clock.now()) - call.started_at)
    return web.json_response({"data": data})


ROUTES: dict[str, Callable[[web.UrlDispatcher], None]] = {
    "twilio": _twilio_routes, "plivo": _plivo_routes, "telnyx": _telnyx_routes,
}  # fmt: skip
