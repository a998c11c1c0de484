"""Flow tests: ``*.test.yaml`` files next to the flows, run on the mock carrier.

::

    flow: appointment-reminder          # a path relative to this file, or a flow name
    providers: [twilio, plivo, telnyx]  # default: all three
    cases:
      - name: confirms by keypad
        params: {patient: Ann, when: tomorrow at 3 PM}
        direction: outbound                    # default: inbound for an inbound flow
        from: "+15550000000"                   # call.from, call.to (see below)
        to: "+15550001111"
        now: 2026-01-05T19:30:00               # the simulated time (the flow's time zone)
        caller: [answer, {press: "1"}]         # a caller script's parts: caller, agent, model
        expect:
          visited: [greet, confirmed]          # the nodes, in order
          said: [see you then]                 # phrases the flow said, in order
          saved: {reply.digits: "1"}           # variables after the call
          end: hangup-bot                      # the end reason
          rejected: false                      # inbound: whether the caller was rejected

A file with a single case may put its keys at the top instead of ``cases:``. Its JSON Schema
is ``test.schema.json`` (`voicecall schema --test`); any other key is an error. A flow name is
looked up in the test file's folder first, then in the configured folders, then among the
bundled flows.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicecall.dsl.catalog import Catalog
from voicecall.dsl.errors import Diagnostic, FlowError, Severity, Span
from voicecall.dsl.loader import Document, load_bytes
from voicecall.runtime.sim.schemas import check_test
from voicecall.runtime.sim.script import Script, empty_as, parse_script
from voicecall.runtime.sim.simulate import Simulation, SimulationError, parse_now, simulate

PROVIDERS = ("twilio", "plivo", "telnyx")
SUFFIXES = (".test.yaml", ".test.yml")
CASE_KEYS = ("name", "params", "direction", "from", "to", "now", "caller", "agent", "model",
             "expect")  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class Case:
    name: str
    file: Path
    flow: str  # a flow name, or the path of a flow file
    providers: tuple[str, ...]
    params: dict[str, Any]
    script: Script
    expect: dict[str, Any]
    where: str
    from_number: str | None = None
    to_number: str | None = None
    now: str | None = None  # ISO 8601, read in the flow's time zone when it has no offset
    direction: str | None = None  # inbound | outbound; default: the flow's


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
    """The test files in ``paths``: folders searched, test files as given, and for a flow file
    (x.yaml) the test file beside it (x.test.yaml)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.name.endswith(SUFFIXES))
        elif path.name.endswith(SUFFIXES):
            out.append(path)
        elif path.suffix in (".yaml", ".yml"):
            out += [p for p in (path.with_suffix(s) for s in SUFFIXES) if p.is_file()]
    return out


def load_cases(path: Path) -> list[Case]:
    """The cases of one test file. Raises :class:`FlowError` with positioned diagnostics."""
    result = load_bytes(path.read_bytes(), str(path))
    doc = result.document
    if doc is None:
        raise FlowError(empty_as(result.diagnostics, "flow test",
                                 "start with `flow: NAME` and `cases:`; `voicecall schema "
                                 "--test` describes every key"))  # fmt: skip
    problems = [d for d in (*result.diagnostics, *check_test(doc)) if d.severity is Severity.ERROR]
    if problems:
        raise FlowError(problems)
    data: dict[str, Any] = doc.data
    if "cases" in data:
        mixed = [k for k in data if k in CASE_KEYS]
        if mixed:
            raise FlowError([_diag(doc, (mixed[0],), f"'{mixed[0]}' at the top is for a file "
                                   "with one case; this file has cases:", key=True)])  # fmt: skip
    flow = _flow_ref(doc, path, data["flow"])
    providers = tuple(data.get("providers") or PROVIDERS)
    if "cases" not in data:
        return [_case(doc, path, flow, providers, item=data, at=())]
    return [_case(doc, path, flow, providers, item=item, at=("cases", i))
            for i, item in enumerate(data["cases"])]  # fmt: skip


def _flow_ref(doc: Document, path: Path, ref: str) -> str:
    """A path-like ``flow:`` as the file it names (relative to the test file); a name as is."""
    if not ref.endswith((".yaml", ".yml")) and "/" not in ref:
        return ref
    target = path.parent / ref
    if not target.is_file():
        raise FlowError([_diag(doc, ("flow",), f"no flow file {ref} (relative to this file: "
                               f"{target})")])  # fmt: skip
    return str(target)


def _case(
    doc: Document, path: Path, flow: str, providers: tuple[str, ...], *, item: dict[str, Any],
    at: tuple[str | int, ...],
) -> Case:  # fmt: skip
    script = parse_script(doc, at)
    now = item.get("now")
    if now is not None:
        now = now.isoformat() if isinstance(now, datetime.date) else str(now)
        try:
            parse_now(now, "UTC")
        except ValueError as exc:
            raise FlowError([_diag(doc, (*at, "now"), str(exc))]) from None
    expect = dict(item.get("expect") or {})
    if isinstance(expect.get("said"), str):
        expect["said"] = [expect["said"]]
    name = str(item.get("name") or path.name.removesuffix(".test.yaml"))
    return Case(name=name, file=path, flow=flow, providers=providers,
                params=dict(item.get("params") or {}), script=script, expect=expect,
                where=f"{path}:{doc.span(at).line}", from_number=item.get("from"),
                to_number=item.get("to"), now=now,
                direction=item.get("direction"))  # fmt: skip


def _diag(doc: Document, at: tuple[str | int, ...], message: str, key: bool = False) -> Diagnostic:
    span = doc.span(at, key=key) if at else Span.point(1, 1)
    return Diagnostic.make("E-SCHEMA-VALUE", message, doc.file, span)


def case_catalog(case: Case, base: Catalog | None = None) -> Catalog:
    """The flows a case may name: ``base`` (default: the bundled flows) and, winning over it,
    the flows in the test file's folder (``base`` itself when it has that folder already)."""
    base = base or Catalog()
    folder = case.file.parent.resolve()
    if any(d.resolve() == folder for d in base.dirs):
        return base
    return Catalog([*base.dirs[1:], case.file.parent], base.files)


async def run_case(
    case: Case, provider: str, catalog: Catalog | None = None, *,
    config: Mapping[str, Any] | None = None,
) -> Outcome:  # fmt: skip
    """Simulates one case on one provider and checks its expectations (``config``: runtime
    settings for every case, e.g. streaming on)."""
    try:
        sim = await simulate(case.flow, provider=provider, script=case.script, config=config,
                             params=case.params, catalog=case_catalog(case, catalog),
                             from_=case.from_number, to=case.to_number,
                             now=case.now, direction=case.direction)  # fmt: skip
    except SimulationError as exc:
        return Outcome(case=case, provider=provider, failures=[str(exc)])
    return Outcome(case=case, provider=provider, failures=list(check(case, sim)), simulation=sim)


def check(case: Case, sim: Simulation) -> Iterator[str]:
    """What the simulated call did that the case did not expect, one line each."""
    if sim.error:
        yield sim.error
    expect = case.expect
    if sim.call_error and expect.get("end") != "error":
        yield f"the call ended in error: {sim.call_error}"
    yield from _rejection(expect, sim)
    record = sim.record
    if record is None and sim.rejection is None:
        yield "no call took place"
        return
    visited = record.visited if record is not None else []
    if "visited" in expect and visited != list(expect["visited"]):
        yield f"visited {visited}, expected {list(expect['visited'])}"
    if "end" in expect and sim.end_reason != expect["end"]:
        why = f" ({sim.call_error})" if sim.call_error else ""
        yield f"ended {sim.end_reason}{why}, expected {expect['end']}"
    yield from _phrases(sim.said, [str(p) for p in expect.get("said", [])])
    variables = record.scopes.get("", {}) if record is not None else {}
    for dotted, wanted in (expect.get("saved") or {}).items():
        actual = _lookup(variables, str(dotted))
        if actual != wanted:
            yield f"{dotted} is {actual!r}, expected {wanted!r}"
    if sim.unused:
        more = f" ({len(sim.unused)} in all)" if len(sim.unused) > 1 else ""
        yield f"a script step was never used: {sim.unused[0]}{more}"


def _rejection(expect: dict[str, Any], sim: Simulation) -> Iterator[str]:
    wanted = expect.get("rejected")
    if sim.rejection is None:
        if wanted:
            yield "expected the caller to be rejected, but the call was admitted"
        return
    if wanted is False or (wanted is None and expect.get("end") != "rejected"):
        yield f"the caller was rejected: {sim.rejection}"
    elif isinstance(wanted, str) and wanted.lower() not in sim.rejection.lower():
        yield f"rejected because {sim.rejection!r}, expected a reason containing {wanted!r}"


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
