"""The flow as frozen data: what the checks read and the compiler lowers.

Every element keeps the :class:`~voicecall.dsl.errors.Span` it came from, so that a diagnostic,
a compiled block or a runtime log line can name ``file:line:col``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from voicecall.dsl.errors import Span

BUILTIN_NAMES = frozenset({"call", "settings", "config", "now"})
CALL_FIELDS = ("id", "from", "to", "direction", "provider")
# `now` is a timezone-aware datetime: what a flow may read or call on it.
NOW_FIELDS = ("year", "month", "day", "hour", "minute", "second", "microsecond", "tzinfo",
              "fold", "weekday", "isoweekday", "isocalendar", "date", "time", "timetz",
              "strftime", "isoformat", "ctime", "timestamp", "timetuple", "toordinal", "tzname",
              "utcoffset", "dst", "replace")  # fmt: skip
ANSWER_FIELDS = ("text", "digits", "confidence")


@dataclass(frozen=True, slots=True, kw_only=True)
class Text:
    """A template: text with ``{{ expression }}`` parts."""

    source: str
    span: Span
    block: bool = False  # written as a block scalar (| or >): the text starts a line below


@dataclass(frozen=True, slots=True, kw_only=True)
class Expr:
    """A bare expression (``when:``, ``set:``, ``match:``, call_flow params)."""

    source: str
    span: Span


@dataclass(frozen=True, slots=True, kw_only=True)
class Ref:
    """A reference to a node by name."""

    name: str
    span: Span


@dataclass(frozen=True, slots=True, kw_only=True)
class Action:
    kind: ClassVar[str] = ""
    span: Span
    # For actions with options: (option, key span, value span), to point at one option.
    options: tuple[tuple[str, Span, Span], ...] = ()

    def option_span(self, name: str, *, key: bool = True) -> Span:
        """The span of an option's key (or value), else of the whole action."""
        for option, key_span, value_span in self.options:
            if option == name:
                return key_span if key else value_span
        return self.span


@dataclass(frozen=True, slots=True, kw_only=True)
class Say(Action):
    kind: ClassVar[str] = "say"
    text: Text
    voice: str | None = None
    language: str | None = None
    loop: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Play(Action):
    kind: ClassVar[str] = "play"
    url: Text
    loop: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Pause(Action):
    kind: ClassVar[str] = "pause"
    ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Ask(Action):
    kind: ClassVar[str] = "ask"
    prompt: Text
    input: tuple[str, ...] = ("speech", "dtmf")
    timeout_ms: int = 5000
    speech_timeout_ms: int | None = None  # None: the provider decides ("auto")
    retries: int = 0
    reprompt: Text | None = None
    save_as: str | None = None
    hints: tuple[str, ...] = ()
    language: str | None = None
    voice: str | None = None
    num_digits: int | None = None
    finish_on_key: str = "#"
    valid_digits: str | None = None
    match: Expr | None = None
    on_no_input: Ref | None = None
    on_no_match: Ref | None = None


COLLECT_TYPES = ("string", "integer", "number", "boolean", "phone", "date")


@dataclass(frozen=True, slots=True, kw_only=True)
class Field:
    """One value a conversation collects (``converse: {collect: {name: …}}``)."""

    name: str
    span: Span  # the name's span
    type: str = "string"
    description: str = ""
    required: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Converse(Action):
    kind: ClassVar[str] = "converse"
    driver: str
    message: Text | None = None
    model: str | None = None
    system_prompt: Text | None = None
    response_timeout_ms: int | None = None
    max_turns: int | None = None
    collect: tuple[Field, ...] = ()
    on_done: Ref | None = None
    on_hangup: Ref | None = None
    on_timeout: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Assignment:
    name: str
    value: Expr
    span: Span  # the name's span


@dataclass(frozen=True, slots=True, kw_only=True)
class Set(Action):
    kind: ClassVar[str] = "set"
    assignments: tuple[Assignment, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    when: Expr
    goto: Ref


@dataclass(frozen=True, slots=True, kw_only=True)
class Branch(Action):
    kind: ClassVar[str] = "branch"
    cases: tuple[Case, ...]
    otherwise: Ref | None  # None only in a flow with errors


@dataclass(frozen=True, slots=True, kw_only=True)
class Goto(Action):
    kind: ClassVar[str] = "goto"
    target: Ref


@dataclass(frozen=True, slots=True, kw_only=True)
class Transfer(Action):
    kind: ClassVar[str] = "transfer"
    to: Text
    caller_id: Text | None = None
    timeout_ms: int = 30_000
    on_fail: Ref | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendDigits(Action):
    kind: ClassVar[str] = "send_digits"
    digits: Text


@dataclass(frozen=True, slots=True, kw_only=True)
class CallFlow(Action):
    kind: ClassVar[str] = "call_flow"
    flow: str
    flow_span: Span
    params: tuple[Assignment, ...] = ()
    save_as: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hangup(Action):
    kind: ClassVar[str] = "hangup"


# Actions after which the node never goes on to its next action.
ENDS_NODE = (Goto, Branch, Hangup, Transfer, Converse)


@dataclass(frozen=True, slots=True, kw_only=True)
class Node:
    name: str
    span: Span  # the name's span
    actions: tuple[Action, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Param:
    name: str
    span: Span
    type: str = "string"
    required: bool = False
    default: Any = None
    has_default: bool = False
    description: str = ""
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSettings:
    voice: str | None = None
    language: str | None = None
    speech_model: str | None = None
    service_level: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    voice: str | None = None
    language: str | None = None
    max_duration_ms: int | None = None
    providers: tuple[tuple[str, ProviderSettings], ...] = ()

    def for_provider(self, provider: str) -> ProviderSettings:
        """The provider's own settings, or empty ones."""
        return dict(self.providers).get(provider, ProviderSettings())


@dataclass(frozen=True, slots=True, kw_only=True)
class Admit:
    policy: str
    span: Span
    allow_from: tuple[str, ...] = ()
    reject_message: Text | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Handlers:
    max_duration: Ref | None = None
    error: Ref | None = None
    hangup: Ref | None = None

    def refs(self) -> tuple[tuple[str, Ref], ...]:
        pairs = (
            ("max_duration", self.max_duration),
            ("error", self.error),
            ("hangup", self.hangup),
        )
        return tuple((name, ref) for name, ref in pairs if ref is not None)


@dataclass(frozen=True, slots=True, kw_only=True)
class Flow:
    """One checked flow file."""

    file: str
    digest: str
    version: int
    name: str
    name_span: Span
    description: str
    direction: str
    params: tuple[Param, ...]
    settings: Settings
    start: Ref
    nodes: tuple[Node, ...]
    admit: Admit | None = None
    handlers: Handlers = Handlers()
    timezone: str = ""  # the IANA zone `now` is given in; empty: config `timezone`, else UTC

    def node(self, name: str) -> Node | None:
        """The node called ``name``, or None."""
        for node in self.nodes:
            if node.name == name:
                return node
        return None

    def param(self, name: str) -> Param | None:
        """The param called ``name``, or None."""
        for param in self.params:
            if param.name == name:
                return param
        return None
