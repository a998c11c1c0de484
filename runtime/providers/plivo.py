"""Plivo: V3 signed webhooks (V2 only if allowed), Plivo XML replies, REST through plivo-python.

The SDK is synchronous (requests), so REST calls run in a worker thread. Its client has no
base-URL setting and resets ``base_uri`` from module constants on every request
(providers.md §1.2); :func:`_client_class` pins it per client instead, so two adapters with
different bases never share one, and raises HTTP errors before the SDK's 5xx "fallback" (two
more tries at the same host, each print()ing the URL). The SDK is imported on first use.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse, urlsplit, urlunsplit

from multidict import MultiDict

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

# docs.plivo.com/docs/voice/xml/request/validation
V3 = "X-Plivo-Signature-V3"
V3_MA = "X-Plivo-Signature-Ma-V3"  # signed with the main account's token
V3_NONCE = "X-Plivo-Signature-V3-Nonce"
V2 = "X-Plivo-Signature-V2"
V2_NONCE = "X-Plivo-Signature-V2-Nonce"

V2_REFUSED = (f"{V2} signatures are refused: they sign neither the body nor the query "
              "(plivo.allowV2Signatures is off)")  # fmt: skip

API_ROOT = "https://api.plivo.com"
# Built once: most webhooks (every status callback) are answered with it.
EMPTY = Reply(body=b"<Response></Response>", content_type="application/xml")

DIRECTIONS = {"inbound": "inbound", "outbound": "outbound"}

# CallStatus sent to the hangup_url -> our end reason (plivo.com/docs/voice/xml/request/
# call-status). "timeout" is a carrier or network failure to connect, not a ring timeout;
# "cancel" is handled by direction in _hangup.
END_REASONS = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no-answer",
    "failed": "failed",
    "timeout": "failed",
}

# DialStatus sent to <Dial action> (plivo.com/docs/voice/xml/dial).
DIAL_STATUSES = {
    "completed": "completed",
    "answered": "answered",
    "busy": "busy",
    "failed": "failed",
    "timeout": "no-answer",
    "no-answer": "no-answer",
}

# call_status values of a live call that mean it is over (GET Call/{uuid}/?status=live).
TERMINAL = frozenset({"completed", "busy", "failed", "timeout", "no-answer", "cancel", "hangup"})

Fields = Mapping[str, str]


def skip_key(request: WebhookRequest) -> str:
    """The replay key when signatures are not checked: sha256(method \\n url \\n body)."""
    head = f"{request.method}\n{request.url}\n".encode()
    return hashlib.sha256(head + request.body).hexdigest()


def _sha(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


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
    """The fields every Plivo event carries.

    An outbound call is known by the request_uuid of its create until Plivo names it by its
    CallUUID: RequestUUID (ALegRequestUUID in the docs) links the two.
    """
    return {
        "provider": "plivo",
        "provider_call_id": fields["CallUUID"],
        "previous_provider_call_id": fields.get("RequestUUID") or fields.get("ALegRequestUUID")
        or None,
        "call_id": place.call_id,
        "block": place.block,
        "step": place.step,
        "direction": DIRECTIONS.get(fields.get("Direction", "")),
        "from_number": fields.get("From") or None,
        "to_number": fields.get("To") or None,
    }  # fmt: skip


def _fetch(fields: Fields, place: Place) -> list[Event]:
    return [Event(kind=EventKind.FETCH, **_common(fields, place),
                  detail=fields.get("CallStatus", ""))]  # fmt: skip


def _hangup(fields: Fields, place: Place) -> list[Event]:
    status = fields.get("CallStatus", "")
    if status == "cancel":
        # Canceled before answer: by the caller, who is us for an outbound call.
        reason = "hangup-user" if fields.get("Direction") == "inbound" else "hangup-bot"
    else:
        reason = END_REASONS.get(status, "completed")
    cause = fields.get("HangupCauseName") or fields.get("HangupCause") or ""
    detail = f"{status} ({cause})" if cause else status
    return [Event(kind=EventKind.ENDED, **_common(fields, place), status=reason, detail=detail)]


def _input(fields: Fields, place: Place) -> list[Event]:
    # <GetInput action> posts InputType, Digits, Speech and SpeechConfidenceScore
    # (plivo.com/docs/voice/xml/getinput); neither Digits nor Speech means no input.
    return [
        Event(
            kind=EventKind.INPUT,
            **_common(fields, place),
            digits=fields.get("Digits") or None,
            text=fields.get("Speech") or None,
            confidence=_number(fields, "SpeechConfidenceScore"),
            detail=fields.get("InputType", ""),
        )
    ]


def _dial(fields: Fields, place: Place) -> list[Event]:
    status = fields.get("DialStatus")
    if not status:
        raise BadRequest("dial callback without DialStatus")
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
    "hangup": _hangup,
    "input": _input,
    "dial": _dial,
}


# --- the SDK client -------------------------------------------------------------------------------


def _error(response: Any, secrets: Sequence[str]) -> ProviderError:
    """A ProviderError from a Plivo error response ({"api_id", "error"} JSON, or text)."""
    try:
        body = response.json()
        message = str(body.get("error") or body) if isinstance(body, dict) else str(body)
    except ValueError:
        message = response.text or response.reason or "request failed"
    return ProviderError("plivo", int(response.status_code), redact(message, secrets)[:300])


@functools.cache
def _client_class() -> type[Any]:
    """plivo.RestClient with a per-instance API root, and HTTP errors as ProviderError."""
    import plivo

    class Client(plivo.RestClient):  # type: ignore[misc]  # plivo is untyped
        def __init__(self, auth_id: str, auth_token: str, api_root: str):
            super().__init__(auth_id, auth_token)
            self.api_root = api_root
            self.secrets = (auth_token,)

        def create_request(self, method: str, path: Any = None, data: Any = None,
                           **kwargs: Any) -> Any:  # fmt: skip
            # request() sets base_uri from module constants just before this: pin ours.
            self.base_uri = f"{self.api_root}/v1/Account"
            return super().create_request(method, path, data, **kwargs)

        def send_request(self, request: Any, **kwargs: Any) -> Any:
            # Errors leave here, before request() sees a 5xx: its "fallback" retries go to the
            # same host again and print() the URL.
            response = super().send_request(request, **kwargs)
            if response.status_code >= 400:
                raise _error(response, self.secrets)
            return response

    return Client


# --- the adapter ----------------------------------------------------------------------------------


class PlivoAdapter(Adapter):
    """Plivo Voice: Plivo XML over webhooks, the v1 Account REST API."""

    name: ClassVar[str] = "plivo"
    # The pre-auth gate wants one complete set: V3's, or V2's when allowed (see
    # missing_signature_headers); verify() names what is missing.
    signature_headers: ClassVar[tuple[str, ...]] = ()
    signature_header_sets: ClassVar[tuple[tuple[str, ...], ...]] = ((V3, V3_NONCE), (V2, V2_NONCE))

    def __init__(self, settings: AdapterSettings):
        super().__init__(settings)
        self._rest: Any = None

    def missing_signature_headers(self, present: Mapping[str, str]) -> list[str]:
        """V3's headers, or V2's only when V2 signatures are allowed."""
        if self.settings.allow_v2_signatures:
            return super().missing_signature_headers(present)
        return [n for n in (V3, V3_NONCE) if n not in present]

    # --- webhooks ---------------------------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> Verification:
        """Checks the V3 signature (or the Ma-V3 one); the legacy V2 one only if allowed.

        V3: HMAC-SHA256 over the URL with its sorted query, the sorted POST fields and the
        nonce; V2: over the URL without query, and the nonce. A request carrying V3 headers is
        judged on them only (no downgrade to V2). Replay keys: sha256 of exactly what V3's HMAC
        covers (``signed.nonce``: text moved between fields and nonce across a dot is the same
        event); for V2 a key of the (nonce, signature) pair, claimed once (``once_key``).
        """
        if self.settings.skip_signature:
            return Verification(True, "signature check skipped", skip_key(request))
        token = self.settings.credentials.get("authToken", "")
        if not token:
            return Verification(False, "no Plivo authToken configured")
        headers = request.headers
        if headers.get(V3_NONCE) or headers.get(V3) or headers.get(V3_MA):
            return self._verify_v3(request, token)
        if headers.get(V2) or headers.get(V2_NONCE):
            if not self.settings.allow_v2_signatures:
                return Verification(False, V2_REFUSED)
            return self._verify_v2(request, token)
        return Verification(False, f"missing {V3} and {V3_NONCE} headers")

    def _verify_v3(self, request: WebhookRequest, token: str) -> Verification:
        nonce = request.headers.get(V3_NONCE, "")
        candidates = _signatures(request.headers.get(V3, ""), request.headers.get(V3_MA, ""))
        if not nonce or not candidates:
            return Verification(False, f"missing {V3_NONCE if not nonce else V3} header")
        method = request.method.upper()
        if method not in ("GET", "POST"):
            return Verification(False, f"V3 signatures cover GET and POST only, not {method}")
        problem = url_problem(request.url)
        if problem:
            return Verification(False, problem)
        # Built and compared here: the SDK's validator splits the header on "," without
        # trimming, and its URL helper cannot decode a non-ASCII query value.
        fields = request.signed_fields() if method == "POST" else MultiDict[str]()
        try:
            material = f"{_v3_signed(request.url, fields)}.{nonce}"
            digest = _hmac(token, material)
        except ValueError:  # odd bytes in the URL, fields or nonce
            return Verification(False, f"malformed {V3} request")
        if not any(hmac.compare_digest(digest, c) for c in candidates):
            return Verification(False, f"bad {V3} signature for {_without_query(request.url)}")
        return Verification(True, "", hashlib.sha256(material.encode()).hexdigest())

    def _verify_v2(self, request: WebhookRequest, token: str) -> Verification:
        signature = request.headers.get(V2, "")
        nonce = request.headers.get(V2_NONCE, "")
        if not signature or not nonce:
            return Verification(False, f"missing {V2_NONCE if not nonce else V2} header")
        problem = url_problem(request.url)
        candidates = _signatures(signature)
        if problem or not candidates:
            return Verification(False, problem or f"{V2} is not base64")
        try:
            base = _without_query(request.url)
            digest = _hmac(token, base + nonce)
        except ValueError:
            return Verification(False, f"malformed {V2} request")
        if not hmac.compare_digest(digest, candidates[0]):
            return Verification(False, f"bad {V2} signature for {base}")
        # The signature covers neither body nor query: the pair itself is the event. Its
        # claim makes any second request with it a replay; the event key is the pair's too.
        pair = base64.b64encode(digest).decode()
        return Verification(True, "", _sha("v2-event", base, nonce, pair),
                            once_key=_sha("v2-pair", base, nonce, pair))  # fmt: skip

    def parse(self, request: WebhookRequest) -> list[Event]:
        """Events for one Plivo request (see :func:`parse_form`)."""
        return parse_form(request, self.name, "CallUUID", PARSERS)

    def document(self, fragments: Sequence[str]) -> Reply:
        """A Plivo XML document around compiled fragments."""
        body = f"<Response>{''.join(fragments)}</Response>"
        return Reply(body=body.encode(), content_type="application/xml")

    def empty(self) -> Reply:
        """An empty Plivo XML document."""
        return EMPTY

    # --- REST -------------------------------------------------------------------------------------

    async def create_call(
        self, *, call_id: str, to: str, from_: str, webhook_base: str, timeout_s: int,
        send_digits: str | None = None,
    ) -> str:  # fmt: skip
        """POST Call/ with answer and hangup URLs; returns the request_uuid.

        Plivo names the call by a CallUUID once it is answered; the answer webhook carries
        both (see ``previous_provider_call_id``).
        """
        client = self._client()
        extra = {"send_digits": send_digits} if send_digits else {}
        response = await self._run(
            client.calls.create,
            from_=from_,
            to_=to,
            answer_url=callback_url(webhook_base, call_id, "answer"),
            answer_method="POST",
            hangup_url=callback_url(webhook_base, call_id, "hangup"),
            hangup_method="POST",
            ring_timeout=timeout_s,
            **extra,
        )
        uuid = getattr(response, "request_uuid", None)
        if isinstance(uuid, list):  # several destinations: one request uuid each
            uuid = uuid[0] if uuid else None
        if not uuid:
            raise ProviderError("plivo", None, "the create-call response has no request_uuid")
        return str(uuid)

    async def hangup(self, provider_call_id: str) -> None:
        """DELETE Call/{uuid}/; if Plivo has no such call, cancel the request of that uuid
        (a call not answered yet is known by its request uuid). 404s are fine."""
        client = self._client()
        for operation in (client.calls.delete, client.calls.cancel):
            try:
                await self._run(operation, provider_call_id)
                return
            except ProviderError as exc:
                if exc.status != 404:
                    raise

    async def redirect(self, provider_call_id: str, url: str) -> None:
        """POST Call/{uuid}/ legs=aleg: the live call fetches its next XML from ``url``."""
        client = self._client()
        await self._run(client.calls.transfer, provider_call_id, legs="aleg", aleg_url=url,
                        aleg_method="POST")  # fmt: skip

    async def send_dtmf(self, provider_call_id: str, digits: str) -> bool:
        """POST Call/{uuid}/DTMF/: the tones play while the call's XML goes on."""
        client = self._client()
        await self._run(client.calls.send_digits, provider_call_id, digits)
        return True

    async def call_status(self, provider_call_id: str) -> CallStatus:
        """GET Call/{uuid}/?status=live, then ?status=queued; 404 on both is ENDED."""
        client = self._client()
        try:
            live = await self._run(client.live_calls.get, provider_call_id)
        except ProviderError as exc:
            if exc.status != 404:
                return CallStatus.UNKNOWN
        else:
            ended = str(getattr(live, "call_status", "")) in TERMINAL
            return CallStatus.ENDED if ended else CallStatus.ACTIVE
        try:
            await self._run(client.queued_calls.get, provider_call_id)
        except ProviderError as exc:
            return CallStatus.ENDED if exc.status == 404 else CallStatus.UNKNOWN
        return CallStatus.ACTIVE

    async def aclose(self) -> None:
        """Closes the SDK's requests sessions."""
        if self._rest is not None:
            self._rest.session.close()
            self._rest.multipart_session.close()
            self._rest = None

    # --- helpers ----------------------------------------------------------------------------------

    def _client(self) -> Any:
        if self._rest is None:
            from plivo.exceptions import PlivoRestError

            creds = self.settings.credentials
            root = (self.settings.api_base or API_ROOT).rstrip("/")
            try:
                self._rest = _client_class()(creds.get("authId", ""), creds.get("authToken", ""),
                                             root)  # fmt: skip
            except PlivoRestError:
                # The SDK's message quotes the id; ours only says what is wrong with it.
                raise ProviderError(
                    "plivo", None, "authId must be 20 characters starting with MA or SA"
                ) from None
        return self._rest

    async def _run(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Runs one blocking SDK call in a thread; its failures become ProviderError."""
        import requests
        from plivo.exceptions import PlivoRestError

        secrets = (self.settings.credentials.get("authToken", ""),)
        try:
            return await asyncio.to_thread(function, *args, **kwargs)
        except requests.RequestException as exc:
            unreachable = f"cannot reach the API ({type(exc).__name__})"
            raise ProviderError("plivo", None, unreachable) from None
        except PlivoRestError as exc:  # the SDK's own argument checks
            raise ProviderError("plivo", None, redact(str(exc), secrets)) from None


def _without_query(url: str) -> str:
    return urlparse(url)._replace(query="", fragment="").geturl()


MAX_SIGNATURES = 8  # per header: Plivo sends one per token it signs with


def _signatures(*headers: str) -> list[bytes]:
    """The decoded signatures of comma-separated header values (Plivo sends "a, b"), trimmed;
    what is not base64 is no signature."""
    found: list[bytes] = []
    for header in headers:
        for part in header.split(",")[:MAX_SIGNATURES]:
            try:
                decoded = base64.b64decode(part.strip(), validate=True)
            except ValueError:  # binascii.Error, or non-ASCII text
                continue
            if decoded:
                found.append(decoded)
    return found


def _hmac(token: str, data: str) -> bytes:
    """HMAC-SHA256 of ``data`` (UTF-8) with the auth token; ValueError if not encodable."""
    return hmac.new(token.encode(), data.encode("utf-8"), hashlib.sha256).digest()


def _v3_signed(url: str, fields: MultiDict[str]) -> str:
    """What V3 signs before the nonce (docs.plivo.com/docs/voice/xml/request/validation, as
    the SDK's construct_post_url): scheme://netloc/path, "?" and the query sorted by name then
    value, then for a POST with fields "." (if there was a query) and each name + value,
    sorted; every value of a repeated name counts."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = parse_qs(parts.query, keep_blank_values=True)
    text = "&".join(f"{name}={value}" for name in sorted(query) for value in sorted(query[name]))
    if not fields:
        return f"{base}?{text}" if text else base
    body = "".join(name + value for name in sorted(set(fields))
                   for value in sorted(fields.getall(name)))  # fmt: skip
    return f"{base}?{text}{'.' if text else ''}{body}"


ADAPTER = PlivoAdapter
