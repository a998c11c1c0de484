"""`voicecall setup`: the original's checks of a plugin config, with its ids and texts.

Each check is ``{"id", "ok", "message"}``; ``provider-config`` lists the original's
``validateProviderConfig`` errors joined with ``; ``, and ``webhook-exposure`` says whether a
carrier can reach the webhooks (a public URL on a loopback or private address cannot be).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from voicecall.plugin.config import SECTION
from voicecall.plugin.config_rules import provider_problems

# RFC 6598 shared address space (carrier-grade NAT): not reachable from a carrier either.
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def run_setup_checks(config: Mapping[str, Any]) -> dict[str, Any]:
    """The setup status of an effective plugin config: ``{"ok", "checks": [...]}``."""
    enabled = bool(config.get("enabled"))
    provider = config.get("provider")
    errors = [p.message for p in provider_problems(config, SECTION)]
    exposure_ok, exposure = webhook_exposure(config)
    checks = [
        _check("plugin-enabled", enabled, "Voice Call plugin is enabled" if enabled
               else "Enable plugins.entries.voice-call.enabled"),
        _check("provider", bool(provider), f"Provider configured: {provider}" if provider
               else "Set plugins.entries.voice-call.config.provider"),
        _check("provider-config", not errors,
               "; ".join(errors) or "Provider credentials/config look complete"),
        _check("webhook-exposure", exposure_ok, exposure),
        _mode_check(config),
    ]  # fmt: skip
    return {"ok": all(c["ok"] for c in checks), "checks": checks}


def _check(check_id: str, ok: bool, message: str) -> dict[str, Any]:
    return {"id": check_id, "ok": ok, "message": message}


def _mode_check(config: Mapping[str, Any]) -> dict[str, Any]:
    streaming = config.get("streaming") or {}
    realtime = config.get("realtime") or {}
    if streaming.get("enabled") and realtime.get("enabled"):
        message = "streaming.enabled and realtime.enabled cannot both be true"
        return _check("mode", False, message)
    if realtime.get("enabled"):
        message = (
            f"Realtime voice enabled ({realtime.get('provider') or 'first registered provider'})"
        )
    elif streaming.get("enabled"):
        provider = streaming.get("provider") or "first registered provider"
        message = f"Streaming transcription enabled ({provider})"
    else:
        message = "Notify/conversation calls use normal TTS/STT flow"
    return _check("mode", True, message)


def webhook_exposure(config: Mapping[str, Any]) -> tuple[bool, str]:
    """Whether the carrier can reach the webhooks, and the original's sentence saying so."""
    provider = config.get("provider")
    if provider == "mock":
        return True, "Mock provider does not need a public webhook"
    public = config.get("publicUrl")
    if public:
        if is_local_only_url(str(public)):
            who = provider or "the provider"
            return (
                False,
                f"Public webhook URL is local/private and cannot be reached by {who}: {public}",
            )
        return True, f"Public webhook URL configured: {public}"
    if (config.get("tunnel") or {}).get("provider", "none") != "none":
        return True, "Webhook exposure configured through tunnel"
    if (config.get("tailscale") or {}).get("mode", "off") != "off":
        return True, "Webhook exposure configured through Tailscale"
    return False, "Set publicUrl or configure tunnel/tailscale so the provider can reach webhooks"


def is_local_only_url(url: str) -> bool:
    """A URL whose host a carrier cannot reach: loopback, private, link-local, local names."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return False  # the schema reports malformed URLs; this only classifies hosts
    if host == "localhost" or host.endswith(_LOCAL_SUFFIXES):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_unspecified
            or ip.is_reserved or ip.is_multicast or ip in _SHARED)  # fmt: skip
