"""`voicecall validate` on caller scripts and flow tests named on the command line: each is
checked against its own format (``caller.schema.json``, ``test.schema.json`` and what the
schemas cannot say), never as a flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from voicecall.dsl.errors import Diagnostic, FlowError, Span
from voicecall.dsl.validate import Checked, Report, display_name
from voicecall.runtime.sim.flowtest import SUFFIXES as TEST_SUFFIXES
from voicecall.runtime.sim.flowtest import load_cases
from voicecall.runtime.sim.script import load_script

CALLER_SUFFIXES = (".caller.yaml", ".caller.yml")


def with_scripts_and_tests(report: Report, paths: Sequence[Path]) -> Report:
    """``report`` with the caller scripts and flow tests among ``paths`` (files given by name)
    checked as what they are, in place of their check as flows."""
    named = {display_name(p): p for p in paths if p.is_file() and _is_script_or_test(p)}
    if not named:
        return report
    files = tuple(_check(named[c.file]) if c.file in named else c for c in report.files)
    return replace(report, files=files)


def _is_script_or_test(path: Path) -> bool:
    return path.name.endswith((*CALLER_SUFFIXES, *TEST_SUFFIXES))


def _check(path: Path) -> Checked:
    name = display_name(path)
    try:
        text = path.read_text("utf-8", errors="replace")
        if path.name.endswith(CALLER_SUFFIXES):
            load_script(path)
        else:
            load_cases(path)
        found: list[Diagnostic] = []
    except FlowError as exc:
        found = list(exc.diagnostics)
    except OSError as exc:
        text = ""
        found = [Diagnostic.make("E-FILE-READ", f"cannot read the file: {exc.strerror or exc}",
                                 name, Span.point(1, 1))]  # fmt: skip
    diagnostics = tuple(replace(d, file=name) for d in found)
    return Checked(file=name, doc=None, flow=None, diagnostics=diagnostics,
                   lines=tuple(text.splitlines()))  # fmt: skip
