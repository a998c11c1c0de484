"""`python -m voicecall.runtime.serve`: its arguments, and what it refuses before serving."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.dsl.catalog import Catalog
from voicecall.runtime.serve import CallRequest, ServeError, check_calls, main, parse_args


def test_each_param_belongs_to_the_call_before_it() -> None:
    args = parse_args(["--config", "c.json",
                       "--call", "notify", "+15550001001", "--param", "message=Hi there",
                       "--call", "appointment-reminder", "+15550001002",
                       "--param", "patient=Ann", "--param", "when=today"])  # fmt: skip
    assert [(c.flow, c.to, c.pairs) for c in args.calls] == [
        ("notify", "+15550001001", ["message=Hi there"]),
        ("appointment-reminder", "+15550001002", ["patient=Ann", "when=today"]),
    ]


def test_a_param_before_any_call_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(["--config", "c.json", "--param", "message=hi"])
    assert exit_.value.code == 2
    assert "--param belongs to a --call" in capsys.readouterr().err


def test_params_are_typed_and_checked_like_everywhere_else() -> None:
    request = CallRequest(flow="notify", to="+15550001001", pairs=["message=Hi"])
    check_calls([request], Catalog())
    assert request.params == {"message": "Hi"}
    with pytest.raises(ServeError, match=r"--param 'colour=red': expected K=V with K one of"):
        check_calls([CallRequest(flow="notify", to="+15550001001", pairs=["colour=red"])],
                    Catalog())  # fmt: skip


@pytest.mark.parametrize("to", ["15550001001", "5550001", "+1 555 000 1001", "+0555", "tel:+1555"])
def test_a_number_not_in_e164_is_refused(to: str) -> None:
    with pytest.raises(ServeError, match=r"is not an E\.164 number"):
        check_calls([CallRequest(flow="notify", to=to, pairs=["message=hi"])], Catalog())


@pytest.mark.parametrize("flow", ["inbound", "ivr-menu"])
def test_an_inbound_only_flow_cannot_place_a_call(flow: str) -> None:
    with pytest.raises(ServeError, match=r"only answers calls \(direction: inbound\)"):
        check_calls([CallRequest(flow=flow, to="+15550001001")], Catalog())


def test_an_unknown_flow_is_refused_with_a_suggestion() -> None:
    with pytest.raises(ServeError, match="did you mean 'notify'"):
        check_calls([CallRequest(flow="notfy", to="+15550001001")], Catalog())


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_a_missing_config_file_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["--config", str(tmp_path / "nope.json")], capsys)
    assert code == 2
    assert err == f"error: {tmp_path / 'nope.json'}: no such config file\n"


def test_an_invalid_config_names_the_key_path_and_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json5"
    config.write_text('{\n  provider: "twillio",\n  serve: {port: "80a"},\n}\n')
    code, err = run_main(["--config", str(config)], capsys)
    assert code == 2
    assert err.splitlines() == [
        f"error: {config}:2:13: provider: 'twillio' is not one of telnyx, twilio, plivo, "
        "mock; did you mean 'twilio'?",
        f"error: {config}:3:17: serve.port: expected an integer, got text '80a'",
    ]


def test_bad_calls_stop_the_process_before_it_serves(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text('{"provider": "mock", "store": "store"}')
    args = ["--config", str(config), "--call", "inbound", "+15550001001",
            "--call", "notify", "5550001", "--param", "message=hi"]  # fmt: skip
    code, err = run_main(args, capsys)
    assert code == 2
    assert "--call inbound +15550001001: flow inbound only answers calls" in err
    assert "--call notify 5550001: '5550001' is not an E.164 number" in err
    assert not (tmp_path / "store").exists()  # nothing started


@pytest.mark.parametrize(
    ("flow", "error"),
    [("notify", "error: inboundFlow: flow notify only places calls (direction: outbound); it "
                "cannot answer inbound calls\n"),
     ("inbund", "did you mean 'inbound'")],
)  # fmt: skip
def test_the_inbound_flow_must_exist_and_answer_calls(
    flow: str, error: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(f'{{"provider": "mock", "store": "store", "inboundFlow": "{flow}"}}')
    code, err = run_main(["--config", str(config)], capsys)
    assert code == 2 and error in err
    assert err.startswith("error: inboundFlow: ")


def test_a_real_carrier_needs_its_credentials_and_a_caller_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("TELNYX_API_KEY", "TELNYX_CONNECTION_ID", "TELNYX_PUBLIC_KEY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TELNYX_CONNECTION_ID", "123")  # from the environment is fine
    config = tmp_path / "config.json"
    config.write_text('{\n  "provider": "telnyx",\n  "telnyx": {}\n}\n')
    code, err = run_main(["--config", str(config)], capsys)
    assert code == 2
    assert err.splitlines() == [  # the original's texts, for a section alone: short paths
        f"error: {config}:1:1: fromNumber is required",
        f"error: {config}:3:13: telnyx.apiKey is required (or set TELNYX_API_KEY env)",
        f"error: {config}:3:13: telnyx.publicKey is required (or set TELNYX_PUBLIC_KEY env)",
    ]


def test_a_missing_required_param_is_refused_before_serving() -> None:
    """It used to be found only after the server started: {"error": "flow notify needs message"}."""
    with pytest.raises(ServeError, match=r"--call notify \+15550001001: required param not given: "
                       r"message \(add --param message=VALUE\)"):  # fmt: skip
        check_calls([CallRequest(flow="notify", to="+15550001001")], Catalog())


def test_a_flow_with_errors_is_named_at_line_and_col(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "version: 1\nname: bad\ndescription: d\nstart: b\nnodes:\n  a: [hangup]\n"
    )
    with pytest.raises(ServeError, match=r"the flow has errors \(first: .*bad.yaml:4:8: "):
        check_calls([CallRequest(flow="bad", to="+15550001001")], Catalog([tmp_path]))
