"""Twilio: X-Twilio-Signature webhooks, TwiML replies, REST through twilio-python (async).

Webhooks are form POSTs to our callback URLs (urls.py); the URL's ``kind`` says what the
request is. REST goes through ``twilio.rest.Client`` with ``AsyncTwilioHttpClient``; the SDK's
REST half is imported on first use (it is slow to import, providers.md §0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlparse

from multidict import MultiDict
from twilio.request_validator import RequestValidator, remove_port

from voicecall.runtime.providers.base import (
    Adapter,
    AdapterSettings,
    BadRequest,
    CallStatus,
    Event,
    EventKind,
    Reply,
    Verification,
    WebhookRequest,
    parse_form,
    url_problem,
)
from voicecall.runtime.providers.errors import ProviderError, redact
from voicecall.runtime.urls import Place, callback_url

T = TypeVar("T")

SIGNATURE_HEADER = "X-Twilio-Signature"
XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>'
# Built once: most webhooks (every status callback) are answered with it.
EMPTY = Reply(body=f"{XML_DECLARATION}<Response></Response>".encode(), content_type="text/xml")

# Direction of a voice request (twilio.com/docs/voice/twiml#request-parameters).
DIRECTIONS = {"inbound": "inbound", "outbound-api": "outbound", "outbound-dial": "outbound"}

# CallStatus of a live call in a status callback (twilio.com/docs/voice/api/call-resource
# #statuscallbackevent): the `initiated` event reports "queued" or "initiated".
PROGRESS = {
    "queued": EventKind.INITIATED,
    "initiated": EventKind.INITIATED,
    "ringing": EventKind.RINGING,
    "in-progress": EventKind.ANSWERED,
    "answered": EventKind.ANSWERED,
}

# Terminal CallStatus -> our end reason (the original plugin's shared/call-status.ts).
END_REASONS = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "hangup-bot",
}

# DialCallStatus of <Dial action> (twilio.com/docs/voice/twiml/dial#dialcallstatus-values);
# "canceled" means the call was canceled through the API while dialing.
DIAL_STATUSES = {
    "completed": "completed",
    "answered": "answered",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "canceled": "failed",
}

Fields = Mapping[str, str]


def skip_key(request: WebhookRequest) -> str:
    """The replay key when signatures are not checked: sha256(method \\n url \\n body)."""
    head = f"{request.method}\n{request.url}\n".encode()
    return hashlib.sha256(head + request.body).hexdigest()


# --- parsing --------------------------------------------------------------------------------------


def _number(fields: Fields, name: str) -> float | None:
    value = fields.get(name)
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        raise BadRequest(f"{name} is not a number: {value[:40]!r}") from None


def _common(fields: Fields, place: Place) -> dict[str, Any]:
    """The fields every Twilio event carries."""
    return {
        "provider": "twilio",
        "provider_call_id": fields["CallSid"],
        "call_id": place.call_id,
        "block": place.block,
        "step": place.step,
    }


def _parties(fields: Fields) -> dict[str, Any]:
    return {
        "direction": DIRECTIONS.get(fields.get("Direction", "")),
        "from_number": fields.get("From") or None,
        "to_number": fields.get("To") or None,
    }


def _fetch(fields: Fields, place: Place) -> list[Event]:
    common = {**_common(fields, place), **_parties(fields)}
    return [Event(kind=EventKind.FETCH, **common, detail=fields.get("CallStatus", ""))]


def _status(fields: Fields, place: Place) -> list[Event]:
    status = fields.get("CallStatus")
    if not status:
        raise BadRequest("status callback without CallStatus")
    common = {**_common(fields, place), **_parties(fields), "detail": status}
    if status in END_REASONS:
        return [Event(kind=EventKind.ENDED, status=END_REASONS[status], **common)]
    if status in PROGRESS:
        return [Event(kind=PROGRESS[status], **common)]
    return []


def _input(fields: Fields, place: Place) -> list[Event]:
    # <Gather action> posts Digits, or SpeechResult + Confidence; neither means no input
    # (twilio.com/docs/voice/twiml/gather#action).
    return [
        Event(
            kind=EventKind.INPUT,
            **_common(fields, place),
            digits=fields.get("Digits") or None,
            text=fields.get("SpeechResult") or None,
            confidence=_number(fields, "Confidence"),
        )
    ]


def _dial(fields: Fields, place: Place) -> list[Event]:
    status = fields.get("DialCallStatus")
    if not status:
        raise BadRequest("dial callback without DialCallStatus")
    return [
        Event(
            kind=EventKind.DIAL_ENDED,
            **_common(fields, place),
            status=DIAL_STATUSES.get(status, "failed"),
            detail=status,
        )
    ]


PARSERS: dict[str, Callable[[Fields, Place], list[Event]]] = {
    "answer": _fetch,
    "live": _fetch,
    "status": _status,
    "input": _input,
    "dial": _dial,
}


# --- the adapter ----------------------------------------------------------------------------------


class TwilioAdapter(Adapter):
    """Twilio Programmable Voice: TwiML over webhooks, the 2010-04-01 REST API."""

    name: ClassVar[str] = "twilio"
    signature_headers: ClassVar[tuple[str, ...]] = (SIGNATURE_HEADER,)

    def __init__(self, settings: AdapterSettings):
        super().__init__(settings)
        self._rest: Any = None  # twilio.rest.Client, made on first use (needs a running loop)
        self._http: Any = None  # its AsyncTwilioHttpClient

    # --- webhooks ---------------------------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> Verification:
        """Checks X-Twilio-Signature: HMAC-SHA1 over the URL and the sorted form fields.

        The SDK's validator also accepts the URL with its port removed or the default port
        added (twilio.com/docs/usage/webhooks/webhooks-security). The replay key covers
        exactly the string verified (see :func:`_replay_key`).
        """
        if self.settings.skip_signature:
            return Verification(True, "signature check skipped", skip_key(request))
        token = self.settings.credentials.get("authToken", "")
        if not token:
            return Verification(False, "no Twilio authToken configured")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        if not signature:
            return Verification(False, f"missing {SIGNATURE_HEADER} header")
        params = _signed_params(request)
        problem = url_problem(request.url) or _mismatch(token, request.url, params, signature)
        if problem:
            return Verification(False, problem)
        return Verification(True, "", _replay_key(request.url, params, signature))

    def parse(self, request: WebhookRequest) -> list[Event]:
        """Events for one Twilio request (see :func:`parse_form`)."""
        return parse_form(request, self.name, "CallSid", PARSERS)

    def document(self, fragments: Sequence[str]) -> Reply:
        """A TwiML document around compiled fragments."""
        body = f"{XML_DECLARATION}<Response>{''.join(fragments)}</Response>"
        return Reply(body=body.encode(), content_type="text/xml")

    def empty(self) -> Reply:
        """An empty TwiML document: Twilio expects TwiML even from a status callback."""
        return EMPTY

    # --- REST -------------------------------------------------------------------------------------

    async def create_call(
        self, *, call_id: str, to: str, from_: str, webhook_base: str, timeout_s: int,
        send_digits: str | None = None,
    ) -> str:  # fmt: skip
        """POST /Calls.json with our answer and status callbacks (and SendDigits, played on
        answer before the TwiML); returns the CallSid."""
        client = self._client()
        extra = {"send_digits": send_digits} if send_digits else {}
        call = await self._send(
            client.calls.create_async(
                to=to,
                from_=from_,
                url=callback_url(webhook_base, call_id, "answer"),
                method="POST",
                status_callback=callback_url(webhook_base, call_id, "status"),
                status_callback_event=["initiated", "ringing", "answered", "completed"],
                status_callback_method="POST",
                timeout=timeout_s,
                **extra,
            )
        )
        return str(call.sid)

    async def hangup(self, provider_call_id: str) -> None:
        """POST /Calls/{sid}.json Status=completed; a 404 means the call is already gone."""
        client = self._client()
        try:
            await self._send(client.calls(provider_call_id).update_async(status="completed"))
        except ProviderError as exc:
            if exc.status != 404:
                raise

    async def redirect(self, provider_call_id: str, url: str) -> None:
        """POST /Calls/{sid}.json Url=…: the live call fetches its next TwiML there."""
        client = self._client()
        await self._send(client.calls(provider_call_id).update_async(url=url, method="POST"))

    async def call_status(self, provider_call_id: str) -> CallStatus:
        """GET /Calls/{sid}.json: terminal statuses and 404 are ENDED, errors UNKNOWN."""
        client = self._client()
        try:
            call = await self._send(client.calls(provider_call_id).fetch_async())
        except ProviderError as exc:
            return CallStatus.ENDED if exc.status == 404 else CallStatus.UNKNOWN
        return CallStatus.ENDED if str(call.status) in END_REASONS else CallStatus.ACTIVE

    async def aclose(self) -> None:
        """Closes the aiohttp session of the SDK's async HTTP client."""
        if self._http is not None:
            await self._http.close()
            self._http = self._rest = None

    # --- helpers ----------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._rest is None:
            from twilio.http.async_http_client import AsyncTwilioHttpClient
            from twilio.rest import Client

            creds = self.settings.credentials
            self._http = AsyncTwilioHttpClient()
            # `twilio.region` (us1, ie1, au1): the SDK sends REST to api.<region>.twilio.com.
            region = creds.get("region") or None
            client = Client(creds.get("accountSid", ""), creds.get("authToken", ""),
                            region=None if region == "us1" else region,
                            http_client=self._http)  # fmt: skip
            if self.settings.api_base:
                # The Domain's base URL is settable (providers.md §1.1): the mock carrier.
                client.api.base_url = self.settings.api_base.rstrip("/")
            self._rest = client
        return self._rest

    async def _send(self, request: Awaitable[T]) -> T:
        """Awaits one SDK call, turning its failures into :class:`ProviderError`."""
        from aiohttp import ClientError
        from twilio.base.exceptions import TwilioRestException

        try:
            return await request
        except TwilioRestException as exc:
            message = redact(str(exc.msg or "request failed"), self._secrets())[:300]
            raise ProviderError("twilio", int(exc.status), message) from None
        except (TimeoutError, ClientError, OSError) as exc:
            unreachable = f"cannot reach the API ({type(exc).__name__})"
            raise ProviderError("twilio", None, unreachable) from None

    def _secrets(self) -> tuple[str, ...]:
        return (self.settings.credentials.get("authToken", ""),)


def _signed_params(request: WebhookRequest) -> MultiDict[str] | str:
    """What Twilio signs besides the URL: every form field of a POST (repeated names
    included: the SDK's validator reads a MultiDict with ``getall``), nothing for a GET, and
    for a JSON body the body itself (checked against the URL's bodySHA256)."""
    if "bodySHA256" in request.query:
        return request.body.decode("utf-8", errors="replace")
    if request.method.upper() == "POST":
        return request.signed_fields()
    return MultiDict()


def _mismatch(token: str, url: str, params: MultiDict[str] | str, signature: str) -> str:
    """Why the SDK's validator refuses the signature, or "" if it accepts it."""
    try:
        if RequestValidator(token).validate(url, params, signature):
            return ""
    except ValueError:  # text the SDK cannot encode (undecodable bytes in the request)
        return f"malformed {SIGNATURE_HEADER} request"
    return f"bad {SIGNATURE_HEADER} signature for {urlparse(url)._replace(query='').geturl()}"


def _signed_text(params: MultiDict[str] | str) -> str:
    """The part of the signed string after the URL, exactly as the SDK builds it: each name
    sorted, then its distinct values sorted (a JSON body is covered by the URL's hash)."""
    if isinstance(params, str):
        return ""
    return "".join(name + value for name in sorted(set(params))
                   for value in sorted(set(params.getall(name))))  # fmt: skip


def _replay_key(url: str, params: MultiDict[str] | str, signature: str) -> str:
    """sha256(URL without port + signed fields \n signature): the string the signature was
    verified over, so a body split differently into the same signed string (``ab=c`` and
    ``a=bc``) is the same event. The validator accepts the URL with or without its port;
    both variants reduce to the URL without it."""
    material = f"{remove_port(urlparse(url))}{_signed_text(params)}\n{signature}"
    return hashlib.sha256(material.encode()).hexdigest()


ADAPTER = TwilioAdapter
