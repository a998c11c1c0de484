"""register(api): the original's registrations; the voicecall.* methods over the service."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click
import pytest

from tests.plugin.service_support import CALLEE, FLOWS, run, running, state, until
from voicecall.plugin.entry import register
from voicecall.plugin.host import (
    INVALID_REQUEST,
    READ,
    UNAVAILABLE,
    WRITE,
    ClientInfo,
    GatewayError,
    Registry,
    RequestContext,
    ToolContext,
)
from voicecall.plugin.methods import handler, register_methods

SCOPES = {
    "voicecall.initiate": WRITE, "voicecall.start": WRITE, "voicecall.continue": WRITE,
    "voicecall.continue.start": WRITE, "voicecall.speak": WRITE, "voicecall.dtmf": WRITE,
    "voicecall.end": WRITE, "voicecall.status": READ, "voicecall.continue.result": READ,
    "voicecall.flows": READ,
}  # fmt: skip


def context(method: str) -> RequestContext:
    return RequestContext(method=method, request_id="1:x", client=ClientInfo(conn_id="c"))


def test_the_entry_point_is_published() -> None:
    (found,) = entry_points(group="voicecall.plugins", name="voice-call")
    assert found.load() is register


def test_register_makes_the_originals_registrations(tmp_path: Path) -> None:
    api = Registry(plugin_config={"provider": "mock", "store": str(tmp_path)})
    register(api)
    assert {name: m.scope for name, m in api.methods.items()} == SCOPES
    assert [s.id for s in api.services] == ["voicecall"]
    tool = api.tools[0](ToolContext(session_key="agent:main:main"))
    assert (tool.name, tool.label) == ("voice_call", "Voice Call")
    (registrar, commands) = api.clis[0]
    assert commands == ("voicecall",)
    group = click.Group("voicecall")
    registrar(group)
    assert {"call", "continue", "dtmf", "status"} <= set(group.commands)


def test_a_metadata_pass_starts_nothing(tmp_path: Path) -> None:
    api = Registry(plugin_config={"provider": "mock"}, registration_mode="metadata")
    register(api)
    assert api.services == [] and len(api.methods) == len(SCOPES)


async def call(api: Registry, method: str, params: Any) -> Any:
    return await api.methods[method].handler(params, context(method))


async def test_every_method_through_the_registry(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        api = Registry()
        register_methods(api, service)
        placed = await call(api, "voicecall.initiate", {"message": "Hi", "mode": "conversation"})
        call_id = placed["callId"]
        assert placed == {"callId": call_id, "initiated": True}
        await until(service, lambda: state(service, call_id) == "listening")
        answer = await run(service, call(api, "voicecall.continue",
                                         {"callId": call_id, "message": "And?"}))  # fmt: skip
        assert answer["success"] is True and answer["transcript"]
        op = await call(api, "voicecall.continue.start", {"callId": call_id, "message": "Hm?"})
        await until(service, service._ops[op["operationId"]].task.done)
        result = await call(api, "voicecall.continue.result",
                            {"operationId": op["operationId"]})  # fmt: skip
        assert result["status"] == "completed"
        assert await call(api, "voicecall.speak", {"callId": call_id, "message": "Ok"}) == {
            "success": True}  # fmt: skip
        assert await call(api, "voicecall.dtmf", {"callId": call_id, "digits": "9"}) == {
            "success": True}  # fmt: skip
        status = await call(api, "voicecall.status", {"callId": call_id})
        assert status["call"]["state"] in ("speaking", "listening")
        assert await call(api, "voicecall.end", {"callId": call_id}) == {"success": True}
        flows = await call(api, "voicecall.flows", {})
        assert "appointment-reminder" in [f["name"] for f in flows["flows"]]
        started = await call(api, "voicecall.start", {"to": CALLEE, "message": "Hey"})
        assert started["initiated"] is True


@pytest.mark.parametrize(
    ("method", "params", "code", "message"),
    [
        ("voicecall.initiate", None, INVALID_REQUEST, "message required"),
        ("voicecall.initiate", ["message"], INVALID_REQUEST, "message required"),
        ("voicecall.initiate", {"message": 5}, INVALID_REQUEST, "message required"),
        ("voicecall.start", {"message": "x"}, INVALID_REQUEST, "to required"),
        ("voicecall.continue", {"message": "x"}, INVALID_REQUEST, "callId and message required"),
        ("voicecall.speak", {"callId": " ", "message": "x"}, INVALID_REQUEST,
         "callId and message required"),
        ("voicecall.dtmf", {"callId": "a", "digits": ""}, INVALID_REQUEST,
         "callId and digits required"),
        ("voicecall.end", {"callId": "nope"}, UNAVAILABLE, "Call not found"),
        ("voicecall.continue.result", {}, INVALID_REQUEST, "operationId required"),
    ],
)  # fmt: skip
async def test_bad_params_get_the_original_errors(
    tmp_path: Path, method: str, params: Any, code: str, message: str
) -> None:
    async with running(tmp_path) as (service, _):
        api = Registry()
        register_methods(api, service)
        with pytest.raises(GatewayError) as caught:
            await call(api, method, params)
    assert (caught.value.code, caught.value.message) == (code, message)


async def test_an_unexpected_failure_is_unavailable_in_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(params: Mapping[str, Any]) -> dict[str, Any]:
        raise RuntimeError("disk on fire")

    with caplog.at_level(logging.ERROR, "voicecall.plugin"), pytest.raises(GatewayError) as caught:
        await handler("voicecall.speak", broken, "speak failed")({}, context("voicecall.speak"))
    assert caught.value.shape() == {"code": UNAVAILABLE, "message": "speak failed"}
    assert [r.getMessage() for r in caplog.records] == [
        "voicecall.speak failed (RuntimeError): disk on fire"]  # fmt: skip
    assert all(r.exc_info is None for r in caplog.records)


async def test_a_lone_surrogate_is_refused_and_does_not_poison_the_call(tmp_path: Path) -> None:
    # JSON may carry "\ud800": such text cannot be encoded for a carrier or the store; it
    # used to reach the call, after which speak, continue and even end failed on it.
    async with running(tmp_path) as (service, _):
        api = Registry()
        register_methods(api, service)
        placed = await call(api, "voicecall.initiate", {"message": "Hi", "mode": "conversation"})
        call_id = placed["callId"]
        await until(service, lambda: state(service, call_id) == "listening")
        for method, params in (
            ("voicecall.speak", {"callId": call_id, "message": "a\ud800b"}),
            ("voicecall.initiate", {"message": "x\udfff"}),
            ("voicecall.initiate", {"message": "x", "flow": "notify",
                                    "params": {"message": ["\ud800"]}}),
        ):  # fmt: skip
            with pytest.raises(GatewayError) as caught:
                await call(api, method, params)
            assert caught.value.code == INVALID_REQUEST, caught.value.message
            assert "not valid Unicode text" in caught.value.message
        assert await call(api, "voicecall.end", {"callId": call_id}) == {"success": True}


async def test_a_lone_surrogate_in_a_key_is_named_escaped() -> None:
    async def never(params: Mapping[str, Any]) -> dict[str, Any]:
        raise AssertionError("not reached")

    with pytest.raises(GatewayError) as caught:
        await handler("voicecall.speak", never, "speak failed")(
            {"params": {"k\ud800": 1}}, context("voicecall.speak"))  # fmt: skip
    assert caught.value.message == "params.k\\ud800 is not valid Unicode text (a lone surrogate)"
    caught.value.message.encode("utf-8")


async def test_a_client_names_a_flow_never_a_file_path(tmp_path: Path) -> None:
    # `flow` is one of the named flows (voicecall.flows): a path would let any client make
    # the gateway read files of its choosing as flows, and tell which exist.
    flow = tmp_path / "elsewhere.yaml"
    flow.write_text((FLOWS / "collect-callback.yaml").read_text())
    async with running(tmp_path) as (service, _):
        api = Registry()
        register_methods(api, service)
        for name in (str(flow), "../../etc/passwd", str(FLOWS / "collect-callback.yaml")):
            with pytest.raises(GatewayError) as caught:
                await call(api, "voicecall.initiate", {"message": "Hi", "flow": name})
            assert caught.value.code == INVALID_REQUEST
            assert caught.value.message.startswith(f"no flow named '{name}'")
        placed = await call(api, "voicecall.initiate", {"message": "Hi", "flow": "notify"})
        assert placed["initiated"] is True
