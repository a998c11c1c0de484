"""`make demo`: the doors (gateway and call commands), then four calls on the mock carrier,
coloured only where colour is wanted."""

from __future__ import annotations

import sys

import pytest

from voicecall.plugin import demo


def run_on_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert demo.main(doors=False) == 0
    return capsys.readouterr().out


def test_the_demo_is_coloured_on_a_terminal_unless_no_color_is_set(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert "\x1b[" in run_on_a_terminal(capsys, monkeypatch)
    monkeypatch.setenv("NO_COLOR", "1")
    plain = run_on_a_terminal(capsys, monkeypatch)
    assert "\x1b[" not in plain and "4 calls in" in plain


def test_the_doors_part_drives_a_real_gateway_with_the_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import secrets

    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: "demo-secret-4b1d")
    assert demo.main() == 0
    out = capsys.readouterr().out
    for step in ("$ voicecall gateway --config openclaw.json &", "--follow &",
                 "$ voicecall continue --call-id", "$ voicecall end --call-id",
                 "$ voicecall status", "$ voicecall latency", "drains, exit 0"):  # fmt: skip
        assert step in out
    assert "Call ended: hangup-bot" in out  # the live view, relayed as it happened
    assert out.count("  user ") >= 2  # the patient callee answered each continue
    assert "all worked" in out and "4 calls in" in out
    assert "demo-secret-4b1d" not in out  # the gateway token is never shown
