"""The semantic checks, one table row per behaviour: a flow snippet and the codes it yields."""

from __future__ import annotations

import textwrap

import pytest

from voicecall.dsl.catalog import Catalog
from voicecall.dsl.checks import FlowInfo
from voicecall.dsl.errors import FlowError
from voicecall.dsl.graph import build_graph, strongly_connected
from voicecall.dsl.validate import load_valid_flow, validate_text

HEAD = """\
version: 1
name: t
description: test flow
"""


def run(body: str, library: dict[str, FlowInfo] | None = None) -> list[str]:
    text = HEAD + textwrap.dedent(body)
    return [d.code for d in validate_text(text, "t.yaml", library).diagnostics]


@pytest.fixture(scope="module")
def library() -> dict[str, FlowInfo]:
    return Catalog().infos()


CASES = {
    "clean": ("start: a\nnodes:\n  a: [{say: hi}, hangup]\n", []),
    "falling off a node ends the flow": ("start: a\nnodes:\n  a: [{say: hi}]\n", []),
    "counter loops are bounded": (
        """\
        start: a
        nodes:
          a:
            - set: {n: 0}
            - goto: b
          b:
            - say: "{{ n }}"
            - set: {n: n + 1}
            - branch:
                - when: n < 3
                  goto: b
                - else: c
          c: [hangup]
        """,
        [],
    ),
    "a goto cycle with only set is tight and traps": (
        "start: a\nnodes:\n  a: [{set: {x: 1}}, {goto: b}]\n  b: [{goto: a}]\n",
        ["E-CALLER-TRAP", "E-LOOP-TIGHT"],
    ),
    "a spoken loop with an exit warns": (
        """\
        start: a
        params: {p: {type: boolean, default: true}}
        nodes:
          a:
            - say: again
            - branch:
                - when: p
                  goto: a
                - else: b
          b: [hangup]
        """,
        ["W-LOOP-NO-INPUT"],
    ),
    "a menu that always loops back is a trap": (
        """\
        start: menu
        nodes:
          menu:
            - ask: {prompt: Press 1, input: [dtmf], save_as: k}
            - branch:
                - when: "k.digits == '1'"
                  goto: menu
                - else: menu
        """,
        ["E-CALLER-TRAP"],
    ),
    "read before set on one path": (
        """\
        start: a
        params: {p: {type: boolean, default: true}}
        nodes:
          a:
            - branch:
                - when: p
                  goto: b
                - else: c
          b:
            - set: {x: "'b'"}
            - goto: c
          c:
            - say: "{{ x }}"
        """,
        ["W-VAR-MAYBE-UNSET"],
    ),
    "attributes of answers and builtins": (
        """\
        start: a
        nodes:
          a:
            - ask: {prompt: Hi, save_as: r}
            - say: "{{ r.txt }} {{ call.form }} {{ settings.voise }} {{ config.fromNumber }}"
        """,
        ["E-VAR-ATTRIBUTE", "E-VAR-ATTRIBUTE", "E-VAR-ATTRIBUTE"],
    ),
    "secrets in config are refused": (
        "start: a\nnodes:\n  a: [{say: \"{{ config['twilio'] }}\"}]\n",
        ["E-VAR-SECRET"],
    ),
    "set values are expressions": (
        "start: a\nnodes:\n  a: [{set: {g: hello}}, {say: '{{ g }}'}]\n",
        ["E-VAR-UNDEFINED"],
    ),
    "braces in a when": (
        "start: a\nnodes:\n  a: [{branch: [{when: '{{ 1 }}', goto: b}, {else: b}]}]\n"
        "  b: [hangup]\n",
        ["E-EXPR-SYNTAX"],
    ),
    "inbound flows take no required params": (
        "direction: inbound\nparams: {p: {required: true}}\nstart: a\nnodes:\n"
        "  a: [{say: '{{ p }}'}]\n",
        ["E-PARAM-INBOUND-REQUIRED"],
    ),
    "param defaults match their type": (
        "params:\n  n: {type: integer, default: '3'}\n  t: {type: phone, default: '555'}\n"
        "start: a\nnodes:\n  a: [{say: '{{ n }}{{ t }}'}]\n",
        ["E-PARAM-DEFAULT", "E-PARAM-DEFAULT"],
    ),
    "durations out of range": (
        "settings: {max_duration: 5h}\nstart: a\nnodes:\n  a: [{pause: 50ms}]\n",
        ["E-DURATION-RANGE", "E-DURATION-RANGE"],
    ),
    "subflow calls are checked against the called flow": (
        """\
        start: a
        nodes:
          a:
            - call_flow: {flow: collect-callback, params: {reasn: "'x'"}, save_as: cb}
            - say: "{{ cb.numbr }}"
            - call_flow: collect-calback
        """,
        ["E-FLOW-PARAM", "E-VAR-ATTRIBUTE", "E-FLOW-UNKNOWN"],
    ),
    "a flow calling itself": ("start: a\nnodes:\n  a: [{call_flow: t}]\n", ["E-FLOW-CYCLE"]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_check(name: str, library: dict[str, FlowInfo]) -> None:
    body, expected = CASES[name]
    assert sorted(run(body, library)) == sorted(expected)


def test_graph_edges_record_what_ran_before_the_jump() -> None:
    flow = validate_text(
        HEAD + "start: a\nnodes:\n  a: [{say: x}, {ask: {prompt: p, on_no_input: b}}, "
        "{goto: b}]\n  b: [hangup]\n"
    ).flow
    assert flow is not None
    graph = build_graph(flow)
    edges = [(e.src, e.dst, e.label, e.waited, e.spoke) for e in graph.edges]
    assert edges == [("a", "b", "no input", True, True), ("a", "b", "goto", True, True)]
    assert graph.ends == {"b"}
    assert graph.reachable() == {"a", "b"}


def test_strongly_connected_finds_cycles_and_self_loops_only() -> None:
    from voicecall.dsl.graph import Edge

    def e(a: str, b: str) -> Edge:
        return Edge(src=a, dst=b, index=0, label="", waited=False, spoke=False)

    comps = strongly_connected("abcde", [e("a", "b"), e("b", "a"), e("c", "c"), e("d", "e")])
    assert sorted(sorted(c) for c in comps) == [["a", "b"], ["c"]]


def test_load_valid_flow_raises_with_every_error(tmp_path: pytest.TempPathFactory) -> None:
    path = tmp_path / "bad.yaml"  # type: ignore[operator]
    path.write_text(HEAD + "start: nope\nnodes:\n  a: [{goto: b}]\n")
    with pytest.raises(FlowError) as info:
        load_valid_flow(path)
    assert [d.code for d in info.value.diagnostics] == ["E-START-UNKNOWN", "E-GOTO-UNKNOWN"]
    assert "bad.yaml:4:8" in str(info.value)


def test_catalog_resolves_names_paths_and_suggests() -> None:
    catalog = Catalog()
    assert catalog.resolve("notify").name == "notify.yaml"
    assert {"notify", "conversation", "inbound", "ivr-menu"} <= set(catalog.entries)
    with pytest.raises(LookupError, match="did you mean 'notify'"):
        catalog.resolve("notfy")
