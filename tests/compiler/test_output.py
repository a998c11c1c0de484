"""The compile output: what scripts read of each block."""

from __future__ import annotations

from tests.compiler.conftest import bundled
from voicecall.compiler.base import ErrorLevel, compile_flow
from voicecall.compiler.output import compiled_json, compiled_text
from voicecall.compiler.telnyx import RUNTIME_COMMANDS


def _commands(name: str) -> list[dict[str, object]]:
    flows = bundled()
    data = compiled_json(compile_flow(flows[name], "telnyx", flows, ErrorLevel.RAISE), {})
    return [c for block in data["blocks"] for c in block["commands"] + block.get("after_input", [])]


def test_the_runtime_timers_are_marked_apart_from_telnyx_commands() -> None:
    commands = _commands("notify") + _commands("appointment-reminder")
    marked = {c["command"] for c in commands if c["runtime"] is True}
    sent = {c["command"] for c in commands if c["runtime"] is False}
    assert marked == {"pause", "listen"} == set(RUNTIME_COMMANDS)
    assert {"speak", "hangup", "gather_using_speak"} <= sent
    assert len(marked) + len(sent) == len({c["command"] for c in commands})


def test_the_text_output_says_a_timer_is_not_sent() -> None:
    flows = bundled()
    text = compiled_text(compile_flow(flows["notify"], "telnyx", flows, ErrorLevel.RAISE), {})
    assert "pause  -> await timer  (runtime timer, not sent to the carrier)" in text
