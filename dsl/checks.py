"""The semantic checks of `voicecall validate`: one function per pass, each yielding diagnostics.

The schema has already checked the shape; these passes check meaning: node references, the call
graph (unreachable nodes, caller traps, tight loops), templates and variables, params, and
calls between flows. Graph-wide passes are skipped when the file has schema errors, since a
malformed action would make their findings unreliable.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.errors import Diagnostic, Span, did_you_mean
from voicecall.dsl.graph import Graph, build_graph, exits, refs, strongly_connected
from voicecall.dsl.loader import Document
from voicecall.dsl.templates import (
    Problem,
    Usage,
    analyze_expression,
    analyze_template,
    environment,
)
from voicecall.dsl.values import format_duration, is_e164, parse_duration

# Plugin config keys a template may read as config.<key>; the subtrees holding credentials are
# refused (SECRET_CONFIG_KEYS) so that no flow can speak or log a secret.
CONFIG_KEYS = frozenset({
    "enabled", "provider", "fromNumber", "toNumber", "inboundPolicy", "allowFrom",
    "inboundGreeting", "outbound", "maxDurationSeconds", "staleCallReaperSeconds",
    "silenceTimeoutMs", "transcriptTimeoutMs", "ringTimeoutMs", "maxConcurrentCalls", "serve",
    "publicUrl", "responseModel", "responseSystemPrompt", "responseTimeoutMs", "flows",
})  # fmt: skip
SECRET_CONFIG_KEYS = frozenset({
    "twilio", "telnyx", "plivo", "tunnel", "tailscale", "streaming", "realtime", "tts",
    "webhookSecurity", "skipSignatureVerification", "store",
})  # fmt: skip
SETTINGS_KEYS = ("voice", "language", "max_duration", "twilio", "plivo", "telnyx")

# Limits every provider accepts (Twilio <Gather timeout>, Plivo executionTimeout 5-60 s on the
# provider side are checked by the compiler); these only catch values no call could use.
RANGES_MS = {
    "ask.timeout": (1000, 60_000),
    "ask.speech_timeout": (500, 10_000),
    "pause": (100, 600_000),
    "transfer.timeout": (5000, 600_000),
    "settings.max_duration": (10_000, 4 * 3_600_000),
    "converse.response_timeout": (1000, 300_000),
}


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


def run_checks(ctx: Context) -> list[Diagnostic]:
    """Runs every pass over one flow; returns the diagnostics sorted by position."""
    passes: list[Pass] = [
        check_flow_level,
        check_refs,
        check_branches,
        check_templates,
        check_params,
        check_asks,
        check_values,
        check_subflows,
    ]
    if ctx.schema_ok:
        passes += [check_reachability, check_traps, check_loops, check_definite_assignment]
    out: list[Diagnostic] = []
    for run in passes:
        out.extend(run(ctx))
    return out


# --- helpers over the model --------------------------------------------------------------------


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


# --- passes ------------------------------------------------------------------------------------


def check_flow_level(ctx: Context) -> Iterator[Diagnostic]:
    flow = ctx.flow
    handler = flow.node(flow.handlers.hangup.name) if flow.handlers.hangup else None
    for action in handler.actions if handler else ():
        if isinstance(action, m.Say | m.Play | m.Ask | m.Transfer | m.Converse | m.SendDigits):
            msg = (
                f"the hangup handler runs after the caller hung up; {action.kind} cannot reach them"
            )
            yield ctx.diag("W-HANDLER-HANGUP-SPEAKS", msg, action.span)
            break
    if not flow.description and ctx.schema_ok:
        yield ctx.diag(
            "W-FLOW-DESCRIPTION", f"flow '{flow.name}' has no description", flow.name_span
        )
    if flow.admit is not None and flow.direction == "outbound":
        yield ctx.diag(
            "W-ADMIT-OUTBOUND",
            "`admit` only applies to inbound calls; this flow is outbound",
            flow.admit.span,
            "remove admit, or set direction: any",
        )
    if flow.admit is not None and flow.admit.policy == "allowlist":
        raw = ctx.doc.data.get("admit", {}).get("allow_from")
        if isinstance(raw, list) and not raw:
            yield ctx.diag(
                "E-ADMIT-ALLOWLIST",
                "policy allowlist with an empty allow_from admits nobody",
                ctx.doc.span(("admit", "allow_from")),
            )


def check_refs(ctx: Context) -> Iterator[Diagnostic]:
    names = [n.name for n in ctx.flow.nodes]
    start = ctx.flow.start
    if start.name and names and start.name not in names:
        yield ctx.diag(
            "E-START-UNKNOWN",
            f"start node '{start.name}' is not a node",
            start.span,
            did_you_mean(start.name, names) or f"nodes: {', '.join(names)}",
        )
    for node in ctx.flow.nodes:
        for action in node.actions:
            for ref in refs(action):
                if ref.name not in names:
                    yield ctx.diag(
                        "E-GOTO-UNKNOWN",
                        f"{_jump_word(action)} target '{ref.name}' is not a node",
                        ref.span,
                        did_you_mean(ref.name, names) or None,
                    )
    for event, ref in ctx.flow.handlers.refs():
        if ref.name not in names:
            yield ctx.diag(
                "E-HANDLER-UNKNOWN",
                f"the {event} handler '{ref.name}' is not a node",
                ref.span,
                did_you_mean(ref.name, names) or None,
            )


def _jump_word(action: m.Action) -> str:
    return {"goto": "goto", "branch": "branch", "ask": "ask exit", "transfer": "on_fail"}.get(
        action.kind, action.kind
    )


def check_branches(ctx: Context) -> Iterator[Diagnostic]:
    """Each branch has exactly one else, and it comes last (read from the raw document)."""
    for name, actions in _raw_nodes(ctx.doc):
        for i, raw in enumerate(actions):
            if not (isinstance(raw, dict) and isinstance(raw.get("branch"), list)):
                continue
            cases = raw["branch"]
            path = ("nodes", name, i, "branch")
            elses = [j for j, c in enumerate(cases) if isinstance(c, dict) and "else" in c]
            if not elses:
                yield ctx.diag(
                    "E-BRANCH-ELSE", "branch has no else case", ctx.doc.span(path, key=True)
                )
            for j in elses[1:]:
                yield ctx.diag(
                    "E-BRANCH-ELSE",
                    "branch has a second else case",
                    ctx.doc.span((*path, j, "else"), key=True),
                    "keep one else, last",
                )
            cases_after = (
                [j for j in range(elses[0] + 1, len(cases)) if j not in elses] if elses else []
            )
            if cases_after:
                yield ctx.diag(
                    "E-BRANCH-ELSE",
                    "cases after else never run",
                    ctx.doc.span((*path, elses[0], "else"), key=True),
                    "move the else case to the end of the branch",
                )


def _raw_nodes(doc: Document) -> Iterator[tuple[str, list[Any]]]:
    nodes = doc.data.get("nodes") if isinstance(doc.data, dict) else None
    for name, actions in (nodes or {}).items() if isinstance(nodes, dict) else ():
        if isinstance(actions, list):
            yield name, actions


def check_templates(ctx: Context) -> Iterator[Diagnostic]:
    """Syntax, filters, undefined names and attributes of every template and expression."""
    flow = ctx.flow
    defined = defined_names(flow)
    env = environment()
    known = {p.name for p in flow.params} | set(defined) | m.BUILTIN_NAMES | set(env.globals)
    for name in [p.name for p in flow.params] + list(defined):
        if name in m.BUILTIN_NAMES:
            yield ctx.diag("E-VAR-RESERVED", f"'{name}' is a built-in variable",
                           _def_span(ctx, name))  # fmt: skip
    # A match on an ask without save_as is reported once, by check_asks.
    unsaved = {id(a.match) for n in flow.nodes for a in n.actions
               if isinstance(a, m.Ask) and a.match and not a.save_as}  # fmt: skip
    for use in all_uses(flow):
        _, src = use
        info = analyze(use)
        if isinstance(info, Problem):
            yield _syntax_problem(ctx, use, info)
            continue
        yield from _unknown_filters(ctx, use, info)
        if id(src) not in unsaved:
            yield from _undefined(ctx, use, info, known - set(env.globals))
        if "config" in info.bare:
            yield ctx.diag("E-VAR-SECRET", "config is read whole; read one key, such as "
                           "config.fromNumber", ctx.locate(src.span, "config", template=True),
                           "a flow reads config one non-secret key at a time")  # fmt: skip
        yield from _check_attributes(ctx, src, info, defined)


def _syntax_problem(ctx: Context, use: Use, info: Problem) -> Diagnostic:
    kind, src = use
    code = "E-TEMPLATE-SYNTAX" if kind == "template" else "E-EXPR-SYNTAX"
    span = src.span
    if isinstance(src, m.Text) and (src.block or info.line > 1):
        # The line inside the template, counted from where its text starts.
        line = span.line + info.line - (0 if src.block else 1)
        text = ctx.doc.lines[line - 1] if line <= len(ctx.doc.lines) else ""
        span = Span.point(line, len(text) - len(text.lstrip()) + 1, len(text.strip()))
    hint = (
        "write the expression without {{ }}"
        if kind == "expression" and "{{" in src.source
        else None
    )
    return ctx.diag(code, f"{kind} {src.source!r}: {info.message}", span, hint)


def _unknown_filters(ctx: Context, use: Use, info: Usage) -> Iterator[Diagnostic]:
    env, (kind, src) = environment(), use
    for what, names, table in (("filter", info.filters, env.filters), ("test", info.tests,
                               env.tests)):  # fmt: skip
        for name in names:
            if name not in table:
                where = ctx.locate(src.span, name, template=kind == "template")
                yield ctx.diag("E-EXPR-FILTER", f"no {what} named '{name}'", where,
                               did_you_mean(name, table) or None)  # fmt: skip


def _undefined(ctx: Context, use: Use, info: Usage, known: set[str]) -> Iterator[Diagnostic]:
    kind, src = use
    for name in sorted(info.names - known - set(environment().globals)):
        hint = did_you_mean(name, known) or (
            "define it as a param, or save it with ask save_as, set or call_flow save_as"
        )
        if kind == "expression" and src.source.strip() == name:
            hint += f"; for the text itself, quote it inside: \"'{name}'\""
        where = ctx.locate(src.span, name, template=kind == "template")
        yield ctx.diag("E-VAR-UNDEFINED", f"'{name}' is not defined", where, hint)


def _def_span(ctx: Context, name: str) -> Span:
    param = ctx.flow.param(name)
    if param is not None:
        return param.span
    for node in ctx.flow.nodes:
        for action in node.actions:
            if isinstance(action, m.Set):
                for a in action.assignments:
                    if a.name == name:
                        return a.span
            elif any(n == name for n, _ in defines(action)):
                return action.option_span("save_as", key=False)
    return ctx.flow.name_span


def _check_attributes(
    ctx: Context, src: m.Text | m.Expr, info: Usage, defined: Mapping[str, str]
) -> Iterator[Diagnostic]:
    for var, attr in info.attributes:
        allowed: tuple[str, ...] | None = None
        if var == "call":
            allowed = m.CALL_FIELDS
        elif var == "settings":
            allowed = SETTINGS_KEYS
        elif var == "config":
            if attr in SECRET_CONFIG_KEYS:
                yield ctx.diag(
                    "E-VAR-SECRET",
                    f"config.{attr} holds credentials or security "
                    "settings and cannot be read by a flow",
                    ctx.locate(src.span, attr, attribute=True),
                )
                continue
            allowed = tuple(sorted(CONFIG_KEYS))
        elif ctx.flow.param(var) is None and defined.get(var) == "answer":
            allowed = m.ANSWER_FIELDS
        elif ctx.flow.param(var) is None and defined.get(var, "").startswith("flow:"):
            sub = ctx.catalog.get(defined[var][5:])
            allowed = tuple(sorted(sub.outputs)) if sub is not None else None
        if allowed is not None and attr not in allowed:
            has = f"{var} has: {', '.join(allowed)}" if allowed else f"{var} holds no values"
            if not allowed and defined.get(var, "").startswith("flow:"):
                has = f"flow '{defined[var][5:]}' saves no values"
            where = ctx.locate(src.span, attr, attribute=True)
            hint = did_you_mean(attr, allowed) or has
            yield ctx.diag("E-VAR-ATTRIBUTE", f"{var} has no attribute '{attr}'", where, hint)


def check_params(ctx: Context) -> Iterator[Diagnostic]:
    flow = ctx.flow
    used: set[str] = set()
    for use in all_uses(flow):
        info = analyze(use)
        if isinstance(info, Usage):
            used |= info.names
    for p in flow.params:
        if p.has_default:
            problem = _param_value_problem(p, p.default)
            if problem:
                span = ctx.doc.span(("params", p.name, "default"))
                yield ctx.diag("E-PARAM-DEFAULT", f"default of '{p.name}' {problem}", span,
                               _DEFAULT_HINTS.get(p.type))  # fmt: skip
            if p.required:
                yield ctx.diag(
                    "W-PARAM-REQUIRED-DEFAULT",
                    f"param '{p.name}' is required and has a default",
                    p.span,
                )
        if p.required and not p.has_default and flow.direction == "inbound":
            yield ctx.diag(
                "E-PARAM-INBOUND-REQUIRED",
                f"param '{p.name}' is required, but nobody passes params to an inbound call",
                p.span,
            )
        if p.name not in used and ctx.schema_ok:
            yield ctx.diag(
                "W-PARAM-UNUSED",
                f"param '{p.name}' is never used",
                p.span,
                "use it in a template, or remove it",
            )


def _param_value_problem(p: m.Param, value: Any) -> str:
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
        "phone": isinstance(value, str) and is_e164(value),
        "duration": isinstance(value, str) and _is_duration(value),
    }.get(p.type, True)
    if not ok:
        return f"{value!r} is not {_TYPE_WORDS.get(p.type, p.type)}"
    if p.choices and value not in p.choices:
        return f"{value!r} is not one of its enum values"
    return ""


_TYPE_WORDS = {
    "string": "text", "integer": "a whole number", "number": "a number",
    "boolean": "true or false", "phone": "an E.164 phone number", "duration": "a duration",
}  # fmt: skip
_DEFAULT_HINTS = {
    "string": "quote it: default: '…'", "integer": "write a whole number without quotes",
    "number": "write a number without quotes", "boolean": "write true or false without quotes",
    "phone": "write + then the country code and number: '+15551234567'",
    "duration": "write a number with a unit: 30s",
}  # fmt: skip


def _is_duration(text: str) -> bool:
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


def check_asks(ctx: Context) -> Iterator[Diagnostic]:
    for node in ctx.flow.nodes:
        for action in node.actions:
            if isinstance(action, m.Ask):
                yield from _check_ask(ctx, action)


def _check_ask(ctx: Context, ask: m.Ask) -> Iterator[Diagnostic]:
    if ask.on_no_match and not (ask.match or ask.valid_digits):
        yield ctx.diag("E-ASK-EXIT-MATCH", "on_no_match can never happen: any answer matches",
                       ask.on_no_match.span)  # fmt: skip
    if ask.match and not ask.save_as:
        yield ctx.diag("E-ASK-MATCH-UNSAVED", "match reads the answer, but the ask has no "
                       "save_as", ask.match.span,
                       "add save_as: answer, then write match: answer.digits == '1'")  # fmt: skip
    for option, needs in (("valid_digits", "dtmf"), ("num_digits", "dtmf"),
                          ("finish_on_key", "dtmf"), ("hints", "speech"),
                          ("speech_timeout", "speech")):  # fmt: skip
        if needs not in ask.input and any(o == option for o, _, _ in ask.options):
            yield ctx.diag("W-ASK-OPTION-UNUSED", f"{option} has no effect without {needs} "
                           "input", ask.option_span(option),
                           f"add {needs} to input, or remove {option}")  # fmt: skip


def check_values(ctx: Context) -> Iterator[Diagnostic]:
    """Durations within what any call can use; literal phone numbers in E.164."""
    for what, path in _duration_paths(ctx.doc):
        raw = _get(ctx.doc.data, path)
        if not isinstance(raw, str) or not _is_duration(raw):
            continue
        low, high = RANGES_MS[what]
        ms = parse_duration(raw)
        if not low <= ms <= high:
            yield ctx.diag(
                "E-DURATION-RANGE",
                f"{what} {raw} is outside {_fmt(low)}..{_fmt(high)}",
                ctx.doc.span(path),
            )


def _fmt(ms: int) -> str:
    return format_duration(ms)


def _duration_paths(doc: Document) -> Iterator[tuple[str, tuple[Any, ...]]]:
    if isinstance(doc.data, dict) and isinstance(doc.data.get("settings"), dict):
        yield "settings.max_duration", ("settings", "max_duration")
    for name, actions in _raw_nodes(doc):
        for i, raw in enumerate(actions):
            if not isinstance(raw, dict) or len(raw) != 1:
                continue
            ((kind, arg),) = raw.items()
            base = ("nodes", name, i, kind)
            if kind == "pause":
                yield "pause", base
            elif isinstance(arg, dict):
                for opt in ("timeout", "speech_timeout", "response_timeout"):
                    if f"{kind}.{opt}" in RANGES_MS and opt in arg:
                        yield f"{kind}.{opt}", (*base, opt)


def _get(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def check_subflows(ctx: Context) -> Iterator[Diagnostic]:
    """call_flow targets exist, get the params they need, and never call back in a cycle."""
    names = sorted(ctx.catalog)
    for node in ctx.flow.nodes:
        for action in node.actions:
            if not isinstance(action, m.CallFlow):
                continue
            target = ctx.catalog.get(action.flow)
            if target is None:
                yield ctx.diag(
                    "E-FLOW-UNKNOWN",
                    f"no flow named '{action.flow}'",
                    action.flow_span,
                    did_you_mean(action.flow, names)
                    or "flows are found among the bundled flows and the flow folders",
                )
                continue
            yield from _check_call_params(ctx, action, target)
            cycle = _cycle_through(ctx.catalog, ctx.flow.name, action.flow)
            if cycle:
                yield ctx.diag(
                    "E-FLOW-CYCLE",
                    "flows call each other in a cycle: " + " -> ".join(cycle),
                    action.flow_span,
                    "a subflow cannot call a flow that is running it",
                )


def _check_call_params(ctx: Context, action: m.CallFlow, target: FlowInfo) -> Iterator[Diagnostic]:
    declared = {p.name: p for p in target.params}
    passed = {a.name for a in action.params}
    for a in action.params:
        if a.name not in declared:
            yield ctx.diag(
                "E-FLOW-PARAM",
                f"flow '{target.name}' has no param '{a.name}'",
                a.span,
                did_you_mean(a.name, declared) or f"its params: {', '.join(declared) or 'none'}",
            )
    missing = [
        p.name for p in target.params if p.required and not p.has_default and p.name not in passed
    ]
    if missing:
        yield ctx.diag(
            "E-FLOW-PARAM",
            f"flow '{target.name}' needs param {', '.join(repr(n) for n in missing)}",
            action.flow_span,
            "pass it under params:",
        )


def _cycle_through(catalog: Mapping[str, FlowInfo], start: str, first: str) -> list[str]:
    """A path of calls from ``first`` back to ``start``, if there is one."""
    todo: list[list[str]] = [[start, first]]
    seen = set()
    while todo:
        path = todo.pop()
        if path[-1] == start:
            return path
        if path[-1] in seen:
            continue
        seen.add(path[-1])
        info = catalog.get(path[-1])
        for callee, _ in info.calls if info else ():
            todo.append([*path, callee])
    return []


def check_reachability(ctx: Context) -> Iterator[Diagnostic]:
    if ctx.flow.node(ctx.flow.start.name) is None:
        return  # an unknown start is reported once, not as every node unreachable
    graph = ctx.get_graph()
    reachable = graph.reachable()
    for node in ctx.flow.nodes:
        if node.name not in reachable:
            yield ctx.diag("W-NODE-UNREACHABLE", f"node '{node.name}' is never reached", node.span)
    for name, index in graph.unreachable_actions:
        holder = ctx.flow.node(name)
        if holder is not None and holder.name in reachable:
            before = holder.actions[index - 1].kind
            yield ctx.diag(
                "W-ACTION-UNREACHABLE",
                f"this never runs: the {before} before it does not go on",
                holder.actions[index].span,
            )


def check_traps(ctx: Context) -> Iterator[Diagnostic]:
    graph = ctx.get_graph()
    names = {n.name for n in ctx.flow.nodes}
    reachable = graph.reachable() & names
    trapped = reachable - graph.can_end(names)
    if not trapped:
        return
    inner = [e for e in graph.edges if e.src in trapped and e.dst in trapped]
    for comp in strongly_connected(sorted(trapped), inner):
        first = _first_node(ctx, comp)
        loop = ", ".join(n for n in _ordered(ctx, comp))
        yield ctx.diag(
            "E-CALLER-TRAP",
            f"no path out of {_plural(comp)} {loop}: the call never "
            "reaches a hangup, transfer, converse or the end of a node",
            first.span,
        )


def check_loops(ctx: Context) -> Iterator[Diagnostic]:
    """Cycles of jumps made without waiting for the caller."""
    graph = ctx.get_graph()
    names = {n.name for n in ctx.flow.nodes}
    quick = [e for e in graph.edges if not e.waited and e.src in names and e.dst in names]
    for comp in strongly_connected(sorted(names), quick):
        edges = [e for e in quick if e.src in comp and e.dst in comp]
        if _bounded(ctx, comp):
            continue
        closing = _action_span(ctx, min(edges, key=lambda e: _action_span(ctx, e).line))
        ordered = _ordered(ctx, comp)
        if any(e.spoke for e in edges):
            msg = _plural(ordered, "loop") + " without listening"
            yield ctx.diag("W-LOOP-NO-INPUT", msg, closing)
        else:
            msg = _plural(ordered, "loop") + " without waiting for anything"
            yield ctx.diag("E-LOOP-TIGHT", msg, closing)


def _bounded(ctx: Context, comp: list[str]) -> bool:
    """A loop that updates a variable its branch tests (a counter) can end.

    The update must read some variable (``n + 1``, ``attempts - 1``): a constant assignment
    such as ``done: false`` never changes what the branch sees.
    """
    written: set[str] = set()
    tested: set[str] = set()
    for name in comp:
        node = ctx.flow.node(name)
        for action in node.actions if node else ():
            if isinstance(action, m.Set):
                written |= {a.name for a in action.assignments if _reads_variables(a.value)}
            elif isinstance(action, m.Branch):
                for case in action.cases:
                    info = analyze_expression(case.when.source)
                    if isinstance(info, Usage):
                        tested |= info.names
    return bool(written & tested)


def _reads_variables(expr: m.Expr) -> bool:
    info = analyze_expression(expr.source)
    return isinstance(info, Usage) and bool(info.names)


def _action_span(ctx: Context, edge: Any) -> Span:
    node = ctx.flow.node(edge.src)
    return node.actions[edge.index].span if node else ctx.flow.name_span


def _ordered(ctx: Context, names: list[str]) -> list[str]:
    order = {n.name: i for i, n in enumerate(ctx.flow.nodes)}
    return sorted(names, key=lambda n: order.get(n, len(order)))


def _first_node(ctx: Context, names: list[str]) -> m.Node:
    node = ctx.flow.node(_ordered(ctx, names)[0])
    assert node is not None
    return node


def _plural(names: list[str], verb: str = "") -> str:
    """'node a loops' / 'nodes a, b loop' (with a verb), or just 'node' / 'nodes'."""
    noun = "node" if len(names) == 1 else "nodes"
    if not verb:
        return noun
    return f"{noun} {', '.join(names)} {verb + 's' if len(names) == 1 else verb}"


def check_definite_assignment(ctx: Context) -> Iterator[Diagnostic]:
    """Variables read on a path where nothing has set them yet (forward dataflow)."""
    flow = ctx.flow
    graph = ctx.get_graph()
    params = frozenset(p.name for p in flow.params)
    may_define = set(defined_names(flow))
    state: dict[str, frozenset[str]] = dict.fromkeys(graph.entries, params)
    todo = list(graph.entries)
    while todo:
        name = todo.pop()
        for dst, have in _node_exits(flow, name, state[name]):
            merged = have if dst not in state else state[dst] & have
            if dst not in state or merged != state[dst]:
                state[dst] = merged
                todo.append(dst)
    seen: set[tuple[str, int, int]] = set()
    for name, entry in state.items():
        node = flow.node(name)
        have = entry
        for action in node.actions if node else ():
            for kind, what in steps(action):
                if kind == "def":
                    have = have | {what}
                    continue
                info = analyze(what)
                if not isinstance(info, Usage):
                    continue
                for var in sorted((info.names & may_define) - have - params):
                    span = ctx.locate(what[1].span, var)
                    if (var, span.line, span.col) not in seen:
                        seen.add((var, span.line, span.col))
                        yield ctx.diag(
                            "W-VAR-MAYBE-UNSET", f"'{var}' may not be set yet here", span
                        )


def _node_exits(
    flow: m.Flow, name: str, have: frozenset[str]
) -> Iterator[tuple[str, frozenset[str]]]:
    node = flow.node(name)
    for action in node.actions if node else ():
        for kind, what in steps(action):
            if kind == "def":
                have = have | {what}
        for dst, _ in exits(action):
            yield dst, have
        if isinstance(action, m.ENDS_NODE):
            return
