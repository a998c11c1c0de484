"""The call commands: against no Gateway (one line, exit 1; the store for status, tail,
latency), and against a real `voicecall gateway` on the mock carrier (subprocesses)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from voicecall.plugin.call_log import CallLog, latency_report, summarize
from voicecall.plugin.cli import cli
from voicecall.runtime.state import CallRecord, TranscriptLine
from voicecall.runtime.store import SQLiteStore

TOKEN = "cli-test-token-5f2a"
CLI = [sys.executable, "-m", "voicecall.plugin.cli_main"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(folder: Path, **plugin: Any) -> Path:
    config = {
        "gateway": {"port": free_port(), "auth": {"mode": "token", "token": TOKEN}},
        "plugins": {"entries": {"voice-call": {"config": {
            "provider": "mock", "store": str(folder / "store"),
            "serve": {"port": free_port()}, **plugin}}}},
    }  # fmt: skip
    path = folder / "openclaw.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """No OpenClaw variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.startswith(("OPENCLAW_", "VOICECALL_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_COLOR", "1")
    return dict(os.environ)


@pytest.fixture
def config(tmp_path: Path, clean_env: dict[str, str]) -> Path:
    return write_config(tmp_path)


def invoke(config: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["--config", str(config), *args])


def record(state: str, *, started: float, **metadata: Any) -> CallRecord:
    call = CallRecord.new(provider="twilio", direction="outbound", from_number="+15550000000",
                          to_number="+15550001234", flow="notify", flow_digest="x",
                          state=state, started_at=started, metadata=dict(metadata))  # fmt: skip
    if state not in ("initiated", "ringing", "active", "speaking", "listening"):
        call.ended_at, call.end_reason = started + 5, state
    return call


def fill_store(config: Path, *calls: CallRecord) -> SQLiteStore:
    store = SQLiteStore(config.parent / "store" / "calls.sqlite")
    for call in calls:
        store.write(call)
    return store


# --- no Gateway -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["call", "-m", "hello", "--to", "+15550001234"],
        ["start", "--to", "+15550001234"],
        ["continue", "--call-id", "c1", "--message", "hi"],
        ["speak", "--call-id", "c1", "--message", "hi"],
        ["dtmf", "--call-id", "c1", "--digits", "12"],
        ["end", "--call-id", "c1"],
    ],
)
def test_no_gateway_is_one_line_saying_how_to_start_it(config: Path, args: list[str]) -> None:
    result = invoke(config, *args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "voicecall gateway" in lines[0], result.output
    assert "Traceback" not in result.output
    as_json = invoke(config, *args, "--json")
    assert as_json.exit_code == 1
    error = json.loads(as_json.stdout)["error"]
    assert error["type"] == "gateway_unavailable" and "voicecall gateway" in error["message"]


def test_no_credentials_fails_before_connecting(tmp_path: Path, clean_env: Any) -> None:
    path = write_config(tmp_path)
    data = json.loads(path.read_text())
    del data["gateway"]["auth"]
    path.write_text(json.dumps(data))
    result = invoke(path, "end", "--call-id", "c1")
    assert result.exit_code == 1
    assert "requires credentials before opening a websocket" in result.output


def test_a_named_profile_moves_the_default_port(
    tmp_path: Path, clean_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path)
    data = json.loads(path.read_text())
    del data["gateway"]["port"]
    path.write_text(json.dumps(data))
    monkeypatch.setenv("OPENCLAW_PROFILE", "dev")  # OpenClaw's dev profile: port 19001
    result = invoke(path, "end", "--call-id", "c1")
    assert result.exit_code == 1 and "ws://127.0.0.1:19001" in result.output


def test_status_without_gateway_reads_the_store(config: Path) -> None:
    live, done = record("active", started=1000.0), record("completed", started=900.0)
    fill_store(config, live, done).close()
    result = invoke(config, "status", "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert payload["found"] is True
    assert [c["callId"] for c in payload["calls"]] == [live.call_id]
    assert payload["calls"][0] == {"callId": live.call_id, "provider": "mock",
                                   "direction": "outbound", "state": "active",
                                   "startedAt": 1_000_000}  # fmt: skip
    one = json.loads(invoke(config, "status", "--call-id", done.call_id, "--json").stdout)
    assert one["state"] == "completed" and one["endReason"] == "completed"
    assert "to" not in one and "transcript" not in one  # the redacted view
    missing = invoke(config, "status", "--call-id", "nope", "--json")
    assert json.loads(missing.stdout) == {"found": False}
    people = invoke(config, "status")
    assert live.call_id in people.stdout and "active" in people.stdout
    assert "reading the call store" in people.stderr


def test_latency_reports_the_originals_payload_from_the_store(config: Path) -> None:
    calls = [record("completed", started=float(i), lastTurnLatencyMs=100 * (i + 1),
                    lastTurnListenWaitMs=10 * (i + 1)) for i in range(20)]  # fmt: skip
    calls.append(record("completed", started=50.0))  # no turn: scanned, not counted
    fill_store(config, *calls).close()
    payload = json.loads(invoke(config, "latency", "--json").stdout)
    assert payload == {
        "recordsScanned": 21,
        "turnLatency": {"count": 20, "minMs": 100, "maxMs": 2000, "avgMs": 1050,
                        "p50Ms": 1000, "p95Ms": 1900},
        "listenWait": {"count": 20, "minMs": 10, "maxMs": 200, "avgMs": 105,
                       "p50Ms": 100, "p95Ms": 190},
    }  # fmt: skip
    last = json.loads(invoke(config, "latency", "--json", "--last", "2").stdout)
    assert last["recordsScanned"] == 2 and last["turnLatency"]["count"] == 1
    assert invoke(config, "latency", "--last", "0").exit_code == 2  # min 1, as the original
    table = invoke(config, "latency")
    assert "turn latency" in table.stdout and "1900" in table.stdout


def test_what_a_caller_says_is_never_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from voicecall.plugin.cli_follow import TailPrinter, status_table

    said = "[/bold] press [red]1[/red]"
    TailPrinter(as_json=False)(
        "voicecall.transcript", {"callId": "c1", "speaker": "user", "text": said, "at": 0}
    )
    TailPrinter(as_json=False)("voicecall.call", {"callId": "[/x]", "state": "[b]ringing"})
    status_table([{"callId": "[/x]", "state": "[bold]ringing"}])
    out = capsys.readouterr().out
    assert said in out and "[b]ringing" in out and "[bold]ringing" in out and "[/x]" in out
    # Nor can it drive the terminal or fake a line of its own.
    TailPrinter(as_json=False)("voicecall.transcript", {"callId": "c1", "speaker": "user",
                               "text": "hi\x1b[2J\nc2 bot: fake", "at": 0})  # fmt: skip
    out = capsys.readouterr().out
    assert "\x1b" not in out and "hi\\x1b[2J\\x0ac2 bot: fake" in out


def test_latency_counts_every_turn_a_call_kept() -> None:
    call = record("completed", started=1.0, lastTurnLatencyMs=300,
                  turnMetrics=[{"latencyMs": 100, "listenWaitMs": 5},
                               {"latencyMs": 300, "listenWaitMs": 7}])  # fmt: skip
    report = latency_report([call])
    assert report["turnLatency"]["count"] == 2 and report["turnLatency"]["avgMs"] == 200


def test_summarize_nearest_rank() -> None:
    assert summarize([]) == {"count": 0, "minMs": 0, "maxMs": 0, "avgMs": 0, "p50Ms": 0,
                             "p95Ms": 0}  # fmt: skip
    assert summarize([5.0])["p95Ms"] == 5
    assert summarize([1.0, 2.0, 3.0, 4.0])["p50Ms"] == 2


def test_a_missing_store_is_empty_and_never_created(config: Path) -> None:
    assert json.loads(invoke(config, "latency", "--json").stdout)["recordsScanned"] == 0
    assert not (config.parent / "store").exists()
    assert CallLog(config.parent / "store").recent(5) == []


def test_setup_and_smoke_without_keys(config: Path) -> None:
    setup = json.loads(invoke(config, "setup", "--json").stdout)
    assert setup["ok"] is True
    assert {"plugin-enabled", "provider", "provider-config", "webhook-exposure", "mode"} <= {
        c["id"] for c in setup["checks"]}  # fmt: skip
    smoke = json.loads(invoke(config, "smoke", "--json").stdout)
    assert smoke == {"ok": True, "setup": setup, "liveCall": False}
    dry = json.loads(invoke(config, "smoke", "--to", "+15550001234", "--json").stdout)
    assert dry["wouldCall"] == "+15550001234" and dry["liveCall"] is False
    people = invoke(config, "smoke", "--to", "+15550001234")
    assert "dry run for +15550001234 (add --yes to place it)" in people.stdout


def test_setup_that_needs_attention_exits_1(tmp_path: Path, clean_env: Any) -> None:
    path = write_config(tmp_path, enabled=False)
    result = invoke(path, "setup")
    assert result.exit_code == 1 and "needs attention" in result.stdout
    smoke = invoke(path, "smoke", "--json")
    assert smoke.exit_code == 1 and json.loads(smoke.stdout)["ok"] is False


def test_param_needs_a_flow_and_k_equals_v(config: Path) -> None:
    result = invoke(config, "call", "-m", "hi", "--param", "a=1")
    assert result.exit_code == 2 and "needs --flow" in result.output
    result = invoke(config, "call", "-m", "hi", "--flow", "x", "--param", "novalue")
    assert result.exit_code == 2 and "expected K=V" in result.output


def test_tail_without_gateway_follows_the_store(config: Path, clean_env: dict[str, str]) -> None:
    first = record("completed", started=10.0)
    store = fill_store(config, first)
    args = [*CLI, "--config", str(config), "tail", "--json", "--since", "5", "--poll", "50"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=clean_env) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            seen = json.loads(proc.stdout.readline())
            assert seen["event"] == "voicecall.call"
            assert seen["payload"]["callId"] == first.call_id
            time.sleep(0.01)  # a later updated_at than the first save (the store's clock)
            live = record("active", started=time.time())
            live.transcript.append(TranscriptLine(at=time.time(), speaker="bot", text="Hello"))
            store.write(live)
            events = [json.loads(proc.stdout.readline()) for _ in range(2)]
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    store.close()
    assert [e["event"] for e in events] == ["voicecall.call", "voicecall.transcript"]
    assert events[0]["payload"]["state"] == "active"
    assert events[1]["payload"]["text"] == "Hello"
    assert events[1]["payload"]["callId"] == live.call_id


def test_no_gateway_in_a_subprocess_has_no_traceback(config: Path, clean_env: Any) -> None:
    result = subprocess.run([*CLI, "--config", str(config), "call", "-m", "hi", "-t", "+1555"],
                            check=False, capture_output=True, text=True, env=clean_env,
                            timeout=60)  # fmt: skip
    assert result.returncode == 1
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1
    assert "`voicecall gateway`" in result.stderr


# --- a real Gateway on the mock carrier -----------------------------------------------------------


def start_gateway(config: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    """Starts `voicecall gateway`, with fresh ports if another process took one meanwhile."""
    for _ in range(5):
        proc = subprocess.Popen([*CLI, "gateway", "--config", str(config)], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=env)  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        ready = proc.stdout.readline()  # one JSON line once it serves
        if ready:
            assert json.loads(ready)["ready"] is True
            return proc
        error = proc.stderr.read()
        proc.wait()
        assert "already in use" in error, error
        data = json.loads(config.read_text())
        data["gateway"]["port"] = free_port()
        data["plugins"]["entries"]["voice-call"]["config"]["serve"]["port"] = free_port()
        config.write_text(json.dumps(data))
    raise AssertionError("no free ports for the gateway")


@pytest.fixture
def gateway(config: Path, clean_env: dict[str, str]) -> Iterator[Path]:
    """`voicecall gateway --config F` on the mock carrier, until the test ends."""
    proc = start_gateway(config, clean_env)
    try:
        yield config
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def cli_run(config: Path, *args: str, columns: int = 80) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "VOICECALL_"))}
    env["COLUMNS"] = str(columns)
    result = subprocess.run([*CLI, "--config", str(config), *args], capture_output=True,
                            text=True, env=env, timeout=120, check=False)  # fmt: skip
    assert TOKEN not in result.stdout + result.stderr  # the gateway's secret is never printed
    return result


def cli_json(config: Path, *args: str) -> Any:
    result = cli_run(config, *args, "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_a_conversation_driven_from_the_cli(gateway: Path) -> None:
    call_id = cli_json(gateway, "start", "--to", "+15550001234", "--message", "Hello")["callId"]
    answer = cli_json(gateway, "continue", "--call-id", call_id, "--message", "How are you?")
    assert answer["success"] is True and answer["transcript"]  # the patient callee replies
    again = cli_json(gateway, "continue", "--call-id", call_id, "--message", "And then?")
    assert again["success"] is True and again["transcript"]
    assert cli_json(gateway, "speak", "--call-id", call_id, "--message", "One moment.") == {
        "success": True}  # fmt: skip
    assert cli_json(gateway, "dtmf", "--call-id", call_id, "--digits", "12#") == {"success": True}
    status = cli_json(gateway, "status", "--call-id", call_id)
    assert status["callId"] == call_id and status["provider"] == "mock"
    assert status["state"] in ("answered", "active", "speaking", "listening")
    assert [c["callId"] for c in cli_json(gateway, "status")["calls"]] == [call_id]
    assert cli_json(gateway, "end", "--call-id", call_id) == {"success": True}
    assert cli_json(gateway, "status", "--call-id", call_id)["endReason"] == "hangup-bot"
    again = cli_run(gateway, "end", "--call-id", call_id)
    assert again.returncode == 1 and again.stdout == ""
    assert again.stderr.startswith("Error: call is not active (last state=hangup-bot")
    latency = cli_json(gateway, "latency")
    assert latency["recordsScanned"] == 1 and latency["turnLatency"]["count"] == 2  # each turn


def test_smoke_places_a_call_only_with_to_and_yes(gateway: Path) -> None:
    live = cli_json(gateway, "smoke", "--to", "+15550001234", "--yes")
    assert live["ok"] is True and live["liveCall"] is True and live["setup"]["ok"] is True
    status = cli_json(gateway, "status", "--call-id", live["callId"])
    assert status["direction"] == "outbound"  # placed through the gateway (voicecall.start)
    people = cli_run(gateway, "smoke")
    assert "live-call: skipped (pass --to and --yes to place one)" in people.stdout


def test_call_follow_shows_the_call_until_it_ends(gateway: Path) -> None:
    result = cli_run(gateway, "call", "-m", "Your table is ready.", "-t", "+15550001234",
                     "--mode", "notify", "--follow", "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    call_id = lines[0]["callId"]
    assert all(e["payload"]["callId"] == call_id for e in lines[1:])
    states = [e["payload"]["state"] for e in lines[1:] if e["event"] == "voicecall.call"]
    assert states[0] in ("initiated", "ringing") and states[-1] == "hangup-bot"
    assert "answered" in states
    said = [e["payload"] for e in lines if e.get("event") == "voicecall.transcript"]
    assert said[0]["speaker"] == "bot" and said[0]["text"] == "Your table is ready."
    people = cli_run(gateway, "call", "-m", "Your table is ready.", "-t", "+15550001234",
                     "--mode", "notify", "--follow", columns=60)  # fmt: skip
    assert people.returncode == 0, people.stderr
    assert "bot  Your table is ready." in people.stdout
    assert people.stdout.rstrip().splitlines()[-1].startswith("Call ended: hangup-bot after")


def test_a_named_flow_with_params_needs_no_message(gateway: Path) -> None:
    result = cli_run(gateway, "call", "-t", "+15550001234", "--flow", "appointment-reminder",
                     "--param", "patient=Ann", "--param", "when=Thursday at ten", "--follow",
                     "--json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    said = [json.loads(line)["payload"]["text"] for line in result.stdout.splitlines()
            if '"voicecall.transcript"' in line]  # fmt: skip
    assert said[0] == "Hello Ann, this is a reminder of your appointment Thursday at ten."
    missing = cli_run(gateway, "call", "-t", "+15550001234", "--flow", "appointment-reminder",
                      "--param", "when=Thu")  # fmt: skip
    assert missing.returncode == 1 and "patient" in missing.stderr  # named by the Gateway
    odd = cli_run(gateway, "call", "-t", "+15550001234", "--flow", "appointment-reminder",
                  "--param", "bad\nkey=1")  # fmt: skip
    assert odd.returncode == 1 and odd.stderr.count("\n") == 1 and "bad\\x0akey" in odd.stderr
    assert cli_run(gateway, "call").returncode == 2  # no message and no flow: wrong usage


def test_status_table_fits_the_terminal_and_keeps_the_call_id(gateway: Path) -> None:
    call_id = cli_json(gateway, "start", "--to", "+15550001234", "--message", "Hi")["callId"]
    for columns in (60, 80, 132):
        out = cli_run(gateway, "status", columns=columns).stdout
        assert call_id in out
        assert max(len(line) for line in out.splitlines()) <= max(columns, 36 + 4)
    wide = cli_run(gateway, "status", columns=132).stdout
    assert "direction" in wide and "direction" not in cli_run(gateway, "status").stdout


def test_gateway_errors_are_one_line_with_the_originals_message(gateway: Path) -> None:
    missing = cli_run(gateway, "speak", "--call-id", "nope", "--message", "hi")
    assert missing.returncode == 1 and missing.stderr == "Error: Call not found\n"
    as_json = cli_run(gateway, "speak", "--call-id", "nope", "--message", "hi", "--json")
    assert json.loads(as_json.stdout) == {"ok": False, "error": {
        "type": "gateway_request_error", "code": "INVALID_REQUEST",
        "message": "Call not found", "retryable": False}}  # fmt: skip
    bad_token = cli_run(gateway, "status", "--token", "wrong")
    assert bad_token.returncode == 1 and "unauthorized" in bad_token.stderr
    flow = cli_run(gateway, "call", "-m", "hi", "-t", "+15550001234", "--flow", "no-such-flow")
    assert flow.returncode == 1 and "no-such-flow" in flow.stderr


def test_tail_follows_live_events(gateway: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "VOICECALL_"))}
    first = cli_json(gateway, "start", "--to", "+15550001234", "--message", "Hi")["callId"]
    cli_json(gateway, "end", "--call-id", first)  # one call at a time (maxConcurrentCalls)
    args = [*CLI, "--config", str(gateway), "tail", "--json", "--since", "1"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=env) as tail:  # fmt: skip
        try:
            assert tail.stdout is not None
            # The store is read after subscribing: once the recent call is shown, events flow.
            assert json.loads(tail.stdout.readline())["payload"]["callId"] == first
            placed = cli_json(gateway, "call", "-m", "Tail me.", "-t", "+15550001234",
                              "--mode", "notify")["callId"]  # fmt: skip
            seen: list[dict[str, Any]] = []
            while not seen or seen[-1]["payload"].get("endReason") is None:
                event = json.loads(tail.stdout.readline())
                if event["payload"]["callId"] == placed:
                    seen.append(event)
        finally:
            tail.terminate()
            tail.wait(timeout=10)
    assert seen[0]["payload"]["state"] in ("initiated", "ringing")
    assert any(e["event"] == "voicecall.transcript" and e["payload"]["text"] == "Tail me."
               for e in seen)  # fmt: skip


# --- the original's calls.jsonl -------------------------------------------------------------------


def snapshot(call_id: str, state: str, **metadata: Any) -> str:
    return json.dumps({"callId": call_id, "provider": "twilio", "direction": "outbound",
                       "state": state, "metadata": metadata})  # fmt: skip


def test_latency_reads_an_original_calls_jsonl(config: Path, tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    lines = [snapshot("a", "initiated"), snapshot("a", "listening", lastTurnLatencyMs=400,
             lastTurnListenWaitMs=40), "not json", snapshot("a", "completed",
             lastTurnLatencyMs=400, lastTurnListenWaitMs=40)]  # fmt: skip
    log.write_text("\n".join(lines) + "\n")
    payload = json.loads(invoke(config, "latency", "--file", str(log), "--json").stdout)
    # As the original: every snapshot line counts, each carrying the last turn's metrics.
    assert payload["recordsScanned"] == 4
    assert payload["turnLatency"]["count"] == 2 and payload["turnLatency"]["p95Ms"] == 400
    last = json.loads(invoke(config, "latency", "--file", str(log), "--last", "1",
                             "--json").stdout)  # fmt: skip
    assert last["recordsScanned"] == 1 and last["listenWait"]["count"] == 1


def test_tail_follows_an_original_calls_jsonl(tmp_path: Path, clean_env: dict[str, str]) -> None:
    log = tmp_path / "calls.jsonl"
    log.write_text("".join(snapshot(str(i), "completed") + "\n" for i in range(5)))
    args = [*CLI, "tail", "--file", str(log), "--since", "2", "--poll", "50"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=clean_env) as proc:  # fmt: skip
        try:
            assert proc.stdout is not None
            first = [json.loads(proc.stdout.readline())["callId"] for _ in range(2)]
            with log.open("a") as file:
                file.write(snapshot("new", "ringing") + "\n")
            added = json.loads(proc.stdout.readline())
        finally:
            proc.terminate()
            proc.wait(timeout=10)
    assert first == ["3", "4"] and added["callId"] == "new"


def test_a_narrow_terminal_still_shows_each_calls_state_and_the_latency_figures(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicecall.plugin.cli_follow import latency_table, status_table

    monkeypatch.setenv("COLUMNS", "40")
    call_id = "0803a3e6-df7c-43c2-919f-e7e7ba15e1cf"
    status_table([{"callId": call_id, "state": "listening", "startedAt": 0}])
    out = capsys.readouterr().out
    assert call_id in out and "listening" in out
    assert max(len(line) for line in out.splitlines()) <= 40
    figures = {"count": 12, "minMs": 301, "maxMs": 1911, "avgMs": 733, "p50Ms": 505,
               "p95Ms": 1777}  # fmt: skip
    latency_table({"recordsScanned": 4, "turnLatency": figures, "listenWait": figures})
    out = capsys.readouterr().out
    assert "turn latency" in out and "listen wait" in out
    assert all(str(v) in out for v in figures.values())
    assert max(len(line) for line in out.splitlines()) <= 40
