"""The voice_call tool: 7 shapes, results as jsonResult, errors as {error}, named flows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.plugin.service_support import CALLEE, run, running, state, until
from voicecall.plugin.host import Tool, ToolContext
from voicecall.plugin.service import VoiceCallService
from voicecall.plugin.tool import make_tool


def details(result: dict[str, Any]) -> Any:
    (content,) = result["content"]
    assert content["type"] == "text"
    assert json.loads(content["text"]) == result["details"]
    return result["details"]


def tool_for(service: VoiceCallService) -> Tool:
    return make_tool(service, ToolContext(session_key="agent:main:main", agent_id="main"))


async def test_a_conversation_through_the_tool(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        tool = tool_for(service)
        placed = details(await tool.execute("t1", {"action": "initiate_call", "message": "Hi",
                                                   "mode": "conversation"}))  # fmt: skip
        call_id = placed["callId"]
        assert service.runtime is not None
        record = service.runtime.manager.get(call_id)
        assert record is not None
        assert record.metadata["requesterSessionKey"] == "agent:main:main"
        assert record.metadata["agentId"] == "main"
        await until(service, lambda: state(service, call_id) == "listening")
        answer = details(await run(service, tool.execute(
            "t2", {"action": "continue_call", "callId": call_id, "message": "And?"})))  # fmt: skip
        assert answer["success"] is True and answer["transcript"]
        for action, extra in (("speak_to_user", {"message": "Ok"}), ("send_dtmf", {"digits": "1"}),
                              ("end_call", {})):  # fmt: skip
            got = details(await tool.execute("t", {"action": action, "callId": call_id, **extra}))
            assert got == {"success": True}
        got = details(await tool.execute("t", {"action": "get_status", "callId": call_id}))
        assert got["found"] is True and got["call"]["callId"] == call_id
        legacy = details(await tool.execute("t", {"mode": "status", "sid": call_id}))
        assert legacy["found"] is True


async def test_a_named_flow_with_its_params(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, events):
        tool = tool_for(service)
        placed = details(await tool.execute("t", {
            "action": "initiate_call", "to": CALLEE, "flow": "appointment-reminder",
            "params": {"patient": "Bo", "when": "today"}}))  # fmt: skip
        await until(service, lambda: bool(events.of("voicecall.transcript", placed["callId"])))
    said = events.of("voicecall.transcript", placed["callId"])[0]["text"]
    assert said.startswith("Hello Bo")


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"action": "get_status"}, "callId required"),
        ({"mode": "status"}, "sid required for status"),
        ({"message": "hi"}, "to required for call"),
        ({"action": "bogus", "message": "hi"}, "to required for call"),
        ({"action": "initiate_call"}, "message required"),
        ({"action": "continue_call", "callId": "x"}, "callId and message required"),
        ({"action": "send_dtmf", "callId": "x", "digits": "1"}, "Call not found"),
        ({"action": "initiate_call", "to": CALLEE, "flow": "appointment-reminder",
          "params": {"patient": "Bo"}}, "flow appointment-reminder needs param when"),
    ],
)  # fmt: skip
async def test_errors_are_results_never_raised(
    tmp_path: Path, params: dict[str, Any], error: str
) -> None:
    async with running(tmp_path) as (service, _):
        result = await tool_for(service).execute("t", params)
    assert details(result) == {"error": error}


async def test_a_disabled_plugin_answers_with_an_error(tmp_path: Path) -> None:
    async with running(tmp_path, enabled=False) as (service, _):
        result = await tool_for(service).execute("t", {"action": "get_status", "callId": "x"})
    assert details(result) == {"error": "Voice call disabled in plugin config"}


async def test_the_schema_has_7_shapes_and_the_flows(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        schema = tool_for(service).parameters
    jsonschema.Draft202012Validator.check_schema(schema)
    shapes = schema["anyOf"]
    assert len(shapes) == 7
    actions = [s["properties"].get("action", {}).get("const") for s in shapes]
    assert actions == ["initiate_call", "continue_call", "speak_to_user", "send_dtmf",
                       "end_call", "get_status", None]  # fmt: skip
    flow = shapes[0]["properties"]["flow"]
    assert "appointment-reminder" in flow["enum"] and "inbound" not in flow["enum"]
    assert "- appointment-reminder: Remind a patient" in flow["description"]
    # The legacy shape takes anything (as the original's union): check initiate_call's own.
    validator = jsonschema.Draft202012Validator(shapes[0])
    good = {"action": "initiate_call", "flow": "appointment-reminder",
            "params": {"patient": "Ann", "when": "today"}}  # fmt: skip
    assert validator.is_valid(good)
    assert not validator.is_valid({**good, "params": {"patient": "Ann"}})
    assert not validator.is_valid({**good, "params": {"patient": 1, "when": "x"}})
    assert not validator.is_valid({"action": "initiate_call", "mode": "notify"})
    assert validator.is_valid({"action": "initiate_call", "message": "Hi"})
    assert not validator.is_valid({"action": "initiate_call", "flow": "nope", "message": "x"})


async def test_a_lone_surrogate_is_an_error_result(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        result = await tool_for(service).execute(
            "t", {"action": "initiate_call", "message": "hi\ud800"}
        )
    assert details(result) == {"error": "message is not valid Unicode text (a lone surrogate)"}
