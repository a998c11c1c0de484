"""Lowering: a checked flow becomes blocks (see :mod:`voicecall.compiler.blocks`).

Pure functions over frozen data. Blocks are made on demand from entry points (start, handlers,
the continuation after each wait, jump targets), so only reachable code is lowered. Subflows are
expanded at each call site in a scope of their own, named after the call site.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from voicecall.compiler import blocks as b
from voicecall.dsl import model as m
from voicecall.dsl.checks import defined_names

PROVIDER_OPS = (m.Say, m.Play, m.Pause, m.SendDigits)


class LoweringError(Exception):
    """The flow cannot be lowered (an unknown node or subflow: validate reports these first)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class _Scope:
    id: str  # "" for the top flow
    flow: m.Flow
    return_to: str | None  # the caller's block after the call_flow; None at the top
    save_as: str | None


@dataclass(frozen=True, slots=True)
class _Here:
    """The action being lowered: its scope, node, index, source and enclosing block."""

    scope: _Scope
    node: m.Node
    index: int
    source: b.Source
    block: str


def lower(flow: m.Flow, subflows: Mapping[str, m.Flow] | None = None) -> b.Lowered:
    """Cuts a checked flow into blocks.

    Args:
        flow: a flow without errors.
        subflows: the flows call_flow may name, by name.
    Returns:
        The blocks, the start block id, and the handler blocks.
    """
    return _Lowering(flow, subflows or {}).run()


def block_id(scope: str, node: str, index: int) -> str:
    """``node`` or ``node.3`` (from the 4th action on), prefixed by a subflow scope."""
    local = node if index == 0 else f"{node}.{index}"
    return f"{scope}~{local}" if scope else local


class _Lowering:
    def __init__(self, flow: m.Flow, subflows: Mapping[str, m.Flow]):
        self.top = _Scope(id="", flow=flow, return_to=None, save_as=None)
        self.subflows = subflows
        self.blocks: dict[str, b.Block] = {}
        self.todo: list[tuple[_Scope, str, int]] = []

    def run(self) -> b.Lowered:
        flow = self.top.flow
        start = self.entry(self.top, flow.start.name, 0)
        handlers = tuple(
            (event, self.entry(self.top, ref.name, 0)) for event, ref in flow.handlers.refs()
        )
        while self.todo:
            scope, node, index = self.todo.pop()
            self.make(scope, node, index)
        ordered = sorted(self.blocks.values(), key=_order(flow))
        return b.Lowered(flow=flow, blocks=tuple(ordered), start=start, handlers=handlers)

    def entry(self, scope: _Scope, node: str, index: int) -> str:
        """The id of the block starting at ``node[index]``, queued for lowering if new."""
        ident = block_id(scope.id, node, index)
        if ident not in self.blocks and (scope, node, index) not in self.todo:
            if scope.flow.node(node) is None:
                raise LoweringError(
                    f"{scope.flow.file}: no node '{node}' in flow {scope.flow.name}"
                )
            self.todo.append((scope, node, index))
        return ident

    def make(self, scope: _Scope, name: str, index: int) -> None:
        ident = block_id(scope.id, name, index)
        if ident in self.blocks:
            return
        node = scope.flow.node(name)
        assert node is not None
        ops: list[b.Op] = []
        end: b.End | None = None
        for i, action in enumerate(node.actions[index:], start=index):
            source = b.Source(file=scope.flow.file, span=action.span, node=name)
            if isinstance(action, PROVIDER_OPS):
                ops.append(_op(action, source))
                continue
            if isinstance(action, m.Converse) and action.message is not None:
                # The conversation's first words, said before it listens.
                ops.append(b.SayOp(source=source, text=action.message, voice=None,
                                   language=None, loop=1))  # fmt: skip
            end = self.terminate(_Here(scope, node, i, source, ident), action)
            break
        else:
            last = node.actions[-1].span if node.actions else node.span
            source = b.Source(file=scope.flow.file, span=last, node=name)
            end = self.fall_off(scope, source)
        first = node.actions[index] if index < len(node.actions) else None
        span = first.span if first is not None else node.span
        self.blocks[ident] = b.Block(
            id=ident,
            scope=scope.id,
            flow=scope.flow.name,
            ops=tuple(ops),
            end=end,
            source=b.Source(file=scope.flow.file, span=span, node=name),
        )

    def fall_off(self, scope: _Scope, source: b.Source) -> b.End:
        if scope.return_to is None:
            return b.Hangup(source=source, implicit=True)
        outputs = tuple(sorted(_saved_names(scope.flow)))
        return b.ExitFlow(source=source, scope=scope.id, save_as=scope.save_as, outputs=outputs,
                          next=scope.return_to)  # fmt: skip

    def terminate(self, here: _Here, action: m.Action) -> b.End:
        make: Callable[[_Here, Any], b.End] = getattr(self, f"t_{action.kind}")
        return make(here, action)

    def t_goto(self, here: _Here, action: m.Goto) -> b.End:
        return b.Continue(source=here.source, next=self.entry(here.scope, action.target.name, 0))

    def t_branch(self, here: _Here, action: m.Branch) -> b.End:
        cases = tuple((c.when, self.entry(here.scope, c.goto.name, 0)) for c in action.cases)
        assert action.otherwise is not None
        otherwise = self.entry(here.scope, action.otherwise.name, 0)
        return b.Decide(source=here.source, cases=cases, otherwise=otherwise)

    def t_set(self, here: _Here, action: m.Set) -> b.End:
        return b.Assign(source=here.source, assignments=action.assignments, next=self.then(here))

    def t_transfer(self, here: _Here, action: m.Transfer) -> b.End:
        on_fail = self.entry(here.scope, action.on_fail.name, 0) if action.on_fail else None
        return b.Dial(source=here.source, to=action.to, caller_id=action.caller_id,
                      timeout_ms=action.timeout_ms, on_fail=on_fail)  # fmt: skip

    def t_converse(self, here: _Here, action: m.Converse) -> b.End:
        def exit_to(ref: m.Ref | None) -> str | None:
            return self.entry(here.scope, ref.name, 0) if ref else None

        return b.Converse(source=here.source, converse=action, on_done=exit_to(action.on_done),
                          on_hangup=exit_to(action.on_hangup),
                          on_timeout=exit_to(action.on_timeout))  # fmt: skip

    def t_hangup(self, here: _Here, action: m.Hangup) -> b.End:
        return b.Hangup(source=here.source)

    def then(self, here: _Here) -> str:
        """Whatever follows the action in its node: the next action, or the node's end."""
        if here.index + 1 < len(here.node.actions):
            return self.entry(here.scope, here.node.name, here.index + 1)
        return self.tail(here.scope, here.node, here.source)

    def tail(self, scope: _Scope, node: m.Node, source: b.Source) -> str:
        """A block for the end of a node: nothing left to run but falling off."""
        ident = block_id(scope.id, node.name, len(node.actions))
        if ident not in self.blocks:
            end = self.fall_off(scope, source)
            self.blocks[ident] = b.Block(id=ident, scope=scope.id, flow=scope.flow.name, ops=(),
                                         end=end, source=source)  # fmt: skip
        return ident

    def t_ask(self, here: _Here, ask: m.Ask) -> b.Gather:
        scope, source, then = here.scope, here.source, self.then(here)
        no_input = self.entry(scope, ask.on_no_input.name, 0) if ask.on_no_input else None
        no_match = self.entry(scope, ask.on_no_match.name, 0) if ask.on_no_match else None
        retry_id = None
        if ask.retries:
            retry_id = f"{here.block}:retry"
            retry = b.Gather(
                source=source,
                ask=ask,
                retry=True,
                on_input=then,
                on_no_input=no_input,
                on_no_match=no_match,
                retry_block=retry_id,
            )
            self.blocks[retry_id] = b.Block(id=retry_id, scope=scope.id, flow=scope.flow.name,
                                            ops=(), end=retry, source=source)  # fmt: skip
        return b.Gather(source=source, ask=ask, retry=False, on_input=then, on_no_input=no_input,
                        on_no_match=no_match, retry_block=retry_id)  # fmt: skip

    def t_call_flow(self, here: _Here, action: m.CallFlow) -> b.EnterFlow:
        sub = self.subflows.get(action.flow)
        if sub is None:
            raise LoweringError(f"{here.source}: no flow named '{action.flow}' to call")
        inner_id = block_id(here.scope.id, here.node.name, here.index)
        inner = _Scope(id=inner_id, flow=sub, return_to=self.then(here), save_as=action.save_as)
        defaults = tuple((p.name, p.default) for p in sub.params if p.has_default)
        start = self.entry(inner, sub.start.name, 0)
        return b.EnterFlow(source=here.source, flow=sub.name, scope=inner_id,
                           params=action.params, defaults=defaults, next=start)  # fmt: skip


def _op(action: m.Action, source: b.Source) -> b.Op:
    if isinstance(action, m.Say):
        return b.SayOp(source=source, text=action.text, voice=action.voice,
                       language=action.language, loop=action.loop)  # fmt: skip
    if isinstance(action, m.Play):
        return b.PlayOp(source=source, url=action.url, loop=action.loop)
    if isinstance(action, m.Pause):
        return b.PauseOp(source=source, ms=action.ms)
    assert isinstance(action, m.SendDigits)
    return b.DigitsOp(source=source, digits=action.digits)


def _saved_names(flow: m.Flow) -> set[str]:
    return set(defined_names(flow))


def _order(flow: m.Flow) -> Callable[[b.Block], tuple[int, str, int, int, str]]:
    """Blocks in source order: top-level flow first, then by line, so output is stable."""

    def key(block: b.Block) -> tuple[int, str, int, int, str]:
        top = 0 if block.scope == "" else 1
        return (top, block.scope, block.source.span.line, block.source.span.col, block.id)

    return key
