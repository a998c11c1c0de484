"""Twilio: executing TwiML and the webhooks Twilio sends.

Request parameters: https://www.twilio.com/docs/voice/twiml#request-parameters (every request:
CallSid, AccountSid, From, To, CallStatus, ApiVersion, Direction, Caller, Called), status
callbacks https://www.twilio.com/docs/voice/api/call-resource#statuscallbackevent (plus
CallbackSource, SequenceNumber, Timestamp, and CallDuration when completed), Gather
https://www.twilio.com/docs/voice/twiml/gather#action (Digits, or SpeechResult + Confidence),
Dial https://www.twilio.com/docs/voice/twiml/dial#action (DialCallStatus, DialCallSid,
DialCallDuration).
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, ClassVar
from urllib.parse import urljoin

from .documents import DialSpec, DocumentSession, Goto, InputSpec, text_of
from .model import MockCall
from .streams import StreamSpec

API_VERSION = "2010-04-01"
DEFAULT_EVENTS = ("completed",)  # what StatusCallback reports without StatusCallbackEvent


def new_sid(prefix: str = "CA") -> str:
    return prefix + secrets.token_hex(16)


def format_datetime_at(timestamp: float | None) -> str | None:
    """An RFC 2822 date, as in Twilio's resources and callbacks."""
    if timestamp is None:
        return None
    return format_datetime(datetime.fromtimestamp(timestamp, UTC))


class TwilioSession(DocumentSession):
    """One Twilio call."""

    provider = "twilio"
    verbs: ClassVar[dict[str, str]] = {
        "Say": "say", "Play": "play", "Pause": "pause", "Gather": "gather", "Dial": "dial",
        "Redirect": "redirect", "Hangup": "hangup", "Reject": "reject", "Connect": "connect",
    }  # fmt: skip
    prompt_verbs = frozenset({"Say", "Play", "Pause"})

    def __init__(
        self,
        carrier: Any,
        call: MockCall,
        *,
        url: str,
        method: str = "POST",
        status_callback: str | None = None,
        status_events: Sequence[str] = DEFAULT_EVENTS,
        status_method: str = "POST",
        machine_detection: str | None = None,
    ):
        super().__init__(carrier, call, url=url, method=method)
        self.status_callback = status_callback
        self.status_events = frozenset(status_events or DEFAULT_EVENTS)
        self.status_method = status_method or "POST"
        self.machine_detection = machine_detection
        self._sequence = 0

    # --- parameters ----------------------------------------------------------------------------

    def params(self, **extra: str) -> dict[str, str]:
        call = self.call
        params = {
            "AccountSid": self.carrier.credentials["accountSid"],
            "ApiVersion": API_VERSION,
            "CallSid": call.provider_call_id,
            "CallStatus": call.state,
            "Called": call.to,
            "Caller": call.from_,
            "Direction": "outbound-api" if call.direction == "outbound" else "inbound",
            "From": call.from_,
            "To": call.to,
        }
        if self.machine_detection and call.answered:
            # https://www.twilio.com/docs/voice/answering-machine-detection#webhook-parameters
            machine = "machine_end_beep" if self.machine_detection == "DetectMessageEnd" else (
                "machine_start")  # fmt: skip
            params["AnsweredBy"] = machine if self.caller.machine else "human"
        params.update(extra)
        return params

    def input_spec(self, element: ET.Element, doc_url: str) -> InputSpec:
        # Without an action, Twilio posts to the document's own URL.
        num_digits = element.get("numDigits")
        return InputSpec(
            action=urljoin(doc_url, element.get("action") or doc_url),
            method=element.get("method") or "POST",
            kinds=frozenset((element.get("input") or "dtmf").split()),
            timeout_s=float(element.get("timeout") or 5),
            on_empty=element.get("actionOnEmptyResult") == "true",
            follow=True,
            finish_key=element.get("finishOnKey", "#"),
            num_digits=int(num_digits) if num_digits else None,
        )

    def input_params(self, kind: str, value: str, spec: InputSpec) -> dict[str, str]:
        if kind == "speech":
            return {"SpeechResult": value, "Confidence": str(self.carrier.speech_confidence)}
        return {"Digits": value}

    def dial_spec(self, element: ET.Element, doc_url: str) -> DialSpec:
        nouns = [text_of(n) for n in element if n.tag in ("Number", "Sip", "Client")]
        action = element.get("action")
        return DialSpec(
            targets=tuple(nouns or [text_of(element)]),
            action=urljoin(doc_url, action) if action else None,
            method=element.get("method") or "POST",
            timeout_s=float(element.get("timeout") or 30),
            follow=True,
        )

    def dial_params(self, outcome: str, duration_s: int) -> dict[str, str]:
        params = {
            "DialCallStatus": "completed" if outcome == "answered" else outcome,
            "DialCallSid": new_sid(),
        }
        if outcome == "answered":
            params["DialCallDuration"] = str(duration_s)
        return params

    # --- verbs ---------------------------------------------------------------------------------

    async def verb_reject(self, element: ET.Element, doc_url: str) -> Goto | None:
        reason = element.get("reason") or "rejected"
        self.record("bot", "reject", reason=reason)
        self.end("busy" if reason == "busy" else "rejected", "bot")
        return None

    async def verb_connect(self, element: ET.Element, doc_url: str) -> Goto | None:
        """``<Connect><Stream>``: the call stays on the stream until it ends; then Twilio
        requests the Connect ``action`` and runs its reply (without one, the next verb). A
        REST update meanwhile ends the stream and runs the new TwiML instead."""
        stream_el = element.find("Stream")
        if stream_el is None:
            self.record("carrier", "unsupported", verb="Connect",
                        noun=next((c.tag for c in element), ""))  # fmt: skip
            return None
        params = {p.get("name", ""): p.get("value", "") for p in stream_el.iter("Parameter")}
        url = stream_el.get("url", "")
        self.record("bot", "stream", url=url, params=sorted(params))
        stream = self.open_stream(StreamSpec(url=url, params=params))
        try:
            await self.await_stream(stream)
        finally:
            if not stream.ended:  # a REST update abandoned the <Connect>
                stream.stop("redirect")
        if self.call.ended:
            return None
        action = element.get("action")
        if not action:
            return None
        return Goto(url=urljoin(doc_url, action), method=element.get("method") or "POST",
                    params=self.params(), event="connect")  # fmt: skip

    # --- status callbacks ----------------------------------------------------------------------

    async def on_initiated(self) -> None:
        await self.status("initiated")

    async def on_ringing(self) -> None:
        await self.status("ringing")

    async def on_answered(self) -> None:
        await self.status("answered")

    async def on_ended(self, reason: str, by: str) -> None:
        call = self.call
        duration = int((call.ended_at or 0) - call.answered_at) if call.answered_at else 0
        await self.status("completed", CallDuration=str(duration))

    async def status(self, event: str, **extra: str) -> None:
        """A status callback, when the create request asked for this event."""
        if not self.status_callback or event not in self.status_events:
            return
        self._sequence += 1
        params = self.params(
            CallbackSource="call-progress-events",
            SequenceNumber=str(self._sequence - 1),
            Timestamp=format_datetime_at(self.clock.now()) or "",
            **extra,
        )
        await self.notify(self.status_callback, self.status_method, params, "status")
