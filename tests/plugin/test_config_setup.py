"""run_setup_checks: the original's check ids and texts over an effective config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voicecall.plugin.config import load_config
from voicecall.plugin.setup_checks import run_setup_checks

PREFIX = "plugins.entries.voice-call.config"
IDS = ["plugin-enabled", "provider", "provider-config", "webhook-exposure", "mode"]


def checks_of(tmp_path: Path, env: dict[str, str] | None = None, **section: Any) -> dict[str, Any]:
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps({"plugins": {"entries": {"voice-call": {"config": section}}}}))
    status = run_setup_checks(load_config(path, env=env or {}).plugin)
    assert [c["id"] for c in status["checks"]] == IDS
    return status


def by_id(status: dict[str, Any]) -> dict[str, tuple[bool, str]]:
    return {c["id"]: (c["ok"], c["message"]) for c in status["checks"]}


def test_the_mock_provider_passes_every_check(tmp_path: Path) -> None:
    status = checks_of(tmp_path)
    assert status["ok"] is True
    assert by_id(status) == {
        "plugin-enabled": (True, "Voice Call plugin is enabled"),
        "provider": (True, "Provider configured: mock"),
        "provider-config": (True, "Provider credentials/config look complete"),
        "webhook-exposure": (True, "Mock provider does not need a public webhook"),
        "mode": (True, "Notify/conversation calls use normal TTS/STT flow"),
    }


def test_missing_credentials_are_listed_with_the_originals_texts(tmp_path: Path) -> None:
    status = checks_of(tmp_path, provider="twilio", twilio={"accountSid": "AC1"})
    assert status["ok"] is False
    assert by_id(status)["provider-config"] == (False, (
        f"{PREFIX}.fromNumber is required (or set TWILIO_FROM_NUMBER env); "
        f"{PREFIX}.twilio.authToken is required (or set TWILIO_AUTH_TOKEN env)"))  # fmt: skip
    env = {"TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM_NUMBER": "+15550001234"}
    status = checks_of(tmp_path, env, provider="twilio", twilio={"accountSid": "AC1"})
    assert by_id(status)["provider-config"][0] is True


LOCAL = ["http://127.0.0.1:3334/voice/webhook", "http://[::1]:3334/voice/webhook",
         "http://[fd00::1]/voice/webhook", "https://10.1.2.3/voice/webhook",
         "http://printer.local/x"]  # fmt: skip


@pytest.mark.parametrize("url", LOCAL)
def test_a_public_url_on_a_local_address_fails_webhook_exposure(tmp_path: Path, url: str) -> None:
    status = checks_of(tmp_path, provider="telnyx", publicUrl=url, skipSignatureVerification=True)
    assert by_id(status)["webhook-exposure"] == (
        False,
        f"Public webhook URL is local/private and cannot be reached by telnyx: {url}",
    )


def test_webhook_exposure_by_url_tunnel_or_tailscale(tmp_path: Path) -> None:
    plivo: dict[str, Any] = {"provider": "plivo"}
    assert by_id(checks_of(tmp_path, **plivo))["webhook-exposure"] == (
        False,
        "Set publicUrl or configure tunnel/tailscale so the provider can reach webhooks",
    )
    url = "https://calls.example.com/voice/webhook"
    assert by_id(checks_of(tmp_path, **plivo, publicUrl=url))["webhook-exposure"] == (
        True,
        f"Public webhook URL configured: {url}",
    )
    tunnel = checks_of(tmp_path, **plivo, tunnel={"provider": "ngrok"})
    assert by_id(tunnel)["webhook-exposure"] == (True, "Webhook exposure configured through tunnel")
    tailscale = checks_of(tmp_path, **plivo, tailscale={"mode": "serve"})
    assert by_id(tailscale)["webhook-exposure"] == (
        True,
        "Webhook exposure configured through Tailscale",
    )


def test_the_mode_check_and_a_disabled_plugin(tmp_path: Path) -> None:
    status = checks_of(tmp_path, provider="twilio", streaming={"enabled": True,
                                                               "provider": "openai"})  # fmt: skip
    assert by_id(status)["mode"] == (True, "Streaming transcription enabled (openai)")
    status = checks_of(tmp_path, inboundPolicy="open", realtime={"enabled": True})
    assert by_id(status)["mode"] == (True, "Realtime voice enabled (first registered provider)")
    off = by_id(checks_of(tmp_path, enabled=False))
    assert off["plugin-enabled"] == (False, "Enable plugins.entries.voice-call.enabled")
    assert off["provider"] == (False, "Set plugins.entries.voice-call.config.provider")
    assert off["provider-config"][0] is True  # the original checks nothing when disabled
    both = run_setup_checks({"enabled": True, "provider": "twilio", "streaming": {"enabled": True},
                             "realtime": {"enabled": True}})  # fmt: skip
    assert by_id(both)["mode"] == (
        False,
        "streaming.enabled and realtime.enabled cannot both be true",
    )
