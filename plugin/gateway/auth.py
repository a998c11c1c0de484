"""Who may connect: the shared token or password, loopback for mode none, the device signature.

The secret is compared in constant time (both sides hashed first, so not even its length
leaks). A device block, when a client sends one, is verified as OpenClaw's device-auth does:
Ed25519 over the v3 payload (or the legacy v2 one), the key's SHA-256 as its id, the challenge
nonce and a fresh ``signedAt``. There is no pairing here: a valid device adds nothing to what
the shared secret grants, an invalid one is refused.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from voicecall.plugin.host import INVALID_REQUEST, GatewayError

AuthMode = Literal["token", "password", "none"]
SIGNATURE_SKEW_MS = 10 * 60 * 1000  # how old (or early) a device signature may be


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """``gateway.auth``: the mode and its secret (from the config or the environment)."""

    mode: AuthMode = "token"
    token: str | None = None
    password: str | None = None

    def problem(self) -> str | None:
        """Why the gateway cannot start with these settings, or None."""
        if self.mode == "token" and not self.token:
            return ("gateway.auth.mode is token but no token is set: set gateway.auth.token "
                    "or OPENCLAW_GATEWAY_TOKEN")  # fmt: skip
        if self.mode == "password" and not self.password:
            return ("gateway.auth.mode is password but no password is set: set "
                    "gateway.auth.password or OPENCLAW_GATEWAY_PASSWORD")  # fmt: skip
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Challenge:
    nonce: str
    ts: int  # epoch ms


def is_loopback(remote: str) -> bool:
    """127.0.0.0/8, ::1 and their IPv4-mapped form; anything unparsable is not loopback."""
    try:
        address = ipaddress.ip_address(remote.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def same_secret(given: str, expected: str) -> bool:
    """Constant time whatever the lengths: compares digests, not the strings."""
    a = hashlib.sha256(given.encode("utf-8", "surrogatepass")).digest()
    b = hashlib.sha256(expected.encode("utf-8", "surrogatepass")).digest()
    return hmac.compare_digest(a, b)


def _refused(message: str, code: str) -> GatewayError:
    return GatewayError(INVALID_REQUEST, message, details={"code": code})


def authenticate(
    settings: AuthSettings, params: Mapping[str, Any], *, remote: str, challenge: Challenge,
    now_ms: int,
) -> str:  # fmt: skip
    """Checks a `connect`'s credentials (params already valid against the schema).

    Returns:
        The ``hello-ok.auth.method``: "token", "password" or "none".

    Raises:
        GatewayError: INVALID_REQUEST with the original's message and ``details.code``.
    """
    auth: Mapping[str, Any] = params.get("auth") or {}
    method = _shared_secret(settings, auth, remote)
    device = params.get("device")
    if device is not None:
        verify_device(device, params, challenge=challenge, now_ms=now_ms)
    return method


def _shared_secret(settings: AuthSettings, auth: Mapping[str, Any], remote: str) -> str:
    if settings.mode == "none":
        if not is_loopback(remote):
            raise _refused("unauthorized: gateway auth mode none accepts loopback clients only",
                           "AUTH_UNAUTHORIZED")  # fmt: skip
        return "none"
    kind = settings.mode
    expected = settings.token if kind == "token" else settings.password
    given = auth.get(kind)
    if not expected:
        raise _refused(f"unauthorized: gateway {kind} not configured",
                       f"AUTH_{kind.upper()}_NOT_CONFIGURED")  # fmt: skip
    if not given:
        raise _refused(f"unauthorized: gateway {kind} missing", f"AUTH_{kind.upper()}_MISSING")
    if not same_secret(str(given), expected):
        raise _refused(f"unauthorized: gateway {kind} mismatch", f"AUTH_{kind.upper()}_MISMATCH")
    return kind


def b64url_decode(text: str) -> bytes:
    """base64url, padded or not; raises ValueError on any other character."""
    if "+" in text or "/" in text or not text.isascii():
        raise ValueError("not base64url")
    standard = text.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("not base64url") from exc


def _norm(value: Any) -> str:
    # OpenClaw lowercases ASCII only (not Unicode case folding), after trimming.
    text = value.strip() if isinstance(value, str) else ""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def signed_payloads(device: Mapping[str, Any], params: Mapping[str, Any]) -> tuple[str, str]:
    """The v3 and the legacy v2 strings a device signs for this `connect`."""
    client: Mapping[str, Any] = params["client"]
    auth: Mapping[str, Any] = params.get("auth") or {}
    token = auth.get("token") or auth.get("deviceToken") or auth.get("bootstrapToken") or ""
    scopes = ",".join(params.get("scopes") or [])
    role = params.get("role") or "operator"
    common = [str(device["id"]), str(client["id"]), str(client["mode"]), str(role), scopes,
              str(device["signedAt"]), str(token), str(device.get("nonce") or "")]  # fmt: skip
    v3 = "|".join(["v3", *common, _norm(client.get("platform")), _norm(client.get("deviceFamily"))])
    return v3, "|".join(["v2", *common])


def verify_device(
    device: Mapping[str, Any], params: Mapping[str, Any], *, challenge: Challenge, now_ms: int
) -> None:
    """Verifies a device block as OpenClaw's device-auth does.

    Raises:
        GatewayError: naming what is wrong (``details.code`` DEVICE_AUTH_*).
    """
    try:
        raw = b64url_decode(str(device["publicKey"]))
        key = VerifyKey(raw) if len(raw) == 32 else None
    except (ValueError, TypeError):
        key = None
    if key is None:
        raise _refused("device public key invalid", "DEVICE_AUTH_PUBLIC_KEY_INVALID")
    if not hmac.compare_digest(hashlib.sha256(raw).hexdigest(), str(device["id"]).lower()):
        raise _refused("device identity mismatch", "DEVICE_AUTH_DEVICE_ID_MISMATCH")
    nonce = device.get("nonce")
    if not nonce:
        raise _refused("device nonce required", "DEVICE_AUTH_NONCE_REQUIRED")
    if not hmac.compare_digest(str(nonce).encode(), challenge.nonce.encode()):
        raise _refused("device nonce mismatch", "DEVICE_AUTH_NONCE_MISMATCH")
    if abs(now_ms - int(device["signedAt"])) > SIGNATURE_SKEW_MS:
        raise _refused("device signature expired", "DEVICE_AUTH_SIGNATURE_EXPIRED")
    try:
        signature = b64url_decode(str(device["signature"]))
    except ValueError:
        signature = b""
    for payload in signed_payloads(device, params):
        try:
            key.verify(payload.encode("utf-8"), signature)
            return
        except (BadSignatureError, ValueError, TypeError):
            continue
    raise _refused("device signature invalid", "DEVICE_AUTH_SIGNATURE_INVALID")
