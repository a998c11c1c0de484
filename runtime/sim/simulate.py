"""Simulated calls: a flow, the mock carrier and a caller script, on a virtual clock.

The runtime runs for real (webhook server on loopback, signature checks, SQLite store, the
provider's adapter and SDK) against the mock carrier. Whenever nothing is in flight, the
virtual clock jumps to the next timer, so pauses, timeouts and retries take no time.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from voicecall.dsl.catalog import Catalog
from voicecall.dsl.validate import load_valid_flow
from voicecall.runtime.app import Runtime, RuntimeConfig, ScriptedResponder, start_runtime
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager import CallError
from voicecall.runtime.sim.script import DEFAULT, Script
from voicecall.runtime.state import CallRecord

CALLER = "+15550001111"  # the other party's number in simulations
OWN = "+15550000000"
NORMAL_ENDS = ("completed", "hangup-bot", "hangup-user")


@dataclass(slots=True, kw_only=True)
class Simulation:
    """What happened on a simulated call."""

    flow: str
    provider: str
    record: CallRecord | None
    timeline: list[Any] = field(default_factory=list)  # the carrier's view
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.record is not None and self.record.end_reason in NORMAL_ENDS

    def to_json(self) -> dict[str, Any]:
        rec = self.record
        return {
            "flow": self.flow,
            "provider": self.provider,
            "ok": self.ok,
            "error": self.error,
            "call_id": rec.call_id if rec else None,
            "direction": rec.direction if rec else None,
            "end_reason": rec.end_reason if rec else None,
            "visited": list(rec.visited) if rec else [],
            "transcript": [
                {"speaker": t.speaker, "text": t.text, "source": t.source}
                for t in (rec.transcript if rec else [])
            ],
            "variables": _variables(rec),
            "duration_s": _duration(rec),
        }


def _variables(rec: CallRecord | None) -> dict[str, Any]:
    if rec is None:
        return {}
    top = dict(rec.scopes.get("", {}))
    return {k: v for k, v in top.items() if k not in rec.params}


def _duration(rec: CallRecord | None) -> float | None:
    if rec is None or rec.ended_at is None:
        return None
    return round(rec.ended_at - rec.started_at, 3)


class Simulator:
    """One runtime on the mock carrier, for one or several simulated calls.

    Args:
        provider: the protocol the mock carrier speaks (twilio, plivo, telnyx).
        catalog: the flows.
        config: plugin config keys on top of the simulation's defaults (inbound policy open,
            the store in a temporary folder).
        inbound_flow: the flow that answers inbound calls.
    """

    def __init__(
        self, provider: str = "twilio", *, catalog: Catalog | None = None,
        config: Mapping[str, Any] | None = None, inbound_flow: str = "inbound",
        store_dir: Path | None = None,
    ):  # fmt: skip
        self.provider = provider
        self.catalog = catalog or Catalog()
        self.clock = VirtualClock()
        self.responder = ScriptedResponder([])
        self._stack = contextlib.ExitStack()
        folder = store_dir or Path(self._stack.enter_context(tempfile.TemporaryDirectory()))
        self.config = {"provider": "mock", "store": str(folder), "inboundPolicy": "open",
                       "inboundFlow": inbound_flow, "maxConcurrentCalls": 4, "fromNumber": OWN,
                       "serve": {"port": 0, "bind": "127.0.0.1"}, **(config or {})}  # fmt: skip
        self.runtime: Runtime | None = None

    async def __aenter__(self) -> Simulator:
        self.runtime = await start_runtime(RuntimeConfig(raw=self.config), clock=self.clock,
                                           catalog=self.catalog, responder=self.responder,
                                           mock_backend=self.provider, port=0)  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        self._stack.close()

    async def call(
        self, flow: str, *, script: Script = DEFAULT, params: Mapping[str, Any] | None = None,
        caller: str = CALLER,
    ) -> Simulation:  # fmt: skip
        """Runs one call to its end: outbound to ``caller``, or inbound from ``caller`` when
        the flow is an inbound one."""
        assert self.runtime is not None, "use `async with Simulator(...)`"
        runtime, carrier = self.runtime, self.runtime.carrier
        name = _flow_name(self.catalog, self.catalog.resolve(flow))
        carrier.script = script
        self.responder.replies = list(script.model)
        before = set(carrier.calls)
        try:
            if runtime.manager.compiled(name).flow.direction == "inbound":
                runtime.manager.settings = replace(runtime.manager.settings, inbound_flow=name)
                # The number's own callbacks, as configured at the carrier (DESIGN: see README).
                await carrier.place_inbound(
                    caller, OWN, runtime.webhook_url,
                    status_callback=f"{runtime.webhook_url}?kind=status",
                    hangup_url=f"{runtime.webhook_url}?kind=hangup",
                )  # fmt: skip
                record = None
            else:
                record = await runtime.manager.initiate(to=caller, flow=name, params=params or {})
        except CallError as exc:
            return Simulation(flow=name, provider=self.provider, record=None, error=str(exc))
        turns = _Turns(len(script.agent))
        agent = asyncio.get_running_loop().create_task(_agent(runtime, script, turns))
        error = await _drive(runtime, self.clock, turns)
        agent.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await agent
        new = [pid for pid in carrier.calls if pid not in before]
        timeline = list(getattr(carrier.calls[new[-1]], "timeline", [])) if new else []
        found = _the_call(runtime, record, new[-1] if new else None)
        return Simulation(flow=name, provider=self.provider, record=found, timeline=timeline,
                          error=error)  # fmt: skip


async def simulate(
    flow: str,
    *,
    provider: str = "twilio",
    script: Script = DEFAULT,
    params: Mapping[str, Any] | None = None,
    catalog: Catalog | None = None,
    caller: str = CALLER,
    config: Mapping[str, Any] | None = None,
) -> Simulation:
    """Runs one call of ``flow`` against the mock carrier speaking ``provider``'s protocol."""
    catalog = catalog or Catalog()
    name = _flow_name(catalog, catalog.resolve(flow))
    async with Simulator(provider, catalog=catalog, config=config, inbound_flow=name) as sim:
        return await sim.call(flow, script=script, params=params, caller=caller)


def _flow_name(catalog: Catalog, path: Path) -> str:
    for entry in catalog:
        if entry.path.resolve() == path.resolve():
            return entry.name
    return load_valid_flow(path, catalog.infos()).name


def _the_call(
    runtime: Runtime, record: CallRecord | None, provider_id: str | None
) -> CallRecord | None:
    """The call's final record: by our id (outbound), else by the carrier's (inbound); None
    when no call was created (a rejected caller)."""
    if record is not None:
        return runtime.store.get(record.call_id)
    if provider_id is None:
        return None
    return runtime.store.find(runtime.manager.settings.provider, provider_id)


async def _settle(runtime: Runtime) -> None:
    """Waits until no webhook, REST request or side effect is in flight."""
    quiet = 0
    while quiet < 3:
        await asyncio.sleep(0)
        await runtime.manager.drain()
        busy = not getattr(runtime.carrier, "idle", True)
        quiet = 0 if busy else quiet + 1
        if busy:
            await asyncio.sleep(0.001)


@dataclass(slots=True)
class _Turns:
    """The agent's progress: steps left, and whether one is being taken."""

    left: int
    busy: bool = False


async def _drive(
    runtime: Runtime, clock: VirtualClock, turns: _Turns, limit_s: float = 60.0
) -> str:
    """Runs the call to its end: settle, then jump to the next timer; '' or what went wrong."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s  # a safety net in real time, for a stuck simulation
    while loop.time() < deadline:
        await _settle(runtime)
        if _all_ended(runtime):
            return ""
        if turns.left and not turns.busy and _agent_call(runtime) is not None:
            await asyncio.sleep(0.001)  # the agent's turn comes before time moves on
            continue
        if not clock.advance_to_next():
            await asyncio.sleep(0.01)
            await _settle(runtime)
            if _all_ended(runtime):
                return ""
            if clock.next_due() is None and not turns.busy:
                return "the call is stuck: nothing is in flight and no timer is due"
    return f"the simulation did not finish in {limit_s:.0f}s of real time"


def _all_ended(runtime: Runtime) -> bool:
    calls = list(getattr(runtime.carrier, "calls", {}).values())
    carrier_done = bool(calls) and all(getattr(c, "ended", True) for c in calls)
    return carrier_done and not runtime.store.live()


def _agent_call(runtime: Runtime) -> CallRecord | None:
    """A live call holding for the agent: in an agent-driven conversation, after the caller's
    turn (step 1 on: the caller answered, or stayed silent until the listen timed out)."""
    for call in runtime.store.live():
        options = call.metadata.get("converse") or {}
        waiting = call.waiting
        if (
            waiting
            and waiting.kind == "converse"
            and waiting.step > 0
            and (options.get("driver") == "agent")
        ):
            return call
    return None


async def _agent(runtime: Runtime, script: Script, turns: _Turns) -> None:
    """Plays the agent's turns in a `converse: {driver: agent}`, one step at a time."""
    manager = runtime.manager
    for step in script.agent:
        call = _agent_call(runtime)
        while call is None:
            if _all_ended(runtime):
                return
            await asyncio.sleep(0.001)
            call = _agent_call(runtime)
        turns.busy = True
        try:
            if step.action == "continue":
                await manager.continue_call(call.call_id, step.text)
            elif step.action == "speak":
                await manager.speak(call.call_id, step.text)
            else:
                await manager.end_call(call.call_id)
        except CallError:
            return
        finally:
            turns.busy = False
            turns.left -= 1
