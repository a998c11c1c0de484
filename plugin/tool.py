"""The ``voice_call`` agent tool: the original's 7 shapes, plus named flows on initiate_call.

Parameters are a union (``anyOf``) of the 6 action shapes and the legacy shape (reference:
openclaw-gateway.md §7). ``initiate_call`` also takes ``flow`` — an enum of the named flows
that may place calls, described one by one — and ``params``, whose schema is each flow's
typed params (``anyOf``, one per flow, paired with its name by ``allOf``/``if``/``then``), so
an agent picks a flow by what it does and fills exactly what it needs.

Results are the original's ``jsonResult``: ``{content: [{type: "text", text}], details}`` with
the RPC payload; errors are ``{error: message}`` results, never raised.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from voicecall.dsl import model as m
from voicecall.plugin.flowparams import params_schema
from voicecall.plugin.host import GatewayError, Tool, ToolContext
from voicecall.plugin.service import VoiceCallService, unicode_problem

log = logging.getLogger("voicecall.plugin")
NAME = "voice_call"
LABEL = "Voice Call"
DESCRIPTION = (
    "Make phone calls and talk with the person called. initiate_call places a call: "
    "mode notify says the message and hangs up, mode conversation says it and waits for "
    "continue_call (say something and get the answer), speak_to_user (say without waiting), "
    "send_dtmf (keypad tones) and end_call; or pick a named `flow` that does a whole job "
    "(its `params` are listed with it). get_status tells where a call is."
)
Result = dict[str, Any]


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _shape(action: str | None, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    properties = dict(props)
    if action is not None:
        properties = {"action": {"const": action, "type": "string"}, **properties}
        required = ["action", *required]
    return {"type": "object", "properties": properties, "required": required}


def outbound_flows(service: VoiceCallService) -> list[m.Flow]:
    """The valid named flows that may place calls, by name."""
    return [e.flow for e in service.catalog if e.ok and e.flow.direction != "inbound"]


def flow_property(flows: list[m.Flow]) -> dict[str, Any]:
    """``flow``: an enum of names; the description lists what each does and needs."""
    lines = ["A named flow to run instead of the mode's: pick it by what it does."]
    for flow in flows:
        needs = ", ".join(f"{p.name} ({p.type}{', required' if p.required else ''})"
                          for p in flow.params) or "no params"  # fmt: skip
        lines.append(f"- {flow.name}: {flow.description} Params: {needs}.")
    return {"type": "string", "enum": [f.name for f in flows], "description": "\n".join(lines)}


def initiate_shape(flows: list[m.Flow]) -> dict[str, Any]:
    props: dict[str, Any] = {
        "message": _string("Intro message"),
        "to": _string("Call target"),
        "mode": {"type": "string", "enum": ["notify", "conversation"]},
        "sessionKey": _string("OpenClaw session key for the call"),
        "dtmfSequence": _string("DTMF digits to play before connect"),
    }
    if not flows:
        return _shape("initiate_call", props, ["message"])
    per_flow = [{"title": f.name, "description": f.description, **params_schema(f)}
                for f in flows]  # fmt: skip
    props["flow"] = flow_property(flows)
    props["params"] = {"description": "The flow's params (see flow).", "anyOf": per_flow}
    shape = _shape("initiate_call", props, ["message"])
    # With a flow, message is only needed when the flow has a message param.
    shape["required"] = ["action"]
    shape["allOf"] = [
        {"if": {"properties": {"flow": {"const": f.name}}, "required": ["flow"]},
         "then": {"properties": {"params": params_schema(f)},
                  **({"required": ["params"]} if _needs_params(f) else {})}}
        for f in flows
    ] + [{"if": {"not": {"required": ["flow"]}}, "then": {"required": ["message"]}}]  # fmt: skip
    return shape


def _needs_params(flow: m.Flow) -> bool:
    return any(p.required and not p.has_default and p.name != "message" for p in flow.params)


def parameters(service: VoiceCallService) -> dict[str, Any]:
    """The tool's JSON Schema: the 7 shapes, with the named flows on initiate_call."""
    call_id = _string("Call ID")
    return {"anyOf": [
        initiate_shape(outbound_flows(service)),
        _shape("continue_call", {"callId": call_id, "message": _string("Follow-up message")},
               ["callId", "message"]),
        _shape("speak_to_user", {"callId": call_id, "message": _string("Message to speak")},
               ["callId", "message"]),
        _shape("send_dtmf", {"callId": call_id, "digits": _string("DTMF digits to send")},
               ["callId", "digits"]),
        _shape("end_call", {"callId": call_id}, ["callId"]),
        _shape("get_status", {"callId": call_id}, ["callId"]),
        _shape(None, {"mode": {"type": "string", "enum": ["call", "status"]},
                      "to": _string("Call target"), "sid": _string("Call SID"),
                      "message": _string("Optional intro message"),
                      "sessionKey": _string("OpenClaw session key for the call"),
                      "dtmfSequence": _string("DTMF digits to play before connect")}, []),
    ]}  # fmt: skip


def json_result(payload: Mapping[str, Any]) -> Result:
    """The original's jsonResult."""
    details = dict(payload)
    return {"content": [{"type": "text", "text": json.dumps(details, indent=2)}],
            "details": details}  # fmt: skip


class _Failure(Exception):
    """A tool error result with the original's text."""


def _pick(params: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    return {k: params[k] for k in keys if params.get(k) is not None}


class VoiceCallTool:
    """Dispatches one tool call to the service (``ensureRuntime`` is the service's check)."""

    def __init__(self, service: VoiceCallService, context: ToolContext):
        self.service = service
        self.context = context
        s = service
        self.actions: dict[str, Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]] = {
            "initiate_call": self._initiate,
            "continue_call": lambda p: s.continue_call(_pick(p, "callId", "message")),
            "speak_to_user": lambda p: s.speak(_pick(p, "callId", "message")),
            "send_dtmf": lambda p: s.dtmf(_pick(p, "callId", "digits")),
            "end_call": lambda p: s.end(_pick(p, "callId")),
            "get_status": self._status,
        }

    async def execute(self, tool_call_id: str, params: Mapping[str, Any]) -> Result:
        given: Mapping[str, Any] = params if isinstance(params, Mapping) else {}
        action = given.get("action")
        run = self.actions.get(action) if isinstance(action, str) else None
        problem = unicode_problem(given)
        if problem is not None:
            return json_result({"error": problem})
        try:
            return json_result(await (run or self._legacy)(given))
        except (GatewayError, _Failure) as exc:
            return json_result({"error": str(exc)})
        except Exception as exc:  # never raised to the agent
            log.error("voice_call %s failed (%s): %s", action or "call", type(exc).__name__, exc)
            return json_result({"error": str(exc) or type(exc).__name__})

    def _session(self, params: Mapping[str, Any]) -> dict[str, Any]:
        out = _pick(params, "sessionKey", "dtmfSequence")
        if self.context.session_key:
            out["requesterSessionKey"] = self.context.session_key
        return out

    async def _initiate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        rpc = {**_pick(params, "message", "to", "mode", "flow", "params"),
               **self._session(params)}  # fmt: skip
        return await self._place(rpc)

    async def _place(self, rpc: dict[str, Any]) -> dict[str, Any]:
        # The session's agent is trusted (the original's agentId); a service stand-in that
        # forwards to a Gateway (MCP) takes the params alone.
        if self.context.agent_id:
            return await self.service.initiate(rpc, agent_id=self.context.agent_id)
        return await self.service.initiate(rpc)

    async def _status(self, params: Mapping[str, Any]) -> dict[str, Any]:
        call_id = params.get("callId")
        if not isinstance(call_id, str) or not call_id.strip():
            raise _Failure("callId required")
        return await self.service.status({"callId": call_id})

    async def _legacy(self, params: Mapping[str, Any]) -> dict[str, Any]:
        if params.get("mode") == "status":
            sid = params.get("sid")
            if not isinstance(sid, str) or not sid.strip():
                raise _Failure("sid required for status")
            return await self.service.status({"sid": sid})
        to = params.get("to")
        if not isinstance(to, str) or not to.strip():
            raise _Failure("to required for call")
        rpc = {**_pick(params, "message", "to"), **self._session(params)}
        return await self._place(rpc)


def make_tool(service: VoiceCallService, context: ToolContext) -> Tool:
    """The ``voice_call`` tool for one agent session (the schema follows the flow folders)."""
    tool = VoiceCallTool(service, context)
    return Tool(name=NAME, label=LABEL, description=DESCRIPTION, parameters=parameters(service),
                execute=tool.execute)  # fmt: skip
