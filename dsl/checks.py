"""The semantic checks of `voicecall validate`: one function per pass, each yielding diagnostics.

The schema has already checked the shape; these passes check meaning: node references, the call
graph (unreachable nodes, caller traps, tight loops), templates and variables, params, and
calls between flows. Graph-wide passes are skipped when the file has schema errors, since a
malformed action would make their findings unreliable.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Iterator, Mapping
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.checks_base import (
    Context,
    FlowInfo,
    Pass,
    all_uses,
    analyze,
    defined_names,
    defines,
    raw_nodes,
    steps,
)
from voicecall.dsl.checks_graph import (
    check_definite_assignment,
    check_loops,
    check_reachability,
    check_traps,
)
from voicecall.dsl.checks_templates import CONFIG_KEYS, SECRET_CONFIG_KEYS, check_templates
from voicecall.dsl.errors import Diagnostic, did_you_mean
from voicecall.dsl.graph import refs
from voicecall.dsl.loader import Document
from voicecall.dsl.templates import Usage
from voicecall.dsl.values import format_duration, is_e164, parse_duration, zone

__all__ = [
    "CONFIG_KEYS",
    "SECRET_CONFIG_KEYS",
    "Context",
    "FlowInfo",
    "all_uses",
    "analyze",
    "defined_names",
    "defines",
    "run_checks",
    "steps",
]


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


def run_checks(ctx: Context) -> list[Diagnostic]:
    """Runs every pass over one flow; returns the diagnostics sorted by position."""
    passes: list[Pass] = [
        check_flow_level,
        check_refs,
        check_branches,
        check_templates,
        check_params,
        check_asks,
        check_converses,
        check_values,
        check_subflows,
    ]
    if ctx.schema_ok:
        passes += [check_reachability, check_traps, check_loops, check_definite_assignment]
    out: list[Diagnostic] = []
    for run in passes:
        out.extend(run(ctx))
    return out


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
    if flow.timezone:
        yield from _check_timezone(ctx)
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


def _check_timezone(ctx: Context) -> Iterator[Diagnostic]:
    try:
        zone(ctx.flow.timezone)
    except ValueError as exc:
        hint = did_you_mean(ctx.flow.timezone, zoneinfo.available_timezones()) or (
            "an IANA zone name such as Europe/Paris, America/New_York or UTC"
        )
        yield ctx.diag("E-TIMEZONE-UNKNOWN", str(exc), ctx.doc.span(("timezone",)), hint)


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
    words = {"goto": "goto", "branch": "branch", "ask": "ask exit", "transfer": "on_fail",
             "converse": "converse exit"}  # fmt: skip
    return words.get(action.kind, action.kind)


def check_branches(ctx: Context) -> Iterator[Diagnostic]:
    """Each branch has exactly one else, and it comes last (read from the raw document)."""
    for name, actions in raw_nodes(ctx.doc):
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


def check_converses(ctx: Context) -> Iterator[Diagnostic]:
    for node in ctx.flow.nodes:
        for action in node.actions:
            if isinstance(action, m.Converse):
                yield from _check_converse(ctx, action)


def _check_converse(ctx: Context, talk: m.Converse) -> Iterator[Diagnostic]:
    if talk.collect and talk.on_done is None:
        yield ctx.diag("E-CONVERSE-DONE", "collect needs on_done: the node that goes on with "
                       "the collected values", talk.option_span("collect"))  # fmt: skip
    if talk.on_timeout is not None and talk.max_turns is None:
        yield ctx.diag("E-CONVERSE-EXIT-TURNS", "on_timeout can never happen: the "
                       "conversation has no max_turns", talk.on_timeout.span)  # fmt: skip
    target = ctx.flow.node(talk.on_hangup.name) if talk.on_hangup else None
    for action in target.actions if target else ():
        if isinstance(action, m.Say | m.Play | m.Ask | m.Transfer | m.Converse | m.SendDigits):
            yield ctx.diag("W-HANDLER-HANGUP-SPEAKS", f"on_hangup runs after the caller hung "
                           f"up; {action.kind} cannot reach them", action.span)  # fmt: skip
            break


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
    for name, actions in raw_nodes(doc):
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
