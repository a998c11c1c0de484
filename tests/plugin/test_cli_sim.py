"""`voicecall simulate`, `voicecall test` and `voicecall schema --test/--caller` through click's
runner; and no command ever shows a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from voicecall.plugin import cli_sim
from voicecall.plugin.cli import cli
from voicecall.runtime.sim.schemas import caller_schema, flow_test_schema

FLOW = """\
version: 1
name: x
description: A fine flow.
start: a
nodes:
  a: [{say: "hi {{ call.to }}"}, hangup]
"""


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VOICECALL_CONFIG", str(tmp_path / "no-config.json"))
    monkeypatch.setenv("NO_COLOR", "1")
    return CliRunner()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_simulate_and_test_take_flows_by_path_without_config(runner: CliRunner) -> None:
    write(Path("myflows/x.yaml"), FLOW)
    result = runner.invoke(cli, ["simulate", "myflows/x.yaml", "--to", "+15557770000"])
    assert result.exit_code == 0, result.output
    assert "  bot    hi +15557770000   (myflows/x.yaml:6:7)" in result.output
    assert "  nodes:     a" in result.output
    write(Path("myflows/x.test.yaml"), "flow: x\nexpect: {said: [hi +1555]}\n")
    result = runner.invoke(cli, ["test", "myflows/"])
    assert result.exit_code == 0, result.output
    assert result.output.endswith("3 passed, 0 failed\n")


def test_an_invalid_test_file_fails_with_positions(runner: CliRunner) -> None:
    write(Path("myflows/x.yaml"), FLOW)
    write(Path("myflows/x.test.yaml"), "flow: x\ntests:\n  - expect: {said: [nothing like it]}\n")
    result = runner.invoke(cli, ["test", "myflows"])
    assert result.exit_code == 1
    assert "myflows/x.test.yaml:2:1: error[E-SCHEMA-UNKNOWN-KEY]: unknown key 'tests'" in (
        result.stderr)  # fmt: skip
    assert result.stdout.endswith("0 passed, 0 failed, 1 invalid test file\n")
    data = json.loads(runner.invoke(cli, ["test", "myflows", "--json"]).stdout)
    assert data[0]["file"] == "myflows/x.test.yaml" and data[0]["ok"] is False
    assert data[0]["errors"][0]["code"] == "E-SCHEMA-UNKNOWN-KEY"


def test_simulate_an_inbound_rejection(runner: CliRunner) -> None:
    args = ["simulate", "after-hours", "--from", "+15559990000", "--provider", "telnyx"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "  call:      from +15559990000 to +15550000000," in result.output
    assert "  rejected:  caller not in allow_from (before the flow started)" in result.output
    assert "  ended:     rejected, 0.0s of call time" in result.output
    assert "nodes" not in result.output and "None" not in result.output
    data = json.loads(runner.invoke(cli, [*args, "--json"]).stdout)
    assert (data["outcome"], data["rejection"]) == ("rejected", "caller not in allow_from")


def test_simulate_at_a_given_time_with_params_for_an_inbound_flow(runner: CliRunner) -> None:
    args = ["simulate", "after-hours", "--now", "2026-01-05T08:30:00", "--param", "opens=8",
            "--param", "clinic=Hillside", "--caller", "steps.caller.yaml"]  # fmt: skip
    write(Path("steps.caller.yaml"), "caller: [answer, {dial: answered}, hangup, {say: unused}]\n")
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "2026-01-05T08:30:00-05:00" in result.output
    assert "Thank you for calling Hillside. Connecting you to the front desk." in result.output
    assert "  warning:   a script step was never used: steps.caller.yaml:1:44: say: unused" in (
        result.output)  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from", "12345"], "'12345' is not an E.164 number"),
        (["--now", "teatime"], "'teatime' is not an ISO 8601 time"),
    ],
)
def test_simulate_refuses_bad_numbers_and_times(
    runner: CliRunner, args: list[str], message: str
) -> None:
    result = runner.invoke(cli, ["simulate", "notify", "--param", "message=hi", *args])
    assert result.exit_code == 2
    assert message in result.stderr


def test_an_invalid_caller_script_is_reported_with_positions(runner: CliRunner) -> None:
    write(Path("bad.caller.yaml"), "caller: [answer, {sya: hi}]\n")
    result = runner.invoke(cli, ["simulate", "notify", "--param", "message=hi", "--caller",
                                 "bad.caller.yaml"])  # fmt: skip
    assert result.exit_code == 1
    assert "bad.caller.yaml:1:19: error[E-SCHEMA-UNKNOWN-KEY]: unknown key 'sya' in caller[1]" in (
        result.stderr)  # fmt: skip


def test_schema_prints_the_test_and_caller_schemas(runner: CliRunner) -> None:
    test = runner.invoke(cli, ["schema", "--test"])
    caller = runner.invoke(cli, ["schema", "--caller"])
    assert test.exit_code == caller.exit_code == 0
    assert json.loads(test.stdout) == flow_test_schema()
    assert json.loads(caller.stdout) == caller_schema()
    assert json.loads(test.stdout)["title"] == "voicecall flow test"


def test_an_unexpected_error_is_one_line_never_a_traceback(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the disk is on fire")

    monkeypatch.setattr(cli_sim, "simulate", broken)
    args = ["simulate", "notify", "--param", "message=hi"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: unexpected RuntimeError: the disk is on fire (a bug in voicecall; please report "
        "it)\n"
    )
    assert "Traceback" not in result.output
    for machine in (["--json"], ["--format", "json"]):
        result = runner.invoke(cli, [*args, *machine])
        assert result.exit_code == 2
        assert json.loads(result.stdout) == {
            "error": "unexpected RuntimeError: the disk is on fire"
        }


def test_usage_errors_are_json_when_json_is_asked_for(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["simulate", "nowhere", "--json"])
    assert result.exit_code == 2
    error = json.loads(result.stdout)["error"]
    assert error.startswith("no flow named 'nowhere'; known flows: ")


def test_caller_scripts_and_flow_tests_in_a_flow_folder_are_not_flows(runner: CliRunner) -> None:
    write(Path("myflows/x.yaml"), FLOW)
    write(Path("myflows/y.caller.yaml"), FLOW.replace("name: x", "name: y"))  # looks like one
    write(Path("myflows/z.test.yaml"), FLOW.replace("name: x", "name: z"))
    write(
        Path("openclaw.json"),
        '{plugins: {entries: {"voice-call": {config: {flows: ["myflows"]}}}}}',
    )
    listed = runner.invoke(cli, ["--config", "openclaw.json", "flows", "--json"])
    assert listed.exit_code == 0, listed.output
    names = {f["name"] for f in json.loads(listed.stdout)}
    assert "x" in names and not {"y", "z"} & names
    checked = runner.invoke(cli, ["validate", "myflows"])
    assert checked.output.endswith("1 file checked: 0 errors, 0 warnings\n")


def test_validate_checks_named_scripts_and_tests_as_what_they_are(runner: CliRunner) -> None:
    write(Path("myflows/x.yaml"), FLOW)
    good = write(Path("myflows/x.test.yaml"), "flow: x\nexpect: {said: [hi]}\n")
    caller = write(Path("myflows/x.caller.yaml"), "caller: [answer, {say: hi}]\n")
    result = runner.invoke(cli, ["validate", str(good), str(caller), "myflows/x.yaml"])
    assert result.exit_code == 0, result.output
    assert result.output == "3 files checked: 0 errors, 0 warnings\n"
    write(Path("myflows/x.test.yaml"), "flow: x\ntests: []\n")
    result = runner.invoke(cli, ["validate", "--format", "json", str(good)])
    assert result.exit_code == 1
    ((diag),) = json.loads(result.stdout)
    assert (diag["file"], diag["line"], diag["col"], diag["code"]) == (
        "myflows/x.test.yaml", 2, 1, "E-SCHEMA-UNKNOWN-KEY")  # fmt: skip


@pytest.mark.parametrize(
    ("args", "where"),
    [
        (["simulate", "bad.yaml"], "bad.yaml:4:8"),
        (["compile", "bad.yaml", "--provider", "plivo"], "bad.yaml:4:8"),
        (["graph", "bad.yaml"], "bad.yaml:4:8"),
        (["simulate", "x.yaml", "--caller", "bad.caller.yaml"], "bad.caller.yaml:1:19"),
    ],
)
def test_an_invalid_flow_or_caller_script_is_json_when_json_is_asked_for(
    runner: CliRunner, args: list[str], where: str
) -> None:
    """--json used to print nothing on stdout: the diagnostics went to stderr only."""
    write(Path("x.yaml"), FLOW)
    write(Path("bad.yaml"), FLOW.replace("name: x", "name: bad").replace("start: a", "start: b"))
    write(Path("bad.caller.yaml"), "caller: [answer, {sya: hi}]\n")
    text = runner.invoke(cli, args)
    assert text.exit_code == 1
    assert f"{where}: error[E-" in text.stderr
    assert "Traceback" not in text.output
    if args[0] == "graph":
        return  # no machine output
    result = runner.invoke(cli, [*args, "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert "has errors" in data["error"] or "not a valid caller script" in data["error"]
    first = data["diagnostics"][0]
    assert f"{first['file']}:{first['line']}:{first['col']}" == where


def test_a_missing_required_param_is_a_usage_error(runner: CliRunner) -> None:
    """It used to run no call and print a half-empty report: `call: from … to …, ` (no time)."""
    result = runner.invoke(cli, ["simulate", "appointment-reminder", "--param", "patient=Ann"])
    assert result.exit_code == 2
    assert "required param not given: when (add --param when=VALUE)" in result.stderr
    assert "call:" not in result.output
    data = json.loads(runner.invoke(cli, ["simulate", "notify", "--json"]).stdout)
    assert data == {"error": "required param not given: message (add --param message=VALUE)"}


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["simulate", "x.yaml", "--caller", "empty.caller.yaml"],
         "empty.caller.yaml:1:1: error[E-YAML-EMPTY]: the file holds no caller script"),
        (["test", "empty.test.yaml"],
         "empty.test.yaml:1:1: error[E-YAML-EMPTY]: the file holds no flow test"),
        (["validate", "empty.caller.yaml"],
         "empty.caller.yaml:1:1: error[E-YAML-EMPTY]: the file holds no caller script"),
    ],
)  # fmt: skip
def test_an_empty_script_or_test_file_is_called_what_it_is(
    runner: CliRunner, args: list[str], said: str
) -> None:
    """Both used to say "the file holds no flow", hint: start from a bundled flow."""
    write(Path("x.yaml"), FLOW)
    write(Path("empty.caller.yaml"), "")
    write(Path("empty.test.yaml"), "# nothing yet\n")
    result = runner.invoke(cli, args)
    assert result.exit_code == 1
    assert said in result.output
    assert "holds no flow\n" not in result.output and "bundled flow" not in result.output


CONVERSATION = """\
version: 1
name: desk
description: A short model conversation.
direction: inbound
start: talk
nodes:
  talk:
    - converse: {driver: model, message: Hello there., max_turns: 1}
"""


def test_stream_runs_conversations_over_the_mock_carriers_media_stream(
    runner: CliRunner,
) -> None:
    write(Path("myflows/desk.yaml"), CONVERSATION)
    write(Path("myflows/desk.test.yaml"), "flow: desk\nproviders: [telnyx]\ncases:\n"
          "  - name: one turn\n    caller: [answer, {say: Hi}]\n    model: [Goodbye now.]\n"
          "    expect: {said: [Hello there, Goodbye now], end: hangup-bot}\n")  # fmt: skip
    result = runner.invoke(cli, ["test", "myflows/", "--stream", "--json"])
    assert result.exit_code == 0, result.output
    (outcome,) = json.loads(result.stdout)
    assert outcome["ok"] and outcome["provider"] == "telnyx"
    result = runner.invoke(cli, ["simulate", "myflows/desk.yaml", "--stream", "--json",
                                 "--provider", "plivo"])  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    lines = [(t["speaker"], t["text"]) for t in data["transcript"]]
    assert lines[0] == ("bot", "Hello there.")
