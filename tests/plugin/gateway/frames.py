"""Frames as OpenClaw's CLI writes them (reference openclaw-gateway.md §2.2, §2.3), for tests."""

from __future__ import annotations

import base64
import hashlib
import uuid
from typing import Any

from nacl.signing import SigningKey

CLI_SCOPES = ["operator.admin", "operator.read", "operator.write", "operator.approvals",
              "operator.questions", "operator.pairing", "operator.talk.secrets"]  # fmt: skip


def connect(
    *, token: str | None = None, password: str | None = None, scopes: list[str] | None = None,
    min_protocol: int = 4, max_protocol: int = 4, request_id: str | None = None, **extra: Any,
) -> dict[str, Any]:  # fmt: skip
    """The `connect` request of `openclaw gateway call` (2026.9.6)."""
    auth = {k: v for k, v in (("token", token), ("password", password)) if v is not None}
    params: dict[str, Any] = {
        "minProtocol": min_protocol,
        "maxProtocol": max_protocol,
        "client": {"id": "cli", "version": "2026.9.6", "platform": "linux",
                   "deviceFamily": "Linux", "mode": "cli", "instanceId": str(uuid.uuid4())},
        "caps": [],
        "role": "operator",
        "scopes": CLI_SCOPES if scopes is None else scopes,
    }  # fmt: skip
    if auth:
        params["auth"] = auth
    params.update(extra)
    return {"type": "req", "id": request_id or f"1:{uuid.uuid4()}", "method": "connect",
            "params": params}  # fmt: skip


def request(method: str, params: Any = None, *, n: int = 2) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "req", "id": f"{n}:{uuid.uuid4()}", "method": method}
    if params is not None:
        frame["params"] = params
    return frame


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_device(
    frame: dict[str, Any], key: SigningKey, *, nonce: str, signed_at: int, version: str = "v3"
) -> dict[str, Any]:
    """Adds the device block the way device-auth does (Ed25519 over the v3 or v2 payload)."""
    params = frame["params"]
    raw = bytes(key.verify_key)
    device_id = hashlib.sha256(raw).hexdigest()
    client = params["client"]
    token = (params.get("auth") or {}).get("token", "")
    parts = [version, device_id, client["id"], client["mode"], params.get("role", "operator"),
             ",".join(params.get("scopes", [])), str(signed_at), token, nonce]  # fmt: skip
    if version == "v3":
        parts += [client.get("platform", "").strip().lower(),
                  client.get("deviceFamily", "").strip().lower()]  # fmt: skip
    signature = key.sign("|".join(parts).encode()).signature
    params["device"] = {"id": device_id, "publicKey": b64url(raw), "signature": b64url(signature),
                        "signedAt": signed_at, "nonce": nonce}  # fmt: skip
    return frame
