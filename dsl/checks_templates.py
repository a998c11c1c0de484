"""Checks of templates and expressions: syntax, filters, undefined names, attributes, secrets."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from voicecall.dsl import model as m
from voicecall.dsl.checks_base import Context, Use, all_uses, analyze, defined_names, defines
from voicecall.dsl.errors import Diagnostic, Span, did_you_mean
from voicecall.dsl.templates import (
    Problem,
    Usage,
    environment,
)

# Plugin config keys a template may read as config.<key>; the subtrees holding credentials are
# refused (SECRET_CONFIG_KEYS) so that no flow can speak or log a secret.
CONFIG_KEYS = frozenset({
    "enabled", "provider", "fromNumber", "toNumber", "inboundPolicy", "allowFrom",
    "inboundGreeting", "outbound", "maxDurationSeconds", "staleCallReaperSeconds",
    "silenceTimeoutMs", "transcriptTimeoutMs", "ringTimeoutMs", "maxConcurrentCalls", "serve",
    "publicUrl", "responseModel", "responseSystemPrompt", "responseTimeoutMs", "flows",
    "timezone",
})  # fmt: skip

SECRET_CONFIG_KEYS = frozenset({
    "twilio", "telnyx", "plivo", "tunnel", "tailscale", "streaming", "realtime", "tts",
    "webhookSecurity", "skipSignatureVerification", "store",
})  # fmt: skip

SETTINGS_KEYS = ("voice", "language", "max_duration", "twilio", "plivo", "telnyx")


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
            elif isinstance(action, m.Converse):
                for f in action.collect:
                    if f.name == name:
                        return f.span
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
        elif var == "now":
            allowed = m.NOW_FIELDS
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
