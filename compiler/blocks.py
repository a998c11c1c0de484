"""The lowered flow: blocks of provider-executed actions, each ended by one terminator.

A block is a maximal run of actions the carrier performs without asking us (say, play, pause,
send_digits), ended by what needs the server: a wait for the caller (an ask, a dial, a
conversation), a server decision (set, branch, goto, entering or leaving a subflow), or the end
of the call. Server decisions need no carrier round trip: the runtime evaluates them while
answering and chains the next block into the same response; only waits go back to the carrier.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicecall.dsl import model as m
from voicecall.dsl.errors import Span


@dataclass(frozen=True, slots=True, kw_only=True)
class Source:
    """Where a block or action comes from: ``file:line:col`` and the node."""

    file: str
    span: Span
    node: str

    def __str__(self) -> str:
        return f"{self.file}:{self.span.line}:{self.span.col}"

    @property
    def short(self) -> str:
        return f"{self.file}:{self.span.line}"


# --- what the carrier runs -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    source: Source


@dataclass(frozen=True, slots=True, kw_only=True)
class SayOp(Op):
    text: m.Text
    voice: str | None
    language: str | None
    loop: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PlayOp(Op):
    url: m.Text
    loop: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class PauseOp(Op):
    ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class DigitsOp(Op):
    digits: m.Text


# --- how a block ends ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class End:
    source: Source


@dataclass(frozen=True, slots=True, kw_only=True)
class Continue(End):
    """Go on with another block (a goto, or falling into the next part of a node)."""

    next: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Assign(End):
    """Evaluate assignments on the server, then go on."""

    assignments: tuple[m.Assignment, ...]
    next: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Decide(End):
    """Evaluate the cases in order on the server; go to the first true one, else ``otherwise``."""

    cases: tuple[tuple[m.Expr, str], ...]
    otherwise: str


@dataclass(frozen=True, slots=True, kw_only=True)
class EnterFlow(End):
    """Start a subflow in a new variable scope, its params evaluated in the caller's scope."""

    flow: str
    scope: str
    params: tuple[m.Assignment, ...]
    defaults: tuple[tuple[str, object], ...]
    next: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ExitFlow(End):
    """Leave a subflow: its saved values become the caller's ``save_as``; go on in the caller."""

    scope: str
    save_as: str | None
    outputs: tuple[str, ...]
    next: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Gather(End):
    """Ask and wait for the caller's answer (``retry``: this is the reprompt of a later try)."""

    ask: m.Ask
    retry: bool
    on_input: str
    on_no_input: str | None
    on_no_match: str | None
    retry_block: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dial(End):
    """Connect the caller to another number; ``on_fail`` runs if nobody answers."""

    to: m.Text
    caller_id: m.Text | None
    timeout_ms: int
    on_fail: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Converse(End):
    """Hand the call to the agent or the model until it ends, or until it finishes with its
    collected values (``on_done``), the caller hangs up (``on_hangup``) or its turns are used
    up (``on_timeout``): each the id of the block to go on at, or None."""

    converse: m.Converse
    on_done: str | None = None
    on_hangup: str | None = None
    on_timeout: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup(End):
    """End the call (``implicit``: the flow ran off the end of a node)."""

    implicit: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class Block:
    id: str
    scope: str  # "" for the top flow, else the subflow's scope id
    flow: str  # the flow whose source the block comes from
    ops: tuple[Op, ...]
    end: End
    source: Source


@dataclass(frozen=True, slots=True, kw_only=True)
class Lowered:
    """A flow cut into blocks, with subflows expanded at each call site."""

    flow: m.Flow
    blocks: tuple[Block, ...]
    start: str
    handlers: tuple[tuple[str, str], ...]  # (event, block id)

    def block(self, block_id: str) -> Block:
        for block in self.blocks:
            if block.id == block_id:
                return block
        raise KeyError(block_id)
