"""The conformance set: invalid flows paired with the exact diagnostics they must produce.

Each ``fixtures/invalid/*.yaml`` starts with ``# expect: CODE LINE:COL`` lines: the complete set
of diagnostics (errors and warnings) `voicecall validate` must report for it. The full text
output is pinned in ``*.expected`` next to it (`make golden` rewrites those). Every
``fixtures/valid/*.yaml`` must produce no diagnostic at all.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import Golden
from voicecall.dsl.catalog import Catalog
from voicecall.dsl.checks import FlowInfo
from voicecall.dsl.errors import render_text
from voicecall.dsl.validate import validate_paths

FIXTURES = Path(__file__).parent / "fixtures"
INVALID = sorted((FIXTURES / "invalid").glob("*.yaml"))
VALID = sorted((FIXTURES / "valid").glob("*.yaml"))
EXPECT = re.compile(rb"^# expect: ([EWI]-[A-Z0-9-]+) (\d+):(\d+)\s*$", re.M)


@pytest.fixture(scope="module")
def library() -> dict[str, FlowInfo]:
    return Catalog().infos()


def expectations(path: Path) -> set[tuple[str, int, int]]:
    return {(c.decode(), int(li), int(co)) for c, li, co in EXPECT.findall(path.read_bytes())}


def test_the_conformance_set_is_large_enough() -> None:
    assert len(INVALID) >= 40
    assert len(VALID) >= 5


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_fixture(
    path: Path, library: dict[str, FlowInfo], golden: Golden, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = expectations(path)
    assert expected, f"{path.name} has no `# expect:` line"
    monkeypatch.chdir(path.parent)
    report = validate_paths([Path(path.name)], library)
    actual = {(d.code, d.span.line, d.span.col) for d in report.diagnostics}
    assert actual == expected
    (checked,) = report.files
    lines = checked.lines
    text = "\n".join(render_text(d, lines) for d in report.diagnostics) + "\n"
    golden.check(path.with_suffix(".expected"), text)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_valid_fixture(path: Path, library: dict[str, FlowInfo]) -> None:
    report = validate_paths([path], library)
    assert [d.to_json() for d in report.diagnostics] == []
