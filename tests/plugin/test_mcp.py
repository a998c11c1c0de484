"""`voicecall mcp` driven by the `mcp` package's own client over stdio: the tool list (voice_call
and one typed tool per named outbound flow, following the flow folders), calls through a real
`voicecall gateway` on the mock carrier, and what a call says with no Gateway running."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

from voicecall.dsl.catalog import Catalog
from voicecall.plugin.mcp_server import flow_tool_schema, flow_tools, tool_name

TOKEN = "mcp-test-token-91c"
CLI = [sys.executable, "-m", "voicecall.plugin.cli_main"]
CUSTOM = """\
version: 1
name: pickup-ready
description: Tell a customer their order is ready for pickup, then hang up.
direction: outbound
params:
  customer: {type: string, required: true, description: Who to greet}
  shelf: {type: integer, description: Where the order waits, default: 1}
start: tell
nodes:
  tell:
    - say: "Hello {{ customer }}, your order is ready on shelf {{ shelf }}."
    - hangup:
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    out = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "VOICECALL_"))}
    out["HOME"] = str(tmp_path)
    return out


@pytest.fixture
def config(tmp_path: Path) -> Path:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "pickup-ready.yaml").write_text(CUSTOM)
    data = {
        "gateway": {"port": free_port(), "auth": {"mode": "token", "token": TOKEN}},
        "plugins": {"entries": {"voice-call": {"config": {
            "provider": "mock", "store": str(tmp_path / "store"), "flows": "flows",
            "serve": {"port": free_port()}}}}},
    }  # fmt: skip
    path = tmp_path / "openclaw.json"
    path.write_text(json.dumps(data, indent=2))
    return path


@pytest.fixture
def gateway(config: Path, env: dict[str, str]) -> Iterator[Path]:
    proc = subprocess.Popen([*CLI, "gateway", "--config", str(config)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready, proc.stderr.read() if proc.stderr else "the gateway exited"
        yield config
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@asynccontextmanager
async def mcp_session(config: Path, env: dict[str, str]) -> AsyncIterator[ClientSession]:
    params = StdioServerParameters(command=sys.executable, env=env,
                                   args=["-m", "voicecall.plugin.cli_main", "--config",
                                         str(config), "mcp"])  # fmt: skip
    async with stdio_client(params) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


def result_json(result: Any) -> Any:
    return json.loads(result.content[0].text)


def test_flow_tools_are_typed_by_the_flow() -> None:
    tools = flow_tools(Catalog([]))
    assert "call_appointment_reminder" in tools and tool_name("a-b-c") == "call_a_b_c"
    assert not any(f.direction == "inbound" for f in tools.values())
    schema = flow_tool_schema(tools["call_appointment_reminder"])
    assert schema["required"] == ["to", "patient", "when"]
    assert schema["properties"]["patient"]["type"] == "string"
    assert schema["additionalProperties"] is False


async def test_tools_follow_the_flow_folders(config: Path, env: dict[str, str]) -> None:
    async with mcp_session(config, env) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"voice_call", "call_appointment_reminder", "call_notify", "call_pickup_ready"} <= (
            set(tools)
        )
        assert not {"call_inbound", "call_ivr_menu", "call_after_hours"} & set(tools)
        pickup = tools["call_pickup_ready"]
        assert pickup.description is not None and "ready for pickup" in pickup.description
        assert pickup.inputSchema["required"] == ["to", "customer"]
        assert pickup.inputSchema["properties"]["shelf"]["type"] == "integer"
        initiate = tools["voice_call"].inputSchema["anyOf"][0]
        assert "pickup-ready" in initiate["properties"]["flow"]["enum"]
        (config.parent / "flows" / "pickup-ready.yaml").unlink()
        later = {t.name for t in (await session.list_tools()).tools}
        assert "call_pickup_ready" not in later and "call_appointment_reminder" in later


async def test_calls_through_the_gateway(gateway: Path, env: dict[str, str]) -> None:
    async with mcp_session(gateway, env) as session:
        placed = await session.call_tool("call_pickup_ready",
                                         {"to": "+15550001234", "customer": "Ann"})  # fmt: skip
        assert placed.isError is False, placed.content
        call_id = result_json(placed)["callId"]
        assert placed.structuredContent == {"callId": call_id, "initiated": True}
        status = await session.call_tool("voice_call",
                                         {"action": "get_status", "callId": call_id})  # fmt: skip
        assert result_json(status)["found"] is True
        assert result_json(status)["call"]["callId"] == call_id
        talk = await session.call_tool("voice_call", {"action": "initiate_call",
                                                      "to": "+15550001235", "message": "Hi",
                                                      "mode": "conversation"})  # fmt: skip
        talk_id = result_json(talk)["callId"]
        answer = await session.call_tool("voice_call", {"action": "continue_call",
                                                        "callId": talk_id,
                                                        "message": "How are you?"})  # fmt: skip
        assert result_json(answer)["success"] is True and result_json(answer)["transcript"]
        ended = await session.call_tool("voice_call", {"action": "end_call", "callId": talk_id})
        assert result_json(ended) == {"success": True}


async def test_errors_are_tool_results(gateway: Path, env: dict[str, str]) -> None:
    async with mcp_session(gateway, env) as session:
        missing = await session.call_tool("voice_call", {"action": "get_status"})
        assert missing.isError is True and result_json(missing) == {"error": "callId required"}
        unknown = await session.call_tool("voice_call",
                                          {"action": "end_call", "callId": "nope"})  # fmt: skip
        assert unknown.isError is True and "error" in result_json(unknown)
        bad = await session.call_tool("call_pickup_ready", {"to": "+15550001234"})
        assert bad.isError is True  # the schema's required param, checked before any call


async def test_no_gateway_says_how_to_start_it(config: Path, env: dict[str, str]) -> None:
    async with mcp_session(config, env) as session:
        result = await session.call_tool("call_notify", {"to": "+15550001234", "message": "x"})
        assert result.isError is True
        assert "voicecall gateway" in result_json(result)["error"]
