"""`voicecall config show`: the effective config, and no secret in any output of any command.

Every secret below contains SECRET; each test runs real `voicecall` processes and greps all
they printed (stdout and stderr) for it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from voicecall.plugin.config import load_config, redacted_view
from voicecall.plugin.config_effective import REDACTED, redacted

CLI = [sys.executable, "-m", "voicecall.plugin.cli_main"]
ENV_SECRETS = {"NGROK_AUTHTOKEN": "ngrok-SECRET-4", "OPENCLAW_GATEWAY_PASSWORD": "gw-pw-SECRET-2"}


def host_config(**section: Any) -> dict[str, Any]:
    return {
        "gateway": {"port": 19011, "auth": {"mode": "token", "token": "gw-tok-SECRET-1"}},
        "messages": {"tts": {"provider": "openai", "providers": {
            "openai": {"apiKey": "sk-SECRET-5", "voice": "alloy"},
            "custom": {"clientSecret": "cs-SECRET-11", "region": "eu"}}}},
        "plugins": {"entries": {"voice-call": {"config": {
            "provider": "twilio", "fromNumber": "+15550001234",
            "publicUrl": "https://calls.example.com/voice/webhook",
            "twilio": {"accountSid": "AC-visible", "authToken": "tw-SECRET-3"},
            "plivo": {"authId": "MA-visible", "authToken": "pl-SECRET-9"},
            "telnyx": {"apiKey": "tx-SECRET-10", "connectionId": "conn-visible"},
            "numbers": {"+15550001234": {"tts": {"providers": {
                "eleven": {"apiKey": "el-SECRET-6"}}}}},
            "streaming": {"providers": {"openai": {"apiKey": "st-SECRET-7"}}},
            "realtime": {"providers": {"google": {"apiKey": "rt-SECRET-8"}}},
            "responseProviders": {"openai": {"apiKey": "rp-SECRET-12"}},
            **section}}}},
    }  # fmt: skip


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "VOICECALL_"))}
    return clean | {"HOME": str(tmp_path), "NO_COLOR": "1"} | ENV_SECRETS


def write(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, check=False)


def assert_no_secret(*results: subprocess.CompletedProcess[str]) -> None:
    for result in results:
        printed = result.stdout + result.stderr
        assert "SECRET" not in printed, printed
        assert "Traceback" not in printed


def test_config_show_prints_the_effective_config_without_a_secret(
    tmp_path: Path, env: dict[str, str]
) -> None:
    path = write(tmp_path, host_config())
    text = run(env, "--config", str(path), "config", "show")
    as_json = run(env, "--config", str(path), "config", "show", "--json")
    found = run(env | {"OPENCLAW_CONFIG_PATH": str(path)}, "config", "show", "--json")
    assert_no_secret(text, as_json, found)
    assert text.returncode == as_json.returncode == found.returncode == 0
    assert json.loads(found.stdout) == json.loads(as_json.stdout)
    view = json.loads(as_json.stdout)
    config = view["plugins"]["entries"]["voice-call"]["config"]
    assert config["twilio"] == {"accountSid": "AC-visible", "authToken": REDACTED}
    assert config["tts"]["providers"]["openai"] == {"apiKey": REDACTED, "voice": "alloy"}
    assert config["tts"]["providers"]["custom"] == {"clientSecret": REDACTED, "region": "eu"}
    assert config["tunnel"]["ngrokAuthToken"] == REDACTED
    assert view["gateway"] == {"port": 19011, "auth": {"mode": "token", "token": REDACTED,
                                                       "password": REDACTED}}  # fmt: skip
    assert view["fromEnv"] == {"tunnel.ngrokAuthToken": "$NGROK_AUTHTOKEN"}
    assert config["maxDurationSeconds"] == 300 and config["serve"]["port"] == 3334
    assert f"# config file: {path}" in text.stdout and "from $NGROK_AUTHTOKEN" in text.stdout


def test_no_secret_in_the_setup_checks_nor_in_errors(tmp_path: Path, env: dict[str, str]) -> None:
    path = write(tmp_path, host_config())
    setup = run(env, "--config", str(path), "setup", "--json")
    assert setup.returncode == 0 and json.loads(setup.stdout)["ok"] is True
    # A secret of the wrong type is still a secret: the error names the key, not the value.
    bad = host_config(tunnel={"ngrokAuthToken": 987654321}, fromNumber=None)
    bad["plugins"]["entries"]["voice-call"]["config"]["twilio"]["authToken"] = ["tw-SECRET-3"]
    bad_path = write(tmp_path, bad)
    shown = run(env, "--config", str(bad_path), "config", "show")
    shown_json = run(env, "--config", str(bad_path), "config", "show", "--json")
    assert_no_secret(setup, shown, shown_json)
    assert shown.returncode == 2 and "987654321" not in shown.stdout + shown.stderr
    assert ("twilio.authToken: expected text or an object (the value is a secret and not "
            "shown)") in shown.stderr  # fmt: skip
    assert "tunnel.ngrokAuthToken: expected text (the value is a secret" in shown.stderr


def test_a_gateway_refused_at_load_prints_no_secret(tmp_path: Path, env: dict[str, str]) -> None:
    config = host_config()
    del config["plugins"]["entries"]["voice-call"]["config"]["fromNumber"]
    path = write(tmp_path, config)
    result = run(env, "--config", str(path), "gateway")
    assert_no_secret(result)
    assert result.returncode != 0
    assert "plugins.entries.voice-call.config.fromNumber is required" in result.stderr


def test_redaction_covers_every_sensitive_hint_of_the_manifest(tmp_path: Path) -> None:
    loaded = load_config(write(tmp_path, host_config()), env=ENV_SECRETS)
    assert "SECRET" not in json.dumps(redacted_view(loaded)) + repr(loaded)
    assert "SECRET" in json.dumps(loaded.plugin)  # the plugin itself gets the real values


def test_a_password_in_a_url_is_redacted() -> None:
    value = {"store": "redis://voice:pw-SECRET@10.0.0.5:6379/0", "publicUrl": "https://a.b/x",
             "flows": ["ftp://anonymous@host/x"]}  # fmt: skip
    assert redacted(value, ()) == {"store": f"redis://voice:{REDACTED}@10.0.0.5:6379/0",
                                   "publicUrl": "https://a.b/x",
                                   "flows": ["ftp://anonymous@host/x"]}  # fmt: skip


def test_redaction_matches_whole_keys_only() -> None:
    sensitive = ("tts.providers.*.apiKey",)
    value = {"tts": {"providers": {"a.b": {"apiKey": "x"}, "openai": {"apiKey": "y"}},
                     "maxTokens": 5, "publicKey": "pk"}}  # fmt: skip
    assert redacted(value, sensitive) == {"tts": {
        "providers": {"a.b": {"apiKey": REDACTED}, "openai": {"apiKey": REDACTED}},
        "maxTokens": 5, "publicKey": "pk"}}  # fmt: skip


def test_config_check_is_the_gateways_check_without_starting_it(
    tmp_path: Path, env: dict[str, str]
) -> None:
    config = host_config()
    path = write(tmp_path, config)
    ok = run(env, "--config", str(path), "config", "check")
    assert ok.returncode == 0 and ok.stdout == f"config OK: {path}\n"
    del config["plugins"]["entries"]["voice-call"]["config"]["twilio"]["authToken"]
    path = write(tmp_path, config)
    bad = run(env, "--config", str(path), "config", "check")
    from_env = env | {"TWILIO_AUTH_TOKEN": "tw-env-SECRET-3"}
    as_json = run(from_env, "--config", str(path), "config", "check", "--json")
    assert_no_secret(ok, bad, as_json)
    line = next(
        n for n, text in enumerate(path.read_text().splitlines(), 1) if '"twilio": {' in text
    )
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == [
        f"Error: {path}:{line}:21: plugins.entries.voice-call.config.twilio.authToken is required "
        "(or set TWILIO_AUTH_TOKEN env)"
    ]
    assert as_json.returncode == 0 and json.loads(as_json.stdout)["ok"] is True


def test_config_check_names_what_the_voice_services_lack(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Streaming on, no TTS and no transcription key: the gateway would refuse to start, and
    `config check` says so by key path, without quoting any secret."""
    config = host_config(streaming={"enabled": True, "provider": "openai"})
    del config["messages"]
    path = write(tmp_path, config)
    clean = {k: v for k, v in env.items() if k != "OPENAI_API_KEY"}
    bad = run(clean, "--config", str(path), "config", "check")
    assert bad.returncode == 2
    assert bad.stderr.splitlines() == [
        f"Error: {path}: plugins.entries.voice-call.config.streaming.enabled: streamed "
        "conversations need a TTS service: set tts.provider (openai or elevenlabs) and its "
        "apiKey",
        f"{path}: plugins.entries.voice-call.config.streaming.providers.openai.apiKey: "
        "missing (or set OPENAI_API_KEY)",
    ]
    config = host_config(streaming={"enabled": True, "provider": "deepgram"})
    bad = run(clean, "--config", str(write(tmp_path, config)), "config", "check")
    assert bad.returncode == 2 and "streaming.provider: unknown transcription provider" in (
        bad.stderr)  # fmt: skip
    config = host_config(streaming={"enabled": True, "providers": {"openai": {"apiKey": "k"}}})
    ok = run(clean, "--config", str(write(tmp_path, config)), "config", "check")
    assert ok.returncode == 0, ok.stderr
    assert_no_secret(bad, ok)
