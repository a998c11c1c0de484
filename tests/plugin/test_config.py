"""The plugin config: its JSON Schema (in the manifest) and errors at key path and line:col."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from voicecall.dsl.checks import CONFIG_KEYS
from voicecall.plugin.cli import cli
from voicecall.plugin.config import (
    ConfigError,
    check_section,
    config_schema,
    load_plugin_config,
    manifest,
)
from voicecall.plugin.json5pos import find_positions
from voicecall.runtime.app import RuntimeConfig

PREFIX = "plugins.entries.voice-call.config"

# Every key the runtime reads, with a valid value (RuntimeConfig and _manager_settings).
FULL = {
    "enabled": True, "provider": "twilio", "fromNumber": "+15550000000",
    "toNumber": "+15550001234", "inboundPolicy": "allowlist", "allowFrom": ["+15550001234"],
    "inboundFlow": "inbound", "flows": ["flows"], "store": "~/.openclaw/voice-calls",
    "maxConcurrentCalls": 2, "maxDurationSeconds": 300, "ringTimeoutMs": 30000,
    "transcriptTimeoutMs": 180000, "staleCallReaperSeconds": 120, "eventRetentionHours": 72,
    "timezone": "Europe/Paris", "publicUrl": "https://example.com/voice/webhook",
    "skipSignatureVerification": False,
    "serve": {"port": 3334, "bind": "127.0.0.1", "path": "/voice/webhook",
              "maxInFlightPerIp": 8, "maxConnections": 512, "headerTimeoutMs": 10000,
              "keepAliveTimeoutMs": 15000, "bodyTimeoutMs": 5000, "maxBodyBytes": 65536},
    "twilio": {"accountSid": "AC123", "authToken": "secret", "region": "ie1",
               "apiBaseUrl": "http://127.0.0.1:9000"},
    "plivo": {"authId": "MA123", "authToken": "secret", "allowV2Signatures": False},
    "telnyx": {"apiKey": "KEY", "connectionId": "123", "publicKey": "cHVibGlj"},
}  # fmt: skip


def host_file(tmp_path: Path, section: str) -> Path:
    path = tmp_path / "openclaw.json"
    path.write_text(f'// the host config\n{{\n  plugins: {{entries: {{"voice-call": {{\n'
                    f"    config: {section},\n  }}}}}},\n}}\n")  # fmt: skip
    return path


def errors_of(tmp_path: Path, section: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_plugin_config(host_file(tmp_path, section))
    return str(caught.value).replace(str(tmp_path / "openclaw.json"), "F").splitlines()


def test_the_manifest_ships_the_config_schema_with_secrets_marked() -> None:
    data = manifest()
    assert data["id"] == "voice-call"
    hints = data["uiHints"]
    for secret in ("twilio.authToken", "plivo.authToken", "telnyx.apiKey",
                   "tunnel.ngrokAuthToken"):  # fmt: skip
        assert hints[secret]["sensitive"] is True


def _objects(schema: Any) -> list[dict[str, Any]]:
    if isinstance(schema, list):
        return [o for item in schema for o in _objects(item)]
    if not isinstance(schema, dict):
        return []
    found = [schema] if schema.get("type") == "object" and "properties" in schema else []
    return found + [o for value in schema.values() for o in _objects(value)]


def test_every_object_in_the_schema_refuses_unknown_keys() -> None:
    objects = _objects(config_schema())
    assert len(objects) > 10
    assert all(o.get("additionalProperties") is False for o in objects)


def test_every_key_the_runtime_reads_is_valid() -> None:
    assert check_section(FULL) == []
    config = RuntimeConfig(raw=FULL)
    assert config.serve()["port"] == 3334 and config.credentials("twilio")["authToken"]
    assert set(CONFIG_KEYS) <= set(config_schema()["properties"])


def test_problems_name_the_key_path_and_line_col(tmp_path: Path) -> None:
    section = """{
      provider: 'twillio', fromnumber: "+15550000000",
      serve: {port: "80a", prot: 1},
      allowFrom: ["+15550001234", "5550001"],
      maxConcurrentCalls: 0,
      timezone: "Europe/Pariss",
      numbers: {"555": {}},
      flows: [3],
    }"""
    assert errors_of(tmp_path, section) == [
        f"F:5:17: {PREFIX}.provider: 'twillio' is not one of telnyx, twilio, plivo, mock; "
        "did you mean 'twilio'?",
        f"F:5:28: {PREFIX}.fromnumber: unknown key; did you mean 'fromNumber'?",
        f"F:6:21: {PREFIX}.serve.port: expected an integer, got text '80a'",
        f"F:6:28: {PREFIX}.serve.prot: unknown key; did you mean 'port'?",
        f"F:7:35: {PREFIX}.allowFrom[1]: '5550001' is not an E.164 number (+ then digits); "
        "for example +15550001234",
        f"F:8:27: {PREFIX}.maxConcurrentCalls: 0 must be more than 0",
        f"F:9:17: {PREFIX}.timezone: 'Europe/Pariss' is not an IANA time zone; "
        "did you mean 'Europe/Paris'?",
        f"F:10:17: {PREFIX}.numbers.555: the key '555' is not an E.164 number (+ then digits)",
        f"F:11:15: {PREFIX}.flows[0]: expected text, got the number 3",
    ]


def test_replay_keys_are_kept_longer_than_a_carrier_may_replay(tmp_path: Path) -> None:
    # Telnyx accepts a signed timestamp 5 minutes old: pruning its key sooner reopens replays.
    assert errors_of(tmp_path, "{eventRetentionHours: 0.05}") == [
        f"F:4:35: {PREFIX}.eventRetentionHours: 0.05 must be at least 1"
    ]


def test_a_section_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path, "[1, 2]") == [f"F:4:13: {PREFIX}: expected an object, got a list"]


def test_a_section_file_has_short_key_paths(tmp_path: Path) -> None:
    path = tmp_path / "section.json"
    path.write_text(json.dumps({"provider": "mock", "serve": {"port": 99999}}, indent=2))
    with pytest.raises(ConfigError, match=r":4:13: serve\.port: 99999 must be at most 65535$"):
        load_plugin_config(path, section_file=True)


def test_a_missing_file_is_an_error_only_when_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    assert load_plugin_config(missing) == {}
    with pytest.raises(ConfigError, match="no such config file"):
        load_plugin_config(missing, must_exist=True)


def test_the_cli_refuses_a_missing_or_invalid_config_it_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    result = runner.invoke(cli, ["--config", str(tmp_path / "nope.json"), "flows"])
    assert result.exit_code == 2 and "nope.json: no such config file" in result.output
    bad = host_file(tmp_path, "{provider: 'twillio'}")
    result = runner.invoke(cli, ["--config", str(bad), "flows"])
    assert result.exit_code == 2
    assert f"openclaw.json:4:24: {PREFIX}.provider: 'twillio' is not one of" in result.output
    assert "Traceback" not in result.output


def test_positions_follow_json5_syntax() -> None:
    text = '// c\n{a: {\'b\': [1, /* x */ "two",], c: +Infinity,},\n  "d\\"e": null}\n'
    where = find_positions(text)
    assert where.values[("a", "b", 1)].line == 2 and where.values[("a", "b", 1)].col == 23
    assert (where.keys[("a", "c")].line, where.keys[("a", "c")].col) == (2, 32)
    assert (where.keys[('d"e',)].line, where.keys[('d"e',)].col) == (3, 3)


def _property_names(schema: Any) -> set[str]:
    if isinstance(schema, list):
        return {n for item in schema for n in _property_names(item)}
    if not isinstance(schema, dict):
        return set()
    names = set(schema.get("properties", {})) if schema.get("type") == "object" else set()
    return names | {n for value in schema.values() for n in _property_names(value)}


def test_every_key_runtime_config_reads_is_in_the_schema() -> None:
    """A key added to RuntimeConfig without the schema would be refused in every config."""
    source = (Path(__file__).resolve().parents[2] / "runtime" / "app.py").read_text("utf-8")
    read = set(re.findall(r'\.get\("([a-z][A-Za-z0-9]*)"', source))
    read |= set(re.findall(r'"([a-z][A-Za-z0-9]*)": \("', source))  # the serve.* limits table
    assert {"fromNumber", "maxInFlightPerIp", "maxBodyBytes", "apiBaseUrl"} <= read
    assert read <= _property_names(config_schema())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{ bad json", 'F:1:7: not valid JSON5: unexpected "j"'),
        ("{a: 1,\n b: [1,2\n", "F:3:1: not valid JSON5: unexpected end of input"),
        ("", "F: not valid JSON5: Empty strings are not legal JSON5"),
    ],
)
def test_a_json5_syntax_error_names_file_line_and_col(
    tmp_path: Path, text: str, expected: str
) -> None:
    """The parser's own "<string>:1 Unexpected ... at column 7" named no file position."""
    path = tmp_path / "c.json5"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_plugin_config(path)
    assert str(caught.value).replace(str(path), "F") == expected
