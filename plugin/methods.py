"""The ``voicecall.*`` Gateway methods: thin handlers over :class:`VoiceCallService`.

Each handler takes the raw params (anything: a client may send a list or nothing), hands them
to the service and returns its payload. Bad input and unknown calls come back as the service's
INVALID_REQUEST errors; any unexpected failure becomes UNAVAILABLE with the original's
"<method> failed" text and one log line (never a traceback to the client). Scopes as the
original (reference: openclaw-gateway.md §5): writes for what changes a call, reads for status,
continue.result and our flows list.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from voicecall.plugin.host import (
    READ,
    WRITE,
    GatewayError,
    PluginApi,
    RequestContext,
    Scope,
    invalid,
    unavailable,
)
from voicecall.plugin.service import VoiceCallService, unicode_problem

log = logging.getLogger("voicecall.plugin")
Operation = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


def _flows(service: VoiceCallService) -> Operation:
    async def flows(params: Mapping[str, Any]) -> dict[str, Any]:
        return service.flows()

    return flows


def method_table(service: VoiceCallService) -> dict[str, tuple[Operation, Scope, str]]:
    """Method name: (operation, scope, the failure text of an unexpected error)."""
    return {
        "voicecall.initiate": (service.initiate, WRITE, "initiate failed"),
        "voicecall.start": (service.start_call, WRITE, "initiate failed"),
        "voicecall.continue": (service.continue_call, WRITE, "continue failed"),
        "voicecall.continue.start": (service.continue_start, WRITE, "continue failed"),
        "voicecall.continue.result": (service.continue_result, READ, "continue failed"),
        "voicecall.speak": (service.speak, WRITE, "speak failed"),
        "voicecall.dtmf": (service.dtmf, WRITE, "dtmf failed"),
        "voicecall.end": (service.end, WRITE, "end failed"),
        "voicecall.status": (service.status, READ, "status failed"),
        "voicecall.flows": (_flows(service), READ, "flows failed"),
    }


def handler(name: str, operation: Operation, failed: str) -> Callable[..., Awaitable[Any]]:
    async def handle(params: Any, context: RequestContext) -> dict[str, Any]:
        given: Mapping[str, Any] = params if isinstance(params, Mapping) else {}
        problem = unicode_problem(given)
        if problem is not None:
            raise invalid(problem)
        try:
            return await operation(given)
        except GatewayError:
            raise
        except Exception as exc:  # a bug or a runtime failure: one line, not a traceback
            log.error("%s failed (%s): %s", name, type(exc).__name__, exc)
            raise unavailable(failed) from exc

    return handle


def register_methods(api: PluginApi, service: VoiceCallService) -> None:
    """Registers every ``voicecall.*`` method with its scope."""
    for name, (operation, scope, failed) in method_table(service).items():
        api.register_gateway_method(name, handler(name, operation, failed), scope=scope)
