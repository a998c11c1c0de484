"""`make demo`: the doors (gateway and call commands), then four calls on the mock carrier,
then a streamed conversation with the offline stand-ins; coloured only where colour is
wanted."""

from __future__ import annotations

import re
import sys

import pytest

from voicecall.plugin import demo, demo_voice
from voicecall.runtime.sim.simulate import Simulation


def run_on_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert demo.main(doors=False, voice=False) == 0
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
    assert demo.main(voice=False) == 0
    out = capsys.readouterr().out
    for step in ("$ voicecall gateway --config openclaw.json &", "--follow &",
                 "$ voicecall continue --call-id", "$ voicecall end --call-id",
                 "$ voicecall status", "$ voicecall latency", "drains, exit 0"):  # fmt: skip
        assert step in out
    assert "Call ended: hangup-bot" in out  # the live view, relayed as it happened
    assert out.count("  user ") >= 2  # the patient callee answered each continue
    assert "all worked" in out and "4 calls in" in out
    assert "demo-secret-4b1d" not in out  # the gateway token is never shown


def test_the_voice_part_streams_a_conversation_with_labelled_stand_ins(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    assert demo.main(doors=False) == 0
    out = capsys.readouterr().out
    voice = out[out.index("part 2: a streamed conversation on") :]
    assert "offline stand-ins (no keys, no network): a tone for the voice, the mock caller's " \
        "script for speech recognition, scripted model replies" in voice  # fmt: skip
    assert '<Stream url="ws://127.0.0.1:' in voice and '<Parameter name="callId"' in voice
    assert '<Parameter name="token" value="(one-use, hidden)" />' in voice
    assert not re.search(r'name="token" value="[0-9a-f]{16,}"', voice)  # never the token
    events = [line.split()[1:3] for line in voice.splitlines() if re.match(r" +\d+\.\d\ds ", line)]
    assert events[:4] == [["bot", "greeting"], ["caller", "interrupt"], ["bot", "clear"],
                          ["caller", "stops"]]  # fmt: skip
    assert ["bot", "reply"] in events and ["carrier", "stream-end"] in events
    assert re.search(r"greeting .*: \d+ frames \(\d\.\d\d s of \d\.\d\d s\) sent, cut off", voice)
    assert 'hands over "A table on Monday please"' in voice and 'hands over "Four of us"' in voice
    assert '"How many guests?" (the model\'s, scripted)' in voice and "(mark u1 echoed)" in voice
    assert 'handed back to the flow (collect, then on_done): {"date": "2026-01-05", "party": 4' \
        in voice  # fmt: skip
    assert "say        Thank you. A table for 4 on 2026-01-05. Goodbye." in voice
    assert "nodes book -> confirm; ended: hangup-bot" in voice
    assert "streamed call in" in voice and "voice: a streamed call on Twilio" in voice


def test_the_voice_part_says_what_went_otherwise() -> None:
    failed = Simulation(flow="table-booking", provider="twilio", record=None, error="boom")
    seen = demo_voice.Seen(result=failed, stream=None, opening="", stand_ins=False)
    problems = demo_voice.check(seen)
    assert "the offline stand-in voice was not used" in problems
    assert "no audio on a media stream" in problems
    assert any("boom" in p for p in problems)
