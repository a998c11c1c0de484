"""Lowering: blocks end exactly where the server is needed; subflows expand per call site."""

from __future__ import annotations

from voicecall.compiler import blocks as b
from voicecall.compiler.lower import block_id, lower
from voicecall.dsl import model as m
from voicecall.dsl.checks import FlowInfo
from voicecall.dsl.validate import validate_text


def flow(body: str) -> m.Flow:
    checked = validate_text("version: 1\nname: t\ndescription: t\n" + body, "t.yaml")
    assert checked.ok, [d.message for d in checked.diagnostics]
    assert checked.flow is not None
    return checked.flow


def shape(lowered: b.Lowered) -> list[tuple[str, list[str], str]]:
    return [(bl.id, [type(o).__name__ for o in bl.ops], type(bl.end).__name__)
            for bl in lowered.blocks]  # fmt: skip


def test_provider_actions_run_together_until_the_server_is_needed() -> None:
    lowered = lower(
        flow("""\
start: a
nodes:
  a:
    - say: one
    - play: https://example.com/x.mp3
    - pause: 1s
    - set: {n: 1}
    - say: "{{ n }}"
    - ask: {prompt: Go?, save_as: r, retries: 1}
    - say: after
""")
    )
    assert shape(lowered) == [
        ("a", ["SayOp", "PlayOp", "PauseOp"], "Assign"),
        ("a.4", ["SayOp"], "Gather"),
        ("a.4:retry", [], "Gather"),
        ("a.6", ["SayOp"], "Hangup"),
    ]
    gather = lowered.block("a.4").end
    assert isinstance(gather, b.Gather)
    assert (gather.on_input, gather.retry_block, gather.retry) == ("a.6", "a.4:retry", False)
    end = lowered.block("a.6").end
    assert isinstance(end, b.Hangup) and end.implicit


def test_only_reachable_code_is_lowered_and_handlers_are_entries() -> None:
    lowered = lower(
        flow("""\
start: a
handlers: {error: oops}
nodes:
  a: [{say: hi}, hangup]
  oops: [{say: sorry}, hangup]
""")
    )
    assert [bl.id for bl in lowered.blocks] == ["a", "oops"]
    assert lowered.handlers == (("error", "oops"),)


GREETER = """\
version: 1
name: greeter
description: d
params: {who: {default: you}}
start: s
nodes:
  s: [{say: "hi {{ who }}"}, {set: {seen: who}}]
"""
CALLER = """\
version: 1
name: t
description: d
start: a
nodes:
  a:
    - call_flow: {flow: greeter, params: {who: "'Ann'"}, save_as: g}
    - say: "{{ g.seen }}"
"""


def test_subflows_expand_in_their_own_scope_and_return() -> None:
    callee = validate_text(GREETER, "greeter.yaml").flow
    assert callee is not None
    caller = validate_text(CALLER, "t.yaml", {"greeter": FlowInfo.of(callee)}).flow
    assert caller is not None
    lowered = lower(caller, {"greeter": callee})
    assert [(bl.id, bl.scope) for bl in lowered.blocks] == [
        ("a", ""), ("a.1", ""), ("a~s", "a"), ("a~s.2", "a"),
    ]  # fmt: skip
    enter = lowered.block("a").end
    assert isinstance(enter, b.EnterFlow)
    assert (enter.flow, enter.scope, enter.next) == ("greeter", "a", "a~s")
    assert enter.defaults == (("who", "you"),)
    leave = lowered.block("a~s.2").end
    assert isinstance(leave, b.ExitFlow)
    assert (leave.save_as, leave.outputs, leave.next) == ("g", ("seen",), "a.1")
    assert block_id("x~y", "n", 2) == "x~y~n.2"
