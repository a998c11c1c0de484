"""The node graph of a flow: edges with what runs before them, reachability, loops.

Shared by the checks (unreachable nodes, caller traps, tight loops), the compiler's lowering and
`voicecall graph`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from voicecall.dsl import model as m

# Actions that let time pass for the caller (a transfer rings the other party for a while).
WAITS = (m.Ask, m.Pause, m.Converse, m.CallFlow, m.Transfer)
SPEAKS = (m.Say, m.Play, m.SendDigits)


@dataclass(frozen=True, slots=True, kw_only=True)
class Edge:
    """A jump from ``src`` to ``dst`` made by the action at ``index`` of ``src``."""

    src: str
    dst: str
    index: int
    label: str  # goto, when <expr>, else, no input, no match, transfer failed
    waited: bool  # an action that waits for the caller ran before the jump in src
    spoke: bool  # something was said or played before the jump in src


@dataclass(frozen=True, slots=True, kw_only=True)
class Graph:
    start: str
    entries: tuple[str, ...]  # start and handler nodes
    edges: tuple[Edge, ...]
    ends: frozenset[str]  # nodes with a path inside them that ends the call or flow
    unreachable_actions: tuple[tuple[str, int], ...]  # (node, first dead action index)

    def successors(self, node: str) -> Iterator[Edge]:
        return (e for e in self.edges if e.src == node)

    def reachable(self) -> set[str]:
        """Nodes some path from an entry reaches."""
        seen, todo = set(), list(self.entries)
        while todo:
            n = todo.pop()
            if n not in seen:
                seen.add(n)
                todo.extend(e.dst for e in self.successors(n))
        return seen

    def can_end(self, known: Iterable[str] | None = None) -> set[str]:
        """Nodes from which some path reaches an end of the call or flow.

        With ``known`` (the flow's node names), a jump to an unknown node counts as an end: it
        is reported once as an unknown target, not again as a trap.
        """
        result = set(self.ends)
        if known is not None:
            names = set(known)
            result |= {e.src for e in self.edges if e.dst not in names}
        changed = True
        while changed:
            changed = False
            for e in self.edges:
                if e.dst in result and e.src not in result:
                    result.add(e.src)
                    changed = True
        return result


def build_graph(flow: m.Flow) -> Graph:
    """Computes the graph of a flow (edges to unknown nodes are kept; checks report them)."""
    edges: list[Edge] = []
    ends: set[str] = set()
    dead: list[tuple[str, int]] = []
    for node in flow.nodes:
        waited = spoke = False
        stopped_at: int | None = None
        for i, action in enumerate(node.actions):
            waited = waited or isinstance(action, WAITS)
            spoke = spoke or isinstance(action, SPEAKS)
            for dst, label in exits(action):
                edges.append(
                    Edge(src=node.name, dst=dst, index=i, label=label, waited=waited, spoke=spoke)
                )
            if isinstance(action, m.Hangup | m.Transfer | m.Converse):
                ends.add(node.name)
            if isinstance(action, m.ENDS_NODE):
                stopped_at = i
                break
        if stopped_at is None:
            ends.add(node.name)  # falling off the end of a node ends the flow
        elif stopped_at + 1 < len(node.actions):
            dead.append((node.name, stopped_at + 1))
    entries = tuple(dict.fromkeys([flow.start.name, *(r.name for _, r in flow.handlers.refs())]))
    return Graph(
        start=flow.start.name,
        entries=entries,
        edges=tuple(edges),
        ends=frozenset(ends),
        unreachable_actions=tuple(dead),
    )


def exits(action: m.Action) -> Iterator[tuple[str, str]]:
    """The nodes an action may jump to, each with a label."""
    if isinstance(action, m.Goto):
        yield action.target.name, "goto"
    elif isinstance(action, m.Branch):
        for case in action.cases:
            yield case.goto.name, f"when {case.when.source}"
        if action.otherwise is not None:
            yield action.otherwise.name, "else"
    elif isinstance(action, m.Ask):
        if action.on_no_input is not None:
            yield action.on_no_input.name, "no input"
        if action.on_no_match is not None:
            yield action.on_no_match.name, "no match"
    elif isinstance(action, m.Transfer) and action.on_fail is not None:
        yield action.on_fail.name, "transfer failed"
    elif isinstance(action, m.Converse):
        for ref, label in converse_exits(action):
            yield ref.name, label


def converse_exits(action: m.Converse) -> Iterator[tuple[m.Ref, str]]:
    """A conversation's exits back into the flow, each with its label."""
    for ref, label in ((action.on_done, "done"), (action.on_hangup, "hung up"),
                       (action.on_timeout, "turns used up")):  # fmt: skip
        if ref is not None:
            yield ref, label


def refs(action: m.Action) -> Iterator[m.Ref]:
    """Every node reference an action holds."""
    if isinstance(action, m.Goto):
        yield action.target
    elif isinstance(action, m.Branch):
        yield from (c.goto for c in action.cases)
        if action.otherwise is not None:
            yield action.otherwise
    elif isinstance(action, m.Ask):
        yield from (r for r in (action.on_no_input, action.on_no_match) if r is not None)
    elif isinstance(action, m.Transfer) and action.on_fail is not None:
        yield action.on_fail
    elif isinstance(action, m.Converse):
        yield from (ref for ref, _ in converse_exits(action))


def strongly_connected(nodes: Iterable[str], edges: Iterable[Edge]) -> list[list[str]]:  # noqa: PLR0912
    """Tarjan's algorithm, iterative; returns the components that contain a cycle."""
    succ: dict[str, list[str]] = {}
    for e in edges:
        succ.setdefault(e.src, []).append(e.dst)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            v, i = work.pop()
            if i == 0:
                index[v] = low[v] = counter
                counter += 1
                stack.append(v)
                on_stack.add(v)
            children = succ.get(v, [])
            if i < len(children):
                work.append((v, i + 1))
                w = children[i]
                if w not in index:
                    work.append((w, 0))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1 or v in succ.get(v, []):
                    result.append(comp)
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[v])
    return result


def _ending(flow: m.Flow, name: str) -> str:
    node = flow.node(name)
    kinds = {a.kind for a in node.actions} if node else set()
    for kind in ("hangup", "transfer", "converse"):
        if kind in kinds:
            return kind
    return ""


def to_mermaid(flow: m.Flow) -> str:
    """The node graph as a Mermaid flowchart: start, handlers, jumps with their labels, ends."""
    graph = build_graph(flow)
    ids = {n.name: f"n{i}" for i, n in enumerate(flow.nodes)}
    t = mermaid_text
    lines = [
        "flowchart TD",
        f'  start(["{t(flow.name)}"]) --> {ids.get(flow.start.name, "missing")}',
    ]
    for event, ref in flow.handlers.refs():
        lines.append(f'  h_{event}(["on {t(event)}"]) -.-> {ids.get(ref.name, "missing")}')
    for node in flow.nodes:
        calls = [t(a.flow) for a in node.actions if isinstance(a, m.CallFlow)]
        extra = f"<br/>calls {', '.join(calls)}" if calls else ""
        end = _ending(flow, node.name)
        name = t(node.name)
        shape = f'(["{name}{extra}<br/>{end}"])' if end else f'["{name}{extra}"]'
        lines.append(f"  {ids[node.name]}{shape}")
    for e in graph.edges:
        lines.append(f'  {ids[e.src]} -->|"{t(e.label)}"| {ids.get(e.dst, "missing")}')
    return "\n".join(lines) + "\n"


# Mermaid entity codes (https://mermaid.js.org/syntax/flowchart.html#entity-codes-to-escape-characters):
# inside a quoted label `"` ends the label, `|` ends an edge label, `#` starts an entity code,
# a leading backtick starts a Markdown string, and labels are HTML, so `<`, `>` and `&` too.
_MERMAID = {"#": "#35;", '"': "#quot;", "|": "#124;", "<": "#lt;", ">": "#gt;", "&": "#amp;",
            "`": "#96;", "\n": " "}  # fmt: skip


def mermaid_text(text: str) -> str:
    """``text`` safe inside a quoted Mermaid label: special characters as entity codes."""
    return "".join(_MERMAID.get(ch, ch) for ch in text)


def to_dot(flow: m.Flow) -> str:
    """The node graph in Graphviz dot."""

    def q(text: str) -> str:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
        return f'"{escaped}"'

    graph = build_graph(flow)
    lines = [f"digraph {q(flow.name)} {{", "  rankdir=TB;", '  node [shape=box, fontname="sans"];',
             f"  __start [shape=oval, label={q(flow.name)}];",
             f"  __start -> {q(flow.start.name)};"]  # fmt: skip
    for event, ref in flow.handlers.refs():
        lines.append(f"  {q('on ' + event)} [shape=oval, style=dashed];")
        lines.append(f"  {q('on ' + event)} -> {q(ref.name)} [style=dashed];")
    for node in flow.nodes:
        end = _ending(flow, node.name)
        label = node.name + (f"\n{end}" if end else "")
        style = ", style=rounded" if end else ""
        lines.append(f"  {q(node.name)} [label={q(label)}{style}];")
    for e in graph.edges:
        lines.append(f"  {q(e.src)} -> {q(e.dst)} [label={q(e.label)}];")
    lines.append("}")
    return "\n".join(lines) + "\n"
