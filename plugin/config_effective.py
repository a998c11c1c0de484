"""From a valid config section to the config the plugin runs with, and its redacted view.

The effective config is what the original's entry parse and ``resolveVoiceCallConfig`` make of
the section: every default of the schema filled in, ``enabled`` true when absent (the host's
rule) and ``provider`` mock when unset, credentials from the environment where the section has
none (the manifest's ``channelEnvVars``), the realtime stream path derived from the webhook
path, the store folder, and the plugin's ``tts`` deep-merged over the host's ``messages.tts``.

Secrets never leave this module unredacted in a view: :func:`redacted` hides every path the
manifest marks ``sensitive`` and, as a second net, any key whose name says it holds a secret.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import cache
from typing import Any

KeyPath = tuple[str | int, ...]

REDACTED = "<redacted>"
DEFAULT_STATE_DIR = "~/.openclaw"


@dataclass(frozen=True, slots=True, kw_only=True)
class EnvFallback:
    """A config key that an environment variable fills when the config leaves it out."""

    var: str
    path: tuple[str, ...]
    provider: str | None = None  # only with this provider (None: always)


# The original reads a provider's variables only when that provider is chosen, so a shell
# that exports Twilio keys never leaks them into a Telnyx config.
ENV_FALLBACKS = (
    EnvFallback(var="TELNYX_API_KEY", path=("telnyx", "apiKey"), provider="telnyx"),
    EnvFallback(var="TELNYX_CONNECTION_ID", path=("telnyx", "connectionId"), provider="telnyx"),
    EnvFallback(var="TELNYX_PUBLIC_KEY", path=("telnyx", "publicKey"), provider="telnyx"),
    EnvFallback(var="TWILIO_ACCOUNT_SID", path=("twilio", "accountSid"), provider="twilio"),
    EnvFallback(var="TWILIO_AUTH_TOKEN", path=("twilio", "authToken"), provider="twilio"),
    EnvFallback(var="TWILIO_FROM_NUMBER", path=("fromNumber",), provider="twilio"),
    EnvFallback(var="PLIVO_AUTH_ID", path=("plivo", "authId"), provider="plivo"),
    EnvFallback(var="PLIVO_AUTH_TOKEN", path=("plivo", "authToken"), provider="plivo"),
    EnvFallback(var="NGROK_AUTHTOKEN", path=("tunnel", "ngrokAuthToken")),
    EnvFallback(var="NGROK_DOMAIN", path=("tunnel", "ngrokDomain")),
)

# Key names that hold secrets wherever they appear (tts, streaming and realtime provider blobs
# are free-form, so their secrets cannot all be listed in the manifest).
_SECRET_NAME = re.compile(
    r"(token|secret|password|passwd|api_?key|private_?key|secret_?key|access_?key)$", re.I
)


def with_defaults(schema: Mapping[str, Any], value: Any) -> Any:
    """``value`` with every absent property that has a schema default filled in, recursively.

    An absent object is created only when its schema gives it a default (``{}``), as zod's
    ``.default(…)`` does in the original; optional objects (``twilio``…) stay absent.
    """
    props = schema.get("properties")
    if not isinstance(value, dict) or not isinstance(props, dict):
        return value
    out = dict(value)
    for key, sub in props.items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = with_defaults(sub, out[key])
    return out


def deep_merge(base: Any, override: Any) -> Any:
    """``override`` over ``base``: objects merge key by key, anything else replaces.

    Keys are data: ``__proto__``, ``constructor`` or ``prototype`` are merged like any other
    key and change nothing else (the JavaScript original has to drop them; here they have no
    meaning, and dropping them would lose what the user wrote without a word). Neither input
    is modified.
    """
    if not (isinstance(base, dict) and isinstance(override, dict)):
        return copy.deepcopy(override)
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = deep_merge(out[key], value) if key in out else copy.deepcopy(value)
    return out


def realtime_stream_path(serve_path: str) -> str:
    """The default realtime stream path: ``/voice/webhook`` → ``/voice/stream/realtime``."""
    path = "/" + serve_path.strip("/") if serve_path.strip("/") else "/"
    if path.endswith("/webhook"):
        return path[: -len("/webhook")] + "/stream/realtime"
    return "/voice/stream/realtime" if path == "/" else path + "/stream/realtime"


def effective(
    schema: Mapping[str, Any],
    section: Mapping[str, Any],
    *,
    host: Mapping[str, Any],
    env: Mapping[str, str],
    entry_enabled: bool = True,
) -> tuple[dict[str, Any], dict[KeyPath, str]]:
    """The config the plugin runs with, and which keys came from which environment variable.

    Args:
        schema: the config schema (for the defaults).
        section: the section as written, already valid against the schema.
        host: the whole host config (for ``messages.tts``).
        env: the environment.
        entry_enabled: ``plugins.entries.voice-call.enabled`` (false turns the plugin off).
    """
    out: dict[str, Any] = with_defaults(schema, dict(section))
    out["enabled"] = entry_enabled and bool(section.get("enabled", True))
    if out["enabled"] and not out.get("provider"):
        out["provider"] = "mock"
    from_env = _env_fallbacks(out, env)
    _secret_refs(out, env, from_env)
    realtime = out.get("realtime")
    if isinstance(realtime, dict) and not realtime.get("streamPath"):
        realtime["streamPath"] = realtime_stream_path(str(out["serve"]["path"]))
    flows = out.get("flows")
    if isinstance(flows, dict) and flows.get("inbound") and not out.get("inboundFlow"):
        out["inboundFlow"] = flows["inbound"]
    if not out.get("store"):
        out["store"] = f"{env.get('OPENCLAW_STATE_DIR') or DEFAULT_STATE_DIR}/voice-calls"
    messages = host.get("messages")
    core_tts = messages.get("tts") if isinstance(messages, dict) else None
    if core_tts is not None or "tts" in section:
        out["tts"] = deep_merge(core_tts or {}, section.get("tts") or {})
    return out, from_env


def mode_flow(config: Mapping[str, Any], mode: str) -> str | None:
    """The flow for calls of ``mode`` (notify, conversation, inbound) placed without one:
    ``flows.<mode>`` (and ``inboundFlow`` for inbound), else None."""
    flows = config.get("flows")
    named = flows.get(mode) if isinstance(flows, dict) else None
    if mode == "inbound":
        named = config.get("inboundFlow") or named
    return str(named) if named else None


def _env_fallbacks(out: dict[str, Any], env: Mapping[str, str]) -> dict[KeyPath, str]:
    used: dict[KeyPath, str] = {}
    for fallback in ENV_FALLBACKS:
        if fallback.provider not in (None, out.get("provider")):
            continue
        value = (env.get(fallback.var) or "").strip()
        *parents, last = fallback.path
        node = out
        for key in parents:
            node = node.setdefault(key, {})
        if value and not node.get(last):
            node[last] = value
            used[fallback.path] = fallback.var
    return used


def _secret_refs(out: dict[str, Any], env: Mapping[str, str], used: dict[KeyPath, str]) -> None:
    """Resolves ``twilio.authToken: {source: "env", id: "VAR"}`` (an OpenClaw SecretRef).

    Other sources (file, exec) stay as written; the load rules refuse them by name.
    """
    twilio = out.get("twilio")
    ref = twilio.get("authToken") if isinstance(twilio, dict) else None
    if isinstance(ref, dict) and ref.get("source") == "env" and isinstance(ref.get("id"), str):
        value = (env.get(ref["id"]) or "").strip()
        if value:
            twilio["authToken"] = value  # type: ignore[index]
            used[("twilio", "authToken")] = ref["id"]
        else:
            twilio.pop("authToken")  # type: ignore[union-attr]


# --- redaction --------------------------------------------------------------------------------


def redacted(value: Any, sensitive: tuple[str, ...], path: KeyPath = ()) -> Any:
    """A copy of ``value`` with every secret replaced by ``<redacted>``.

    Args:
        value: a config (section) as plain data.
        sensitive: dotted path patterns (``tts.providers.*.apiKey``) relative to ``value``.
        path: where ``value`` is (for recursion).
    """
    if path and value is not None and (_is_sensitive(path, sensitive) or _secret_name(path)):
        return REDACTED
    if isinstance(value, dict):
        return {k: redacted(v, sensitive, (*path, str(k))) for k, v in value.items()}
    if isinstance(value, list):
        return [redacted(v, sensitive, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\1{REDACTED}@", value)
    return value


# The password of a URL (`redis://user:password@host`), wherever a URL is written.
_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^/@:]*:)[^/@]+@", re.I)


def _secret_name(path: KeyPath) -> bool:
    last = path[-1]
    return isinstance(last, str) and bool(_SECRET_NAME.search(last))


def _is_sensitive(path: KeyPath, patterns: tuple[str, ...]) -> bool:
    parts = [str(p) for p in path]
    return any(_match(parts, _pattern_parts(pattern)) for pattern in patterns)


@cache
def _pattern_parts(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("."))


def _match(parts: list[str], want: tuple[str, ...]) -> bool:
    # `*` stands for exactly one key; keys are compared whole, so a key with a dot in it
    # cannot pass for two.
    return len(parts) == len(want) and all(
        fnmatchcase(p, w) for p, w in zip(parts, want, strict=True)
    )
