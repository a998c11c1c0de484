"""Plivo: executing Plivo XML and the callbacks Plivo sends.

Request parameters: https://www.plivo.com/docs/voice/xml/request (CallUUID, From, To,
CallStatus, Direction, ALegUUID, ALegRequestUUID; Duration, BillDuration and HangupCause once
hung up), GetInput https://www.plivo.com/docs/voice/xml/getinput (InputType, Digits, Speech,
SpeechConfidenceScore; no input goes on with the next element), Dial
https://www.plivo.com/docs/voice/xml/dial (DialStatus, DialALegUUID, DialBLegUUID,
DialRingStatus, DialHangupCause), hangup causes and sources
https://www.plivo.com/docs/voice/troubleshooting/hangup-causes.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urljoin

from voicecall.runtime.media.plivo import extra_headers

from .documents import DialSpec, DocumentSession, Goto, InputSpec, text_of
from .model import MockCall
from .streams import StreamSpec

# Our end reason -> (HangupCause, HangupCauseName, HangupSource); the source of a hang-up by
# the bot depends on how (the Hangup element, the end of the document, the REST API).
_HANGUPS: dict[str, tuple[str, str, str]] = {
    "hangup-bot": ("NORMAL_CLEARING", "Normal Hangup", "Answer XML"),
    "hangup-user": ("NORMAL_CLEARING", "Normal Hangup", "<remote>"),
    "completed": ("NORMAL_CLEARING", "Normal Hangup", "<remote>"),
    "no-answer": ("NO_ANSWER", "No Answer", "<remote>"),
    "busy": ("USER_BUSY", "Busy Line", "<remote>"),
    "rejected": ("CALL_REJECTED", "Rejected", "Answer XML"),
    "canceled": ("ORIGINATOR_CANCEL", "Canceled", "API Request"),
    "error": ("NORMAL_TEMPORARY_FAILURE", "Error Reaching Answer URL", "Error"),
}
_BOT_SOURCES = {"document": ("End Of XML Instructions", "Plivo"), "api": ("Normal Hangup",
                "API Request")}  # fmt: skip
_DIAL_CAUSES = {"answered": "NORMAL_CLEARING", "busy": "USER_BUSY", "no-answer": "NO_ANSWER",
                "failed": "UNALLOCATED_NUMBER"}  # fmt: skip
_STATUS_NAMES = {"canceled": "cancel"}  # Plivo's word for a call canceled before answer


def plivo_time(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


class PlivoSession(DocumentSession):
    """One Plivo call."""

    provider = "plivo"
    verbs: ClassVar[dict[str, str]] = {
        "Speak": "say", "Play": "play", "Wait": "pause", "GetInput": "gather", "Dial": "dial",
        "Redirect": "redirect", "Hangup": "hangup", "DTMF": "dtmf", "Stream": "stream",
    }  # fmt: skip
    prompt_verbs = frozenset({"Speak", "Play", "Wait"})

    def __init__(
        self,
        carrier: Any,
        call: MockCall,
        *,
        url: str,
        method: str = "POST",
        hangup_url: str | None = None,
        hangup_method: str = "POST",
        ring_url: str | None = None,
        ring_method: str = "POST",
    ):
        super().__init__(carrier, call, url=url, method=method)
        self.hangup_url = hangup_url
        self.hangup_method = hangup_method or "POST"
        self.ring_url = ring_url
        self.ring_method = ring_method or "POST"

    # --- parameters ----------------------------------------------------------------------------

    def params(self, **extra: str) -> dict[str, str]:
        call = self.call
        params = {
            "CallUUID": call.provider_call_id,
            "From": call.from_,
            "To": call.to,
            "CallStatus": _STATUS_NAMES.get(call.state, call.state),
            "Direction": call.direction,
            "ALegUUID": call.provider_call_id,
            "ALegRequestUUID": call.request_uuid or "",
        }
        if call.request_uuid:
            params["RequestUUID"] = call.request_uuid
        params.update(extra)
        return params

    def request_extra(self, event: str) -> dict[str, str]:
        return {"Event": {"answer": "StartApp"}.get(event, "Redirect")}

    def input_spec(self, element: ET.Element, doc_url: str) -> InputSpec:
        num_digits = element.get("numDigits")
        return InputSpec(
            action=urljoin(doc_url, element.get("action") or doc_url),
            method=element.get("method") or "POST",
            kinds=frozenset((element.get("inputType") or "dtmf").split()),
            timeout_s=float(element.get("executionTimeout") or 15),
            on_empty=False,
            follow=element.get("redirect", "true") != "false",
            finish_key=element.get("finishOnKey", "#"),
            num_digits=int(num_digits) if num_digits else None,
        )

    def input_params(self, kind: str, value: str, spec: InputSpec) -> dict[str, str]:
        if kind == "speech":
            return {"InputType": "speech", "Digits": "", "Speech": value,
                    "SpeechConfidenceScore": str(self.carrier.speech_confidence)}  # fmt: skip
        return {"InputType": "dtmf", "Digits": value, "Speech": ""}

    def dial_spec(self, element: ET.Element, doc_url: str) -> DialSpec:
        nouns = [text_of(n) for n in element if n.tag in ("Number", "User")]
        action = element.get("action")
        return DialSpec(
            targets=tuple(nouns),
            action=urljoin(doc_url, action) if action else None,
            method=element.get("method") or "POST",
            timeout_s=float(element.get("timeout") or 30),
            follow=element.get("redirect", "true") != "false",
        )

    def dial_params(self, outcome: str, duration_s: int) -> dict[str, str]:
        answered = outcome == "answered"
        return {
            "DialStatus": "completed" if answered else outcome,
            "DialALegUUID": self.call.provider_call_id,
            "DialBLegUUID": str(uuid.uuid4()) if answered else "",
            "DialRingStatus": "true" if outcome in ("answered", "no-answer") else "false",
            "DialHangupCause": _DIAL_CAUSES.get(outcome, "NORMAL_CLEARING"),
        }

    async def verb_stream(self, element: ET.Element, doc_url: str) -> Goto | None:
        """``<Stream>``: the call stays on the stream until it ends, then goes on with the next
        element; a transfer (REST) meanwhile ends the stream and runs the new XML. (Without
        ``keepCallAlive`` Plivo would go on at once with the stream in the background; the mock
        holds the call there either way, the caller being on the stream.)"""
        url = text_of(element)
        params = extra_headers(element.get("extraHeaders", ""))
        self.record("bot", "stream", url=url, params=sorted(params),
                    bidirectional=element.get("bidirectional") == "true",
                    keep_call_alive=element.get("keepCallAlive") == "true")  # fmt: skip
        stream = self.open_stream(StreamSpec(url=url, params=params))
        try:
            await self.await_stream(stream)
        finally:
            if not stream.ended:  # a transfer abandoned the XML
                stream.stop("transfer")
        return None

    # --- callbacks -----------------------------------------------------------------------------

    async def on_ringing(self) -> None:
        if self.ring_url:
            params = self.params(Event="Ring")
            await self.notify(self.ring_url, self.ring_method, params, "ring")

    async def on_ended(self, reason: str, by: str) -> None:
        if not self.hangup_url:
            return
        call = self.call
        duration = int((call.ended_at or 0) - call.answered_at) if call.answered_at else 0
        cause, name, source = self.hangup_cause(reason, by)
        params = self.params(
            Event="Hangup", HangupCause=cause, HangupCauseName=name, HangupSource=source,
            Duration=str(duration), BillDuration=str(duration),
            StartTime=plivo_time(call.started_at), AnswerTime=plivo_time(call.answered_at),
            EndTime=plivo_time(call.ended_at),
        )  # fmt: skip
        await self.notify(self.hangup_url, self.hangup_method, params, "hangup")

    def hangup_cause(self, reason: str, by: str) -> tuple[str, str, str]:
        cause, name, source = _HANGUPS.get(reason, _HANGUPS["hangup-bot"])
        if reason == "hangup-bot" and by in _BOT_SOURCES:
            name, source = _BOT_SOURCES[by]
        if source == "<remote>":
            source = "Callee" if self.call.direction == "outbound" else "Caller"
        return cause, name, source
