"""Simulated calls: a flow, the mock carrier and a caller script, on a virtual clock.

The runtime runs for real (webhook server on loopback, signature checks, SQLite store, the
provider's adapter and SDK) against the mock carrier. Whenever nothing is in flight, the
virtual clock jumps to the next timer, so pauses, timeouts and retries take no time.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.catalog import Catalog
from voicecall.dsl.errors import FlowError
from voicecall.dsl.validate import load_valid_flow
from voicecall.dsl.values import zone
from voicecall.runtime.app import Runtime, RuntimeConfig, ScriptedResponder, start_runtime
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager import CallError, CallManager
from voicecall.runtime.manager.core import ModelReply
from voicecall.runtime.sim.script import DEFAULT, Script
from voicecall.runtime.state import CallRecord
from voicecall.runtime.voice.responder import openai_options

CALLER = "+15550001111"  # the other party's number in simulations
OWN = "+15550000000"  # ours
START = "2026-01-01T00:00:00+00:00"  # the virtual clock's default start
NORMAL_ENDS = ("completed", "hangup-bot", "hangup-user")


class SimulationError(Exception):
    """A simulation that cannot start: no such flow, a flow with errors, a bad number or time."""


@dataclass(slots=True, kw_only=True)
class Simulation:
    """What happened on a simulated call."""

    flow: str
    provider: str
    record: CallRecord | None  # None: no call was created (a rejected caller)
    timeline: list[Any] = field(default_factory=list)  # the carrier's view
    error: str = ""
    rejection: str | None = None  # why the runtime rejected an inbound caller
    from_number: str = ""
    to_number: str = ""
    started: str = ""  # ISO 8601, in the flow's time zone
    unused: list[str] = field(default_factory=list)  # script steps never used, at file:line:col
    param_names: tuple[str, ...] = ()  # the flow's params: not shown among its variables

    @property
    def ok(self) -> bool:
        """The call ended normally, or the caller was rejected as the policy says."""
        if self.error:
            return False
        if self.rejection is not None:
            return True
        return self.record is not None and self.record.end_reason in NORMAL_ENDS

    @property
    def outcome(self) -> str:
        """rejected, completed (a normal end) or failed."""
        if self.rejection is not None and not self.error:
            return "rejected"
        return "completed" if self.ok else "failed"

    @property
    def transfers(self) -> list[dict[str, Any]]:
        """Each transfer the flow made, with what the callee did: answered, busy, no-answer or
        failed (None: the call ended before any answer)."""
        out: list[dict[str, Any]] = []
        for e in self.timeline:
            if e.who == "bot" and e.what == "dial":
                out.append({"to": list(e.detail.get("to", [])), "outcome": None,
                            "at_s": round(e.t, 3)})  # fmt: skip
            elif e.who == "caller" and e.what == "dial" and out and out[-1]["outcome"] is None:
                out[-1]["outcome"] = e.detail.get("outcome")
        return out

    @property
    def end_reason(self) -> str | None:
        return "rejected" if self.rejection is not None else (
            self.record.end_reason if self.record else None)  # fmt: skip

    @property
    def call_error(self) -> str:
        """What went wrong inside the call (a template that failed), if anything."""
        return str(self.record.metadata.get("error") or "") if self.record else ""

    @property
    def said(self) -> list[str]:
        """What the flow said: the record's transcript, or what a rejected caller heard."""
        if self.record is not None:
            return [t.text for t in self.record.transcript if t.speaker == "bot"]
        return [str(e.detail.get("text", "")) for e in self.timeline
                if e.who == "bot" and e.what == "say"]  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        rec = self.record
        transcript = (
            [{"speaker": t.speaker, "text": t.text, "source": t.source} for t in rec.transcript]
            if rec else [{"speaker": "bot", "text": text, "source": ""} for text in self.said]
        )  # fmt: skip
        return {
            "flow": self.flow,
            "provider": self.provider,
            "ok": self.ok,
            "outcome": self.outcome,
            "error": self.error,
            "call_error": self.call_error,
            "rejection": self.rejection,
            "call_id": rec.call_id if rec else None,
            "direction": rec.direction if rec else ("inbound" if self.rejection else None),
            "from": self.from_number,
            "to": self.to_number,
            "started": self.started,
            "end_reason": self.end_reason,
            "visited": list(rec.visited) if rec else [],
            "transfers": self.transfers,
            "transcript": transcript,
            "variables": _variables(rec, self.param_names),
            "duration_s": _duration(rec, self.timeline),
            "unused_steps": list(self.unused),
        }


def _variables(rec: CallRecord | None, params: tuple[str, ...]) -> dict[str, Any]:
    if rec is None:
        return {}
    top = dict(rec.scopes.get("", {}))
    return {k: v for k, v in top.items() if k not in rec.params and k not in params}


def _duration(rec: CallRecord | None, timeline: list[Any]) -> float | None:
    if rec is None:
        return round(timeline[-1].t, 3) if timeline else None
    if rec.ended_at is None:
        return None
    return round(rec.ended_at - rec.started_at, 3)


def parse_now(text: str, zone_name: str) -> datetime:
    """An ISO 8601 time (``2026-01-05T19:30:00``, with or without offset; a date alone is
    midnight); without an offset it is read in ``zone_name``.

    Raises:
        ValueError: not such a time.
    """
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as "
                         "2026-01-05T19:30:00") from None  # fmt: skip
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone(zone_name))
    if not 1971 <= when.year <= 9998:
        raise ValueError(f"{text!r} is out of range (years 1971 to 9998)")
    return when


class Simulator:
    """One runtime on the mock carrier, for one or several simulated calls.

    Args:
        provider: the protocol the mock carrier speaks (twilio, plivo, telnyx).
        catalog: the flows.
        config: plugin config keys on top of the simulation's defaults (inbound policy open,
            the store in a temporary folder).
        inbound_flow: the flow that answers inbound calls.
        start: the virtual clock's start (seconds since the epoch).
    """

    def __init__(
        self, provider: str = "twilio", *, catalog: Catalog | None = None,
        config: Mapping[str, Any] | None = None, inbound_flow: str = "inbound",
        store_dir: Path | None = None, start: float | None = None,
    ):  # fmt: skip
        self.provider = provider
        self.catalog = catalog or Catalog()
        self.clock = VirtualClock(datetime.fromisoformat(START).timestamp() if start is None
                                  else start)  # fmt: skip
        self.responder = ScriptedResponder([])
        self._stack = contextlib.ExitStack()
        folder = store_dir or Path(self._stack.enter_context(tempfile.TemporaryDirectory()))
        self.config = {"provider": "mock", "store": str(folder), "inboundPolicy": "open",
                       "inboundFlow": inbound_flow, "maxConcurrentCalls": 4, "fromNumber": OWN,
                       "serve": {"port": 0, "bind": "127.0.0.1"}, **(config or {})}  # fmt: skip
        self.runtime: Runtime | None = None

    async def __aenter__(self) -> Simulator:
        # The model's replies come from the script, unless the config names an OpenAI
        # (compatible) service for the responder: then it answers.
        scripted = None if openai_options(self.config, env=False) else self.responder
        self.runtime = await start_runtime(RuntimeConfig(raw=self.config), clock=self.clock,
                                           catalog=self.catalog, responder=scripted,
                                           mock_backend=self.provider, port=0)  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.runtime is not None:
            await self.runtime.stop()
        self._stack.close()

    async def call(
        self, flow: str, *, script: Script = DEFAULT, params: Mapping[str, Any] | None = None,
        caller: str = CALLER, own: str | None = None, inbound: bool | None = None,
    ) -> Simulation:  # fmt: skip
        """Runs one call to its end: outbound from ``own`` to ``caller``, or inbound from
        ``caller`` to ``own`` (default: fromNumber); inbound when the flow is an inbound one,
        unless ``inbound`` says."""
        assert self.runtime is not None, "use `async with Simulator(...)`"
        runtime, carrier = self.runtime, self.runtime.carrier
        manager = runtime.manager
        name = _flow_name(self.catalog, self.catalog.resolve(flow))
        own = own or str(self.config["fromNumber"])
        carrier.script = script
        self.responder.replies = list(script.model)
        before = set(carrier.calls)
        flow_model = manager.compiled(name).flow
        inbound = flow_model.direction == "inbound" if inbound is None else inbound
        numbers = (caller, own) if inbound else (own, caller)
        result = Simulation(flow=name, provider=self.provider, record=None,
                            from_number=numbers[0], to_number=numbers[1],
                            param_names=tuple(p.name for p in flow_model.params))  # fmt: skip
        try:
            record = await self._place(name, inbound, caller, own, params or {})
        except CallError as exc:
            result.error = str(exc)
            return result
        started = self.clock.now()
        turns = _Turns(len(script.agent))
        agent = asyncio.get_running_loop().create_task(_agent(runtime, script, turns))
        result.error = await _drive(runtime, self.clock, turns)
        agent.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await agent
        new = [pid for pid in carrier.calls if pid not in before]
        pid = new[-1] if new else None
        result.timeline = list(getattr(carrier.calls[pid], "timeline", [])) if pid else []
        result.record = _the_call(runtime, record, pid)
        if inbound and result.record is not None and result.record.metadata.get("rejected"):
            # Telnyx: answered only for the caller to hear reject_message.
            result.rejection = str(result.record.metadata["rejected"])
            result.record = None
        elif inbound and result.record is None and not result.error:
            result.rejection = _rejection(manager, name, caller)
        result.started = _local(manager, name, started)
        session = carrier.sessions.get(pid) if pid else None
        result.unused = _unused(script, session, turns, self.responder.replies)
        return result

    async def _place(
        self, name: str, inbound: bool, caller: str, own: str, params: Mapping[str, Any]
    ) -> CallRecord | None:
        """Starts the call: the runtime's record (outbound), or None (inbound: not yet known).

        Raises:
            CallError: the runtime refused the call.
        """
        assert self.runtime is not None
        runtime, manager = self.runtime, self.runtime.manager
        if not inbound:
            manager.settings = replace(manager.settings, from_number=own)
            return await manager.initiate(to=caller, flow=name, params=params)
        flow = manager.compiled(name).flow
        unknown = [k for k in params if flow.param(k) is None]
        if unknown:  # outbound calls get this check from the manager
            names = ", ".join(p.name for p in flow.params) or "none"
            raise CallError(f"flow {name} has no param {', '.join(unknown)} (its params: {names})")
        manager.settings = replace(manager.settings, inbound_flow=name,
                                   inbound_params=dict(params))  # fmt: skip
        # The number's own callbacks, as configured at the carrier (see the README).
        await runtime.carrier.place_inbound(
            caller, own, runtime.webhook_url,
            status_callback=f"{runtime.webhook_url}?kind=status",
            hangup_url=f"{runtime.webhook_url}?kind=hangup",
        )  # fmt: skip
        return None


def _rejection(manager: CallManager, name: str, caller: str) -> str:
    """Why an inbound caller got no call: the admission's reason, else the concurrency cap."""
    admitted, why = manager.admits(manager.compiled(name).flow, caller)
    return why if not admitted else "maxConcurrentCalls reached"


def _local(manager: CallManager, name: str, at: float) -> str:
    flow = manager.compiled(name).flow
    zone_name = flow.timezone or manager.settings.config_view.get("timezone") or "UTC"
    return datetime.fromtimestamp(at, zone(str(zone_name))).isoformat()


def _unused(
    script: Script, session: Any, turns: _Turns, replies: Sequence[str | ModelReply]
) -> list[str]:
    """The script's own steps (not the defaults) the call never used, as `file:line:col: step`."""
    out = []
    caller = getattr(session, "caller", None)
    for step in caller.left if caller is not None else script.turns:
        if step.where:
            out.append(f"{step.where}: {step.action}{': ' + step.value if step.value else ''}")
    for step in script.agent[len(script.agent) - turns.left :] if turns.left else ():
        if step.where:
            out.append(f"{step.where}: agent {step.action}")
    used = len(script.model) - len(replies)
    for where, reply in zip(script.model_at[used:], script.model[used:], strict=False):
        shown = (
            f"done {dict(reply.done)!r}"
            if isinstance(reply, ModelReply) and reply.done is not None
            else f"reply {getattr(reply, 'text', reply)!r}"
        )
        out.append(f"{where}: model {shown}")
    return out


async def simulate(
    flow: str,
    *,
    provider: str = "twilio",
    script: Script = DEFAULT,
    params: Mapping[str, Any] | None = None,
    catalog: Catalog | None = None,
    config: Mapping[str, Any] | None = None,
    from_: str | None = None,
    to: str | None = None,
    now: str | None = None,
    direction: str | None = None,
) -> Simulation:
    """Runs one call of ``flow`` (a name, or the path of a flow file) against the mock carrier
    speaking ``provider``'s protocol.

    Args:
        from_, to: ``call.from`` and ``call.to`` (inbound: the caller, and our number;
            outbound: our number, and the number called).
        now: the simulated start time (see :func:`parse_now`), in the flow's time zone.
        direction: inbound or outbound; default: inbound for an inbound flow, else outbound.

    Raises:
        SimulationError: no such flow, the flow has errors, ``now`` is not a time, or the
            flow does not serve ``direction``.
    """
    catalog, checked = prepare(catalog or Catalog(), flow)
    zone_name = checked.timezone or (config or {}).get("timezone") or "UTC"
    try:
        start = parse_now(now, str(zone_name)).timestamp() if now else None
    except ValueError as exc:
        raise SimulationError(str(exc)) from None
    inbound = _is_inbound(checked, direction)
    caller = (from_ if inbound else to) or CALLER
    own = (to if inbound else from_) or OWN
    async with Simulator(provider, catalog=catalog, config=config, inbound_flow=checked.name,
                         start=start) as sim:  # fmt: skip
        return await sim.call(checked.name, script=script, params=params, caller=caller, own=own,
                              inbound=inbound)  # fmt: skip


def _is_inbound(flow: m.Flow, direction: str | None) -> bool:
    if direction is None:
        return flow.direction == "inbound"
    if flow.direction not in ("any", direction):
        raise SimulationError(f"flow '{flow.name}' serves {flow.direction} calls only, "
                              f"not {direction} ones")  # fmt: skip
    return direction == "inbound"


def prepare(catalog: Catalog, ref: str) -> tuple[Catalog, m.Flow]:
    """The catalog to run ``ref`` (a name, or a flow file's path) with, and the checked flow.

    Raises:
        SimulationError: no such flow, or a flow with errors (the first one, with file:line:col).
    """
    try:
        path = catalog.resolve(ref)
    except LookupError as exc:
        raise SimulationError(str(exc.args[0])) from None
    if ref not in catalog.entries:
        catalog = catalog.with_flow_file(path)
    try:
        return catalog, load_valid_flow(path, catalog.infos())
    except FlowError as exc:
        first = exc.diagnostics[0] if exc.diagnostics else None
        where = (
            f": {first.file}:{first.span.line}:{first.span.col}: {first.message}" if first else ""
        )
        raise SimulationError(f"{path}: the flow has errors{where}") from None


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


async def _settle(runtime: Runtime, deadline: float | None = None) -> None:
    """Waits until no webhook, REST request or side effect is in flight (or the real-time
    ``deadline`` passes: a media stream that never goes quiet must not hang a simulation)."""
    loop = asyncio.get_running_loop()
    quiet = 0
    while quiet < 3 and (deadline is None or loop.time() < deadline):
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
        await _settle(runtime, deadline)
        if _all_ended(runtime):
            return ""
        if turns.left and not turns.busy and _agent_call(runtime) is not None:
            await asyncio.sleep(0.001)  # the agent's turn comes before time moves on
            continue
        if not clock.advance_to_next():
            await asyncio.sleep(0.01)
            await _settle(runtime, deadline)
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
                await manager.end_call(call.call_id, step.text)
        except CallError:
            return
        finally:
            turns.busy = False
            turns.left -= 1
