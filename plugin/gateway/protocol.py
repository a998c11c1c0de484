"""The OpenClaw Gateway protocol v4, server side, as a state machine without I/O.

Like h11 or wsproto: the server feeds each text frame it reads to ``receive`` and gets typed
events back; everything it must write comes back as frames (plain dicts) it serialises. The
rules live here, so each is a unit test: the challenge comes first, the first request must be
``connect`` with valid params and a protocol range holding 4, then ``req`` frames whose method
is known and whose scope the client holds are handed over; everything else gets the error
frame the real Gateway sends (``INVALID_REQUEST`` / ``FORBIDDEN`` with its messages) and, before
the handshake, a close with 1008.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from voicecall.plugin.host import (
    FORBIDDEN,
    INVALID_REQUEST,
    READ,
    WRITE,
    ClientInfo,
    GatewayError,
    Scope,
)

PROTOCOL_VERSION = 4
ADMIN = "operator.admin"  # holds every scope, as in OpenClaw
CLOSE_POLICY = 1008  # a rejected handshake or frame (RFC 6455: policy violation)
CLOSE_TOO_BIG = 1009
CLOSE_RESTART = 1012  # the gateway stops: clients may come back later

_STRING = {"type": "string"}
_STRINGS = {"type": "array", "items": _STRING}
_INT1 = {"type": "integer", "minimum": 1}
AUTH_KEYS = ("token", "bootstrapToken", "deviceToken", "password", "approvalRuntimeToken",
             "agentRuntimeIdentityToken")  # fmt: skip

# ConnectParamsSchema of OpenClaw 2026.9.6: closed objects, unknown keys are refused.
CONNECT_PARAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["minProtocol", "maxProtocol", "client"],
    "properties": {
        "minProtocol": _INT1,
        "maxProtocol": _INT1,
        "client": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "version", "platform", "mode"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "displayName": _STRING,
                "version": _STRING,
                "buildId": {"type": "string", "maxLength": 96},
                "platform": _STRING,
                "deviceFamily": _STRING,
                "modelIdentifier": _STRING,
                "timeZone": {"type": "string", "maxLength": 64},
                "mode": {"type": "string", "minLength": 1},
                "instanceId": _STRING,
            },
        },
        "caps": _STRINGS,
        "commands": {},
        "computerUse": {},
        "workerRuns": {},
        "permissions": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "pathEnv": {},
        "role": _STRING,
        "scopes": _STRINGS,
        "modelCatalog": {},
        "device": {
            "type": "object",
            "additionalProperties": False,
            "required": ["id", "publicKey", "signature", "signedAt"],
            "properties": {
                "id": {"type": "string", "minLength": 1},
                "publicKey": {"type": "string", "minLength": 1},
                "signature": {"type": "string", "minLength": 1},
                "signedAt": {"type": "integer", "minimum": 0},
                "nonce": _STRING,
            },
        },
        "auth": {
            "type": "object",
            "additionalProperties": False,
            "properties": dict.fromkeys(AUTH_KEYS, _STRING),
        },
        "locale": _STRING,
        "userAgent": _STRING,
    },
}

REQUEST_FRAME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type", "id", "method"],
    "properties": {
        "type": {"const": "req"},
        "id": {"type": "string", "minLength": 1},
        "method": {"type": "string", "minLength": 1},
        "params": {},
        "traceparent": {"type": "string", "maxLength": 128},
        "expectedProfileId": _STRING,
    },
}

_CONNECT = Draft202012Validator(CONNECT_PARAMS_SCHEMA)
_REQUEST = Draft202012Validator(REQUEST_FRAME_SCHEMA)


class Phase(Enum):
    CHALLENGED = "challenged"  # the challenge is out; waiting for `connect`
    AUTHENTICATING = "authenticating"  # `connect` read; the server decides
    OPEN = "open"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True, kw_only=True)
class SendFrame:
    frame: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class CloseConnection:
    code: int
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectRequested:
    """A well-formed `connect` whose protocol range fits: the server checks its credentials
    and answers with ``accept`` or ``reject``."""

    request_id: str
    params: Mapping[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestReceived:
    """A request for a registered method the client may call."""

    request_id: str
    method: str
    params: Mapping[str, Any]
    client: ClientInfo


Event = SendFrame | CloseConnection | ConnectRequested | RequestReceived


def has_scope(granted: frozenset[str], needed: str) -> bool:
    """Admin holds every scope and write includes read, as OpenClaw's operator scopes do."""
    if needed in granted or ADMIN in granted:
        return True
    return needed == READ and WRITE in granted


def response(request_id: str, payload: Any) -> dict[str, Any]:
    return {"type": "res", "id": request_id, "ok": True, "payload": payload}


def error_response(request_id: str, error: GatewayError) -> dict[str, Any]:
    return {"type": "res", "id": request_id, "ok": False, "error": error.shape()}


def schema_problem(error: ValidationError) -> str:
    """One validation error in the words of OpenClaw's ajv messages: ``at /client: …``."""
    where = "/" + "/".join(str(p) for p in error.absolute_path) if error.absolute_path else "root"
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        text = f"must have required property '{missing}'"
    elif error.validator == "additionalProperties":
        known = error.schema.get("properties", {}) if isinstance(error.schema, dict) else {}
        given = error.instance if isinstance(error.instance, dict) else {}
        extra = sorted(set(given) - set(known))
        text = f"unexpected property '{extra[0]}'" if extra else "unexpected property"
    elif error.validator == "type":
        text = f"must be {error.validator_value}"
    elif error.validator == "const":
        text = f"must be equal to constant {json.dumps(error.validator_value)}"
    else:
        text = f"must satisfy {error.validator} {json.dumps(error.validator_value)}"
    return f"at {where}: {text}"


def _first_error(validator: Draft202012Validator, value: Any) -> str | None:
    errors = sorted(validator.iter_errors(value), key=lambda e: (list(e.absolute_path), e.message))
    return schema_problem(errors[0]) if errors else None


@dataclass(slots=True, kw_only=True)
class GatewayConnection:
    """One client connection, from the challenge to the close.

    Args:
        conn_id: names the connection in ``hello-ok`` and in logs.
        nonce, now_ms: the challenge (a device signature must sign both).
        methods: the registered methods and the scope each needs.
        max_frame_bytes: a larger frame closes the connection (1009).
    """

    conn_id: str
    nonce: str
    now_ms: int
    methods: Mapping[str, Scope]
    max_frame_bytes: int = 1 << 20
    remote: str = ""
    phase: Phase = Phase.CHALLENGED
    client: ClientInfo | None = None
    _seq: int = field(default=0, repr=False)

    def challenge(self) -> dict[str, Any]:
        """The first frame the server sends, before reading anything."""
        payload = {"nonce": self.nonce, "ts": self.now_ms}
        return {"type": "event", "event": "connect.challenge", "payload": payload}

    def receive(self, text: str) -> list[Event]:
        """Reads one text frame; returns what to do about it."""
        if self.phase in (Phase.CLOSED, Phase.AUTHENTICATING):
            return []  # the server sends nothing until it decided on `connect`
        if len(text.encode("utf-8", "surrogatepass")) > self.max_frame_bytes:
            return self._close(CLOSE_TOO_BIG, "frame too large")
        try:
            frame = json.loads(text)
        except (ValueError, RecursionError):
            return self._bad_frame(None, "invalid request frame: not JSON")
        problem = _first_error(_REQUEST, frame)
        if problem is not None:
            request_id = frame.get("id") if isinstance(frame, dict) else None
            return self._bad_frame(request_id, f"invalid request frame: {problem}")
        if self.phase is Phase.CHALLENGED:
            return self._handshake(frame)
        return self._request(frame)

    def _bad_frame(self, request_id: Any, message: str) -> list[Event]:
        events: list[Event] = []
        if isinstance(request_id, str) and request_id:
            events.append(SendFrame(frame=error_response(request_id, _invalid(message))))
        if self.phase is Phase.CHALLENGED or not events:
            events += self._close(CLOSE_POLICY, "invalid request frame")
        return events

    def _handshake(self, frame: dict[str, Any]) -> list[Event]:
        request_id: str = frame["id"]
        if frame["method"] != "connect":
            return self.reject(
                request_id, _invalid("invalid handshake: first request must be connect")
            )
        params = frame.get("params")
        problem = _first_error(_CONNECT, params)
        if problem is not None:
            return self.reject(request_id, _invalid(f"invalid connect params: {problem}"))
        assert isinstance(params, dict)
        if not params["minProtocol"] <= PROTOCOL_VERSION <= params["maxProtocol"]:
            return self.reject(request_id, protocol_mismatch(params))
        self.phase = Phase.AUTHENTICATING
        return [ConnectRequested(request_id=request_id, params=params)]

    def _request(self, frame: dict[str, Any]) -> list[Event]:
        assert self.client is not None
        request_id: str = frame["id"]
        method: str = frame["method"]
        if method == "connect":
            return self._fail(request_id, "connect is only valid as the first request")
        scope = self.methods.get(method)
        if scope is None:
            return self._fail(request_id, f"unknown method: {method}")
        if not has_scope(self.client.scopes, scope):
            error = GatewayError(FORBIDDEN, f"missing scope: {scope}")
            return [SendFrame(frame=error_response(request_id, error))]
        params = frame.get("params", {})
        if params is None:
            params = {}
        if not isinstance(params, dict):
            return self._fail(request_id, "invalid params: must be an object")
        return [RequestReceived(request_id=request_id, method=method, params=params,
                                client=self.client)]  # fmt: skip

    def _fail(self, request_id: str, message: str) -> list[Event]:
        return [SendFrame(frame=error_response(request_id, _invalid(message)))]

    def accept(
        self, client: ClientInfo, hello: Mapping[str, Any], request_id: str
    ) -> dict[str, Any]:
        """The server let the client in: the ``hello-ok`` response to its `connect`."""
        if self.phase is not Phase.AUTHENTICATING:
            raise RuntimeError(f"accept in phase {self.phase.value}")
        self.client = client
        self.phase = Phase.OPEN
        return response(request_id, dict(hello))

    def reject(self, request_id: str, error: GatewayError) -> list[Event]:
        """Refuses the handshake: the error response, then close 1008."""
        return [SendFrame(frame=error_response(request_id, error)),
                *self._close(CLOSE_POLICY, error.message[:120])]  # fmt: skip

    def event(self, name: str, payload: Any, *, scope: str | None = READ) -> dict[str, Any] | None:
        """An event frame for this client, or None if it may not see it (not connected yet,
        or without ``scope``). Each frame carries the connection's next ``seq``."""
        if self.phase is not Phase.OPEN or self.client is None:
            return None
        if scope is not None and not has_scope(self.client.scopes, scope):
            return None
        self._seq += 1
        return {"type": "event", "event": name, "payload": payload, "seq": self._seq}

    def tick(self, now_ms: int) -> dict[str, Any] | None:
        """The keepalive: without seq, so a client that misses one sees no gap."""
        if self.phase is not Phase.OPEN:
            return None
        return {"type": "event", "event": "tick", "payload": {"ts": now_ms}}

    def _close(self, code: int, reason: str) -> list[Event]:
        self.phase = Phase.CLOSED
        return [CloseConnection(code=code, reason=reason)]

    def closed(self) -> None:
        self.phase = Phase.CLOSED


def _invalid(message: str) -> GatewayError:
    return GatewayError(INVALID_REQUEST, message)


def protocol_mismatch(params: Mapping[str, Any]) -> GatewayError:
    got = f"{params['minProtocol']}..{params['maxProtocol']}"
    return GatewayError(
        INVALID_REQUEST,
        f"protocol mismatch: server speaks {PROTOCOL_VERSION}, client offers {got}",
        details={"code": "PROTOCOL_MISMATCH", "expectedProtocol": PROTOCOL_VERSION},
    )
