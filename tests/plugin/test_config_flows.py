"""`flows.<mode>`: a call placed without a flow runs the flow the config names for its mode."""

from __future__ import annotations

import logging
from pathlib import Path

from voicecall.dsl.catalog import Catalog
from voicecall.plugin.service import VoiceCallService
from voicecall.runtime.clock import VirtualClock

from .service_support import CALLEE, Events, state, until

SHOUT = """\
version: 1
name: shout
description: Says the message twice, then hangs up.
direction: outbound
params:
  message: {type: string, required: true, description: What to say}
start: a
nodes:
  a: [{say: "{{ message }}! {{ message }}!"}, hangup]
"""


async def test_a_call_without_a_flow_runs_the_flow_named_for_its_mode(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "shout.yaml").write_text(SHOUT)
    events = Events()
    raw = {"provider": "mock", "store": str(tmp_path / "store"), "toNumber": CALLEE,
           "serve": {"port": 0, "bind": "127.0.0.1"},
           "flows": {"paths": "flows", "notify": "shout"}}  # fmt: skip
    catalog = Catalog([tmp_path / "flows"])
    service = VoiceCallService(raw, config_path=str(tmp_path / "openclaw.json"),
                               logger=logging.getLogger("test"), emit=events.sink,
                               clock=VirtualClock(), catalog=catalog)  # fmt: skip
    await service.start()
    try:
        placed = await service.initiate({"message": "Fire drill", "mode": "notify"})
        await until(service, lambda: state(service, placed["callId"]) == "hangup-bot")
    finally:
        await service.stop()
    said = [p["text"] for p in events.of("voicecall.transcript", placed["callId"])]
    assert said[0] == "Fire drill! Fire drill!"
