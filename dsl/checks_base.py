"""What the checks share: the context of one flow, the catalog entry of a flow, and what each
action reads and defines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.errors import Diagnostic, Span
from voicecall.dsl.graph import Graph, build_graph
from voicecall.dsl.loader import Document
from voicecall.dsl.templates import (
    Problem,
    Usage,
    analyze_expression,
    analyze_template,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FlowInfo:
    """What other flows need to know about a flow: the catalog entry call_flow checks read."""

    name: str
    file: str
    description: str
    direction: str
    params: tuple[m.Param, ...]
    outputs: frozenset[str]  # names the flow saves (set, save_as): a caller's save_as.<name>
    calls: tuple[tuple[str, Span], ...]  # flows it calls, with where

    @classmethod
    def of(cls, flow: m.Flow) -> FlowInfo:
        calls = tuple(
            (a.flow, a.flow_span)
            for n in flow.nodes
            for a in n.actions
            if isinstance(a, m.CallFlow)
        )
        return cls(
            name=flow.name,
            file=flow.file,
            description=flow.description,
            direction=flow.direction,
            params=flow.params,
            outputs=frozenset(defined_names(flow)),
            calls=calls,
        )


@dataclass(slots=True)
class Context:
    flow: m.Flow
    doc: Document
    catalog: Mapping[str, FlowInfo] = field(default_factory=dict)
    schema_ok: bool = True
    graph: Graph | None = None

    def diag(self, code: str, message: str, span: Span, hint: str | None = None) -> Diagnostic:
        return Diagnostic.make(code, message, self.flow.file, span, hint)

    def get_graph(self) -> Graph:
        if self.graph is None:
            self.graph = build_graph(self.flow)
        return self.graph

    def locate(
        self, span: Span, word: str, *, attribute: bool = False, template: bool = False
    ) -> Span:
        """The span of ``word`` inside the source of ``span`` (for names inside templates).

        With ``attribute``, finds ``.word`` or ``['word']`` rather than a bare name; with
        ``template``, looks only inside ``{{ }}`` and ``{% %}``, not in the literal text.
        """
        lines = self.doc.lines
        before = r"(?:(?<=\.)|(?<=\[')|(?<=\[\"))" if attribute else r"(?<![\w.])"
        pattern = re.compile(rf"{before}{re.escape(word)}(?!\w)")
        for line in range(span.line, min(span.end_line, len(lines)) + 1):
            text = lines[line - 1]
            start = span.col - 1 if line == span.line else 0
            end = span.end_col - 1 if line == span.end_line else len(text)
            regions = [(start, max(start, end))]
            if template:
                regions = [
                    (max(g.start(), start), min(g.end(), end))
                    for g in _CODE.finditer(text)
                    if g.end() > start and g.start() < end
                ]
            for lo, hi in regions:
                found = pattern.search(text, lo, hi)
                if found:
                    return Span.point(line, found.start() + 1, len(word))
        return span


Pass = Callable[[Context], Iterator[Diagnostic]]

_CODE = re.compile(r"\{\{.*?(?:\}\}|$)|\{%.*?(?:%\}|$)")


def defined_names(flow: m.Flow) -> dict[str, str]:
    """Every variable a flow's actions define, with the kind of value (answer, flow, value)."""
    out: dict[str, str] = {}
    for node in flow.nodes:
        for action in node.actions:
            for name, kind in defines(action):
                out[name] = kind if out.get(name, kind) == kind else "value"
    return out


def defines(action: m.Action) -> Iterator[tuple[str, str]]:
    if isinstance(action, m.Ask) and action.save_as:
        yield action.save_as, "answer"
    elif isinstance(action, m.CallFlow) and action.save_as:
        yield action.save_as, f"flow:{action.flow}"
    elif isinstance(action, m.Set):
        for a in action.assignments:
            yield a.name, "value"
    elif isinstance(action, m.Converse):
        # Set only when the conversation finishes: known after it, on its on_done path.
        for f in action.collect:
            yield f.name, "value"


Use = tuple[str, m.Text | m.Expr]  # ("template" | "expression", the source)

Step = tuple[str, Any]  # ("use", Use) or ("def", name)


def steps(action: m.Action) -> Iterator[Step]:
    """What an action reads and defines, in the order it happens."""
    step = _STEPS.get(type(action))
    return step(action) if step is not None else iter(())


def _uses(kind: str, *sources: m.Text | m.Expr | None) -> Iterator[Step]:
    return (("use", (kind, s)) for s in sources if s is not None)


def _ask_steps(a: m.Ask) -> Iterator[Step]:
    yield from _uses("template", a.prompt, a.reprompt)
    if a.save_as:
        yield "def", a.save_as
    yield from _uses("expression", a.match)


def _set_steps(a: m.Set) -> Iterator[Step]:
    yield from _uses("expression", *(x.value for x in a.assignments))
    yield from (("def", x.name) for x in a.assignments)


def _call_flow_steps(a: m.CallFlow) -> Iterator[Step]:
    yield from _uses("expression", *(x.value for x in a.params))
    if a.save_as:
        yield "def", a.save_as


_STEPS: dict[type[m.Action], Callable[[Any], Iterator[Step]]] = {
    m.Say: lambda a: _uses("template", a.text),
    m.Play: lambda a: _uses("template", a.url),
    m.Ask: _ask_steps,
    m.Converse: lambda a: _uses("template", a.message, a.system_prompt),
    m.Set: _set_steps,
    m.Branch: lambda a: _uses("expression", *(c.when for c in a.cases)),
    m.Transfer: lambda a: _uses("template", a.to, a.caller_id),
    m.SendDigits: lambda a: _uses("template", a.digits),
    m.CallFlow: _call_flow_steps,
}


def all_uses(flow: m.Flow) -> Iterator[Use]:
    for node in flow.nodes:
        for action in node.actions:
            for kind, what in steps(action):
                if kind == "use":
                    yield what
    if flow.admit and flow.admit.reject_message:
        yield "template", flow.admit.reject_message


def analyze(use: Use) -> Usage | Problem:
    kind, src = use
    return analyze_template(src.source) if kind == "template" else analyze_expression(src.source)


def raw_nodes(doc: Document) -> Iterator[tuple[str, list[Any]]]:
    nodes = doc.data.get("nodes") if isinstance(doc.data, dict) else None
    for name, actions in (nodes or {}).items() if isinstance(nodes, dict) else ():
        if isinstance(actions, list):
            yield name, actions
