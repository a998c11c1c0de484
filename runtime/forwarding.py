"""The URL a carrier signed, rebuilt from a request that may have come through a proxy or tunnel.

Twilio and Plivo sign the URL they requested: ``https://public-host/voice/webhook?...``. Behind
ngrok, Tailscale or nginx the request arrives as ``http://127.0.0.1:3334/voice/webhook?...``,
so without ``publicUrl`` the signed URL is rebuilt from headers. Forwarded headers are written
by whoever sends the request, so they are believed only as ``webhookSecurity`` says (the
original plugin's rules, ``webhook-security.ts``):

- ``X-Forwarded-Proto`` / ``X-Forwarded-Host``, ``X-Original-Host``, ``Ngrok-Forwarded-Host``
  (in that order) are used only when ``allowedHosts`` is set or ``trustForwardingHeaders`` is
  on, **and** the request comes from one of ``trustedProxyIPs`` when that list is set;
- with ``allowedHosts``, a forwarded host outside the list is ignored (the ``Host`` header is
  used instead, so a forged host can only make the signature check fail);
- the ngrok free-tier rule (``tunnel.allowNgrokFreeTierLoopbackBypass`` with ngrok and a
  loopback bind) only adds "trust forwarded headers" for Twilio requests from a loopback
  address: a signature that does not match is refused as always.

Nothing here accepts a request: it only chooses the URL the adapter then checks the signature
against.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# RFC 1123 host names (ngrok and Tailscale names are such names).
_HOSTNAME = re.compile(
    r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?$"
)
_PORT = re.compile(r"^[0-9]{1,5}$")
FORWARDED_HOST_HEADERS = ("X-Forwarded-Host", "X-Original-Host", "Ngrok-Forwarded-Host")


@dataclass(frozen=True, slots=True, kw_only=True)
class ForwardingTrust:
    """``webhookSecurity`` (and the ngrok loopback rule) as the webhook server applies it."""

    allowed_hosts: frozenset[str] = frozenset()  # host names, lower case, without port
    trust_forwarding_headers: bool = False
    trusted_proxy_ips: frozenset[str] = frozenset()  # normalised (see normalise_ip)
    # tunnel.provider ngrok + serve.bind loopback + allowNgrokFreeTierLoopbackBypass.
    ngrok_loopback: bool = False

    @classmethod
    def of(
        cls,
        *,
        allowed_hosts: Iterable[str] = (),
        trust_forwarding_headers: bool = False,
        trusted_proxy_ips: Iterable[str] = (),
        ngrok_loopback: bool = False,
    ) -> ForwardingTrust:
        """From config values: host entries may carry a port; IPs are normalised."""
        hosts = {h for h in (_split_host(e.strip()) for e in allowed_hosts) if h}
        return cls(
            allowed_hosts=frozenset(name for name, _ in hosts),
            trust_forwarding_headers=trust_forwarding_headers,
            trusted_proxy_ips=frozenset(normalise_ip(ip) for ip in trusted_proxy_ips if ip),
            ngrok_loopback=ngrok_loopback,
        )


def normalise_ip(address: str) -> str:
    """An address as compared with ``trustedProxyIPs``: IPv4-mapped IPv6 (``::ffff:10.0.0.1``,
    what a dual-stack socket reports) is the IPv4 address; anything unparsable is kept as is."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return address.strip()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ip)


def is_loopback(address: str) -> bool:
    """127.0.0.0/8, ::1 or ::ffff:127.x (the original's test, on parsed addresses)."""
    try:
        return ipaddress.ip_address(normalise_ip(address)).is_loopback
    except ValueError:
        return False


def trusts_forwarded_headers(trust: ForwardingTrust, *, remote: str, provider: str) -> bool:
    """Whether this request's forwarded headers may shape the signed URL."""
    from_trusted_proxy = not trust.trusted_proxy_ips or normalise_ip(remote) in (
        trust.trusted_proxy_ips
    )
    # The ngrok rule is Twilio's in the original (TwilioProviderOptions), and only on loopback.
    loopback_rule = trust.ngrok_loopback and provider == "twilio" and is_loopback(remote)
    opted_in = bool(trust.allowed_hosts) or trust.trust_forwarding_headers or loopback_rule
    return opted_in and from_trusted_proxy


def signed_url(
    *,
    scheme: str,
    host: str,
    raw_path: str,
    headers: Mapping[str, str],
    remote: str,
    provider: str,
    trust: ForwardingTrust,
) -> str:
    """The URL to check a signature against, when no ``publicUrl`` is configured.

    ``scheme`` and ``host`` are the request's own (``Host`` header); ``raw_path`` is the path
    and query exactly as received.
    """
    if trusts_forwarded_headers(trust, remote=remote, provider=provider):
        proto = _first(headers.get("X-Forwarded-Proto", "")).lower()
        if proto in ("http", "https"):
            scheme = proto
        forwarded = _forwarded_host(headers, trust.allowed_hosts)
        if forwarded:
            host = forwarded
    return f"{scheme}://{host}{raw_path}"


def _forwarded_host(headers: Mapping[str, str], allowed: frozenset[str]) -> str:
    for name in FORWARDED_HOST_HEADERS:
        value = headers.get(name)
        if not value:
            continue
        split = _split_host(_first(value))
        if split is None:
            continue
        hostname, port = split
        if not allowed or hostname in allowed:
            return _join_host(hostname, port)
    return ""


def _first(value: str) -> str:
    """The first of a comma-separated header (proxies append theirs)."""
    return value.split(",", 1)[0].strip()


def _split_host(value: str) -> tuple[str, str] | None:
    """(host name in lower case, port or "") of a Host-style value, or None if it is not one:
    user info (``evil@good``), bad names and bad ports are refused."""
    if not value or "@" in value or "/" in value:
        return None
    if value.startswith("["):  # [v6]:port
        return _split_v6(value)
    name, _, port = value.partition(":")
    if len(name) > 253 or not _HOSTNAME.match(name) or not _valid_port(port):
        return None
    return name.lower(), port


def _split_v6(value: str) -> tuple[str, str] | None:
    name, bracket, rest = value[1:].partition("]")
    if not bracket or (rest and not rest.startswith(":")):
        return None
    try:
        ipaddress.IPv6Address(name)
    except ValueError:
        return None
    port = rest[1:]
    return (f"[{name.lower()}]", port) if _valid_port(port) else None


def _valid_port(port: str) -> bool:
    return not port or bool(_PORT.match(port) and int(port) <= 65535)


def _join_host(hostname: str, port: str) -> str:
    return f"{hostname}:{port}" if port else hostname
