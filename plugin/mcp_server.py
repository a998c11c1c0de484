"""`voicecall mcp`: the voice-call tools over the Model Context Protocol (stdio).

An MCP host (Claude Desktop, an IDE, any agent) starts ``voicecall mcp`` as a child process and
sees:

- ``voice_call``: the agent tool of the plugin (:mod:`voicecall.plugin.tool`), its 7 shapes and
  its named-flow ``initiate_call``, with the same results (``{content, details}``; errors are
  ``{"error": …}`` results marked ``isError``, never protocol failures);
- one typed tool per named outbound flow: ``call_<flow>(to, <the flow's params>)``, e.g.
  ``call_appointment_reminder(to, patient, when)``, described by the flow's description. The
  list is rebuilt from the flow folders on every ``tools/list``, so adding a flow file adds a
  tool.

**It talks to the running Gateway** (``voicecall gateway``) with the CLI's client, one
connection per request, instead of running the runtime itself. An MCP server lives as long as
one agent session and is started once per host; the runtime must own the webhook port, the
carrier's callbacks, timers and the call store for as long as calls last, and be shared by
every door (CLI, OpenClaw, other MCP hosts). Running it in-process would bind ``serve.port``
twice (the original's EADDRINUSE double bind) and hang up calls when the agent session ends.
With no Gateway running, ``tools/list`` still works (flows are read locally) and a call returns
the error saying how to start it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Mapping
from typing import Any, cast

import click

from voicecall.dsl import model as m
from voicecall.dsl.catalog import Catalog
from voicecall.plugin import cli_calls
from voicecall.plugin.config import flow_dirs
from voicecall.plugin.flowparams import params_schema
from voicecall.plugin.gateway import client as gw
from voicecall.plugin.host import ToolContext
from voicecall.plugin.service import VoiceCallService
from voicecall.plugin.tool import DESCRIPTION, NAME, VoiceCallTool, json_result, parameters

log = logging.getLogger("voicecall.mcp")
SERVER_NAME = "voicecall"
TOOL_PREFIX = "call_"
E164 = r"^\+[1-9]\d{1,14}$"


class GatewayOperations:
    """The service operations the ``voice_call`` tool calls, as RPCs to the running Gateway.

    It has the methods of :class:`~voicecall.plugin.service.VoiceCallService` the tool uses,
    and the ``catalog`` of named flows (read from the configured folders each time, so the
    tool's schema follows them).
    """

    def __init__(self, where: gw.Target, plugin: Mapping[str, Any], base_dir: Any):
        self.where = where
        self.plugin = dict(plugin)
        self.base_dir = base_dir

    @property
    def catalog(self) -> Catalog:
        return Catalog(flow_dirs(self.plugin, self.base_dir))

    async def _call(self, method: str, params: Mapping[str, Any], timeout_s: float) -> Any:
        return await gw.call(self.where, method, dict(params), timeout_s=timeout_s)

    async def initiate(self, params: Mapping[str, Any]) -> dict[str, Any]:
        timeout = cli_calls.operation_timeout_s(self.plugin)
        return cast(dict[str, Any], await self._call("voicecall.initiate", params, timeout))

    async def continue_call(self, params: Mapping[str, Any]) -> dict[str, Any]:
        fallback = cli_calls.continue_timeout_s(self.plugin)
        return await cli_calls.continue_call(self.where, params, fallback_s=fallback)

    async def speak(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], await self._call("voicecall.speak", params, 30.0))

    async def dtmf(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], await self._call("voicecall.dtmf", params, 30.0))

    async def end(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], await self._call("voicecall.end", params, 30.0))

    async def status(self, params: Mapping[str, Any]) -> dict[str, Any]:
        return cast(dict[str, Any], await self._call("voicecall.status", params, 10.0))


# --- the flow tools -------------------------------------------------------------------------------


def tool_name(flow_name: str) -> str:
    """``appointment-reminder`` -> ``call_appointment_reminder`` (MCP names: letters, digits,
    ``_``; a flow name is lower-case letters, digits and hyphens)."""
    return TOOL_PREFIX + re.sub(r"[^a-zA-Z0-9_]", "_", flow_name)


def flow_tool_schema(flow: m.Flow) -> dict[str, Any]:
    """``to`` (the number to call) and the flow's typed params, at the top level."""
    schema = params_schema(flow)
    properties = {"to": {"type": "string", "pattern": E164,
                         "description": "The number to call, E.164 (+15551234567)"},
                  **schema["properties"]}  # fmt: skip
    return {"type": "object", "properties": properties, "required": ["to", *schema.get(
        "required", [])], "additionalProperties": False}  # fmt: skip


def flow_tool_description(flow: m.Flow) -> str:
    return (f"Place a phone call that runs the `{flow.name}` flow: {flow.description} "
            "Returns {callId, initiated}; follow the call with voice_call get_status "
            "(and continue_call / end_call for conversations).")  # fmt: skip


def flow_tools(catalog: Catalog) -> dict[str, m.Flow]:
    """Tool name -> flow, for every valid flow that may place calls (a flow with a param
    named ``to`` would clash with the number: it is left to ``voice_call``)."""
    out: dict[str, m.Flow] = {}
    for entry in catalog:
        flow = entry.flow
        if not entry.ok or flow.direction == "inbound" or flow.param("to") is not None:
            continue
        name = tool_name(flow.name)
        if name in out or name == NAME:
            log.warning("flow %s: tool name %s is taken; use voice_call with flow", flow.name,
                        name)  # fmt: skip
            continue
        out[name] = flow
    return out


# --- the server -----------------------------------------------------------------------------------


def build_server(operations: GatewayOperations) -> Any:
    """The MCP server (low-level API: the tool list is computed on each request)."""
    from mcp import types
    from mcp.server.lowlevel import Server

    server: Server[Any, Any] = Server(SERVER_NAME)
    tool = VoiceCallTool(cast(VoiceCallService, operations), ToolContext())

    @server.list_tools()  # type: ignore[no-untyped-call, untyped-decorator]
    async def list_tools() -> list[types.Tool]:
        duck = cast(VoiceCallService, operations)
        tools = [types.Tool(name=NAME, description=DESCRIPTION,
                            inputSchema={"type": "object", **parameters(duck)})]  # fmt: skip
        for name, flow in flow_tools(operations.catalog).items():
            tools.append(types.Tool(name=name, description=flow_tool_description(flow),
                                    inputSchema=flow_tool_schema(flow)))  # fmt: skip
        return tools

    @server.call_tool()  # type: ignore[untyped-decorator]
    async def call_tool(name: str, arguments: dict[str, Any]) -> types.CallToolResult:
        if name == NAME:
            result = await tool.execute("mcp", arguments)
        else:
            result = await _call_flow(operations, name, arguments)
        details = result.get("details") or {}
        text = result["content"][0]["text"]
        return types.CallToolResult(
            content=[types.TextContent(type="text", text=text)],
            structuredContent=details if isinstance(details, dict) else None,
            isError=isinstance(details, dict) and "error" in details,
        )

    return server


async def _call_flow(
    operations: GatewayOperations, name: str, arguments: Mapping[str, Any]
) -> dict[str, Any]:
    flow = flow_tools(operations.catalog).get(name)
    if flow is None:
        return json_result({"error": f"unknown tool {name}"})
    params = {k: v for k, v in arguments.items() if k != "to"}
    rpc = {"to": arguments.get("to"), "flow": flow.name, "params": params}
    try:
        return json_result(await operations.initiate(rpc))
    except Exception as exc:  # a tool error is a result, never a protocol failure
        return json_result({"error": str(exc) or type(exc).__name__})


async def serve_stdio(operations: GatewayOperations) -> None:
    from mcp.server.stdio import stdio_server

    server = build_server(operations)
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


# --- `voicecall mcp` ------------------------------------------------------------------------------


@click.command("mcp")
@cli_calls.gateway_options
@click.pass_obj
def mcp_cmd(state: Any, url: str | None, token: str | None, password: str | None) -> None:
    """Serve the voice_call tool and one tool per named outbound flow over MCP (stdio).

    The tools call the running Gateway (`voicecall gateway`); stdout carries only the
    protocol, logs go to stderr.
    """
    loaded = cli_calls.host(state)
    where = cli_calls.target(state, {"url": url, "token": token, "password": password})
    operations = GatewayOperations(where, loaded.plugin, loaded.base_dir)
    logging.basicConfig(level=logging.WARNING, format="voicecall mcp: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):  # the host closing the session
        asyncio.run(serve_stdio(operations))


def register(group: click.Group) -> None:
    group.add_command(mcp_cmd)
