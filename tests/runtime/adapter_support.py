"""Helpers for the adapter tests: independent webhook signers, request builders, a fake REST API.

The signers are written from the carriers' documentation, not from the adapters or the SDKs, and
each test module checks them against the SDK's own validator before trusting them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from aiohttp import web
from jsonschema import Draft202012Validator
from multidict import CIMultiDict

from tests.compiler.conftest import SPECS, _telnyx
from voicecall.runtime.providers.base import AdapterSettings, WebhookRequest

TWILIO_SPEC = SPECS / "twilio.json"
NOW = 1_700_000_000.0  # the adapters' clock in verification tests


# --- signers --------------------------------------------------------------------------------------


def twilio_signature(token: str, url: str, params: Mapping[str, str]) -> str:
    """base64(HMAC-SHA1(token, URL + name/value of each POST field, names sorted))."""
    data = url + "".join(name + params[name] for name in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


def _plivo_v3_data(method: str, url: str, params: Mapping[str, str]) -> str:
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    if method == "GET":
        query.update(params)
        text = "&".join(f"{k}={query[k]}" for k in sorted(query))
        return f"{base}?{text}" if text else base
    text = "&".join(f"{k}={query[k]}" for k in sorted(query))
    head = f"{base}?{text}" if text else base
    if not params:
        return head
    fields = "".join(k + params[k] for k in sorted(params))
    return f"{base}?{text}{'.' if text else ''}{fields}"


def plivo_v3_signature(
    token: str, method: str, url: str, params: Mapping[str, str], nonce: str
) -> str:
    """base64(HMAC-SHA256(token, data + "." + nonce)), data per Plivo's V3 rules."""
    data = f"{_plivo_v3_data(method, url, params)}.{nonce}"
    return base64.b64encode(
        hmac.new(token.encode(), data.encode(), hashlib.sha256).digest()
    ).decode()


def plivo_v2_signature(token: str, url: str, nonce: str) -> str:
    """base64(HMAC-SHA256(token, URL without query + nonce))."""
    parts = urlsplit(url)
    base = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    digest = hmac.new(token.encode(), (base + nonce).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


# --- requests -------------------------------------------------------------------------------------


def form_request(
    url: str,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    method: str = "POST",
) -> WebhookRequest:
    """A form POST (or a GET) as the webhook server hands it to an adapter."""
    form = dict(form or {})
    body = urlencode(form).encode() if method == "POST" else b""
    return WebhookRequest(
        method=method,
        url=url,
        query=dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)),
        headers=CIMultiDict(headers or {}),
        body=body,
        form=form if method == "POST" else {},
    )


def json_request(url: str, body: bytes, headers: Mapping[str, str]) -> WebhookRequest:
    """A JSON POST (Telnyx)."""
    return WebhookRequest(
        method="POST",
        url=url,
        query=dict(parse_qsl(urlsplit(url).query, keep_blank_values=True)),
        headers=CIMultiDict(headers),
        body=body,
    )


def skip_key(request: WebhookRequest) -> str:
    """sha256(method \\n url \\n body): the key the base contract asks for when skipping."""
    return hashlib.sha256(
        request.method.encode() + b"\n" + request.url.encode() + b"\n" + request.body
    ).hexdigest()


def settings(credentials: Mapping[str, str], **options: Any) -> AdapterSettings:
    return AdapterSettings(credentials=dict(credentials), now=lambda: NOW, **options)


# --- a fake REST API ------------------------------------------------------------------------------


@dataclass
class Captured:
    """One request the fake API received."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode(), keep_blank_values=True)


@dataclass
class FakeApi:
    """Answers every request with the first matching canned reply and records it."""

    requests: list[Captured] = field(default_factory=list)
    replies: list[tuple[str, re.Pattern[str], dict[str, str], int, Any]] = field(
        default_factory=list
    )

    def reply(
        self,
        method: str,
        path: str,
        status: int,
        body: Any = None,
        query: dict[str, str] | None = None,
    ) -> None:
        """Replies to ``method`` on paths matching the regex ``path`` whose query holds
        ``query`` (the first added that matches wins); a ``None`` body is an empty reply."""
        self.replies.append((method, re.compile(path), query or {}, status, body))

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Captured(request.method, request.path, dict(request.query),
                                      request.headers, body))  # fmt: skip
        for method, path, query, status, reply in self.replies:
            if (
                method == request.method
                and path.fullmatch(request.path)
                and query.items() <= request.query.items()
            ):
                if reply is None:
                    return web.Response(status=status)
                return web.json_response(reply, status=status)
        return web.json_response({"error": "no canned reply"}, status=599)


# --- spec oracles ---------------------------------------------------------------------------------


@cache
def twilio_form_schema(path: str) -> dict[str, Any]:
    """The form schema of POST ``path`` in Twilio's 2010-04-01 OpenAPI spec."""
    spec = json.loads(TWILIO_SPEC.read_text("utf-8"))
    body = spec["paths"][path]["post"]["requestBody"]["content"]
    schema: dict[str, Any] = body["application/x-www-form-urlencoded"]["schema"]
    return schema


def telnyx_schema(name: str) -> Draft202012Validator:
    """A validator for ``components/schemas/<name>`` of Telnyx's OpenAPI spec."""
    _spec, registry = _telnyx()
    return Draft202012Validator({"$ref": f"urn:telnyx#/components/schemas/{name}"},
                                registry=registry)  # fmt: skip
