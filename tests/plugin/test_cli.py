"""The CLI through click's runner: output formats, exit codes, config and defaults."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from voicecall.dsl.schema import flow_schema
from voicecall.plugin.cli import cli

GOOD = """\
version: 1
name: good
description: A fine flow.
start: a
nodes:
  a: [{say: hi}, hangup]
"""
WARNS = GOOD.replace("  a: [{say: hi}, hangup]", "  a: [{say: hi}, hangup]\n  b: [hangup]")
BAD = GOOD.replace("start: a", "start: b")


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VOICECALL_CONFIG", str(tmp_path / "no-config.json"))
    return CliRunner()


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_validate_exit_codes(runner: CliRunner, tmp_path: Path) -> None:
    good, warns, bad = (write(tmp_path / n, t) for n, t in
                        [("g.yaml", GOOD), ("w.yaml", WARNS.replace("good", "w")),
                         ("b.yaml", BAD.replace("good", "b"))])  # fmt: skip
    assert runner.invoke(cli, ["validate", str(good)]).exit_code == 0
    assert runner.invoke(cli, ["validate", str(warns)]).exit_code == 0
    assert runner.invoke(cli, ["validate", "--strict", str(warns)]).exit_code == 1
    result = runner.invoke(cli, ["validate", str(bad)])
    assert result.exit_code == 1
    assert "b.yaml:4:8: error[E-START-UNKNOWN]: start node 'b' is not a node" in result.output
    assert "    start: b\n           ^" in result.output
    assert result.output.rstrip().endswith("1 file checked: 1 error, 0 warnings")


def test_validate_usage_errors_exit_2(runner: CliRunner) -> None:
    assert runner.invoke(cli, ["validate", "missing.yaml"]).exit_code == 2
    result = runner.invoke(cli, ["validate", "--provider", "twillio", "."])
    assert result.exit_code == 2
    assert "did you mean 'twilio'" in result.output
    assert runner.invoke(cli, ["validate"]).exit_code == 2  # no ./flows, no config


def test_validate_reports_all_files_as_json(runner: CliRunner, tmp_path: Path) -> None:
    write(tmp_path / "flows" / "b.yaml", BAD.replace("good", "b"))
    write(tmp_path / "flows" / "sub" / "w.yaml", WARNS.replace("good", "w"))
    write(tmp_path / "flows" / "w.test.yaml", "not a flow")  # flow tests are not flows
    result = runner.invoke(cli, ["validate", "--format", "json"])  # defaults to ./flows
    assert result.exit_code == 1
    found = json.loads(result.output)
    assert [(d["file"], d["code"], d["line"], d["col"], d["severity"]) for d in found] == [
        ("flows/b.yaml", "E-START-UNKNOWN", 4, 8, "error"),
        ("flows/sub/w.yaml", "W-NODE-UNREACHABLE", 7, 3, "warning"),
    ]
    assert {"file", "line", "col", "code", "severity", "message", "hint"} <= set(found[0])


def test_config_names_the_flow_folders(runner: CliRunner, tmp_path: Path) -> None:
    write(tmp_path / "mine" / "good.yaml", GOOD)
    config = write(
        tmp_path / "openclaw.json",
        '// JSON5, as the host writes it\n{plugins: {entries: {"voice-call": '
        '{config: {flows: ["mine"], provider: "mock"}}}}}\n',
    )
    result = runner.invoke(cli, ["--config", str(config), "validate"])
    assert result.exit_code == 0, result.output
    assert "1 file checked" in result.output
    listed = json.loads(runner.invoke(cli, ["--config", str(config), "flows", "--json"]).output)
    assert "good" in {f["name"] for f in listed}


def test_a_broken_config_is_a_usage_error(runner: CliRunner, tmp_path: Path) -> None:
    config = write(tmp_path / "c.json", "{plugins: ")
    result = runner.invoke(cli, ["--config", str(config), "flows"])
    assert result.exit_code == 2
    assert "not valid JSON5" in result.output


def test_schema_prints_the_flow_schema(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.output) == flow_schema()


def test_flows_lists_the_bundled_flows(runner: CliRunner) -> None:
    listed = {f["name"]: f for f in json.loads(runner.invoke(cli, ["flows", "--json"]).output)}
    assert {"notify", "conversation", "inbound", "appointment-reminder", "ivr-menu"} <= set(listed)
    notify = listed["notify"]
    assert notify["direction"] == "outbound" and notify["bundled"] and notify["valid"]
    assert notify["params"] == [
        {"name": "message", "type": "string", "required": True, "description": "What to say"}
    ]
    table = runner.invoke(cli, ["flows"])
    assert table.exit_code == 0
    assert "appointment-reminder" in table.output and "patient*:string" in table.output


def test_compile_prints_every_block(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["compile", "notify", "--provider", "twilio", "--param",
                                 "message=Hi & bye"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "block deliver  (" in result.output
    assert '<Say voice="Polly.Joanna">Hi &amp; bye</Say>' in result.output
    telnyx = runner.invoke(cli, ["compile", "notify", "--provider", "telnyx", "--format", "json"])
    assert "I-PROVIDER-EMULATED" in telnyx.stderr  # notes go to stderr, JSON alone to stdout
    data = json.loads(telnyx.stdout)
    assert data["flow"] == "notify" and data["provider"] == "telnyx"
    commands = [c["command"] for c in data["blocks"][0]["commands"]]
    assert commands == ["speak", "pause", "hangup"]
    assert data["blocks"][0]["commands"][0]["await"] == "call.speak.ended"


def test_compile_usage_errors(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(cli, ["compile", "notify", "--provider", "twilo"])
    assert result.exit_code == 2 and "did you mean 'twilio'" in result.output
    result = runner.invoke(cli, ["compile", "notfy", "--provider", "twilio"])
    assert result.exit_code == 2 and "did you mean 'notify'" in result.output
    result = runner.invoke(cli, ["compile", "notify", "--provider", "twilio", "--param", "x=1"])
    assert result.exit_code == 2 and "message" in result.output
    bad = write(tmp_path / "bad.yaml", BAD)
    result = runner.invoke(cli, ["compile", str(bad), "--provider", "plivo"])
    assert result.exit_code == 1 and "E-START-UNKNOWN" in result.output


def test_validate_with_providers_reports_what_they_emulate_or_cannot_do(
    runner: CliRunner, tmp_path: Path
) -> None:
    flow = write(
        tmp_path / "f.yaml",
        GOOD.replace(
            "[{say: hi}, hangup]",
            "[{say: {text: hi, voice: Google.en-US-Neural2-F}}, {pause: 500ms}, hangup]",
        ),
    )
    result = runner.invoke(cli, ["validate", "--provider", "plivo", "--provider", "twilio",
                                 "--format", "json", str(flow)])  # fmt: skip
    found = {(d["code"], d["message"].split(":")[0]) for d in json.loads(result.output)}
    assert found == {
        ("E-PROVIDER-UNSUPPORTED", "voice on plivo"),
        ("I-PROVIDER-EMULATED", "pause.ms on plivo"),
        ("I-PROVIDER-EMULATED", "pause.ms on twilio"),
    }
    assert result.exit_code == 1


def test_graph_formats(runner: CliRunner) -> None:
    mermaid = runner.invoke(cli, ["graph", "ivr-menu"])
    assert mermaid.exit_code == 0 and mermaid.output.startswith("flowchart TD")
    assert '-->|"transfer failed"|' in mermaid.output
    dot = runner.invoke(cli, ["graph", "appointment-reminder", "--format", "dot"])
    assert dot.output.startswith('digraph "appointment-reminder" {')
    assert '"greet" -> "voicemail" [label="no input"];' in dot.output


def test_compile_names_the_required_params_not_given_and_fills_the_others(
    runner: CliRunner,
) -> None:
    result = runner.invoke(cli, ["compile", "appointment-reminder", "--provider", "twilio",
                                 "--param", "patient=Ann"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "note: required param not given: when;" in result.stderr
    assert "Hello Ann, this is a reminder of your appointment {{ when }}." in result.stdout
    full = runner.invoke(cli, ["compile", "appointment-reminder", "--provider", "twilio",
                               "--param", "patient=Ann", "--param", "when=today"])  # fmt: skip
    assert "not given" not in full.stderr
    assert "Hello Ann, this is a reminder of your appointment today." in full.stdout


MACHINE_OUTPUT = [
    ["validate", "flows/notify.yaml"],
    ["flows"],
    ["compile", "notify", "--provider", "telnyx", "--param", "message=hi"],
    ["schema"],
    ["simulate", "notify", "--param", "message=hi"],
    ["test", "flows/notify.test.yaml"],
]


@pytest.mark.parametrize("args", MACHINE_OUTPUT, ids=lambda a: a[0])
def test_every_command_with_machine_output_takes_json_and_format_json(
    args: list[str], runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])  # the bundled flows/ folder
    short = runner.invoke(cli, [*args, "--json"])
    long = runner.invoke(cli, [*args, "--format", "json"])
    assert short.exit_code == long.exit_code == 0, short.output + long.output
    assert shape(json.loads(short.stdout)) == shape(json.loads(long.stdout))


def shape(data: Any) -> Any:
    """The keys and nesting of JSON output (values such as call ids differ between runs)."""
    if isinstance(data, dict):
        return {k: shape(v) for k, v in data.items()}
    if isinstance(data, list):
        return [shape(v) for v in data]
    return type(data).__name__


def test_no_color_turns_colour_off_in_every_command(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    args = ["test", "flows/notify.test.yaml", "--provider", "twilio"]
    assert "\x1b[" in runner.invoke(cli, args, color=True).output  # a terminal: colour
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\x1b[" not in runner.invoke(cli, args, color=True).output


def test_no_color_is_honoured_by_the_flows_table(
    runner: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rich dropped colours for NO_COLOR but kept bold and other styles on a terminal."""
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich: behave as on a terminal
    assert "\x1b[" in runner.invoke(cli, ["flows"]).output
    monkeypatch.setenv("NO_COLOR", "1")
    result = runner.invoke(cli, ["flows"])
    assert result.exit_code == 0 and "notify" in result.output
    assert "\x1b[" not in result.output


def test_no_color_is_honoured_for_diagnostics_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from voicecall.plugin.output import use_color

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert use_color(Terminal())
    monkeypatch.setenv("NO_COLOR", "")  # empty: not set, per no-color.org
    assert use_color(Terminal())
    monkeypatch.setenv("NO_COLOR", "yes")
    assert not use_color(Terminal())


def test_simulate_prints_the_transfer_and_its_outcome(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = 'caller: [answer, {press: "1"}, {dial: busy}, {press: "5551234567"}]\n'
    caller = write(tmp_path / "busy.caller.yaml", script)
    result = runner.invoke(cli, ["simulate", "ivr-menu", "--provider", "telnyx",
                                 "--caller", str(caller)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "  transfer:  to +15550100200 at 0.0s: busy\n" in result.output


CALLER = GOOD.replace("name: good", "name: caller").replace(
    "  a: [{say: hi}, hangup]", "  a: [{call_flow: {flow: helper}}, hangup]"
)
HELPER = GOOD.replace("name: good", "name: helper").replace("[{say: hi}, hangup]", "[{say: hi}]")


@pytest.mark.parametrize(
    "command",
    [
        ["validate"],
        ["compile", "--provider", "telnyx"],
        ["graph"],
        ["validate", "--provider", "plivo"],
    ],
)
def test_a_flow_file_finds_the_flows_beside_it(
    runner: CliRunner, tmp_path: Path, command: list[str]
) -> None:
    """As simulate does: call_flow in a file named by path finds its sibling flows."""
    path = write(tmp_path / "mine" / "caller.yaml", CALLER)
    write(tmp_path / "mine" / "helper.yaml", HELPER)
    result = runner.invoke(cli, [*command, str(path)])
    assert result.exit_code == 0, result.output
    assert "E-FLOW-UNKNOWN" not in result.output


PARAMS = GOOD.replace(
    "start: a",
    "params:\n  n: {type: integer}\n  ok: {type: boolean}\n  to: {type: phone}\n"
    "  wait: {type: duration}\n  size: {type: string, enum: [small, large]}\nstart: a",
).replace(
    "[{say: hi}, hangup]", '[{say: "{{ n }} {{ ok }} {{ to }} {{ wait }} {{ size }}"}, hangup]'
)


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        ("n=nine", "'nine' is not an integer"),
        ("ok=maybe", "'maybe' is not true or false"),
        ("to=555", "'555' is not an E.164 phone number"),
        ("wait=soon", "'soon' is not a duration"),
        ("size=huge", "'huge' is not one of small, large"),
        ("sise=small", "did you mean 'size'?"),
    ],
)
def test_a_param_value_is_checked_against_its_type(
    runner: CliRunner, tmp_path: Path, pair: str, message: str
) -> None:
    """A phone, a duration, an enum or a boolean used to be taken as given (`ok=maybe`: false)."""
    path = write(tmp_path / "p.yaml", PARAMS)
    result = runner.invoke(cli, ["compile", str(path), "--provider", "twilio", "--param", pair])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_output_cut_short_by_a_closed_pipe_is_not_reported_as_a_bug(tmp_path: Path) -> None:
    """`voicecall schema | head -1` printed "unexpected BrokenPipeError … a bug in voicecall"."""
    import subprocess
    import sys

    env = {"VOICECALL_CONFIG": str(tmp_path / "none.json"), "PATH": ""}
    proc = subprocess.Popen([sys.executable, "-m", "voicecall.plugin.cli_main", "schema"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before anything is written
    err = proc.stderr.read().decode()
    proc.wait()
    assert "BrokenPipe" not in err and "Traceback" not in err and "bug" not in err, err


@pytest.mark.parametrize(
    ("flows", "key"),
    [
        ('"gone"', "flows"),
        ('["flows", "gone"]', "flows[1]"),
        ('{paths: ["gone"]}', "flows.paths[0]"),
    ],
)
@pytest.mark.parametrize("command", [["flows", "--json"], ["validate"], ["test"]])
def test_a_configured_flow_folder_that_does_not_exist_is_a_config_error(
    runner: CliRunner, tmp_path: Path, flows: str, key: str, command: list[str]
) -> None:
    """`flows` used to skip it silently; validate called it a file it could not read."""
    write(tmp_path / "flows" / "good.yaml", GOOD)
    entry = f'{{"voice-call": {{config: {{flows: {flows}}}}}}}'
    config = write(tmp_path / "openclaw.json", f"{{plugins: {{entries: {entry}}}}}")
    result = runner.invoke(cli, ["--config", str(config), *command])
    assert result.exit_code == 2, result.output
    message = f"plugins.entries.voice-call.config.{key}: no such folder {tmp_path / 'gone'}"
    assert message in result.output
