"""What every collaborator of the CallManager shares: its settings and services (store,
carrier adapter, flows, clock), compiled flows, per-call locks and timers, and how a call
is answered and ended."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicecall.compiler.base import CompiledFlow, compile_flow
from voicecall.dsl import model as m
from voicecall.runtime.clock import Clock
from voicecall.runtime.interpreter import Interpreter, StreamHook
from voicecall.runtime.manager.keyed import CallTimers, KeyedLocks
from voicecall.runtime.providers.base import Adapter, Reply
from voicecall.runtime.state import CallRecord
from voicecall.runtime.store import Store

log = logging.getLogger("voicecall.runtime")
DEFAULT_EVENT_RETENTION_S = 72 * 3600.0


class CallError(Exception):
    """A call request that cannot be done; the message says why, for the agent or the CLI."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ManagerSettings:
    provider: str
    from_number: str
    webhook_base: str  # the public URL of the webhook endpoint
    to_number: str | None = None
    max_concurrent: int = 1
    max_duration_s: float = 300
    ring_timeout_s: float = 30
    transcript_timeout_s: float = 180
    stale_reaper_s: float = 0  # 0: off
    inbound_policy: str = "disabled"  # disabled | allowlist | pairing | open
    allow_from: tuple[str, ...] = ()
    inbound_flow: str = "inbound"
    # Params inbound calls start with, over the inbound flow's defaults (simulations: --param).
    inbound_params: Mapping[str, Any] = field(default_factory=dict)
    # How long processed-event keys (and rejected carrier call ids) are kept: as long as a
    # carrier may still redeliver a webhook (config eventRetentionHours).
    event_retention_s: float = DEFAULT_EVENT_RETENTION_S
    config_view: Mapping[str, Any] = field(default_factory=dict)
    # Config `numbers`: per dialled number (E.164), the inbound flow, greeting and responder.
    numbers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def number_route(self, dialled: str | None) -> tuple[str, Mapping[str, Any]]:
        """The `numbers` entry for an inbound call's To, matched on its digits: (key, entry),
        or ("", {})."""
        digits = re.sub(r"\D", "", dialled or "")
        for key, entry in self.numbers.items() if digits else ():
            if re.sub(r"\D", "", key) == digits:
                return key, entry
        return "", {}


class FlowSource(Protocol):
    def flow(self, name: str) -> m.Flow:
        """A checked flow by name. Raises LookupError."""
        ...

    def flows(self) -> Mapping[str, m.Flow]:
        """Every named flow (for call_flow)."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelReply:
    """A responder's answer: what to say ("" : nothing), and whether the call ends after it
    (the model's end-call tool: the farewell is said, then the call hangs up)."""

    text: str
    end: bool = False
    # The finishing tool of a conversation with `collect`: its values (checked, saved as flow
    # variables, then the flow goes on at on_done; values that do not fit are rejected).
    done: Mapping[str, Any] | None = None


class Responder(Protocol):
    async def reply(
        self, call: CallRecord, heard: str, options: Mapping[str, Any]
    ) -> str | ModelReply:
        """The model's answer to what the caller said (empty: say nothing)."""
        ...


Send = Callable[[], Awaitable[None]]
EndHook = Callable[[str, str], None]


@dataclass(slots=True)
class Outcome:
    """What applying events came to: the webhook's reply, the call as changed, and the REST
    requests to send once that is committed."""

    reply: Reply
    record: CallRecord | None
    sends: list[Send] = field(default_factory=list)
    rejected: str | None = None  # the carrier call id of an inbound call rejected now


class Calls:
    """The shared part of the manager (one per manager, handed to every collaborator)."""

    def __init__(
        self, settings: ManagerSettings, store: Store, adapter: Adapter, flows: FlowSource,
        clock: Clock,
    ):  # fmt: skip
        self.settings = settings
        self.store = store
        self.adapter = adapter
        self.flows = flows
        self.locks = KeyedLocks()
        self.timers = CallTimers(clock)
        self._clock = clock
        self._compiled: dict[str, CompiledFlow] = {}
        # Run when a call ends, with (call_id, reason): each collaborator frees what it
        # holds for the call (waiters; later media streams).
        self.end_hooks: list[EndHook] = []
        # Conversations over media streams (set by the server when streaming is possible).
        self.streams: StreamHook | None = None

    @property
    def clock(self) -> Clock:
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = clock
        self.timers.clock = clock

    def compiled(self, name: str) -> CompiledFlow:
        flow = self.flows.flow(name)
        key = f"{flow.name}:{flow.digest}"
        if key not in self._compiled:
            self._compiled[key] = compile_flow(flow, self.settings.provider, self.flows.flows())
        return self._compiled[key]

    def compiled_or_error(self, flow: str) -> CompiledFlow:
        try:
            return self.compiled(flow)
        except LookupError as exc:
            raise CallError(str(exc.args[0] if exc.args else exc)) from exc

    def interpreter(self, call: CallRecord) -> Interpreter:
        view = self.settings.config_view
        greeting = call.metadata.get("route", {}).get("inboundGreeting")
        if greeting is not None:  # the dialled number's own greeting (config `numbers`)
            view = {**view, "inboundGreeting": greeting}
        return Interpreter(self.compiled(call.flow), self.settings.webhook_base, view,
                           self.clock.now, self.streams)  # fmt: skip

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        """The per-call lock (``async with calls.lock(call_id):``)."""
        return self.locks.hold(key)

    def ack(self, call: CallRecord | None, out: Outcome) -> Outcome:
        """The plain acknowledgement, keeping the sends gathered so far."""
        return Outcome(reply=self.adapter.empty(), record=call, sends=out.sends)

    def max_duration(self, call: CallRecord) -> float:
        ms = self.compiled(call.flow).flow.settings.max_duration_ms
        return ms / 1000 if ms else self.settings.max_duration_s

    def answered(self, call: CallRecord) -> None:
        if call.answered_at is None:
            call.answered_at = self.clock.now()
        call.move("answered")
        self.timers.cancel(call.call_id, "ring")

    def finalize(self, call: CallRecord, reason: str) -> None:
        """Ends the call with ``reason`` (if it is not ended yet) and frees what it held."""
        if call.move(reason):
            call.end_reason = reason
            call.ended_at = self.clock.now()
            call.waiting = None
            log.info("call %s: ended (%s)", call.call_id, reason)
        self.timers.cancel_all(call.call_id)
        for hook in self.end_hooks:
            hook(call.call_id, reason)

    async def finalize_now(self, call_id: str, reason: str, why: str) -> None:
        async with self.lock(call_id):
            call = self.store.get(call_id)
            if call is not None and not call.ended:
                call.metadata["error"] = why
                self.finalize(call, reason)
                await self.store.save(call)

    def live(self, call_id: str) -> CallRecord:
        call = self.store.get(call_id)
        if call is None:
            raise CallError(f"no call {call_id}")
        if call.ended:
            raise CallError(f"call {call_id} has ended ({call.end_reason})")
        return call


def mask(number: str) -> str:
    """A phone number for logs: the last four digits only."""
    digits = re.sub(r"\D", "", number)
    return f"…{digits[-4:]}" if digits else "(none)"
