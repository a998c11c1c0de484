"""Flow tests: the file format (test.schema.json, positioned errors), flows by path or name
beside the test file, unused script steps, inbound numbers and params, rejections, `now`."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.dsl.errors import FlowError
from voicecall.runtime.sim.flowtest import find_tests, load_cases, run_case

GREETER = """\
version: 1
name: greeter
description: Greets the caller by number, after asking a yes or no question.
direction: {direction}
timezone: Europe/Paris
{admit}params:
  who: {{type: string, default: friend}}
start: hello
nodes:
  hello:
    - say: >-
        Hello {{{{ who }}}} from {{{{ call.from }}}} to {{{{ call.to }}}}
        at {{{{ now.strftime('%H:%M') }}}}.
    - ask: {{prompt: Yes or no?, input: [speech], save_as: reply, on_no_input: bye}}
    - goto: bye
  bye: [{{say: Bye.}}, hangup]
"""
ALLOWLIST = 'admit: {policy: allowlist, allow_from: ["+15550001111"]}\n'


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def flows(tmp_path: Path, direction: str = "inbound", admit: str = ALLOWLIST) -> Path:
    folder = tmp_path / "myflows"
    write(folder / "greeter.yaml", GREETER.format(direction=direction, admit=admit))
    return folder


def problems(path: Path) -> list[tuple[str, int, int, str]]:
    with pytest.raises(FlowError) as caught:
        load_cases(path)
    return [(d.code, d.span.line, d.span.col, d.message) for d in caught.value.diagnostics]


async def outcome(path: Path, provider: str = "twilio") -> list[str]:
    (case,) = load_cases(path)
    return (await run_case(case, provider)).failures


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("flow: greeter\ntests:\n  - expect: {end: busy}\n",
         ("E-SCHEMA-UNKNOWN-KEY", 2, 1, "unknown key 'tests' at the top of the flow test")),
        ("flow: greeter\ncases:\n  - name: x\n    expected: {end: busy}\n",
         ("E-SCHEMA-UNKNOWN-KEY", 4, 5, "unknown key 'expected' in cases[0]")),
        ("flow: greeter\ncases:\n  - expect: {visits: [hello]}\n",
         ("E-SCHEMA-UNKNOWN-KEY", 3, 14, "unknown key 'visits' in cases[0].expect")),
        ("flow: greeter\ncases:\n  - caller: [answer, {sya: hi}]\n",
         ("E-SCHEMA-UNKNOWN-KEY", 3, 23, "unknown key 'sya' in cases[0].caller[1]")),
        ("flow: greeter\ncases:\n  - expect: {end: hangup}\n",
         ("E-SCHEMA-VALUE", 3, 19, "cases[0].expect.end: 'hangup' is not one of completed, "
          "hangup-bot, hangup-user, timeout, error, failed, no-answer, busy, voicemail, rejected")),
        ("flow: greeter\nfrom: '555'\n",
         ("E-PHONE-INVALID", 2, 7, "a phone number is E.164: + then country code and number, "
          "digits only: '555'")),
        ("flow: greeter\nnow: tomorrow\n",
         ("E-SCHEMA-VALUE", 2, 6, "'tomorrow' is not an ISO 8601 time such as "
          "2026-01-05T19:30:00")),
        ("flow: greeter\nproviders: [twillio]\n",
         ("E-SCHEMA-VALUE", 2, 13, "providers[0]: 'twillio' is not one of twilio, plivo, telnyx")),
        ("flow: greeter\nexpect: {end: busy}\ncases:\n  - name: x\n",
         ("E-SCHEMA-VALUE", 2, 1, "'expect' at the top is for a file with one case; this file "
          "has cases:")),
        ("flow: ../nowhere/greeter.yaml\n",
         ("E-SCHEMA-VALUE", 1, 7, "no flow file ../nowhere/greeter.yaml (relative to this file: "
          "{dir}/../nowhere/greeter.yaml)")),
        ("cases: []\n",
         ("E-SCHEMA-MISSING-KEY", 1, 1, "the flow test is missing the required key 'flow'")),
    ],
)  # fmt: skip
def test_every_mistake_in_a_test_file_is_positioned(
    tmp_path: Path, text: str, expected: tuple[str, int, int, str]
) -> None:
    path = write(tmp_path / "x.test.yaml", text)
    code, line, col, message = expected
    assert (code, line, col, message.format(dir=tmp_path)) in problems(path)


async def test_a_flow_named_beside_the_test_file_needs_no_config(tmp_path: Path) -> None:
    folder = flows(tmp_path, direction="outbound", admit="")
    by_name = write(folder / "greeter.test.yaml", "flow: greeter\ncaller: [answer, silence]\n"
                    "expect: {visited: [hello, bye], said: [Hello friend]}\n")  # fmt: skip
    assert await outcome(by_name) == []
    by_path = write(tmp_path / "tests" / "b.test.yaml", "flow: ../myflows/greeter.yaml\n"
                    "caller: [answer, silence]\nexpect: {said: [Bye]}\n")  # fmt: skip
    assert await outcome(by_path) == []
    assert find_tests([folder / "greeter.yaml"]) == [by_name]


async def test_an_unknown_flow_name_fails_the_case_with_a_hint(tmp_path: Path) -> None:
    path = write(flows(tmp_path) / "a.test.yaml", "flow: greter\n")
    assert await outcome(path) == ["no flow named 'greter'; did you mean 'greeter'?"]


async def test_script_steps_never_used_fail_the_case(tmp_path: Path) -> None:
    path = write(flows(tmp_path, "outbound", "") / "a.test.yaml",
                 "flow: greeter\ncaller:\n  - answer\n  - silence\n  - say: still here\n"
                 "  - press: '1'\nmodel: [unused]\n")  # fmt: skip
    failures = await outcome(path)
    assert failures == [f"a script step was never used: {path}:5:5: say: still here (3 in all)"]


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_inbound_numbers_params_and_time_reach_the_flow(
    tmp_path: Path, provider: str
) -> None:
    path = write(flows(tmp_path) / "a.test.yaml", """\
flow: greeter
from: "+15550001111"
to: "+15557770000"
now: 2026-07-01T09:15:00
params: {who: Ann}
caller: [answer, {say: "yes"}]
expect:
  said: ["Hello Ann from +15550001111 to +15557770000 at 09:15."]
  saved: {reply.text: "yes"}
  rejected: false
""")  # fmt: skip
    assert await outcome(path, provider) == []


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_a_rejected_caller_is_reported_and_can_be_expected(
    tmp_path: Path, provider: str
) -> None:
    folder = flows(tmp_path)
    stranger = 'flow: greeter\nfrom: "+15559990000"\n'
    expected = write(folder / "a.test.yaml", stranger + "expect: {rejected: true, visited: []}\n")
    assert await outcome(expected, provider) == []
    by_reason = write(folder / "b.test.yaml", stranger + "expect: {rejected: allow_from}\n")
    assert await outcome(by_reason, provider) == []
    by_end = write(folder / "c.test.yaml", stranger + "expect: {end: rejected}\n")
    assert await outcome(by_end, provider) == []
    unexpected = write(folder / "d.test.yaml", stranger + "expect: {said: [Hello]}\n")
    failures = await outcome(unexpected, provider)
    assert failures[0] == "the caller was rejected: caller not in allow_from"
    wrong_reason = write(folder / "e.test.yaml", stranger + "expect: {rejected: disabled}\n")
    assert await outcome(wrong_reason, provider) == [
        "rejected because 'caller not in allow_from', expected a reason containing 'disabled'"
    ]
    admitted = write(folder / "f.test.yaml", "flow: greeter\nexpect: {rejected: true}\n")
    assert await outcome(admitted, provider) == [
        "expected the caller to be rejected, but the call was admitted"
    ]


async def test_a_flow_for_any_direction_is_tested_both_ways(tmp_path: Path) -> None:
    folder = flows(tmp_path, direction="any", admit="")
    both = write(folder / "a.test.yaml", """\
flow: greeter
cases:
  - name: outbound by default
    caller: [answer, silence]
    expect: {said: [from +15550000000 to +15550001111]}
  - name: inbound when asked
    direction: inbound
    caller: [answer, silence]
    expect: {said: [from +15550001111 to +15550000000]}
""")  # fmt: skip
    for case in load_cases(both):
        assert (await run_case(case, "telnyx")).failures == [], case.name
    inbound_only = flows(tmp_path / "in")
    (case,) = load_cases(
        write(inbound_only / "c.test.yaml", "flow: greeter\ndirection: outbound\n")
    )
    assert (await run_case(case, "twilio")).failures == [
        "flow 'greeter' serves inbound calls only, not outbound ones"
    ]


async def test_an_unknown_param_of_an_inbound_flow_fails_the_case(tmp_path: Path) -> None:
    path = write(flows(tmp_path) / "a.test.yaml", "flow: greeter\nparams: {whom: Ann}\n")
    assert (await outcome(path))[0] == "flow greeter has no param whom (its params: who)"


def test_now_may_be_a_date_or_a_time_quoted_or_not(tmp_path: Path) -> None:
    path = write(tmp_path / "x.test.yaml", """\
flow: greeter
cases:
  - {now: 2026-07-01}
  - {now: 2026-07-01T09:15:00}
  - {now: "2026-07-01T09:15:00+02:00"}
""")  # fmt: skip
    assert [c.now for c in load_cases(path)] == [
        "2026-07-01", "2026-07-01T09:15:00", "2026-07-01T09:15:00+02:00"]  # fmt: skip


async def test_a_call_that_ends_in_error_fails_the_case_with_the_reason(tmp_path: Path) -> None:
    """The case used to fail only on a side effect (visited, said), never saying why."""
    write(flows(tmp_path, "outbound", "").parent / "myflows" / "broken.yaml",
          "version: 1\nname: broken\ndescription: d\nparams:\n  n: {type: integer, default: 1}\n"
          'start: a\nnodes:\n  a: [{say: "{{ 10 // n }}"}, hangup]\n')  # fmt: skip
    path = write(tmp_path / "myflows" / "a.test.yaml", "flow: broken\nparams: {n: 0}\n")
    failures = await outcome(path)
    assert len(failures) == 1 and failures[0].startswith("the call ended in error: "), failures
    assert "broken.yaml:8:" in failures[0] and "division or modulo by zero" in failures[0]
    write(path, "flow: broken\nparams: {n: 0}\nexpect: {end: error}\n")
    assert await outcome(path) == []  # expected: not a failure
