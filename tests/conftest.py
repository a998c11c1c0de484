"""Shared pytest options: `--update-golden` rewrites golden files instead of comparing.

Property tests explore new random inputs on every local run; under CI (``CI`` set) they replay
a fixed sequence, so a landing is judged on the code, not on which examples a run happened to
draw. Whatever a local run finds becomes a fixed regression test.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("CI"):
    settings.load_profile("ci")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        default=False,
        help="rewrite golden files from the current output instead of comparing",
    )


class Golden:
    """Compares text with a golden file, or rewrites it under --update-golden."""

    def __init__(self, update: bool):
        self.update = update

    def check(self, path: Path, actual: str) -> None:
        if self.update or not path.exists():
            if not self.update:
                pytest.fail(f"missing golden file {path}; run `make golden` to create it")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(actual, "utf-8")
            return
        expected = path.read_text("utf-8")
        assert actual == expected, f"{path} differs; run `make golden` if the change is intended"


@pytest.fixture
def golden(request: pytest.FixtureRequest) -> Golden:
    return Golden(bool(request.config.getoption("--update-golden")))
