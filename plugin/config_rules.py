"""What a JSON Schema cannot say: the original's rules between keys, and the Gateway section.

The provider rules are the original's ``validateProviderConfig`` with its message texts (each
names its key path, ``plugins.entries.voice-call.config.fromNumber is required``); they apply to
the effective config (credentials may come from the environment) of an enabled plugin. Here
they are load errors, not a "setup incomplete" line in a log: a gateway that cannot place a call
does not start. ``voicecall setup`` shows the same texts as checks.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from voicecall.plugin.config_problems import KeyPath, Problem, dotted

DEFAULT_GATEWAY_PORT = 18789
AUTH_MODES = ("token", "password", "none")
TAILSCALE_FUNNEL_PORTS = (443, 8443, 10000)
_CREDENTIALS = {
    "telnyx": (("apiKey", "TELNYX_API_KEY"), ("connectionId", "TELNYX_CONNECTION_ID"),
               ("publicKey", "TELNYX_PUBLIC_KEY")),
    "twilio": (("accountSid", "TWILIO_ACCOUNT_SID"), ("authToken", "TWILIO_AUTH_TOKEN")),
    "plivo": (("authId", "PLIVO_AUTH_ID"), ("authToken", "PLIVO_AUTH_TOKEN")),
}  # fmt: skip


def _name(prefix: KeyPath, *keys: str) -> str:
    return dotted((*prefix, *keys))


def _rule(prefix: KeyPath, path: tuple[str, ...], text: str) -> Problem:
    return Problem(path=(*prefix, *path), message=text, full=True)


def provider_problems(config: Mapping[str, Any], prefix: KeyPath) -> list[Problem]:
    """The original's ``validateProviderConfig``: provider, caller ID, credentials.

    Args:
        config: the effective config (defaults and environment applied).
        prefix: where the section is in the file (its key path).
    """
    if not config.get("enabled"):
        return []
    provider = config.get("provider")
    problems = []
    if not provider:
        problems.append(_rule(prefix, ("provider",), f"{_name(prefix, 'provider')} is required"))
    if not config.get("fromNumber") and provider != "mock":
        env = " (or set TWILIO_FROM_NUMBER env)" if provider == "twilio" else ""
        text = f"{_name(prefix, 'fromNumber')} is required{env}"
        problems.append(_rule(prefix, ("fromNumber",), text))
    given = config.get(str(provider)) or {}
    for key, var in _CREDENTIALS.get(str(provider), ()):
        if key == "publicKey" and config.get("skipSignatureVerification"):
            continue
        if not given.get(key):
            text = f"{_name(prefix, str(provider), key)} is required (or set {var} env)"
            problems.append(_rule(prefix, (str(provider), key), text))
    return problems + mode_problems(config, prefix)


def mode_problems(config: Mapping[str, Any], prefix: KeyPath) -> list[Problem]:
    """Realtime and streaming: what each needs and that they exclude each other."""
    if not config.get("enabled"):
        return []
    realtime = bool((config.get("realtime") or {}).get("enabled"))
    streaming = bool((config.get("streaming") or {}).get("enabled"))
    problems = []
    if realtime and config.get("inboundPolicy", "disabled") == "disabled":
        text = (f'{_name(prefix, "inboundPolicy")} must not be "disabled" when '
                "realtime.enabled is true")  # fmt: skip
        problems.append(_rule(prefix, ("inboundPolicy",), text))
    if realtime and streaming:
        text = (f"{_name(prefix, 'realtime', 'enabled')} and "
                f"{_name(prefix, 'streaming', 'enabled')} cannot both be true")  # fmt: skip
        problems.append(_rule(prefix, ("realtime", "enabled"), text))
    # The original allows streaming on Twilio only and realtime on Twilio and Telnyx: its media
    # streams spoke those protocols only. Ours speak all three, so neither rule is kept.
    return problems


def section_problems(section: Mapping[str, Any], prefix: KeyPath) -> list[Problem]:
    """Rules on the section as written, whatever the provider: always load errors."""
    problems = []
    tailscale = _dict(section.get("tailscale"))  # a wrong type is the schema's to report
    port = tailscale.get("port", 443)
    if tailscale.get("mode") == "funnel" and port not in TAILSCALE_FUNNEL_PORTS:
        text = "Tailscale Funnel HTTPS port must be one of 443, 8443, 10000"
        problems.append(Problem(path=(*prefix, "tailscale", "port"), message=text))
    store = section.get("store")
    if isinstance(store, str) and "://" in store:
        scheme = store.split("://", 1)[0].lower()
        if scheme not in ("redis", "rediss"):
            text = (f"{scheme}:// is not a store; give a folder for the SQLite store, or a "
                    "redis:// URL")  # fmt: skip
            problems.append(Problem(path=(*prefix, "store"), message=text))
    ref = _dict(section.get("twilio")).get("authToken")
    if isinstance(ref, dict) and ref.get("source") in ("file", "exec"):
        text = (f"a secret reference with source {ref.get('source')!r} cannot be resolved here; "
                'write the token, or {source: "env", id: "VAR"}')  # fmt: skip
        problems.append(Problem(path=(*prefix, "twilio", "authToken"), message=text))
    return problems + _allow_from_problems(section, prefix)


def _allow_from_problems(section: Mapping[str, Any], prefix: KeyPath) -> list[Problem]:
    """`serve.metrics.allowFrom`: each an address or a CIDR network (the schema says strings)."""
    allow = _dict(_dict(section.get("serve")).get("metrics")).get("allowFrom")
    problems = []
    for index, value in enumerate(allow if isinstance(allow, list) else []):
        try:
            ipaddress.ip_network(str(value).strip(), strict=False)
        except ValueError:
            text = f"{value!r} is not an address or a CIDR network (such as 10.0.0.0/8 or ::1)"
            path = (*prefix, "serve", "metrics", "allowFrom", index)
            problems.append(Problem(path=path, message=text))
    return problems


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


# --- the Gateway section ------------------------------------------------------------------------

AuthMode = Literal["token", "password", "none"]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayAuth:
    """How Gateway clients authenticate (`gateway.auth`); secrets stay out of ``repr``."""

    mode: AuthMode = "token"
    token: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewaySettings:
    """The `gateway` section as the Gateway and its clients use it."""

    port: int = DEFAULT_GATEWAY_PORT
    auth: GatewayAuth = field(default_factory=GatewayAuth)


def gateway_settings(
    host: Mapping[str, Any], env: Mapping[str, str], *, to_run: bool = False
) -> tuple[GatewaySettings, list[Problem]]:
    """The Gateway settings of a host config, the environment winning over the file.

    Only the keys read here are checked: the rest of `gateway` belongs to OpenClaw.

    Args:
        host: the whole host config.
        env: OPENCLAW_GATEWAY_PORT, OPENCLAW_GATEWAY_TOKEN, OPENCLAW_GATEWAY_PASSWORD.
        to_run: the Gateway will serve with these: its mode's secret must be set.
    """
    section, problems = _object(host, ("gateway",))
    auth, more = _object(section, ("gateway", "auth"))
    problems += more
    port = _port(section.get("port", profile_port(env.get("OPENCLAW_PROFILE"))), problems)
    if env.get("OPENCLAW_GATEWAY_PORT"):
        port = _env_port(env["OPENCLAW_GATEWAY_PORT"], problems, port)
    token = _secret(auth, "token", env.get("OPENCLAW_GATEWAY_TOKEN"), problems)
    password = _secret(auth, "password", env.get("OPENCLAW_GATEWAY_PASSWORD"), problems)
    mode = _mode(auth.get("mode") or ("password" if password and not token else "token"), problems)
    if to_run and mode != "none" and not (token if mode == "token" else password):
        var = f"OPENCLAW_GATEWAY_{mode.upper()}"
        text = f'required when gateway.auth.mode is "{mode}" (or set {var} env)'
        problems.append(Problem(path=("gateway", "auth", mode), message=text))
    settings = GatewaySettings(port=port, auth=GatewayAuth(mode=mode, token=token,
                                                           password=password))  # fmt: skip
    return settings, problems


def profile_port(profile: str | None) -> int:
    """The port when neither the environment nor the config gives one: 18789, or for a named
    OpenClaw profile ``20000 + FNV-1a32(profile) % 40000`` (the ``dev`` profile: 19001)."""
    if not profile:
        return DEFAULT_GATEWAY_PORT
    if profile == "dev":
        return 19001
    digest = 0x811C9DC5
    raw = profile.encode("utf-16-le")
    for i in range(0, len(raw), 2):  # over UTF-16 code units, as JavaScript's charCodeAt
        digest = ((digest ^ int.from_bytes(raw[i : i + 2], "little")) * 0x01000193) & 0xFFFFFFFF
    return 20000 + digest % 40000


def _mode(value: Any, problems: list[Problem]) -> AuthMode:
    for mode in ("token", "password", "none"):
        if value == mode:
            return mode
    text = f"{value!r} is not one of {', '.join(AUTH_MODES)}"
    problems.append(Problem(path=("gateway", "auth", "mode"), message=text))
    return "token"


def _object(
    parent: Mapping[str, Any], path: tuple[str, ...]
) -> tuple[dict[str, Any], list[Problem]]:
    value = parent.get(path[-1], {})
    if value is None or isinstance(value, dict):
        return dict(value or {}), []
    return {}, [Problem(path=path, message="expected an object")]


def _port(value: Any, problems: list[Problem]) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= 65535:
        return value
    text = f"{value!r} is not a port number (1-65535)"
    problems.append(Problem(path=("gateway", "port"), message=text))
    return DEFAULT_GATEWAY_PORT


def _env_port(raw: str, problems: list[Problem], fallback: int) -> int:
    if raw.strip().isdigit() and 0 < int(raw) <= 65535:
        return int(raw)
    text = f"{raw!r} is not a port number (1-65535)"
    problems.append(Problem(path=(), message=text, where="$OPENCLAW_GATEWAY_PORT"))
    return fallback


def _secret(
    auth: Mapping[str, Any], key: str, from_env: str | None, problems: list[Problem]
) -> str | None:
    value = auth.get(key)
    if value is not None and not (isinstance(value, str) and value.strip()):
        problems.append(Problem(path=("gateway", "auth", key), message="expected non-empty text"))
        value = None
    if from_env and from_env.strip():
        return from_env.strip()
    return value.strip() if isinstance(value, str) else None
