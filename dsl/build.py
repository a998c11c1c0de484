"""Builds the :class:`~voicecall.dsl.model.Flow` from a loaded document.

The builder is lenient: it runs after the schema check, possibly on a document with schema
errors, and leaves out what it cannot read instead of raising, so that the other checks can
still report on the rest of the file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.errors import Span
from voicecall.dsl.loader import Document, Path
from voicecall.dsl.values import parse_duration


def digest(text: str) -> str:
    """The content hash flows are cached by."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def build_flow(doc: Document) -> m.Flow:
    """Returns the model of a document (assumed to be a mapping)."""
    return _Builder(doc).flow()


class _Builder:
    def __init__(self, doc: Document):
        self.doc = doc
        self.data: dict[str, Any] = doc.data if isinstance(doc.data, dict) else {}

    def span(self, path: Path, *, key: bool = False) -> Span:
        return self.doc.span(path, key=key)

    def text(self, value: Any, path: Path) -> m.Text | None:
        if not isinstance(value, str):
            return None
        block = self.doc.styles.get(path, "") in ("|", ">")
        return m.Text(source=value, span=self.span(path), block=block)

    def options(self, arg: Any, p: Path) -> tuple[tuple[str, Span, Span], ...]:
        return tuple((k, self.span((*p, k), key=True), self.span((*p, k))) for k in _dict(arg))

    def expr(self, value: Any, path: Path) -> m.Expr | None:
        if isinstance(value, bool):
            return m.Expr(source="true" if value else "false", span=self.span(path))
        if isinstance(value, int | float):
            return m.Expr(source=json.dumps(value), span=self.span(path))
        return m.Expr(source=value, span=self.span(path)) if isinstance(value, str) else None

    def ref(self, value: Any, path: Path) -> m.Ref | None:
        return m.Ref(name=value, span=self.span(path)) if isinstance(value, str) else None

    def flow(self) -> m.Flow:
        d = self.data
        version = d.get("version")
        return m.Flow(
            file=self.doc.file,
            digest=digest(self.doc.text),
            version=version if isinstance(version, int) else 0,
            name=_str(d.get("name")),
            name_span=self.span(("name",)),
            description=_str(d.get("description")),
            direction=_str(d.get("direction")) or "any",
            params=self.params(),
            settings=self.settings(),
            start=self.ref(d.get("start"), ("start",)) or m.Ref(name="", span=self.span(())),
            nodes=self.nodes(),
            admit=self.admit(),
            handlers=self.handlers(),
            timezone=_str(d.get("timezone")),
        )

    def params(self) -> tuple[m.Param, ...]:
        out = []
        for name, raw in _dict(self.data.get("params")).items():
            spec = _dict(raw)
            choices = spec.get("enum")
            out.append(
                m.Param(
                    name=name,
                    span=self.span(("params", name), key=True),
                    type=_str(spec.get("type")) or "string",
                    required=spec.get("required") is True,
                    default=spec.get("default"),
                    has_default="default" in spec,
                    description=_str(spec.get("description")),
                    choices=tuple(choices) if isinstance(choices, list) else (),
                )
            )
        return tuple(out)

    def settings(self) -> m.Settings:
        s = _dict(self.data.get("settings"))
        providers = tuple(
            (
                name,
                m.ProviderSettings(
                    **{
                        k: _opt_str(v)
                        for k, v in _dict(s[name]).items()
                        if k in m.ProviderSettings.__dataclass_fields__
                    }
                ),
            )
            for name in ("twilio", "plivo", "telnyx")
            if isinstance(s.get(name), dict)
        )
        return m.Settings(
            voice=_opt_str(s.get("voice")),
            language=_opt_str(s.get("language")),
            max_duration_ms=_duration(s.get("max_duration")),
            providers=providers,
        )

    def admit(self) -> m.Admit | None:
        a = self.data.get("admit")
        if not isinstance(a, dict):
            return None
        allow = a.get("allow_from")
        return m.Admit(
            policy=_str(a.get("policy")),
            span=self.span(("admit",), key=True),
            allow_from=_words(allow) or (),
            reject_message=self.text(a.get("reject_message"), ("admit", "reject_message")),
        )

    def handlers(self) -> m.Handlers:
        h = _dict(self.data.get("handlers"))
        refs = {k: self.ref(h.get(k), ("handlers", k)) for k in ("max_duration", "error", "hangup")}
        return m.Handlers(**refs)

    def nodes(self) -> tuple[m.Node, ...]:
        out = []
        for name, actions in _dict(self.data.get("nodes")).items():
            built: list[m.Action] = []
            for i, raw in enumerate(actions if isinstance(actions, list) else []):
                action = self.action(raw, ("nodes", name, i))
                if action is not None:
                    built.append(action)
            out.append(
                m.Node(name=name, span=self.span(("nodes", name), key=True), actions=tuple(built))
            )
        return tuple(out)

    def action(self, raw: Any, path: Path) -> m.Action | None:
        if raw == "hangup":
            return m.Hangup(span=self.span(path))
        if not isinstance(raw, dict) or len(raw) != 1:
            return None
        ((kind, arg),) = raw.items()
        make: Callable[[Any, Path, Span], m.Action | None] | None = getattr(self, f"a_{kind}", None)
        if make is None:
            return None
        return make(arg, (*path, kind), self.span(path))

    # --- one builder per action ---------------------------------------------------------------

    def a_say(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        if isinstance(arg, str):
            return m.Say(span=span, text=self.text(arg, p) or m.Text(source="", span=span))
        a = _dict(arg)
        text = self.text(a.get("text"), (*p, "text"))
        if text is None:
            return None
        return m.Say(
            span=span,
            text=text,
            voice=_opt_str(a.get("voice")),
            language=_opt_str(a.get("language")),
            loop=_int(a.get("loop"), 1),
        )

    def a_play(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        if isinstance(arg, str):
            return m.Play(span=span, url=self.text(arg, p) or m.Text(source=arg, span=span))
        a = _dict(arg)
        url = self.text(a.get("url"), (*p, "url"))
        return m.Play(span=span, url=url, loop=_int(a.get("loop"), 1)) if url else None

    def a_pause(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        ms = _duration(arg)
        return m.Pause(span=span, ms=ms) if ms is not None else None

    def a_ask(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        a = _dict(arg)
        prompt = self.text(a.get("prompt"), (*p, "prompt"))
        if prompt is None:
            return None
        inputs = a.get("input")
        speech_timeout = a.get("speech_timeout")
        return m.Ask(
            span=span,
            options=self.options(a, p),
            prompt=prompt,
            input=_words(inputs) or ("speech", "dtmf"),
            timeout_ms=_duration(a.get("timeout")) or 5000,
            speech_timeout_ms=None
            if speech_timeout in (None, "auto")
            else _duration(speech_timeout),
            retries=_int(a.get("retries"), 0),
            reprompt=self.text(a.get("reprompt"), (*p, "reprompt")),
            save_as=_opt_str(a.get("save_as")),
            hints=_words(a.get("hints")) or (),
            language=_opt_str(a.get("language")),
            voice=_opt_str(a.get("voice")),
            num_digits=a.get("num_digits") if isinstance(a.get("num_digits"), int) else None,
            finish_on_key=a["finish_on_key"] if isinstance(a.get("finish_on_key"), str) else "#",
            valid_digits=_opt_str(a.get("valid_digits")),
            match=self.expr(a.get("match"), (*p, "match")) if "match" in a else None,
            on_no_input=self.ref(a.get("on_no_input"), (*p, "on_no_input")),
            on_no_match=self.ref(a.get("on_no_match"), (*p, "on_no_match")),
        )

    def a_converse(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        a = _dict(arg)
        return m.Converse(
            span=span,
            driver=_str(a.get("driver")) or "agent",
            message=self.text(a.get("message"), (*p, "message")),
            model=_opt_str(a.get("model")),
            system_prompt=self.text(a.get("system_prompt"), (*p, "system_prompt")),
            response_timeout_ms=_duration(a.get("response_timeout")),
            max_turns=a.get("max_turns") if isinstance(a.get("max_turns"), int) else None,
            options=self.options(a, p),
            collect=self.fields(a.get("collect"), (*p, "collect")),
            on_done=self.ref(a.get("on_done"), (*p, "on_done")),
            on_hangup=self.ref(a.get("on_hangup"), (*p, "on_hangup")),
            on_timeout=self.ref(a.get("on_timeout"), (*p, "on_timeout")),
        )

    def fields(self, raw: Any, p: Path) -> tuple[m.Field, ...]:
        out = []
        for name, spec in _dict(raw).items():
            s = _dict(spec)
            out.append(
                m.Field(
                    name=name,
                    span=self.span((*p, name), key=True),
                    type=_str(s.get("type")) or "string",
                    description=_str(s.get("description")),
                    required=s.get("required") is not False,
                )
            )
        return tuple(out)

    def assignments(self, raw: Any, p: Path) -> tuple[m.Assignment, ...]:
        out = []
        for name, value in _dict(raw).items():
            expr = self.expr(value, (*p, name))
            if expr is not None:
                out.append(
                    m.Assignment(name=name, value=expr, span=self.span((*p, name), key=True))
                )
        return tuple(out)

    def a_set(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        return m.Set(span=span, assignments=self.assignments(arg, p))

    def a_branch(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        cases, otherwise = [], None
        for i, case in enumerate(arg if isinstance(arg, list) else []):
            c = _dict(case)
            if "else" in c:
                otherwise = otherwise or self.ref(c["else"], (*p, i, "else"))
                continue
            when = self.expr(c.get("when"), (*p, i, "when"))
            goto = self.ref(c.get("goto"), (*p, i, "goto"))
            if when is not None and goto is not None:
                cases.append(m.Case(when=when, goto=goto))
        return m.Branch(span=span, cases=tuple(cases), otherwise=otherwise)

    def a_goto(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        ref = self.ref(arg, p)
        return m.Goto(span=span, target=ref) if ref else None

    def a_transfer(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        if isinstance(arg, str):
            return m.Transfer(span=span, to=self.text(arg, p) or m.Text(source=arg, span=span))
        a = _dict(arg)
        to = self.text(a.get("to"), (*p, "to"))
        if to is None:
            return None
        return m.Transfer(
            span=span,
            to=to,
            caller_id=self.text(a.get("caller_id"), (*p, "caller_id")),
            timeout_ms=_duration(a.get("timeout")) or 30_000,
            on_fail=self.ref(a.get("on_fail"), (*p, "on_fail")),
        )

    def a_send_digits(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        text = self.text(arg, p)
        return m.SendDigits(span=span, digits=text) if text else None

    def a_call_flow(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        if isinstance(arg, str):
            return m.CallFlow(span=span, flow=arg, flow_span=self.span(p))
        a = _dict(arg)
        if not isinstance(a.get("flow"), str):
            return None
        return m.CallFlow(
            span=span,
            options=self.options(a, p),
            flow=a["flow"],
            flow_span=self.span((*p, "flow")),
            params=self.assignments(a.get("params"), (*p, "params")),
            save_as=_opt_str(a.get("save_as")),
        )

    def a_hangup(self, arg: Any, p: Path, span: Span) -> m.Action | None:
        return m.Hangup(span=span)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _words(value: Any) -> tuple[str, ...] | None:
    """A list of words, where one word may stand for a list of one (`input: dtmf`)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(x for x in value if isinstance(x, str))
    return None


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _duration(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_duration(value)
    except ValueError:
        return None
