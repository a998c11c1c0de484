"""What the mock carrier records: calls with their timelines, REST requests, webhook deliveries."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from voicecall.runtime.sim.script import Script

# Call states, in the carriers' common words (Twilio's spelling).
ACTIVE_STATES = ("queued", "initiated", "ringing", "in-progress")
FINAL_STATES = ("completed", "busy", "no-answer", "canceled", "failed")

# Why a call ended, from the carrier's side:
#   hangup-bot   the bot hung up (a Hangup verb, the end of the document, a hangup command or
#                the REST hangup of an answered call)
#   hangup-user  the scripted party hung up (a `hangup` step, or no step left when one is needed)
#   completed    a transfer was answered and the bridged call ended
#   no-answer, busy, rejected, canceled (REST hangup before answer)
#   error        a webhook failed (non-2xx, no connection, invalid document): the carrier
#                hangs up, as the real ones do after playing an error message
END_REASONS = ("hangup-bot", "hangup-user", "completed", "no-answer", "busy", "rejected",
               "canceled", "error")  # fmt: skip


class Entry(NamedTuple):
    """One line of a call's timeline."""

    t: float  # virtual seconds since the call was created
    who: str  # bot | caller | carrier
    what: str  # say, press, status, …
    detail: dict[str, Any]


@dataclass(eq=False, kw_only=True)
class MockCall:
    """One call as the carrier sees it; its session updates it as the call goes on."""

    provider: str
    provider_call_id: str  # Twilio CallSid, Plivo CallUUID, Telnyx call_control_id
    direction: str  # inbound | outbound
    from_: str
    to: str
    script: Script
    started_at: float  # clock time the call was created
    call_id: str | None = None  # the runtime's id, when its URLs or client_state name one
    request_uuid: str | None = None  # Plivo: the id the create request answered with
    state: str = "queued"
    end_reason: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    timeline: list[Entry] = field(default_factory=list)
    ended_event: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def ended(self) -> bool:
        """Whether the call is over (its final webhooks may still be on their way)."""
        return self.state in FINAL_STATES

    @property
    def answered(self) -> bool:
        return self.answered_at is not None

    def entries(self, who: str | None = None, what: str | None = None) -> list[Entry]:
        """The timeline entries by one party and/or of one kind."""
        return [
            e
            for e in self.timeline
            if (who is None or e.who == who) and (what is None or e.what == what)
        ]

    def said(self) -> list[str]:
        """What the bot said, in order."""
        return [str(e.detail.get("text", "")) for e in self.entries("bot", "say")]


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """A REST request the carrier received (authorization values removed)."""

    provider: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # the parsed form (a value list for a repeated field) or JSON


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One webhook the carrier sent, and what came back."""

    provider: str
    call: str  # provider call id
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    params: dict[str, str]  # the form fields (Twilio, Plivo); empty for Telnyx
    event: str  # Telnyx event_type, or the purpose: answer, status, action, redirect, hangup, …
    status: int | None  # HTTP status; None when no connection or no reply
    reply: bytes = b""
    error: str = ""
    duplicate: bool = False

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def json(self) -> Any:
        """The JSON body (Telnyx)."""
        return json.loads(self.body)
