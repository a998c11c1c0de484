"""Every key and default of the newest schema (reference §9) is in the manifest's schema."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voicecall.plugin.config import config_schema, load_config
from voicecall.plugin.config_effective import with_defaults

INSTRUCTIONS = (
    "You are OpenClaw's phone-call realtime voice interface. Keep spoken replies brief and "
    "natural. When a question needs deeper reasoning, current information, or tools, call "
    "openclaw_agent_consult before answering. When the caller asks to end the call, speak any "
    "final words first, then call openclaw_end_call; it ends the call immediately and nothing "
    "after it will be spoken."
)

# The newest schema's defaults, written out from the reference table (not from the manifest).
DEFAULTS: dict[str, Any] = {
    "inboundPolicy": "disabled", "allowFrom": [], "numbers": {},
    "outbound.defaultMode": "notify", "outbound.notifyHangupDelaySec": 3,
    "maxDurationSeconds": 300, "staleCallReaperSeconds": 120, "silenceTimeoutMs": 800,
    "transcriptTimeoutMs": 180000, "ringTimeoutMs": 30000, "maxConcurrentCalls": 1,
    "serve.port": 3334, "serve.bind": "127.0.0.1", "serve.path": "/voice/webhook",
    "tailscale.mode": "off", "tailscale.port": 443, "tailscale.path": "/voice/webhook",
    "tunnel.provider": "none", "tunnel.allowNgrokFreeTierLoopbackBypass": False,
    "webhookSecurity.allowedHosts": [], "webhookSecurity.trustForwardingHeaders": False,
    "webhookSecurity.trustedProxyIPs": [],
    "streaming.enabled": False, "streaming.streamPath": "/voice/stream",
    "streaming.providers": {}, "streaming.preStartTimeoutMs": 5000,
    "streaming.maxPendingConnections": 32, "streaming.maxPendingConnectionsPerIp": 4,
    "streaming.maxConnections": 128,
    "realtime.enabled": False, "realtime.instructions": INSTRUCTIONS,
    "realtime.toolPolicy": "safe-read-only", "realtime.consultPolicy": "auto",
    "realtime.tools": [], "realtime.providers": {},
    "realtime.fastContext.enabled": False, "realtime.fastContext.timeoutMs": 800,
    "realtime.fastContext.maxResults": 3, "realtime.fastContext.sources": ["memory", "sessions"],
    "realtime.fastContext.fallbackToConsult": False,
    "realtime.agentContext.enabled": False, "realtime.agentContext.maxChars": 6000,
    "realtime.agentContext.includeIdentity": True,
    "realtime.agentContext.includeWorkspaceFiles": True,
    "realtime.agentContext.files": ["SOUL.md", "IDENTITY.md", "USER.md"],
    "sessionScope": "per-phone", "skipSignatureVerification": False, "responseTimeoutMs": 30000,
}  # fmt: skip

# Keys of the newest schema without a default (optional), each with a valid value.
OPTIONAL: dict[str, Any] = {
    "provider": "mock", "telnyx.apiKey": "k", "telnyx.connectionId": "c",
    "telnyx.publicKey": "p", "twilio.accountSid": "AC1", "twilio.authToken": "t",
    "twilio.region": "au1", "plivo.authId": "MA1", "plivo.authToken": "t",
    "fromNumber": "+15550001234", "toNumber": "+15550004321", "inboundGreeting": "Hi",
    "tunnel.ngrokAuthToken": "n", "tunnel.ngrokDomain": "d.ngrok.app",
    "streaming.provider": "openai", "realtime.provider": "openai",
    "realtime.streamPath": "/voice/rt", "realtime.consultThinkingLevel": "ultra",
    "realtime.consultFastMode": True, "publicUrl": "https://example.com/voice/webhook",
    "tts": {"provider": "openai"}, "store": "calls", "agentId": "main",
    "responseModel": "openai/gpt-4o-mini", "responseSystemPrompt": "Be brief.",
    "numbers": {"+15550001234": {"inboundGreeting": "Hello", "tts": {}, "agentId": "a",
                                 "responseModel": "m", "responseSystemPrompt": "p",
                                 "responseTimeoutMs": 5000, "flow": "inbound"}},
    "flows": {"paths": ["flows"], "notify": "n", "conversation": "c", "inbound": "i"},
}  # fmt: skip


def _set(target: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        target = target.setdefault(key, {})
    target[last] = value


def _get(source: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        source = source[key]
    return source


def _write(tmp_path: Path, section: dict[str, Any]) -> Path:
    path = tmp_path / "openclaw.json"
    host = {"plugins": {"entries": {"voice-call": {"config": section}}}}
    path.write_text(json.dumps(host, indent=2))
    return path


def _schema_defaults(schema: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    found = {}
    for key, sub in schema.get("properties", {}).items():
        if "default" in sub and "properties" not in sub:
            found[prefix + key] = sub["default"]
        found |= _schema_defaults(sub, f"{prefix}{key}.")
    return found


def test_an_empty_config_gets_every_default_of_the_newest_schema(tmp_path: Path) -> None:
    plugin = load_config(_write(tmp_path, {}), env={}).plugin
    for dotted, default in DEFAULTS.items():
        assert _get(plugin, dotted) == default, dotted
    assert plugin["enabled"] is True and plugin["provider"] == "mock"  # the entry's parse


def test_every_default_written_out_is_accepted_and_kept(tmp_path: Path) -> None:
    """Walks the schema: each key with a default, written explicitly with that value, loads."""
    walked = _schema_defaults(config_schema())
    assert set(DEFAULTS) <= set(walked)
    section: dict[str, Any] = {}
    for dotted, default in walked.items():
        _set(section, dotted, default)
    plugin = load_config(_write(tmp_path, section), env={}).plugin
    for dotted, default in walked.items():
        if dotted != "enabled":  # schema default false: written out, it turns the plugin off
            assert _get(plugin, dotted) == default, dotted
    assert plugin["enabled"] is False


@pytest.mark.parametrize("dotted", sorted(OPTIONAL))
def test_every_optional_key_of_the_newest_schema_is_accepted(tmp_path: Path, dotted: str) -> None:
    section: dict[str, Any] = {}
    _set(section, dotted, OPTIONAL[dotted])
    plugin = load_config(_write(tmp_path, section), env={}).plugin
    value = _get(plugin, dotted)
    if isinstance(value, dict):  # defaults were filled in beside what was written
        assert value | OPTIONAL[dotted] == value
    else:
        assert value == OPTIONAL[dotted]


def test_filling_defaults_creates_only_objects_that_have_one() -> None:
    filled = with_defaults(config_schema(), {})
    assert "serve" in filled and "realtime" in filled
    assert not {"twilio", "telnyx", "plivo", "fromNumber", "tts"} & set(filled)
