"""Caller scripts: what the other end of a simulated call does.

A script is a YAML file (``NAME.caller.yaml``, never read as a flow; `voicecall simulate
--caller FILE`) or the ``caller:`` / ``agent:`` / ``model:`` part of a flow test case. Its
JSON Schema is ``caller.schema.json`` (`voicecall schema --caller`)::

    caller:                # the callee (outbound) or the caller (inbound), step by step
      - answer             # first: answer (default), no-answer, busy or voicemail
      - say: yes please    # at a prompt: speak
      - interrupt: wait    # on a media stream: speak over the bot (barge-in); elsewhere, say
      - press: "1"         # at a prompt: keypad digits
      - silence            # at a prompt: say nothing (the prompt times out)
      - dial: busy         # the outcome of a transfer: answered (default), busy, no-answer, failed
      - hangup             # hang up now
    agent:                 # plays the agent for `converse: {driver: agent}`, turn by turn
      - continue: How can I help?   # say it, then listen; the caller's next step answers
      - speak: One moment.
      - end                          # or `end: Goodbye.`
    model:                 # the model's replies for `converse: {driver: model}`
      - Sure, I can help with that.
      - done: {date: "2026-01-05"}   # finishes a conversation that collects values

When a call needs a caller step and none is left, the caller hangs up. Any step may wait first:
``- say: {text: yes, after: 2s}``. Steps never used fail a flow test (simulate warns). On a
media stream the caller takes its turn once the bot's audio has played out, and delays are
real time (a stream runs in real time).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path as FilePath
from typing import Any

import yaml

from voicecall.dsl.errors import Diagnostic, FlowError, Severity, Span
from voicecall.dsl.loader import Document, Path, load_bytes
from voicecall.dsl.values import parse_duration
from voicecall.runtime.manager.core import ModelReply
from voicecall.runtime.sim.schemas import check_caller

OPENERS = ("answer", "no-answer", "busy", "voicemail")


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    action: str
    value: str = ""  # say, interrupt: the words; press: the digits; dial: the outcome
    after_s: float = 0.0  # wait this long (virtual time) before acting
    where: str = ""  # file:line, for messages


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentStep:
    action: str  # continue | speak | end
    text: str = ""
    where: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Script:
    caller: tuple[Step, ...] = (Step(action="answer"),)
    agent: tuple[AgentStep, ...] = ()
    model: tuple[str | ModelReply, ...] = ()
    model_at: tuple[str, ...] = ()  # file:line:col of each model reply
    source: str = "<default>"
    # Once its steps are used up, the caller answers every prompt with a short sentence
    # (silence when nothing was said since its last answer) instead of hanging up.
    patient: bool = False

    @property
    def opener(self) -> Step:
        """How the call starts: answer, no-answer, busy or voicemail."""
        first = self.caller[0] if self.caller else Step(action="answer")
        return first if first.action in OPENERS else Step(action="answer")

    @property
    def turns(self) -> tuple[Step, ...]:
        """The caller's steps after the opener."""
        return self.caller[1:] if self.caller and self.caller[0].action in OPENERS else self.caller


# Without a script: answer, say yes at the first prompt, then hang up at the next; the agent
# takes one turn and ends; the model gives one reply.
DEFAULT = Script(
    caller=(Step(action="answer"), Step(action="say", value="yes")),
    agent=(
        AgentStep(action="continue", text="Is there anything else I can help with?"),
        AgentStep(action="end"),
    ),
    model=("Thank you for calling. Goodbye.",),
)


# The Gateway's mock callee: answers, then replies to every prompt and agent turn until the
# agent or the flow ends the call.
PATIENT = Script(caller=(Step(action="answer"),), source="<patient>", patient=True)
PATIENT_REPLIES = (
    "Yes, that works for me.", "Could you say that again?", "Okay, thanks.",
    "I'm not sure, let me think.", "Sounds good.", "Tomorrow would be better.",
    "No, I don't think so.", "Sure, go ahead.",
)  # fmt: skip


def load_script(path: FilePath) -> Script:
    """Reads a caller script file. Raises :class:`FlowError` with positioned diagnostics."""
    result = load_bytes(path.read_bytes(), str(path))
    if result.document is None:
        raise FlowError(empty_as(result.diagnostics, "caller script",
                                 "start with `caller: [answer, …]`; `voicecall schema --caller` "
                                 "describes every step"))  # fmt: skip
    errors = [d for d in (*result.diagnostics, *check_caller(result.document))
              if d.severity is Severity.ERROR]  # fmt: skip
    if errors:
        raise FlowError(errors)
    return parse_script(result.document)


def empty_as(diagnostics: Iterable[Diagnostic], what: str, hint: str) -> list[Diagnostic]:
    """The loader's "holds no flow" for an empty file, said of the file it is (``what``)."""
    return [replace(d, message=f"the file holds no {what}", hint=hint)
            if d.code == "E-YAML-EMPTY" else d for d in diagnostics]  # fmt: skip


def script_from_config(mock: Any) -> Script:
    """The mock callee the Gateway plays (config ``mock: {caller: …}``).

    ``caller`` is a caller script's steps (a list) or a whole caller script (a mapping with
    ``caller``, ``agent``, ``model``); once its steps are used up the callee stays patient.
    Without it: :data:`PATIENT`.

    Raises:
        ValueError: naming ``mock.caller`` and what is wrong with it.
    """
    raw = mock.get("caller") if isinstance(mock, dict) else None
    if raw is None:
        return PATIENT
    data = raw if isinstance(raw, dict) else {"caller": raw}
    text = yaml.safe_dump(data, sort_keys=False)
    result = load_bytes(text.encode(), "mock.caller")
    problems = list(result.diagnostics)
    if result.document is not None:
        problems += check_caller(result.document)
    errors = [d for d in problems if d.severity is Severity.ERROR]
    if result.document is None or errors:
        first = errors[0].message if errors else "cannot be read"
        raise ValueError(f"mock.caller: {first}")
    try:
        script = parse_script(result.document)
    except FlowError as exc:
        raise ValueError(f"mock.caller: {exc.diagnostics[0].message}") from None
    return replace(script, patient=True, source="mock.caller")


def parse_script(doc: Document, base: Path = ()) -> Script:
    """Reads the script parts of a document already checked against the caller schema (at
    ``base``: the whole file, or a test case).

    Raises:
        FlowError: for what the schema cannot say (an opener after the first step).
    """
    data = doc.data
    for part in base:
        data = data[part]
    data = data if isinstance(data, dict) else {}
    errors: list[Diagnostic] = []
    reader = _Reader(doc, errors)
    caller = tuple(reader.caller_steps(data.get("caller") or [], (*base, "caller")))
    agent = tuple(reader.agent_steps(data.get("agent") or [], (*base, "agent")))
    replies = data.get("model") or []
    if errors:
        raise FlowError(errors)
    return Script(caller=caller or DEFAULT.caller, agent=agent,
                  model=tuple(_model_reply(r) for r in replies),
                  model_at=tuple(reader.where((*base, "model", i)) for i in range(len(replies))),
                  source=doc.file)  # fmt: skip


class _Reader:
    def __init__(self, doc: Document, errors: list[Diagnostic]):
        self.doc = doc
        self.errors = errors

    def error(self, path: Path, message: str, hint: str | None = None) -> None:
        span = self.doc.span(path) if path else Span.point(1, 1)
        self.errors.append(Diagnostic.make("E-SCHEMA-VALUE", message, self.doc.file, span, hint))

    def where(self, path: Path) -> str:
        span = self.doc.span(path)
        return f"{self.doc.file}:{span.line}:{span.col}"

    def items(self, raw: list[Any], path: Path) -> Iterator[tuple[str, Any, Path]]:
        """Each step as (action, argument, path): `- word` or `- action: argument`."""
        for i, item in enumerate(raw):
            if isinstance(item, dict):
                ((action, arg),) = item.items()
                yield str(action), arg, (*path, i)
            else:
                yield str(item), None, (*path, i)

    def caller_steps(self, raw: list[Any], path: Path) -> Iterator[Step]:
        for i, (action, arg, at) in enumerate(self.items(raw, path)):
            if action in OPENERS and i > 0:
                self.error(at, f"{action} can only be the first step",
                           "the first step says how the call starts")  # fmt: skip
                continue
            value, after = _value_and_delay(arg)
            yield Step(action=action, value=value, after_s=after, where=self.where(at))

    def agent_steps(self, raw: list[Any], path: Path) -> Iterator[AgentStep]:
        for action, arg, at in self.items(raw, path):
            yield AgentStep(action=action, text=str(arg or ""), where=self.where(at))


def _model_reply(raw: Any) -> str | ModelReply:
    """A scripted model reply: its words, or the values it finishes a conversation with."""
    if isinstance(raw, dict) and isinstance(raw.get("done"), dict):
        return ModelReply(text="", done=dict(raw["done"]))
    return str(raw)


def _value_and_delay(arg: Any) -> tuple[str, float]:
    """A step's value (text, digits or outcome) and its delay in seconds."""
    if isinstance(arg, dict):
        value = arg.get("text", arg.get("digits", arg.get("outcome", "")))
        return str(value), parse_duration(str(arg.get("after", "0s"))) / 1000
    return ("" if arg is None else str(arg)), 0.0
