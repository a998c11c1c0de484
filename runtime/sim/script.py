"""Caller scripts: what the other end of a simulated call does.

A script is a YAML file next to the flows (``NAME.caller.yaml``) or the ``caller:`` /
``agent:`` / ``model:`` part of a flow test::

    caller:                # the callee (outbound) or the caller (inbound), step by step
      - answer             # first: answer (default), no-answer, busy or voicemail
      - say: yes please    # at a prompt: speak
      - press: "1"         # at a prompt: keypad digits
      - silence            # at a prompt: say nothing (the prompt times out)
      - dial: busy         # the outcome of a transfer: answered (default), busy, no-answer, failed
      - hangup             # hang up now
    agent:                 # plays the agent for `converse: {driver: agent}`, turn by turn
      - continue: How can I help?   # say it, then listen; the caller's next step answers
      - speak: One moment.
      - end
    model:                 # the model's replies for `converse: {driver: model}`
      - Sure, I can help with that.

When a call needs a caller step and none is left, the caller hangs up. Any step may wait first:
``- say: {text: yes, after: 2s}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path as FilePath
from typing import Any

from voicecall.dsl.errors import Diagnostic, FlowError, Span
from voicecall.dsl.loader import Document, Path, load_bytes
from voicecall.dsl.values import parse_duration

CALLER_ACTIONS = ("answer", "no-answer", "busy", "voicemail", "say", "press", "silence",
                  "dial", "hangup")  # fmt: skip
OPENERS = ("answer", "no-answer", "busy", "voicemail")
DIAL_OUTCOMES = ("answered", "busy", "no-answer", "failed")
AGENT_ACTIONS = ("continue", "speak", "end")
_NEEDS_VALUE = {"say", "press", "dial"}


@dataclass(frozen=True, slots=True, kw_only=True)
class Step:
    action: str
    value: str = ""  # say: the words; press: the digits; dial: the outcome
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
    model: tuple[str, ...] = ()
    source: str = "<default>"

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


def load_script(path: FilePath) -> Script:
    """Reads a caller script file. Raises :class:`FlowError` with positioned diagnostics."""
    result = load_bytes(path.read_bytes(), str(path))
    if result.document is None:
        raise FlowError(result.diagnostics)
    return parse_script(result.document)


def parse_script(doc: Document, base: tuple[str | int, ...] = ()) -> Script:
    """Reads the script parts of a document (at ``base``: the whole file, or a test's root)."""
    data = doc.data
    for part in base:
        data = data[part]
    errors: list[Diagnostic] = []
    reader = _Reader(doc, errors)
    if not isinstance(data, dict):
        reader.error(base, "a caller script is a mapping with caller:, agent: and model:")
        raise FlowError(errors)
    unknown = [k for k in data if k not in ("caller", "agent", "model")]
    for key in unknown:
        if not base:
            reader.error((*base, key), f"unknown key '{key}' (caller, agent, model)", key=True)
    caller = tuple(reader.caller_steps(data.get("caller", []), (*base, "caller")))
    agent = tuple(reader.agent_steps(data.get("agent", []), (*base, "agent")))
    model = tuple(reader.texts(data.get("model", []), (*base, "model")))
    if errors:
        raise FlowError(errors)
    return Script(caller=caller or DEFAULT.caller, agent=agent, model=model, source=doc.file)


class _Reader:
    def __init__(self, doc: Document, errors: list[Diagnostic]):
        self.doc = doc
        self.errors = errors

    def error(self, path: tuple[str | int, ...], message: str, key: bool = False) -> None:
        span = self.doc.span(path, key=key) if path else Span.point(1, 1)
        self.errors.append(Diagnostic.make("E-SCHEMA-VALUE", message, self.doc.file, span))

    def where(self, path: tuple[str | int, ...]) -> str:
        return f"{self.doc.file}:{self.doc.span(path).line}"

    def items(self, raw: Any, path: tuple[str | int, ...]) -> list[tuple[str, Any, Path]]:
        """Each list item as (action, argument, path)."""
        if not isinstance(raw, list):
            self.error(path, "expected a list of steps")
            return []
        out = []
        for i, item in enumerate(raw):
            if isinstance(item, str):
                out.append((item, None, (*path, i)))
            elif isinstance(item, dict) and len(item) == 1:
                ((action, arg),) = item.items()
                out.append((str(action), arg, (*path, i)))
            else:
                self.error((*path, i), "a step is a word (silence) or one `action: value`")
        return out

    def caller_steps(self, raw: Any, path: tuple[str | int, ...]) -> list[Step]:
        steps = []
        for i, (action, arg, at) in enumerate(self.items(raw, path)):
            if action not in CALLER_ACTIONS:
                self.error(at, f"'{action}' is not a caller step ({', '.join(CALLER_ACTIONS)})")
                continue
            if action in OPENERS and i > 0:
                self.error(at, f"{action} can only be the first step")
                continue
            value, after = self.value_and_delay(arg, at)
            if action in _NEEDS_VALUE and not value:
                self.error(at, f"{action} needs a value: `- {action}: …`")
                continue
            if action == "dial" and value not in DIAL_OUTCOMES:
                self.error(at, f"dial outcome '{value}' is not one of {', '.join(DIAL_OUTCOMES)}")
                continue
            steps.append(Step(action=action, value=value, after_s=after, where=self.where(at)))
        return steps

    def value_and_delay(self, arg: Any, at: tuple[str | int, ...]) -> tuple[str, float]:
        if arg is None:
            return "", 0.0
        if isinstance(arg, dict):
            after = arg.get("after", "0s")
            text = arg.get("text", arg.get("digits", arg.get("outcome", "")))
            try:
                delay = parse_duration(str(after)) / 1000
            except ValueError:
                self.error(at, f"after: {after!r} is not a duration such as 2s")
                delay = 0.0
            return str(text), delay
        return str(arg), 0.0

    def agent_steps(self, raw: Any, path: tuple[str | int, ...]) -> list[AgentStep]:
        steps = []
        for action, arg, at in self.items(raw, path):
            if action not in AGENT_ACTIONS:
                self.error(at, f"'{action}' is not an agent step ({', '.join(AGENT_ACTIONS)})")
                continue
            if action != "end" and not isinstance(arg, str):
                self.error(at, f"{action} needs the words to say: `- {action}: …`")
                continue
            steps.append(AgentStep(action=action, text=arg or "", where=self.where(at)))
        return steps

    def texts(self, raw: Any, path: tuple[str | int, ...]) -> list[str]:
        if not isinstance(raw, list) or not all(isinstance(t, str) for t in raw):
            self.error(path, "model: is a list of replies (text)")
            return []
        return list(raw)
