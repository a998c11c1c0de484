"""The interpreter on compiled flows, without carriers: what each step answers and records."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest

from tests.compiler.conftest import bundled
from voicecall.compiler.base import compile_flow
from voicecall.dsl.validate import validate_text
from voicecall.runtime.interpreter import MAX_CHAIN, Interpreter, Run
from voicecall.runtime.state import CallRecord

BASE = "https://voice.example.com/voice/webhook"


def call_for(flow: str, provider: str = "twilio", **params: Any) -> tuple[Interpreter, CallRecord]:
    flows = bundled()
    compiled = compile_flow(flows[flow], provider, flows)
    interp = Interpreter(compiled, BASE, {"inboundGreeting": None}, lambda: 1000.0)
    call = CallRecord.new(provider=provider, direction="outbound", from_number="+15550000000",
                          to_number="+15551230000", flow=flow, flow_digest="x",
                          params=params)  # fmt: skip
    return interp, call


def doc(run: Run) -> ET.Element:
    return ET.fromstring("<Response>" + "".join(run.fragments) + "</Response>")


def said(call: CallRecord) -> list[tuple[str, str]]:
    return [(line.speaker, line.text) for line in call.transcript]


def test_a_reminder_confirmed_by_keypad() -> None:
    interp, call = call_for("appointment-reminder", patient="Ann", when="tomorrow")
    first = interp.start(call)
    tags = [el.tag for el in doc(first)]
    assert tags == ["Say", "Gather", "Redirect"]
    assert call.waiting is not None and (call.waiting.block, call.waiting.step) == ("greet", 0)
    action = doc(first).find("Gather").get("action")  # type: ignore[union-attr]
    assert action == f"{BASE}?call={call.call_id}&kind=input&block=greet&step=0"
    done = interp.answer_input(call, "greet", 0, digits="1")
    assert [el.tag for el in doc(done)] == ["Say", "Hangup"]
    assert done.hangup and call.ending == "hangup-bot"
    assert call.scopes[""]["reply"] == {"text": "", "digits": "1", "confidence": 0.0}
    assert call.visited == ["greet", "confirmed"]
    assert said(call)[-2:] == [("user", "1"), ("bot", "Thank you, see you then.")]
    assert call.transcript[0].source.endswith("appointment-reminder.yaml:19:7")


def test_silence_is_retried_then_exits() -> None:
    interp, call = call_for("appointment-reminder", patient="Ann", when="tomorrow")
    interp.start(call)
    retry = interp.answer_input(call, "greet", 0)
    assert call.waiting is not None and (call.waiting.block, call.waiting.step) == (
        "greet:retry", 1)  # fmt: skip
    assert "Sorry, please say yes or no" in ET.tostring(doc(retry), encoding="unicode")
    interp.answer_input(call, "greet:retry", 1)
    last = interp.answer_input(call, "greet:retry", 2)
    assert call.visited[-1] == "voicemail"
    assert "call us back to confirm your appointment tomorrow" in said(call)[-1][1]
    assert last.hangup


def test_an_answer_that_does_not_match_counts_as_a_try() -> None:
    interp, call = call_for("appointment-reminder", patient="Ann", when="tomorrow")
    interp.start(call)
    interp.answer_input(call, "greet", 0, digits="7")  # not in valid_digits
    assert call.waiting is not None and call.waiting.block == "greet:retry"
    interp.answer_input(call, "greet:retry", 1, text="maybe")  # fails `match`
    interp.answer_input(call, "greet:retry", 2, text="Yes I can")
    assert call.visited[-1] == "confirmed"


def test_subflow_scope_and_return_value() -> None:
    interp, call = call_for("ivr-menu")
    interp.start(call)
    into = interp.answer_input(call, "menu", 0, digits="2")
    assert call.waiting is not None and call.waiting.block == "callback~ask_number"
    assert call.scopes["callback"] == {"reason": "sales"}
    assert "For your sales callback" in ET.tostring(doc(into), encoding="unicode")
    back = interp.answer_input(call, "callback~ask_number", 0, digits="5551234567")
    assert "callback" not in call.scopes  # the subflow's scope is gone
    assert call.scopes[""]["request"] == {
        "entry": {"text": "", "digits": "5551234567", "confidence": 0.0},
        "number": "5551234567",
    }
    assert "5 5 5 1 2 3 4 5 6 7" in said(call)[-1][1]
    assert back.hangup
    assert call.visited == ["menu", "callback", "callback~ask_number", "callback_booked"]


def test_telnyx_runs_commands_with_state_and_unique_ids() -> None:
    interp, call = call_for("ivr-menu", provider="telnyx")
    call.direction = "inbound"
    run = interp.start(call)
    assert [c.command for c in run.commands] == ["answer", "gather_using_speak"]
    ids = [c.body["command_id"] for c in run.commands]
    assert len(set(ids)) == 2
    again = interp.answer_input(call, "menu", 0, digits="3")
    assert [c.command for c in again.commands] == ["speak", "gather_using_speak"]
    interp.answer_input(call, "hours", 0, digits="9")
    back = [
        c.body["command_id"] for c in interp.answer_input(call, "hours", 0, digits="9").commands
    ]
    assert not set(back) & set(ids)  # re-entering a block never reuses a command_id


def test_a_failing_template_ends_the_call_with_error() -> None:
    flow = validate_text(
        "version: 1\nname: t\ndescription: t\nstart: a\nnodes:\n"
        '  a: [{say: "{{ 1 / 0 }}"}, hangup]\n',
        "t.yaml",
    ).flow
    assert flow is not None
    interp = Interpreter(compile_flow(flow, "twilio", {}), BASE, {}, lambda: 0.0)
    call = CallRecord.new(provider="twilio", direction="outbound", from_number="", to_number="",
                          flow="t", flow_digest="x")  # fmt: skip
    run = interp.start(call)
    assert run.hangup and call.ending == "error"
    assert "t.yaml:6" in call.metadata["error"]
    assert (
        call.metadata["error"].count("t.yaml:6:") == 1
    )  # named once, not "t.yaml:6:7: t.yaml:6:7:"


def test_a_loop_without_waits_hands_over_with_a_redirect() -> None:
    text = ("version: 1\nname: t\ndescription: t\nstart: a\nnodes:\n"
            "  a: [{set: {n: 0}}, {goto: b}]\n"
            "  b: [{say: x}, {set: {n: n + 1}}, {branch: [{when: n < 100, goto: b}, {else: c}]}]\n"
            "  c: [hangup]\n")  # fmt: skip
    flow = validate_text(text, "t.yaml").flow
    assert flow is not None
    interp = Interpreter(compile_flow(flow, "twilio", {}), BASE, {}, lambda: 0.0)
    call = CallRecord.new(provider="twilio", direction="outbound", from_number="", to_number="",
                          flow="t", flow_digest="x")  # fmt: skip
    run = interp.start(call)
    assert doc(run)[-1].tag == "Redirect"
    assert len(run.fragments) == MAX_CHAIN + 1
    assert call.waiting is not None and call.waiting.kind == "fetch"


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
def test_agent_turns_say_and_listen_with_the_flow_voice(provider: str) -> None:
    interp, call = call_for("conversation", provider=provider, message="Hi")
    interp.start(call)
    assert call.waiting is not None and call.waiting.kind == "converse"
    run = interp.agent_turn(call, "turn", "How can I help? </Say>")
    assert call.waiting is not None and call.waiting.block == "@turn/turn"
    if provider == "telnyx":
        assert run.commands[0].body["payload"] == "How can I help? </Say>"
    else:
        assert "How can I help? &lt;/Say&gt;" in "".join(run.fragments)
    assert said(call)[-1] == ("bot", "How can I help? </Say>")


NOW_FLOW = """\
version: 1
name: t
description: t
{zone}start: a
nodes:
  a:
    - branch:
        - when: now.weekday() >= 5 or now.hour < 9 or now.hour >= 18
          goto: closed
        - else: open
  open: [{{say: "Open at {{{{ now.strftime('%H:%M %Z') }}}}."}}, hangup]
  closed: [{{say: "Closed at {{{{ now.strftime('%H:%M %Z') }}}}."}}, hangup]
"""


@pytest.mark.parametrize(
    ("zone", "config", "said_text"),
    [
        # 2026-01-05 (a Monday) 23:30 UTC: 18:30 in New York, 00:30 on Tuesday in Paris.
        ("timezone: America/New_York\n", {}, "Closed at 18:30 EST."),
        ("timezone: Asia/Tokyo\n", {"timezone": "Europe/Paris"}, "Closed at 08:30 JST."),
        ("", {"timezone": "America/Los_Angeles"}, "Open at 15:30 PST."),
        ("", {}, "Closed at 23:30 UTC."),
    ],
)
def test_now_is_the_clock_in_the_flows_or_the_configs_time_zone(
    zone: str, config: dict[str, Any], said_text: str
) -> None:
    checked = validate_text(NOW_FLOW.format(zone=zone), "t.yaml")
    assert checked.flow is not None and checked.ok, checked.diagnostics
    instant = 1_767_655_800.0  # 2026-01-05T23:30:00Z
    interp = Interpreter(compile_flow(checked.flow, "twilio", {}), BASE, config, lambda: instant)
    call = CallRecord.new(provider="twilio", direction="outbound", from_number="", to_number="",
                          flow="t", flow_digest="x")  # fmt: skip
    interp.start(call)
    assert said(call) == [("bot", said_text)]


@pytest.mark.parametrize(
    ("expression", "kept"),
    [
        ("now.hour", 23),
        ("now.isoformat()", "2026-01-05T23:30:00+00:00"),
        ("[now.day, 'x']", [5, "x"]),
    ],
)
def test_set_keeps_plain_values_of_now(expression: str, kept: Any) -> None:
    text = ("version: 1\nname: t\ndescription: t\nstart: a\nnodes:\n"
            f'  a: [{{set: {{v: "{expression}"}}}}, {{say: "{{{{ v }}}}"}}, hangup]\n')  # fmt: skip
    flow = validate_text(text, "t.yaml").flow
    assert flow is not None
    interp = Interpreter(compile_flow(flow, "twilio", {}), BASE, {}, lambda: 1_767_655_800.0)
    call = CallRecord.new(provider="twilio", direction="outbound", from_number="", to_number="",
                          flow="t", flow_digest="x")  # fmt: skip
    interp.start(call)
    assert call.scopes[""]["v"] == kept


@pytest.mark.parametrize("expression", ["now", "now.date()", "range(3)"])
def test_set_refuses_a_value_the_store_cannot_keep(expression: str) -> None:
    text = ("version: 1\nname: t\ndescription: t\nstart: a\nnodes:\n"
            f'  a: [{{set: {{v: "{expression}"}}}}, {{say: "{{{{ v }}}}"}}, hangup]\n')  # fmt: skip
    flow = validate_text(text, "t.yaml").flow
    assert flow is not None
    interp = Interpreter(compile_flow(flow, "twilio", {}), BASE, {}, lambda: 1_767_655_800.0)
    call = CallRecord.new(provider="twilio", direction="outbound", from_number="", to_number="",
                          flow="t", flow_digest="x")  # fmt: skip
    run = interp.start(call)
    assert run.hangup and call.ending == "error"
    assert "t.yaml:6:14: v: a " in call.metadata["error"]  # the name set, not the block
    assert "cannot be kept between turns" in call.metadata["error"]
    assert "v" not in call.scopes[""]


@pytest.mark.parametrize(
    ("action", "where"),
    [('{set: {v: "now"}}', "t.yaml:8:14: v: a datetime"), ('{set: {v: "1 // 0"}}', "t.yaml:8:17:")],
)
def test_a_failing_set_is_named_at_its_own_line_and_col(action: str, where: str) -> None:
    """Not at the block's first action two lines above (t.yaml:6:7), nor as "line 8"."""
    text = ("version: 1\nname: t\ndescription: t\nstart: a\nnodes:\n"
            f'  a:\n    - say: hi\n    - {action}\n    - hangup\n')  # fmt: skip
    flow = validate_text(text, "t.yaml").flow
    assert flow is not None
    interp = Interpreter(compile_flow(flow, "twilio", {}), BASE, {}, lambda: 1_767_655_800.0)
    call = CallRecord.new(provider="twilio", direction="outbound", from_number="", to_number="",
                          flow="t", flow_digest="x")  # fmt: skip
    interp.start(call)
    assert call.ending == "error"
    assert call.metadata["error"].startswith(where), call.metadata["error"]
