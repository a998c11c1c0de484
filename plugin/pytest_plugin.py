"""A pytest plugin: every ``*.test.yaml`` flow test becomes test items, one per case and
provider, run on the mock carrier like `voicecall test`.

It is registered as the ``voicecall`` plugin when voicecall is installed; ``-p no:voicecall``
turns it off. Flows named in the tests are looked up by path, or among the bundled flows and
the folders given with ``--voicecall-flows`` (or the ini option ``voicecall_flows``); names
are looked up in the test file's own folder first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from voicecall.dsl.catalog import Catalog
from voicecall.dsl.errors import FlowError, render_text
from voicecall.runtime.sim.flowtest import SUFFIXES, Case, load_cases, run_case


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("voicecall")
    group.addoption("--voicecall-flows", action="append", default=[], metavar="DIR",
                    help="flow folders that flow tests may name flows from")  # fmt: skip
    parser.addini("voicecall_flows", "flow folders for flow tests", type="paths", default=[])


def pytest_collect_file(parent: pytest.Collector, file_path: Path) -> pytest.Collector | None:
    if file_path.name.endswith(SUFFIXES):
        collector: pytest.Collector = FlowTestFile.from_parent(parent, path=file_path)
        return collector
    return None


class FlowTestFile(pytest.File):
    def collect(self) -> Iterator[pytest.Item]:
        try:
            cases = load_cases(self.path)
        except FlowError as exc:
            lines = self.path.read_text("utf-8", errors="replace").splitlines()
            shown = "\n".join(render_text(d, lines) for d in exc.diagnostics)
            raise self.CollectError(shown or str(exc)) from exc
        for case in cases:
            for provider in case.providers:
                yield FlowTestItem.from_parent(self, name=f"{case.name}[{provider}]", case=case,
                                               provider=provider)  # fmt: skip


class FlowTestFailed(Exception):
    """The expectations a simulated call did not meet."""


class FlowTestItem(pytest.Item):
    def __init__(self, *, case: Case, provider: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.case = case
        self.provider = provider

    def runtest(self) -> None:
        folders = [Path(p) for p in self.config.getoption("voicecall_flows")]
        folders += [Path(p) for p in self.config.getini("voicecall_flows")]
        outcome = asyncio.run(run_case(self.case, self.provider, Catalog(folders)))
        if not outcome.ok:
            raise FlowTestFailed("\n".join(outcome.failures))

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, FlowTestFailed):
            return f"{self.case.where}: {self.case.name} on {self.provider}:\n{excinfo.value}"
        return str(super().repr_failure(excinfo))

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"flow test {self.case.name} [{self.provider}]"
