"""Call states and the call record.

States follow the original plugin: ``initiated -> ringing -> answered -> active -> speaking <->
listening``, then one terminal state, which is also the end reason. Moves only go forward (a
late "ringing" after "answered" is ignored), speaking and listening alternate freely, any live
state may end, and a terminal state never changes again.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from voicecall.runtime.providers.base import END_REASONS

LIVE_STATES = ("initiated", "ringing", "answered", "active", "speaking", "listening")
TERMINAL = frozenset(END_REASONS)
_ORDER = {s: i for i, s in enumerate(LIVE_STATES)}


def can_move(current: str, target: str) -> bool:
    """Whether a call in ``current`` may move to ``target`` (the original's rules)."""
    if current == target or current in TERMINAL:
        return False
    if target in TERMINAL:
        return True
    if {current, target} == {"speaking", "listening"}:
        return True
    return _ORDER[target] > _ORDER[current]


@dataclass(slots=True, kw_only=True)
class TranscriptLine:
    at: float
    speaker: str  # "bot" | "user"
    text: str
    source: str = ""  # file:line of the flow action that said it (bot lines)
    block: str = ""


@dataclass(slots=True, kw_only=True)
class Waiting:
    """What the call waits for: the carrier's answer to one block, and which try it is."""

    block: str
    kind: str  # input | dial | converse | command | timer | fetch
    step: int = 0  # the try of an ask, the turn of a conversation, the command index (Telnyx)
    awaits: str = ""  # Telnyx: the event that completes the current command


@dataclass(slots=True, kw_only=True)
class CallRecord:
    """Everything about one call; persisted whole after every change."""

    call_id: str
    provider: str
    direction: str  # outbound | inbound
    from_number: str
    to_number: str
    flow: str
    flow_digest: str
    params: dict[str, Any] = field(default_factory=dict)
    provider_call_id: str | None = None
    state: str = "initiated"
    started_at: float = 0.0
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    ending: str | None = None  # the end reason we caused and expect the carrier to confirm
    waiting: Waiting | None = None
    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)  # "" = the top flow
    transcript: list[TranscriptLine] = field(default_factory=list)
    visited: list[str] = field(default_factory=list)  # flow nodes, in order (scope~node)
    pending: dict[str, Any] = field(default_factory=dict)  # an agent turn waiting to be served
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def new(cls, **fields: Any) -> CallRecord:
        return cls(call_id=str(uuid.uuid4()), **fields)

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL

    def move(self, target: str) -> bool:
        """Moves to ``target`` if the rules allow; returns whether it moved."""
        if not can_move(self.state, target):
            return False
        self.state = target
        return True

    def to_row(self) -> dict[str, Any]:
        """The record without its transcript and visited nodes (stored apart, append-only)."""
        out = {name: getattr(self, name) for name in _ROW_FIELDS}
        w = self.waiting
        out["waiting"] = None if w is None else {"block": w.block, "kind": w.kind,
                                                 "step": w.step, "awaits": w.awaits}  # fmt: skip
        return out

    def to_json(self) -> dict[str, Any]:
        out = self.to_row()
        out["transcript"] = [asdict(line) for line in self.transcript]
        out["visited"] = list(self.visited)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CallRecord:
        data = dict(data)
        waiting = data.pop("waiting", None)
        lines = data.pop("transcript", [])
        record = cls(**data)
        record.waiting = Waiting(**waiting) if waiting else None
        record.transcript = [TranscriptLine(**line) for line in lines]
        return record

    def public(self) -> dict[str, Any]:
        """The record as the status RPC and CLI show it (no processed ids, no internals)."""
        out = self.to_json()
        for key in ("scopes", "pending", "waiting", "flow_digest", "ending"):
            out.pop(key, None)
        return out


# Everything but the append-only parts and the waiting state (written by hand in to_row).
_ROW_FIELDS = tuple(f.name for f in fields(CallRecord) if f.name not in (
    "transcript", "visited", "waiting"))  # fmt: skip
