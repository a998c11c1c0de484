"""Flow tests: ``*.test.yaml`` files next to the flows, run on the mock carrier.

::

    flow: appointment-reminder          # a flow name, or a path relative to this file
    providers: [twilio, plivo, telnyx]  # default: all three
    cases:
      - name: confirms by keypad
        params: {patient: Ann, when: tomorrow at 3 PM}
        caller: [answer, {press: "1"}]
        expect:
          visited: [greet, confirmed]          # the nodes, in order
          said: [see you then]                 # phrases the flow said, in order
          saved: {reply.digits: "1"}           # variables after the call
          end: hangup-bot                      # the end reason

A file with a single case may put its keys (params, caller, agent, model, expect) at the top.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicecall.dsl.catalog import Catalog
from voicecall.dsl.errors import Diagnostic, FlowError, Span
from voicecall.dsl.loader import Document, load_bytes
from voicecall.runtime.sim.script import Script, parse_script
from voicecall.runtime.sim.simulate import Simulation, simulate

PROVIDERS = ("twilio", "plivo", "telnyx")
EXPECTATIONS = ("visited", "said", "saved", "end")
SUFFIXES = (".test.yaml", ".test.yml")


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    name: str
    file: Path
    flow: str
    providers: tuple[str, ...]
    params: dict[str, Any]
    script: Script
    expect: dict[str, Any]
    where: str


@dataclass(slots=True, kw_only=True)
class Outcome:
    case: Case
    provider: str
    failures: list[str] = field(default_factory=list)
    simulation: Simulation | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


def find_tests(paths: Sequence[Path]) -> list[Path]:
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.name.endswith(SUFFIXES))
        elif path.name.endswith(SUFFIXES):
            out.append(path)
    return out


def load_cases(path: Path) -> list[Case]:
    """The cases of one test file. Raises :class:`FlowError` with positioned diagnostics."""
    result = load_bytes(path.read_bytes(), str(path))
    doc = result.document
    if doc is None:
        raise FlowError(result.diagnostics)
    data = doc.data
    if not isinstance(data, dict) or not isinstance(data.get("flow"), str):
        raise FlowError([_diag(doc, (), "a flow test names its flow: `flow: NAME`")])
    flow = data["flow"]
    relative = path.parent / flow
    if relative.suffix in (".yaml", ".yml") and relative.exists():
        flow = str(relative)
    providers = tuple(data.get("providers") or PROVIDERS)
    raw_cases = data.get("cases")
    cases = raw_cases if isinstance(raw_cases, list) else [data]
    base: tuple[str | int, ...] = ("cases",) if isinstance(raw_cases, list) else ()
    return [
        _case(doc, path, flow, providers, item=item, at=(*base, i) if base else ())
        for i, item in enumerate(cases)
    ]


def _case(
    doc: Document, path: Path, flow: str, providers: tuple[str, ...], *, item: Any,
    at: tuple[str | int, ...],
) -> Case:  # fmt: skip
    if not isinstance(item, dict):
        raise FlowError([_diag(doc, at, "a case is a mapping")])
    parts = {k: item[k] for k in ("caller", "agent", "model") if k in item}
    script = _script(doc, at, parts)
    expect = item.get("expect") or {}
    unknown = [k for k in expect if k not in EXPECTATIONS]
    if unknown:
        raise FlowError(
            [
                _diag(
                    doc,
                    (*at, "expect", unknown[0]),
                    f"unknown expectation '{unknown[0]}' ({', '.join(EXPECTATIONS)})",
                    key=True,
                )
            ]
        )
    name = str(item.get("name") or path.name.removesuffix(".test.yaml"))
    return Case(name=name, file=path, flow=flow, providers=providers,
                params=dict(item.get("params") or {}), script=script, expect=dict(expect),
                where=f"{path}:{doc.span(at).line}")  # fmt: skip


def _script(doc: Document, at: tuple[str | int, ...], parts: dict[str, Any]) -> Script:
    """The case's caller/agent/model parts as a script, with positions in the test file."""
    view = Document(doc.file, doc.text, {"_": parts}, _prefix(doc, at), {}, doc.styles)
    return parse_script(view, ("_",))


def _prefix(doc: Document, at: tuple[str | int, ...]) -> dict[Any, Span]:
    """Spans re-rooted under "_", so the script reader can point into the test file."""
    out: dict[Any, Span] = {}
    for path, span in doc.spans.items():
        if path[: len(at)] == at:
            out[("_", *path[len(at) :])] = span
    return out


def _diag(doc: Document, at: tuple[str | int, ...], message: str, key: bool = False) -> Diagnostic:
    span = doc.span(at, key=key) if at else Span.point(1, 1)
    return Diagnostic.make("E-SCHEMA-VALUE", message, doc.file, span)


async def run_case(case: Case, provider: str, catalog: Catalog | None = None) -> Outcome:
    """Simulates one case on one provider and checks its expectations."""
    sim = await simulate(case.flow, provider=provider, script=case.script, params=case.params,
                         catalog=catalog)  # fmt: skip
    return Outcome(case=case, provider=provider, failures=list(check(case, sim)), simulation=sim)


def check(case: Case, sim: Simulation) -> Iterator[str]:
    if sim.error:
        yield sim.error
    record = sim.record
    if record is None:
        yield "no call took place"
        return
    expect = case.expect
    if "visited" in expect and record.visited != list(expect["visited"]):
        yield f"visited {record.visited}, expected {list(expect['visited'])}"
    if "end" in expect and record.end_reason != expect["end"]:
        yield f"ended {record.end_reason}, expected {expect['end']}"
    spoken = [t.text for t in record.transcript if t.speaker == "bot"]
    yield from _phrases(spoken, [str(p) for p in expect.get("said", [])])
    variables = record.scopes.get("", {})
    for dotted, wanted in (expect.get("saved") or {}).items():
        actual = _lookup(variables, str(dotted))
        if actual != wanted:
            yield f"{dotted} is {actual!r}, expected {wanted!r}"


def _phrases(spoken: list[str], wanted: list[str]) -> Iterator[str]:
    """Each phrase must appear in what was said, in this order (several may share a line)."""
    text = "\n".join(spoken).lower()
    position = 0
    for phrase in wanted:
        found = text.find(phrase.lower(), position)
        if found < 0:
            yield f"never said {phrase!r} (after what came before); said: {spoken}"
            return
        position = found + len(phrase)


def _lookup(variables: dict[str, Any], dotted: str) -> Any:
    value: Any = variables
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value
