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
    streams: list[StreamRecord] = field(default_factory=list)  # media streams, in order
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

    @property
    def stream_audio(self) -> bytes:
        """Every byte of audio the bot sent on the call's media streams (μ-law 8 kHz)."""
        return b"".join(bytes(s.audio) for s in self.streams)

    @property
    def clears(self) -> list[float]:
        """When the bot cleared its queued audio (loop time), over all streams."""
        return [c.at for s in self.streams for c in s.clears]


@dataclass(slots=True, kw_only=True)
class Utterance:
    """Words the caller said on a stream (loop times: streams run in real time)."""

    text: str
    started: float
    ended: float | None = None
    over_bot: bool = False  # the bot's audio was still playing when the caller started
    frames: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Clear:
    """A ``clear`` from the bot: when, and how much queued audio it dropped."""

    at: float  # loop time
    dropped_bytes: int
    cut_marks: tuple[str, ...] = ()


@dataclass(eq=False, kw_only=True)
class StreamRecord:
    """One media stream the carrier opened to the bot, as it went.

    Times are the event loop's (``loop.time()``): a stream runs in real time, 20 ms a frame,
    whatever the call's clock does.
    """

    provider: str
    url: str
    params: dict[str, str]  # what the bot asked the stream's start to carry (callId, token)
    stream_id: str = ""
    opened_at: float | None = None  # the socket connected
    closed_at: float | None = None
    audio: bytearray = field(default_factory=bytearray, repr=False)  # the bot's, as received
    arrivals: list[float] = field(default_factory=list, repr=False)  # one per media frame
    played_bytes: int = 0  # the bot's audio played out to the caller (not cleared)
    marks: list[str] = field(default_factory=list)  # mark names echoed, in order
    clears: list[Clear] = field(default_factory=list)
    utterances: list[Utterance] = field(default_factory=list)
    dtmf: list[str] = field(default_factory=list)  # digits the caller pressed
    frames_sent: int = 0  # media frames sent to the bot (silence included)
    unknown: list[str] = field(default_factory=list)  # frames the carrier did not understand
    error: str = ""  # why the socket could not be opened, if it could not
    close_code: int | None = None  # the bot's close code, when the bot closed (1008: refused)
    ended: str = ""  # why it ended: hangup, closed-by-bot, redirect, streaming_stop, …

    @property
    def refused(self) -> bool:
        """The bot closed the socket as a policy violation (a bad token, no start)."""
        return self.close_code == 1008

    @property
    def media_frames(self) -> int:
        return len(self.arrivals)


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
