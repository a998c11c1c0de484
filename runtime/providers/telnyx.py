"""Telnyx Call Control v2: Ed25519-signed JSON events, commands through the official SDK.

Telnyx asks for no documents: every event of a call is POSTed to one callback URL
(``kind=event``) and the runtime answers with commands (``POST /calls/{id}/actions/...``).
Our call, block and step ride in ``client_state``, which Telnyx echoes in each event.

Signatures are checked with pynacl directly: the SDK's ``webhooks.unwrap`` needs a client, and
``import telnyx`` takes about a second (providers.md §0), so the SDK is imported on the first
REST call only.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote

from voicecall.runtime.providers.base import (
    Adapter,
    AdapterSettings,
    BadRequest,
    CallStatus,
    Event,
    EventKind,
    Verification,
    WebhookRequest,
)
from voicecall.runtime.providers.errors import ProviderError, redact
from voicecall.runtime.urls import callback_url, decode_state, encode_state

if TYPE_CHECKING:
    from nacl.signing import VerifyKey
    from telnyx import AsyncTelnyx

T = TypeVar("T")

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
MAX_SKEW_S = 300  # Telnyx's and the SDK's tolerance (developers.telnyx.com, webhook signing)

# DER SubjectPublicKeyInfo header of an Ed25519 key (RFC 8410): the raw key follows.
SPKI_ED25519 = bytes.fromhex("302a300506032b6570032100")

# Commands taking PUT rather than POST (providers.md §1.3).
PUT_COMMANDS = frozenset({"client_state_update"})
COMMAND_NAME = re.compile(r"[a-z][a-z_]*")
UNIX_TIME = re.compile(r"[0-9]{1,12}")  # seconds; ASCII only, short enough for int()

# payload.hangup_cause of call.hangup -> our end reason (openclaw-voice-call.md §4.2, plus the
# spec's timeout (dial timeout_secs) and time_limit (time_limit_secs)); others are "completed".
HANGUP_CAUSES = {
    "normal_clearing": "completed",
    "normal_unspecified": "completed",
    "originator_cancel": "hangup-bot",
    "call_rejected": "busy",
    "user_busy": "busy",
    "no_answer": "no-answer",
    "no_user_response": "no-answer",
    "timeout": "no-answer",
    "time_limit": "timeout",
    "not_found": "failed",
    "destination_out_of_order": "failed",
    "network_out_of_order": "failed",
    "service_unavailable": "failed",
    "recovery_on_timer_expire": "failed",
    "machine_detected": "voicemail",
    "fax_detected": "voicemail",
    "user_hangup": "hangup-user",
    "subscriber_absent": "hangup-user",
}

# payload.status of call.gather.ended that mean nothing was entered (the spec's enum:
# valid | invalid | call_hangup | cancelled | cancelled_amd | timeout).
GATHER_NO_INPUT = frozenset({"timeout", "cancelled", "cancelled_amd", "call_hangup"})


def skip_key(request: WebhookRequest) -> str:
    """The replay key when signatures are not checked: sha256(method \\n url \\n body)."""
    head = f"{request.method}\n{request.url}\n".encode()
    return hashlib.sha256(head + request.body).hexdigest()


def b64decode_any(text: str) -> bytes:
    """Base64 or base64url, padded or not (Telnyx documents base64; some tools emit url-safe).

    Raises:
        binascii.Error: the text is not base64.
    """
    text = text.strip().replace("-", "+").replace("_", "/")
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def public_key_bytes(text: str) -> bytes | None:
    """The 32 raw key bytes of a Telnyx public key given as base64 raw, DER SPKI or PEM."""
    body = "".join(line for line in text.strip().splitlines() if not line.startswith("-----"))
    try:
        der = b64decode_any(body)
    except (binascii.Error, ValueError):
        return None
    if len(der) == 32:
        return der
    if len(der) == 44 and der.startswith(SPKI_ED25519):
        return der[len(SPKI_ED25519) :]
    return None


# --- parsing --------------------------------------------------------------------------------------


def _text(payload: Mapping[str, Any], key: str) -> str | None:
    value = payload.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise BadRequest(f"payload.{key} is not a string")
    return value


def _confidence(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest("confidence is not a number")
    return float(value)


def _initiated(payload: Mapping[str, Any], common: dict[str, Any]) -> Event:
    direction = "inbound" if payload.get("direction") == "incoming" else "outbound"
    return Event(kind=EventKind.INITIATED, **common, direction=direction)


def _answered(payload: Mapping[str, Any], common: dict[str, Any]) -> Event:
    return Event(kind=EventKind.ANSWERED, **common)


def _hangup(payload: Mapping[str, Any], common: dict[str, Any]) -> Event:
    cause = _text(payload, "hangup_cause") or ""
    common = {**common, "detail": cause or common["detail"]}
    return Event(kind=EventKind.ENDED, **common, status=HANGUP_CAUSES.get(cause, "completed"))


def _command_ended(payload: Mapping[str, Any], common: dict[str, Any]) -> Event:
    return Event(kind=EventKind.COMMAND_ENDED, **common, status=_text(payload, "status"))


def _gather_ended(payload: Mapping[str, Any], common: dict[str, Any]) -> Event:
    status = _text(payload, "status")
    digits = None if status in GATHER_NO_INPUT else _text(payload, "digits")
    return Event(kind=EventKind.INPUT, **common, digits=digits, status=status)


def _transcription(payload: Mapping[str, Any], common: dict[str, Any]) -> Event:
    # Newer payloads nest the result in transcription_data (the spec's TranscriptionEvent);
    # older ones put transcription, is_final and confidence on the payload itself.
    data = payload.get("transcription_data")
    if data is None:
        data = {**payload, "transcript": payload.get("transcription")}
    if not isinstance(data, Mapping):
        raise BadRequest("payload.transcription_data is not an object")
    final = data.get("is_final", True)
    if not isinstance(final, bool):
        raise BadRequest("is_final is not a boolean")
    return Event(kind=EventKind.SPEECH, **common, text=_text(data, "transcript"), final=final,
                 confidence=_confidence(data.get("confidence")))  # fmt: skip


def _dtmf(payload: Mapping[str, Any], common: dict[str, Any]) -> Event:
    return Event(kind=EventKind.DTMF, **common, digits=_text(payload, "digit"))


def _bridged(payload: Mapping[str, Any], common: dict[str, Any]) -> Event:
    return Event(kind=EventKind.DIAL_ENDED, **common, status="answered")


# data.event_type -> event (developers.telnyx.com, Call Control webhooks); others are ignored.
EVENTS: dict[str, Callable[[Mapping[str, Any], dict[str, Any]], Event]] = {
    "call.initiated": _initiated,
    "call.answered": _answered,
    "call.hangup": _hangup,
    "call.speak.ended": _command_ended,
    "call.playback.ended": _command_ended,
    "call.gather.ended": _gather_ended,
    "call.transcription": _transcription,
    "call.dtmf.received": _dtmf,
    "call.bridged": _bridged,
}


def _envelope(body: bytes) -> Mapping[str, Any]:
    """``data`` of a Telnyx event: {"data": {"event_type", "id", "occurred_at", "payload"}}."""
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise BadRequest("body is not JSON") from None
    try:
        # "\ud800" escapes half a UTF-16 pair: json reads it into a str that no UTF-8 codec
        # (SQLite's, the logs') accepts, so it would fail wherever it goes next.
        json.dumps(document, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise BadRequest("body has a lone UTF-16 surrogate escape (\\ud800-\\udfff)") from None
    data = document.get("data") if isinstance(document, dict) else None
    if not isinstance(data, dict):
        raise BadRequest("body has no data object")
    if not isinstance(data.get("event_type"), str):
        raise BadRequest("data.event_type is missing")
    return data


def _common(data: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
    call_control_id = _text(payload, "call_control_id")
    if call_control_id is None:
        raise BadRequest("payload.call_control_id is missing")
    place = decode_state(_text(payload, "client_state"))
    event_id = data.get("id")
    return {
        "provider": "telnyx",
        "provider_call_id": call_control_id,
        "call_id": place.call_id,
        "block": place.block,
        "step": place.step,
        "from_number": _text(payload, "from"),
        "to_number": _text(payload, "to"),
        "detail": data["event_type"],
        "event_id": event_id if isinstance(event_id, str) else "",
    }


# --- the adapter ----------------------------------------------------------------------------------


class TelnyxAdapter(Adapter):
    """Telnyx Call Control v2 through ``AsyncTelnyx``."""

    name: ClassVar[str] = "telnyx"
    signature_headers: ClassVar[tuple[str, ...]] = (SIGNATURE_HEADER, TIMESTAMP_HEADER)

    def __init__(self, settings: AdapterSettings, *, max_retries: int = 2):
        """``max_retries``: the SDK's retries on 408/409/429/5xx (with back-off)."""
        super().__init__(settings)
        self.max_retries = max_retries
        self._rest: AsyncTelnyx | None = None
        self._key: VerifyKey | None = None

    # --- webhooks ---------------------------------------------------------------------------------

    def verify(self, request: WebhookRequest) -> Verification:
        """Checks Ed25519 over ``timestamp|raw body`` and the ±300 s timestamp window.

        The replay key is the original plugin's: sha256(timestamp \\n signature in canonical
        base64 \\n body).
        """
        if self.settings.skip_signature:
            return Verification(True, "signature check skipped", skip_key(request))
        key = self._verify_key()
        if key is None:
            return Verification(False, "no valid Telnyx publicKey configured")
        signed = _signed_headers(request)
        if isinstance(signed, str):
            return Verification(False, signed)
        timestamp, signature = signed
        if not _ed25519_ok(key, timestamp.encode() + b"|" + request.body, signature):
            return Verification(False, f"bad {SIGNATURE_HEADER} signature")
        skew = self.settings.now() - int(timestamp)
        if abs(skew) > MAX_SKEW_S:
            when = "stale" if skew > 0 else "in the future"
            return Verification(False, f"{TIMESTAMP_HEADER} {when} by {abs(skew):.0f} s")
        canonical = base64.b64encode(signature).decode()
        material = f"{timestamp}\n{canonical}\n".encode() + request.body
        return Verification(True, "", hashlib.sha256(material).hexdigest())

    def _verify_key(self) -> VerifyKey | None:
        if self._key is None:
            raw = public_key_bytes(self.settings.credentials.get("publicKey", ""))
            if raw is not None:
                from nacl.signing import VerifyKey

                self._key = VerifyKey(raw)
        return self._key

    def parse(self, request: WebhookRequest) -> list[Event]:
        """The event of one Telnyx webhook; an event type we do not use gives none."""
        try:
            data = _envelope(request.body)
            handler = EVENTS.get(data["event_type"])
            if handler is None:
                return []
            payload = data.get("payload")
            if not isinstance(payload, dict):
                raise BadRequest("data.payload is not an object")
            return [handler(payload, _common(data, payload))]
        except RecursionError:  # the body, or JSON in its client_state, nested too deeply
            raise BadRequest("JSON nested too deeply") from None

    # --- REST -------------------------------------------------------------------------------------

    async def create_call(
        self, *, call_id: str, to: str, from_: str, webhook_base: str, timeout_s: int,
        send_digits: str | None = None,
    ) -> str:  # fmt: skip
        """POST /calls (dial) with our event URL and client_state; returns call_control_id.

        The dial request has no digits parameter: the manager sends ``send_dtmf`` on answer.
        """
        client = self._client()
        connection_id = self.settings.credentials.get("connectionId", "")
        if not connection_id:
            raise ProviderError("telnyx", None, "no connectionId configured")
        response = await self._send(
            client.calls.dial(
                connection_id=connection_id,
                from_=from_,
                to=to,
                webhook_url=callback_url(webhook_base, call_id, "event"),
                webhook_url_method="POST",
                client_state=encode_state(call_id),
                timeout_secs=timeout_s,
            )
        )
        call_control_id = response.data.call_control_id if response.data else None
        if not call_control_id:
            raise ProviderError("telnyx", None, "the dial response has no call_control_id")
        return call_control_id

    async def command(
        self, provider_call_id: str, command: str, body: Mapping[str, object]
    ) -> None:
        """POST /calls/{id}/actions/{command} with ``body`` exactly as given.

        Sent through the SDK's raw request method: its per-command methods are named
        differently from the paths (providers.md §1.3) and would re-shape the body.
        """
        if not COMMAND_NAME.fullmatch(command):
            raise ValueError(f"not a Call Control command: {command!r}")
        client = self._client()
        path = f"/calls/{_segment(provider_call_id)}/actions/{command}"
        send = client.put if command in PUT_COMMANDS else client.post
        await self._send(send(path, body=dict(body), cast_to=object))

    async def hangup(self, provider_call_id: str) -> None:
        """The hangup command; 404 or 422 "call already ended" (code 90018) are fine."""
        try:
            await self.command(provider_call_id, "hangup", {})
        except ProviderError as exc:
            text = exc.message.lower()
            ended = exc.status == 422 and ("90018" in text or "already ended" in text)
            if exc.status != 404 and not ended:
                raise

    async def call_status(self, provider_call_id: str) -> CallStatus:
        """GET /calls/{id}: ``is_alive``; 404 is ENDED (Telnyx forgets calls after 10 min)."""
        client = self._client()
        try:
            response = await self._send(client.calls.retrieve_status(provider_call_id))
        except ProviderError as exc:
            return CallStatus.ENDED if exc.status == 404 else CallStatus.UNKNOWN
        if response.data is None:
            return CallStatus.UNKNOWN
        return CallStatus.ACTIVE if response.data.is_alive else CallStatus.ENDED

    async def aclose(self) -> None:
        """Closes the SDK's httpx client."""
        if self._rest is not None:
            await self._rest.close()
            self._rest = None

    # --- helpers ----------------------------------------------------------------------------------

    def _client(self) -> AsyncTelnyx:
        if self._rest is None:
            from telnyx import AsyncTelnyx

            base = self.settings.api_base
            self._rest = AsyncTelnyx(
                api_key=self.settings.credentials.get("apiKey", ""),
                base_url=f"{base.rstrip('/')}/v2" if base else None,
                max_retries=self.max_retries,
            )
        return self._rest

    async def _send(self, request: Awaitable[T]) -> T:
        """Awaits one SDK call, turning its failures into :class:`ProviderError`."""
        import telnyx

        try:
            return await request
        except telnyx.APIStatusError as exc:
            message = redact(_error_text(exc.body) or "request failed", self._secrets())[:300]
            raise ProviderError("telnyx", exc.status_code, message) from None
        except telnyx.APIConnectionError as exc:
            raise _unreachable(exc) from None

    def _secrets(self) -> tuple[str, ...]:
        return (self.settings.credentials.get("apiKey", ""),)


def _signed_headers(request: WebhookRequest) -> tuple[str, bytes] | str:
    """The timestamp and decoded signature of a request, or why they are unusable."""
    signature_text = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "").strip()
    if not signature_text or not timestamp:
        return f"missing {SIGNATURE_HEADER if not signature_text else TIMESTAMP_HEADER} header"
    if not UNIX_TIME.fullmatch(timestamp):  # not isdigit(): "²" is a digit int() refuses
        return f"{TIMESTAMP_HEADER} is not a Unix time"
    try:
        return timestamp, b64decode_any(signature_text)
    except (binascii.Error, ValueError):
        return f"{SIGNATURE_HEADER} is not base64"


def _ed25519_ok(key: VerifyKey, message: bytes, signature: bytes) -> bool:
    from nacl.exceptions import BadSignatureError

    try:
        key.verify(message, signature)
    except (BadSignatureError, ValueError):  # ValueError: not 64 bytes
        return False
    return True


def _unreachable(exc: Exception) -> ProviderError:
    return ProviderError("telnyx", None, f"cannot reach the API ({type(exc).__name__})")


def _segment(call_control_id: str) -> str:
    # As the SDK's path_template: percent-encode what is not allowed in a path segment
    # (RFC 3986 pchar), so "v3:…" ids keep their colon.
    return quote(call_control_id, safe=":@!$&'()*+,;=-._~")


def _error_text(body: object) -> str:
    """Telnyx errors are {"errors": [{"code", "title", "detail"}]} (developers.telnyx.com)."""
    if isinstance(body, dict) and isinstance(body.get("errors"), list) and body["errors"]:
        first = body["errors"][0]
        if isinstance(first, dict):
            parts = (first.get("code"), first.get("title"), first.get("detail"))
            return " ".join(str(p) for p in parts if p)
    return str(body) if body else ""


ADAPTER = TelnyxAdapter
