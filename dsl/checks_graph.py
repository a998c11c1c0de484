"""Checks of the node graph: unreachable nodes and actions, caller traps, tight loops, and
variables read before some path sets them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.checks_base import Context, analyze, defined_names, steps
from voicecall.dsl.errors import Diagnostic, Span
from voicecall.dsl.graph import exits, strongly_connected
from voicecall.dsl.templates import (
    Usage,
    analyze_expression,
)


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
        for dst, label in exits(action):
            if isinstance(action, m.Converse) and label == "done":
                # The collected values are saved only when the conversation finishes.
                yield dst, have | {f.name for f in action.collect}
            else:
                yield dst, have
        if isinstance(action, m.ENDS_NODE):
            return
