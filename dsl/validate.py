"""Load, check and report: the pipeline behind `voicecall validate` and every flow lookup.

A file is loaded, schema-checked and built once per content (cached by its hash); the
semantic checks then run against a catalog of the other flows, for call_flow.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from voicecall.dsl import model as m
from voicecall.dsl.build import build_flow
from voicecall.dsl.checks import Context, FlowInfo, run_checks
from voicecall.dsl.errors import Diagnostic, FlowError, Severity, Span
from voicecall.dsl.loader import MAX_BYTES, Document, load_bytes
from voicecall.dsl.schema import check_schema

SKIP_SUFFIXES = (".test.yaml", ".test.yml", ".caller.yaml", ".caller.yml")


@dataclass(frozen=True, slots=True, kw_only=True)
class Loaded:
    """A file after loading, the schema and building: before the semantic checks."""

    file: str
    doc: Document | None
    flow: m.Flow | None
    diagnostics: tuple[Diagnostic, ...]
    lines: tuple[str, ...] = ()  # the source, for quoting lines in diagnostics

    @property
    def schema_ok(self) -> bool:
        return not any(d.severity is Severity.ERROR for d in self.diagnostics)


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked:
    """A file after every check."""

    file: str
    doc: Document | None
    flow: m.Flow | None
    diagnostics: tuple[Diagnostic, ...]
    lines: tuple[str, ...] = ()  # the source, for quoting lines in diagnostics

    @property
    def ok(self) -> bool:
        return not any(d.severity is Severity.ERROR for d in self.diagnostics)


_cache: dict[tuple[str, str], Loaded] = {}


def load(path: str | os.PathLike[str], display: str | None = None) -> Loaded:
    """Loads, schema-checks and builds one file; cached by display name and content hash."""
    name = display if display is not None else os.fspath(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        msg = f"cannot read the file: {exc.strerror or exc}"
        diag = Diagnostic.make("E-FILE-READ", msg, name, Span.point(1, 1))
        return Loaded(file=name, doc=None, flow=None, diagnostics=(diag,))
    key = (name, hashlib.sha256(raw).hexdigest())
    if key not in _cache:
        if len(_cache) > 1024:
            _cache.clear()
        _cache[key] = _load_raw(raw, name)
    return _cache[key]


def _load_raw(raw: bytes, name: str) -> Loaded:
    result = load_bytes(raw, name)
    diags = list(result.diagnostics)
    doc = result.document
    lines = tuple(result.text.splitlines()) if result.text is not None else ()
    if doc is None:
        return Loaded(file=name, doc=None, flow=None, diagnostics=tuple(diags), lines=lines)
    diags += check_schema(doc)
    flow = build_flow(doc) if isinstance(doc.data, dict) else None
    return Loaded(file=name, doc=doc, flow=flow, diagnostics=tuple(diags), lines=lines)


def validate_text(
    text: str | bytes, file: str = "<flow>", library: Mapping[str, FlowInfo] | None = None
) -> Checked:
    """Loads and checks flow source held in memory (no cache)."""
    raw = text.encode("utf-8") if isinstance(text, str) else text
    loaded = _load_raw(raw, file)
    catalog = dict(library or {})
    if loaded.flow is not None and loaded.flow.name:
        catalog.setdefault(loaded.flow.name, FlowInfo.of(loaded.flow))
    return check(loaded, catalog)


def check(loaded: Loaded, catalog: Mapping[str, FlowInfo]) -> Checked:
    """Runs the semantic checks on a loaded file against a catalog of other flows."""
    diags = list(loaded.diagnostics)
    if loaded.flow is not None and loaded.doc is not None:
        ctx = Context(flow=loaded.flow, doc=loaded.doc, catalog=catalog, schema_ok=loaded.schema_ok)
        diags += run_checks(ctx)
    unique = {(d.code, d.span, d.message): d for d in diags}
    ordered = sorted(unique.values(), key=lambda d: d.sort_key)
    return Checked(file=loaded.file, doc=loaded.doc, flow=loaded.flow,
                   diagnostics=tuple(ordered), lines=loaded.lines)  # fmt: skip


def find_flow_files(paths: Iterable[Path]) -> list[Path]:
    """Expands folders into their flow files (*.yaml, *.yml; not tests or caller scripts)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = [p for p in path.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
            out += sorted(p for p in found if not p.name.endswith(SKIP_SUFFIXES))
        else:
            out.append(path)
    return out


def display_name(path: Path) -> str:
    """The path as diagnostics show it: relative to the working folder when below it."""
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if rel.startswith("..") else rel


@dataclass(frozen=True, slots=True, kw_only=True)
class Report:
    files: tuple[Checked, ...]

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [d for f in self.files for d in f.diagnostics]

    def count(self, severity: Severity) -> int:
        return sum(1 for d in self.diagnostics if d.severity is severity)


def validate_paths(paths: Sequence[Path], library: Mapping[str, FlowInfo] | None = None) -> Report:
    """Checks every flow file under ``paths`` together.

    Args:
        paths: files and folders.
        library: flows call_flow may name besides those being checked (bundled, configured).
    Returns:
        A report with every file's diagnostics.
    """
    loaded = [load(p, display_name(p)) for p in find_flow_files(paths)]
    catalog: dict[str, FlowInfo] = dict(library or {})
    firsts: dict[str, Loaded] = {}
    extra: dict[str, list[Diagnostic]] = {}
    for item in loaded:
        flow = item.flow
        if flow is None or not flow.name:
            continue
        if flow.name in firsts:
            prev = firsts[flow.name]
            msg = f"flow name '{flow.name}' is also used by {prev.file}"
            extra.setdefault(item.file, []).append(
                Diagnostic.make(
                    "E-FLOW-DUPLICATE",
                    msg,
                    item.file,
                    flow.name_span,
                    "flow names must be unique; rename one",
                )
            )
            continue
        firsts[flow.name] = item
        catalog[flow.name] = FlowInfo.of(flow)
    checked = []
    for item in loaded:
        result = check(item, catalog)
        if item.file in extra:
            diags = sorted([*result.diagnostics, *extra[item.file]], key=lambda d: d.sort_key)
            result = replace(result, diagnostics=tuple(diags))
        checked.append(result)
    return Report(files=tuple(checked))


def load_valid_flow(path: Path, library: Mapping[str, FlowInfo] | None = None) -> m.Flow:
    """Loads and checks one flow for use; raises :class:`FlowError` if it has errors."""
    item = load(path, display_name(path))
    catalog = dict(library or {})
    if item.flow is not None and item.flow.name:
        catalog.setdefault(item.flow.name, FlowInfo.of(item.flow))
    result = check(item, catalog)
    errors = [d for d in result.diagnostics if d.severity is Severity.ERROR]
    if errors or result.flow is None:
        raise FlowError(errors)
    return result.flow
