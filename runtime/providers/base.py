"""The contract between the runtime and a carrier adapter.

An adapter turns a carrier's webhook into normalized :class:`Event` objects after checking its
signature, turns compiled output into the carrier's reply, and makes the carrier's REST calls
(through the official SDK). The runtime never touches a carrier's wire format itself.

Order on every webhook (the server enforces it): size limit -> the adapter's signature
headers present -> :meth:`Adapter.verify` -> replay check on the verification key ->
:meth:`Adapter.parse` -> state change and side effects.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar
from urllib.parse import urlsplit

from multidict import MultiDict

from voicecall.runtime.urls import Place, place_from_query


class EventKind(StrEnum):
    INITIATED = "call.initiated"
    RINGING = "call.ringing"
    ANSWERED = "call.answered"
    ENDED = "call.ended"  # status: our end reason (see END_REASONS)
    FETCH = "call.fetch"  # the carrier asks what to do next and needs a document back
    INPUT = "call.input"  # a gather's result: digits and/or text; neither means no input
    DIAL_ENDED = "call.dial_ended"  # status: answered | completed | busy | no-answer | failed
    COMMAND_ENDED = "call.command_ended"  # Telnyx: a command's completion event (in `detail`)
    SPEECH = "call.speech"  # Telnyx: a transcription result (`final` tells whether final)
    DTMF = "call.dtmf"  # Telnyx: a key pressed outside a gather


# Terminal call states, which are also the end reasons (as in the original plugin).
END_REASONS = (
    "completed", "hangup-user", "hangup-bot", "timeout", "error", "failed", "no-answer",
    "busy", "voicemail",
)  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One thing that happened on a call, in the runtime's terms."""

    kind: EventKind
    provider: str
    provider_call_id: str | None = None
    # Plivo answers a create with a request uuid and names the call by another uuid later:
    # the earlier id, so the runtime can find the call and switch to the new one.
    previous_provider_call_id: str | None = None
    call_id: str | None = None  # ours: from the callback URL's `call`, or Telnyx client_state
    block: str | None = None  # from the URL's `block`, or client_state
    step: int | None = None
    direction: str | None = None  # "inbound" | "outbound"
    from_number: str | None = None
    to_number: str | None = None
    status: str | None = None
    digits: str | None = None
    text: str | None = None
    confidence: float | None = None
    final: bool = True
    detail: str = ""  # the carrier's own event or status name, for logs
    event_id: str = ""  # the carrier's own event id, when it has one (Telnyx data.id)


@dataclass(frozen=True, slots=True, kw_only=True)
class WebhookRequest:
    """A carrier's HTTP request, as the adapter needs it to verify and parse."""

    method: str
    url: str  # the full URL the carrier requested and signed: public origin + raw path + query
    query: Mapping[str, str]
    headers: Mapping[str, str]  # case-insensitive
    body: bytes
    form: Mapping[str, str] = field(default_factory=dict)  # urlencoded body fields, if any
    # Every field of the form in body order, repeated names included: what the carrier signed
    # (``form`` keeps the last value of each name, for parsing). Empty: ``form`` is all of it.
    form_pairs: tuple[tuple[str, str], ...] = ()
    # Why the body cannot be read (not UTF-8): answered 400, but only after the signature.
    malformed: str = ""
    remote: str = ""

    def signed_fields(self) -> MultiDict[str]:
        """The form fields as signed: every value of every name, in body order."""
        return MultiDict(self.form_pairs or self.form.items())


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    reason: str = ""  # why it failed, for the log (never a secret)
    key: str = ""  # replay key, from verified material only (signature, timestamp, body…)
    # A key the server claims before anything happens, when the signature does not cover the
    # whole request (Plivo V2: not the body nor the query): a second request presenting the
    # same signature is a replay, whatever else it changed.
    once_key: str = ""


@dataclass(frozen=True, slots=True)
class Reply:
    """What the webhook answers: a TwiML / Plivo XML document, or an empty acknowledgement."""

    body: bytes = b""
    content_type: str = "text/plain"
    status: int = 200


class BadRequest(Exception):
    """The request is malformed: answered 400, with the message in the log."""


class CallStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterSettings:
    """How an adapter reaches its carrier and checks what the carrier sends.

    ``credentials`` keys, per provider: twilio ``accountSid``, ``authToken`` (and ``region``,
    optional); plivo ``authId``,
    ``authToken``; telnyx ``apiKey``, ``connectionId``, ``publicKey``.
    """

    credentials: Mapping[str, str]
    api_base: str | None = None  # a REST base other than the carrier's (the mock carrier, tests)
    skip_signature: bool = False
    now: Callable[[], float] = time.time  # Telnyx's 5-minute timestamp window is checked with it
    # Plivo: accept legacy V2 signatures (`plivo.allowV2Signatures`). Unsafe: V2 signs only the
    # URL without its query and a nonce, so each (nonce, signature) pair is accepted once.
    allow_v2_signatures: bool = False


FormParser = Callable[[Mapping[str, str], "Place"], list[Event]]


def url_problem(url: str) -> str:
    """Why a request URL cannot be signature-checked (it is built from the Host header when
    no publicUrl is set), or "" if it can: the SDKs' URL parsing raises on a bad port or host.
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not 0-65535
        url.encode("utf-8")
    except ValueError:  # UnicodeEncodeError included: undecodable Host bytes
        return "the request URL is malformed (check the Host header or set publicUrl)"
    if not parts.hostname:
        return "the request URL has no host (check the Host header or set publicUrl)"
    return ""


def parse_form(
    request: WebhookRequest, provider: str, id_field: str, parsers: Mapping[str, FormParser]
) -> list[Event]:
    """Events of a form-encoded carrier request (Twilio, Plivo); the URL's ``kind`` picks the
    parser. A request without ``call`` in its query is an inbound call's first fetch.

    Raises:
        BadRequest: no kind for a named call, an unknown kind, or no ``id_field``.
    """
    try:
        place = place_from_query(request.query)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    kind = place.kind or (None if place.call_id else "answer")
    if kind is None:
        raise BadRequest("callback URL names a call but no kind")
    parser = parsers.get(kind)
    if parser is None:
        raise BadRequest(f"{provider} does not call back with kind {kind!r}")
    fields: Mapping[str, str] = {**request.query, **request.form}  # the body's field wins
    if not fields.get(id_field):
        raise BadRequest(f"request without {id_field}")
    return parser(fields, place)


class Adapter(abc.ABC):
    """One carrier: webhooks in, replies and REST calls out."""

    name: ClassVar[str]
    # Headers a signed request must carry; their absence is a 401 before the body is read.
    signature_headers: ClassVar[tuple[str, ...]] = ()
    # Or: alternative complete sets, one of which must be present (Plivo's V3 or V2 headers).
    signature_header_sets: ClassVar[tuple[tuple[str, ...], ...]] = ()

    def missing_signature_headers(self, present: Mapping[str, str]) -> list[str]:
        """The signature headers a request lacks (empty: it may go on to verification)."""
        if self.signature_header_sets:
            for names in self.signature_header_sets:
                if all(n in present for n in names):
                    return []
            return list(self.signature_header_sets[0])
        return [n for n in self.signature_headers if n not in present]

    def __init__(self, settings: AdapterSettings):
        self.settings = settings

    # --- webhooks ------------------------------------------------------------------------------

    @abc.abstractmethod
    def verify(self, request: WebhookRequest) -> Verification:
        """Checks the signature (unless skipped: then ok with a key over method, URL and body)."""

    @abc.abstractmethod
    def parse(self, request: WebhookRequest) -> list[Event]:
        """The events a verified request reports. Raises :class:`BadRequest` when malformed."""

    def document(self, fragments: Sequence[str]) -> Reply:
        """The reply for compiled XML fragments (Twilio, Plivo); Telnyx acknowledges only."""
        return Reply()

    def empty(self) -> Reply:
        """The reply to a request that needs no instructions (status callbacks, events)."""
        return Reply()

    # --- REST ----------------------------------------------------------------------------------

    @abc.abstractmethod
    async def create_call(
        self, *, call_id: str, to: str, from_: str, webhook_base: str, timeout_s: int,
        send_digits: str | None = None,
    ) -> str:  # fmt: skip
        """Places an outbound call whose callbacks go to ``webhook_base``; returns its id.

        ``send_digits``: keypad tones played once the callee answers, before the call's
        document (Twilio SendDigits, Plivo send_digits; Telnyx has no such dial parameter:
        the manager sends send_dtmf on answer instead).
        """

    @abc.abstractmethod
    async def hangup(self, provider_call_id: str) -> None:
        """Ends the call; a call that already ended is not an error."""

    async def redirect(self, provider_call_id: str, url: str) -> None:
        """Makes a live call fetch ``url`` for its next instructions (Twilio, Plivo)."""
        raise NotImplementedError(f"{self.name} takes commands, not redirects")

    async def send_dtmf(self, provider_call_id: str, digits: str) -> bool:
        """Plays keypad tones on a live call through a REST call of its own, leaving what the
        call runs alone; False when the carrier has none (the manager then sends a document
        or command with the tones)."""
        return False

    async def command(
        self, provider_call_id: str, command: str, body: Mapping[str, object]
    ) -> None:
        """Sends one Call Control command (Telnyx)."""
        raise NotImplementedError(f"{self.name} takes documents, not commands")

    @abc.abstractmethod
    async def call_status(self, provider_call_id: str) -> CallStatus:
        """Whether the carrier still has the call (used when restoring calls after a restart)."""

    async def aclose(self) -> None:  # noqa: B027 - most adapters have nothing to close
        """Closes HTTP sessions."""
