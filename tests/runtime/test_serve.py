"""`python -m voicecall.runtime.serve` is the Gateway host under its old name, on the same
OpenClaw config file (its own config shape and ``--call`` are gone)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voicecall.runtime.serve import main


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


def test_a_missing_config_file_is_one_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(["--config", str(tmp_path / "nope.json")], capsys)
    assert code == 1
    assert err == f"error: {tmp_path / 'nope.json'}: no such config file\n"


def test_an_invalid_config_names_the_key_path_and_position(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "openclaw.json5"
    config.write_text('{\n  plugins: {entries: {"voice-call": {config: {\n'
                      '    provider: "twillio",\n  }}}},\n}\n')  # fmt: skip
    code, err = run_main(["--config", str(config)], capsys)
    assert code == 1
    assert f"{config}:3:15: plugins.entries.voice-call.config.provider: 'twillio'" in err
    assert "did you mean 'twilio'?" in err


def test_the_old_section_only_shape_is_refused_with_its_keys_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"provider": "mock", "store": "store"}))
    code, err = run_main(["--config", str(config)], capsys)
    assert code == 1 and "provider" in err
    assert not (tmp_path / "store").exists()  # nothing started


def test_a_bad_port_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--port", "99999"])
    assert exit_.value.code == 2
    assert "not a TCP port" in capsys.readouterr().err
