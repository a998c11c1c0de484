"""Call states: the original's rules."""

from __future__ import annotations

import pytest

from voicecall.runtime.state import can_move


@pytest.mark.parametrize(
    ("current", "target", "ok"),
    [
        ("initiated", "ringing", True), ("ringing", "answered", True),
        ("answered", "ringing", False),  # late progress events never move a call back
        ("speaking", "listening", True), ("listening", "speaking", True),
        ("active", "completed", True), ("completed", "error", False),  # terminal is sticky
        ("busy", "busy", False), ("initiated", "no-answer", True),
    ],
)  # fmt: skip
def test_transitions(current: str, target: str, ok: bool) -> None:
    assert can_move(current, target) is ok
