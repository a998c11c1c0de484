"""Gateway auth: shared token/password, loopback-only mode none, the Ed25519 device block."""

from __future__ import annotations

from typing import Any

import pytest
from nacl.signing import SigningKey

from voicecall.plugin.gateway.auth import (
    AuthSettings,
    Challenge,
    authenticate,
    b64url_decode,
    is_loopback,
    same_secret,
)
from voicecall.plugin.host import GatewayError

from .frames import b64url, connect, sign_device

CHALLENGE = Challenge(nonce="138e9ec9-8cf9-459a-940e-25d4686b93e3", ts=1795962678608)
TOKEN = AuthSettings(mode="token", token="s3cret")
PASSWORD = AuthSettings(mode="password", password="pw")


def auth(settings: AuthSettings, frame: dict[str, Any], remote: str = "127.0.0.1") -> str:
    return authenticate(settings, frame["params"], remote=remote, challenge=CHALLENGE,
                        now_ms=CHALLENGE.ts + 50)  # fmt: skip


def refused(settings: AuthSettings, frame: dict[str, Any], remote: str = "127.0.0.1") -> Any:
    with pytest.raises(GatewayError) as caught:
        auth(settings, frame, remote)
    assert caught.value.code == "INVALID_REQUEST"
    return caught.value.message, (caught.value.details or {}).get("code")


def test_token() -> None:
    assert auth(TOKEN, connect(token="s3cret")) == "token"
    assert refused(TOKEN, connect(token="s3creT")) == (
        "unauthorized: gateway token mismatch", "AUTH_TOKEN_MISMATCH")  # fmt: skip
    assert refused(TOKEN, connect()) == (
        "unauthorized: gateway token missing",
        "AUTH_TOKEN_MISSING",
    )
    assert refused(TOKEN, connect(password="s3cret"))[1] == "AUTH_TOKEN_MISSING"


def test_password() -> None:
    assert auth(PASSWORD, connect(password="pw")) == "password"
    assert refused(PASSWORD, connect(password="pW"))[1] == "AUTH_PASSWORD_MISMATCH"
    assert refused(PASSWORD, connect(token="pw"))[1] == "AUTH_PASSWORD_MISSING"


def test_mode_none_admits_loopback_only() -> None:
    none = AuthSettings(mode="none")
    for remote in ("127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"):
        assert auth(none, connect(), remote) == "none"
    for remote in ("10.0.0.2", "::ffff:10.0.0.2", "", "localhost", "192.168.1.1"):
        assert refused(none, connect(), remote)[1] == "AUTH_UNAUTHORIZED"


def test_settings_without_their_secret_cannot_start() -> None:
    assert AuthSettings(mode="token").problem() is not None
    assert AuthSettings(mode="password", token="t").problem() is not None
    assert AuthSettings(mode="none").problem() is None
    assert TOKEN.problem() is None


def test_same_secret() -> None:
    assert same_secret("abc", "abc")
    assert not same_secret("abc", "abcd")
    assert not same_secret("", "abc")


def test_loopback() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1")
    assert not is_loopback("not an address")


def test_b64url() -> None:
    assert b64url_decode(b64url(b"\xff\xfe\x00")) == b"\xff\xfe\x00"
    for bad in ("+/+/", "ab$d", "é"):
        with pytest.raises(ValueError):
            b64url_decode(bad)


KEY = SigningKey(bytes(range(32)))


def signed(version: str = "v3", **kw: Any) -> dict[str, Any]:
    frame = connect(token="s3cret")
    args = {"nonce": CHALLENGE.nonce, "signed_at": CHALLENGE.ts, **kw}
    return sign_device(frame, KEY, version=version, **args)


@pytest.mark.parametrize("version", ["v3", "v2"])
def test_a_valid_device_signature_is_accepted(version: str) -> None:
    assert auth(TOKEN, signed(version)) == "token"


# Sent by the real OpenClaw 2026.9.6 SDK (callGatewayFromCli, Node 24) to a capture stub that
# challenged it with this nonce and ts; its token was "T0k".
REAL_NONCE, REAL_TS = "0b7c4f3e-6a51-4d0e-9d2b-5f0c2f1d8e11", 1795971200000
REAL_DEVICE = {
    "id": "65c573ed8702cb35e1d4bb045f76a982dd6e43cba03328c6672fd83674dc633d",
    "publicKey": "6faT2Ku8yX8dKf9qsHrtgRX7RnGiVYj7WiCMlCyrH3s",
    "signature": "Qs3-fX5lOC2ruHQJjNAHlZGZyST29B505Y7TGUVlj4nU8jiRhwGJ5rU"
    "tCJxaN9kEfQfwe8ISJpoMJmcsrntdCg",
    "signedAt": 1795971200000,
    "nonce": "0b7c4f3e-6a51-4d0e-9d2b-5f0c2f1d8e11",
}
REAL_PARAMS = {
    "minProtocol": 4, "maxProtocol": 4,
    "client": {"id": "cli", "version": "2026.9.6", "platform": "linux", "deviceFamily": "Linux",
               "mode": "cli", "instanceId": "12337536-c6d3-4499-bd6c-b282e71e06db"},
    "caps": [], "auth": {"token": "T0k"}, "role": "operator",
    "scopes": ["operator.admin", "operator.read", "operator.write", "operator.approvals",
               "operator.questions", "operator.pairing", "operator.talk.secrets"],
}  # fmt: skip


def real(**change: Any) -> dict[str, Any]:
    params = {**REAL_PARAMS, "device": dict(REAL_DEVICE), **change}
    return {"params": params}


def test_a_device_block_signed_by_the_real_openclaw_verifies() -> None:
    challenge = Challenge(nonce=REAL_NONCE, ts=REAL_TS)
    settings = AuthSettings(mode="token", token="T0k")
    assert authenticate(settings, real()["params"], remote="127.0.0.1", challenge=challenge,
                        now_ms=REAL_TS + 1000) == "token"  # fmt: skip
    with pytest.raises(GatewayError) as caught:  # one scope fewer: not what was signed
        authenticate(settings, real(scopes=["operator.read"])["params"], remote="127.0.0.1",
                     challenge=challenge, now_ms=REAL_TS + 1000)  # fmt: skip
    assert caught.value.details == {"code": "DEVICE_AUTH_SIGNATURE_INVALID"}


def test_the_logged_cli_device_block_verifies() -> None:
    # A device block shaped as the one in reference §2.3 (mode none: empty token in the payload).
    frame = connect()
    sign_device(frame, KEY, nonce=CHALLENGE.nonce, signed_at=CHALLENGE.ts)
    assert auth(AuthSettings(mode="none"), frame) == "none"


@pytest.mark.parametrize(
    ("tamper", "code"),
    [
        (lambda d, p: d.update(nonce="other"), "DEVICE_AUTH_NONCE_MISMATCH"),
        (lambda d, p: d.pop("nonce"), "DEVICE_AUTH_NONCE_REQUIRED"),
        (lambda d, p: d.update(id="0" * 64), "DEVICE_AUTH_DEVICE_ID_MISMATCH"),
        (lambda d, p: d.update(publicKey="abc"), "DEVICE_AUTH_PUBLIC_KEY_INVALID"),
        (lambda d, p: d.update(publicKey="+" * 43), "DEVICE_AUTH_PUBLIC_KEY_INVALID"),
        (lambda d, p: d.update(signature=b64url(b"x" * 64)), "DEVICE_AUTH_SIGNATURE_INVALID"),
        (lambda d, p: d.update(signature="!!"), "DEVICE_AUTH_SIGNATURE_INVALID"),
        (lambda d, p: p.update(scopes=["operator.admin"]), "DEVICE_AUTH_SIGNATURE_INVALID"),
        (lambda d, p: p["client"].update(platform="darwin"), "DEVICE_AUTH_SIGNATURE_INVALID"),
    ],
)  # fmt: skip
def test_a_tampered_device_block_is_refused(tamper: Any, code: str) -> None:
    frame = signed()
    tamper(frame["params"]["device"], frame["params"])
    assert refused(TOKEN, frame)[1] == code


def test_a_stale_device_signature_is_refused() -> None:
    frame = signed(signed_at=CHALLENGE.ts - 11 * 60 * 1000)
    assert refused(TOKEN, frame) == ("device signature expired", "DEVICE_AUTH_SIGNATURE_EXPIRED")


def test_a_signed_device_does_not_replace_the_token() -> None:
    frame = signed()
    frame["params"]["auth"] = {"token": "wrong"}
    assert refused(TOKEN, frame)[1] == "AUTH_TOKEN_MISMATCH"
