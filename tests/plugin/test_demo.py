"""`make demo`: four calls on the mock carrier, coloured only where colour is wanted."""

from __future__ import annotations

import sys

import pytest

from voicecall.plugin import demo


def run_on_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert demo.main() == 0
    return capsys.readouterr().out


def test_the_demo_is_coloured_on_a_terminal_unless_no_color_is_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" in run_on_a_terminal(capsys, monkeypatch)
    monkeypatch.setenv("NO_COLOR", "1")
    plain = run_on_a_terminal(capsys, monkeypatch)
    assert "\x1b[" not in plain and "4 calls in" in plain
