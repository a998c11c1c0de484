"""Webhook signatures, made the way each carrier makes them (the SDKs only check them).

- Twilio: ``X-Twilio-Signature`` = base64(HMAC-SHA1(auth token, URL + name/value of every POST
  parameter, names sorted)) — https://www.twilio.com/docs/usage/webhooks/webhooks-security
- Plivo V3: ``X-Plivo-Signature-V3`` (and ``-Ma-V3``, signed with the main account's token) =
  base64(HMAC-SHA256(auth token, data + "." + nonce)), nonce in ``X-Plivo-Signature-V3-Nonce``
  — https://www.plivo.com/docs/voice/xml/request/validation
- Telnyx: ``telnyx-signature-ed25519`` = base64(Ed25519 signature of ``"{timestamp}|{body}"``),
  timestamp in ``telnyx-timestamp`` — https://developers.telnyx.com/docs/messaging/webhooks

Each signer is checked against the SDK's validator in ``tests/runtime/test_carrier.py``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlsplit, urlunsplit

from nacl.signing import SigningKey

Params = Mapping[str, str | Sequence[str]]


def _values(value: str | Sequence[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def twilio_signature(auth_token: str, url: str, params: Params | None = None) -> str:
    """The ``X-Twilio-Signature`` of a request.

    Args:
        auth_token: the account's auth token.
        url: the full URL requested, query included, exactly as sent.
        params: the POST form fields (none for GET: they are in the URL).

    Returns:
        The base64 signature.
    """
    data = url
    for name in sorted(params or {}):
        # As Twilio's validator: each name's distinct values in order.
        for value in sorted(set(_values((params or {})[name]))):
            data += name + value
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def _sorted_query(params: Mapping[str, Sequence[str]]) -> str:
    return "&".join(f"{name}={value}" for name in sorted(params) for value in sorted(params[name]))


def _plivo_data(method: str, url: str, params: Params) -> str:
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = {k: list(v) for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    if method.upper() == "GET":
        query.update({k: _values(v) for k, v in params.items()})
        text = _sorted_query(query)
        return f"{base}?{text}" if text else base
    text = _sorted_query(query)
    if params:
        # With a body: base?query.<name><value>… (the dot only when there is a query).
        fields = "".join(
            name + value for name in sorted(params) for value in sorted(_values(params[name]))
        )
        return f"{base}?{text}{'.' if text else ''}{fields}"
    return f"{base}?{text}" if text else base


def plivo_v3_signature(auth_token: str, method: str, url: str, params: Params, nonce: str) -> str:
    """The ``X-Plivo-Signature-V3`` of a request.

    Args:
        auth_token: the (sub)account's auth token.
        method: GET or POST.
        url: the full URL requested.
        params: the form fields (POST) or the query fields added to the URL (GET).
        nonce: the value sent in ``X-Plivo-Signature-V3-Nonce``.

    Returns:
        The base64 signature.
    """
    data = f"{_plivo_data(method, url, params)}.{nonce}"
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def plivo_v3_headers(
    auth_token: str,
    method: str,
    url: str,
    params: Params,
    *,
    nonce: str | None = None,
    main_auth_token: str | None = None,
) -> dict[str, str]:
    """The three V3 signature headers Plivo sends with every callback.

    Args:
        auth_token: the (sub)account's auth token.
        method: GET or POST.
        url: the full URL requested.
        params: the form fields (POST) or the query fields added to the URL (GET).
        nonce: a fixed nonce (tests); a random one otherwise.
        main_auth_token: the main account's token for ``-Ma-V3`` (default: ``auth_token``).

    Returns:
        The headers by name.
    """
    nonce = nonce or str(secrets.randbelow(10**20))
    main = main_auth_token or auth_token
    return {
        "X-Plivo-Signature-V3": plivo_v3_signature(auth_token, method, url, params, nonce),
        "X-Plivo-Signature-Ma-V3": plivo_v3_signature(main, method, url, params, nonce),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


def telnyx_headers(signing_key: SigningKey, body: bytes, timestamp: int) -> dict[str, str]:
    """The Ed25519 signature headers of a Telnyx webhook.

    Args:
        signing_key: the private key whose public half the receiver checks with.
        body: the raw JSON body, exactly as sent.
        timestamp: Unix seconds, also sent in ``telnyx-timestamp`` (the receiver rejects
            more than 300 s of skew from its own clock).

    Returns:
        The headers by name.
    """
    signed = signing_key.sign(f"{timestamp}|".encode() + body)
    return {
        "telnyx-signature-ed25519": base64.b64encode(signed.signature).decode(),
        "telnyx-timestamp": str(timestamp),
    }


def public_key_b64(signing_key: SigningKey) -> str:
    """The base64 public key a receiver is configured with (as in Telnyx's portal)."""
    return base64.b64encode(bytes(signing_key.verify_key)).decode()
