"""The host API a plugin registers against: the part of OpenClaw's plugin `api` voice-call uses.

OpenClaw loads a plugin and calls its ``register(api)``; the plugin registers Gateway methods
(each with the scope a client needs), its agent tool, its CLI commands and a service the host
starts and stops. `voicecall gateway` is such a host (``voicecall.plugin.gateway``), and any
other Python host can load the plugin the same way through the ``voicecall.plugins`` entry
point. Everything here is plain data and protocols: no I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Scope = Literal["operator.read", "operator.write"]
READ: Scope = "operator.read"
WRITE: Scope = "operator.write"

# The Gateway's error codes (reference: ErrorCodes).
INVALID_REQUEST = "INVALID_REQUEST"
UNAVAILABLE = "UNAVAILABLE"
FORBIDDEN = "FORBIDDEN"


class GatewayError(Exception):
    """A request that fails: becomes ``{"ok": false, "error": {code, message, …}}``."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        details: Mapping[str, Any] | None = None,
        retryable: bool | None = None,
        retry_after_ms: int | None = None,
    ):
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = dict(details) if details is not None else None
        self.retryable = retryable
        self.retry_after_ms = retry_after_ms

    def shape(self) -> dict[str, Any]:
        """The ErrorShape of the protocol, without the keys that are not set."""
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            out["details"] = self.details
        if self.retryable is not None:
            out["retryable"] = self.retryable
        if self.retry_after_ms is not None:
            out["retryAfterMs"] = self.retry_after_ms
        return out


def invalid(message: str) -> GatewayError:
    """The original's VoiceCallCommandInputError: bad or missing params, unknown call."""
    return GatewayError(INVALID_REQUEST, message)


def unavailable(message: str) -> GatewayError:
    """Any other failure of a voicecall method."""
    return GatewayError(UNAVAILABLE, message)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientInfo:
    """Who sent a request: what its `connect` said, once authenticated."""

    conn_id: str
    client_id: str = ""
    mode: str = ""
    role: str = "operator"
    scopes: frozenset[str] = frozenset()
    remote: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestContext:
    """What a method handler gets beside its params."""

    method: str
    request_id: str
    client: ClientInfo


# A handler returns the response payload, or raises GatewayError.
MethodHandler = Callable[[Mapping[str, Any], RequestContext], Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatewayMethod:
    name: str
    handler: MethodHandler
    scope: Scope


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolContext:
    """The agent session a tool is made for (feeds requesterSessionKey and agentId)."""

    session_key: str | None = None
    agent_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Tool:
    """An agent tool: ``execute`` returns ``{content: [{type: "text", text}], details}``
    and never raises (errors are ``{"error": …}`` results)."""

    name: str
    label: str
    description: str
    parameters: Mapping[str, Any]  # JSON Schema
    execute: Callable[[str, Mapping[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """A long-running part of the plugin, started and stopped by the host."""

    id: str
    start: Callable[[], Awaitable[None]]
    stop: Callable[[], Awaitable[None]]


# Events a plugin pushes to every connected Gateway client: (event name, payload).
EventSink = Callable[[str, Mapping[str, Any]], None]


class PluginApi(Protocol):
    """What ``register(api)`` receives."""

    plugin_config: Mapping[str, Any]  # plugins.entries.<id>.config, validated, defaults filled
    config: Mapping[str, Any]  # the whole host config
    config_path: str | None  # the file it came from, if any (relative paths are relative to it)
    registration_mode: Literal["full", "metadata"]
    logger: logging.Logger

    def register_gateway_method(
        self, method: str, handler: MethodHandler, *, scope: Scope
    ) -> None: ...

    def register_tool(self, factory: Callable[[ToolContext], Tool]) -> None: ...

    def register_cli(self, registrar: Callable[[Any], None], *, commands: Sequence[str]) -> None:
        """``registrar(group)`` adds commands to the host's click group."""
        ...

    def register_service(self, service: Service) -> None: ...

    def emit(self, event: str, payload: Mapping[str, Any]) -> None:
        """Pushes an event frame to every connected client allowed to read."""
        ...


@dataclass(slots=True, kw_only=True)
class Registry:
    """A plain PluginApi that records registrations: hosts build on it, tests use it."""

    plugin_config: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    config_path: str | None = None
    registration_mode: Literal["full", "metadata"] = "full"
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("voicecall"))
    methods: dict[str, GatewayMethod] = field(default_factory=dict)
    tools: list[Callable[[ToolContext], Tool]] = field(default_factory=list)
    clis: list[tuple[Callable[[Any], None], tuple[str, ...]]] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    sinks: list[EventSink] = field(default_factory=list)

    def register_gateway_method(self, method: str, handler: MethodHandler, *, scope: Scope) -> None:
        if method in self.methods:
            raise ValueError(f"gateway method {method!r} is registered twice")
        self.methods[method] = GatewayMethod(name=method, handler=handler, scope=scope)

    def register_tool(self, factory: Callable[[ToolContext], Tool]) -> None:
        self.tools.append(factory)

    def register_cli(self, registrar: Callable[[Any], None], *, commands: Sequence[str]) -> None:
        self.clis.append((registrar, tuple(commands)))

    def register_service(self, service: Service) -> None:
        self.services.append(service)

    def emit(self, event: str, payload: Mapping[str, Any]) -> None:
        for sink in list(self.sinks):
            sink(event, payload)
