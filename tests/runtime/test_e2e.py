"""Whole calls through the real webhook server and the mock carrier, on every provider."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.compiler.conftest import telnyx_validator
from tests.runtime.adapter_support import telnyx_schema, twilio_form_schema
from voicecall.dsl.catalog import Catalog, bundled_dir
from voicecall.runtime.manager import CallError
from voicecall.runtime.sim.flowtest import find_tests, load_cases, run_case
from voicecall.runtime.sim.script import AgentStep, Script, Step
from voicecall.runtime.sim.simulate import Simulator

PROVIDERS = ("twilio", "plivo", "telnyx")
CASES = [case for path in find_tests([bundled_dir()]) for case in load_cases(path)]
HERE = Path(__file__).parent


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.file.stem}:{c.name}")
async def test_bundled_flow_tests(case: Any, provider: str) -> None:
    outcome = await run_case(case, provider)
    assert outcome.failures == []


def spec_errors(provider: str, method: str, path: str, body: Any) -> list[str]:
    """What the carrier's OpenAPI spec says is wrong with one REST request."""
    if provider == "twilio" and method == "POST":
        template = ("/2010-04-01/Accounts/{AccountSid}/Calls.json" if path.endswith("/Calls.json")
                    else "/2010-04-01/Accounts/{AccountSid}/Calls/{Sid}.json")  # fmt: skip
        schema = twilio_form_schema(template)
        unknown = [k for k in body if k not in schema.get("properties", {})]
        missing = [k for k in schema.get("required", []) if k not in body]
        return [f"{path}: unknown {unknown}" for _ in [1] if unknown] + [
            f"{path}: missing {missing}" for _ in [1] if missing]  # fmt: skip
    if provider == "telnyx" and method == "POST":
        if path.rstrip("/") == "/v2/calls":
            validator = telnyx_schema("CallRequest")
        else:
            validator = telnyx_validator(path.rsplit("/", 1)[-1])
        return [f"{path}: {e.message}" for e in validator.iter_errors(body)]
    return []


FLOWS = [("appointment-reminder", {"patient": "Ann", "when": "tomorrow"}, ["answer", "1"]),
         ("ivr-menu", {}, ["answer", "2", "5551234567"]),
         ("conversation", {"message": "Hi"}, ["answer", "yes", "no"])]  # fmt: skip


def script(steps: list[str]) -> Script:
    """Caller steps (digits are pressed, words said); the agent takes one turn, then ends."""
    caller = [Step(action="answer")] + [
        Step(action="press", value=s) if s.isdigit() else Step(action="say", value=s)
        for s in steps[1:]
    ]
    agent = (AgentStep(action="continue", text="Anything else?"), AgentStep(action="end"))
    return Script(caller=tuple(caller), agent=agent, model=())


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_every_rest_request_matches_the_carrier_spec(provider: str) -> None:
    checked: list[str] = []
    errors: list[str] = []

    def hook(provider: str, method: str, path: str, body: Any) -> None:
        checked.append(path)
        errors.extend(spec_errors(provider, method, path, body))

    async with Simulator(provider) as sim:
        assert sim.runtime is not None
        sim.runtime.carrier.on_request = hook
        for flow, params, steps in FLOWS:
            result = await sim.call(flow, script=script(steps), params=params)
            assert result.ok, result.error or result.record
    assert errors == []
    assert checked  # the hook saw the requests


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_duplicate_webhooks_change_nothing(provider: str) -> None:
    results = []
    for rate in (0.0, 1.0):
        async with Simulator(provider) as sim:
            assert sim.runtime is not None
            sim.runtime.carrier.duplicate_rate = rate  # every webhook sent twice
            result = await sim.call("appointment-reminder", script=script(["answer", "9", "1"]),
                                    params={"patient": "Ann", "when": "today"})  # fmt: skip
            commands = Counter(r.body.get("command_id") for r in sim.runtime.carrier.requests
                               if isinstance(r.body, dict) and "command_id" in r.body)  # fmt: skip
            assert all(n == 1 for n in commands.values()), commands  # each command sent once
            results.append(result.to_json())
    for data in results:
        data.pop("call_id")
        data.pop("duration_s")
    assert results[0] == results[1]
    assert results[0]["visited"] == ["greet", "confirmed"]


async def test_telnyx_events_out_of_order() -> None:
    async with Simulator("telnyx") as sim:
        assert sim.runtime is not None
        sim.runtime.carrier.reorder_telnyx = True
        result = await sim.call("ivr-menu", script=script(["answer", "3", "9", "2", "5551234567"]))
    assert result.ok
    assert result.record is not None
    assert result.record.visited[:3] == ["menu", "hours", "menu"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_max_duration_runs_the_handler(provider: str) -> None:
    catalog = Catalog([HERE / "flows"])
    async with Simulator(provider, catalog=catalog) as sim:
        result = await sim.call("long-hold")
    assert result.record is not None
    assert result.record.end_reason == "timeout"
    assert result.record.visited == ["wait", "out_of_time"]
    heard = [e.detail["text"] for e in result.timeline if e.what == "say"]
    assert heard == ["Please hold.", "Sorry, time is up. Goodbye."]  # never "Still there?"


async def test_the_concurrency_cap() -> None:
    async with Simulator("twilio", config={"maxConcurrentCalls": 1}) as sim:
        assert sim.runtime is not None
        manager = sim.runtime.manager
        await manager.initiate(to="+15550001111", flow="notify", params={"message": "one"})
        with pytest.raises(CallError, match="maxConcurrentCalls is 1"):
            await manager.initiate(to="+15550002222", flow="notify", params={"message": "two"})


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_agent_turns_record_latency(provider: str) -> None:
    async with Simulator(provider) as sim:
        result = await sim.call("conversation", script=script(["answer", "yes", "no"]),
                                params={"message": "Hi"})  # fmt: skip
    assert result.record is not None
    meta = result.record.metadata
    assert meta["turnCount"] == 1
    assert meta["lastTurnLatencyMs"] >= meta["lastTurnListenWaitMs"] >= 0
    assert meta["lastTurnCompletedAt"] >= result.record.started_at


@pytest.mark.parametrize("provider", ["twilio", "plivo"])
async def test_a_slow_model_reply_is_held_then_pushed(provider: str) -> None:
    class Slow:
        async def reply(self, call: Any, heard: str, options: Any) -> str:
            await asyncio.sleep(0.05)  # slower than the inline wait below
            return "Sorry for the wait: we open at nine."

    caller = (Step(action="answer"), Step(action="say", value="When do you open?"),
              Step(action="hangup", after_s=30))  # fmt: skip
    async with Simulator(provider) as sim:
        assert sim.runtime is not None
        sim.runtime.manager.responder = Slow()
        sim.runtime.manager.inline_reply_s = 0.01
        result = await sim.call("inbound", script=Script(caller=caller))
    heard = [e.detail.get("text") for e in result.timeline if e.what == "say"]
    assert heard[-1] == "Sorry for the wait: we open at nine."
    assert [e.what for e in result.timeline if e.what in ("pause", "redirect")][:1] == ["pause"]
