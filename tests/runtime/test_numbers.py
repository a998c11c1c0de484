"""Config `numbers`: the dialled number picks the inbound flow, the greeting and the responder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from voicecall.dsl.catalog import Catalog, bundled_dir
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.sim.simulate import Simulator
from voicecall.runtime.state import CallRecord

PROVIDERS = ("twilio", "plivo", "telnyx")
CLINIC, SHOP = "+15550009999", "+15550008888"
NUMBERS = {
    CLINIC: {"inboundGreeting": "Welcome to the clinic.", "responseModel": "small",
             "responseTimeoutMs": 4000, "agentId": "nurse"},
    SHOP: {"flow": "ivr-menu"},
}  # fmt: skip


class Recorder:
    def __init__(self) -> None:
        self.options: list[dict[str, Any]] = []

    async def reply(self, call: CallRecord, heard: str, options: Mapping[str, Any]) -> str:
        self.options.append(dict(options))
        return "Goodbye."


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_dialled_number_picks_greeting_and_responder(provider: str) -> None:
    async with Simulator(provider, config={"numbers": NUMBERS}) as sim:
        assert sim.runtime is not None
        recorder = Recorder()
        sim.runtime.manager.responder = recorder
        caller = Script(caller=(Step(action="answer"), Step(action="say", value="hello")))
        routed = await sim.call("inbound", own=CLINIC, script=caller)
        plain = await sim.call("inbound", own="+15550007777", script=caller)
    assert routed.record is not None and plain.record is not None
    assert routed.said[0] == "Welcome to the clinic."
    assert plain.said[0] == "Hello! How can I help you today?"
    assert routed.record.metadata["number"] == CLINIC
    assert recorder.options[0]["model"] == "small"
    assert recorder.options[0]["timeout_ms"] == 4000
    assert recorder.options[0]["agent_id"] == "nurse"
    assert recorder.options[1].get("model") is None


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_dialled_number_picks_the_flow_by_its_digits(provider: str) -> None:
    catalog = Catalog([bundled_dir() / "examples"])
    async with Simulator(provider, catalog=catalog, config={"numbers": NUMBERS}) as sim:
        caller = Script(caller=(Step(action="answer"), Step(action="press", value="3")))
        # Plivo's webhooks give To without its +: the digits are matched.
        result = await sim.call("inbound", own=SHOP, script=caller)
    assert result.record is not None
    assert result.record.flow == "ivr-menu"
