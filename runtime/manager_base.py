"""The CallManager's foundations: its collaborators and settings, and the mechanics every
part of it shares: compiled flows, per-call locks, delivering a run (an XML reply, or Telnyx
commands pumped one awaited event at a time), pushing to a live call, side effects after the
commit, timers and endings.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from voicecall.compiler.base import CompiledFlow, compile_flow
from voicecall.dsl import model as m
from voicecall.runtime.clock import Clock, Timer
from voicecall.runtime.interpreter import Command, Interpreter, Run
from voicecall.runtime.providers.base import Adapter, Reply
from voicecall.runtime.state import CallRecord, Waiting
from voicecall.runtime.store import Store
from voicecall.runtime.urls import callback_url

log = logging.getLogger("voicecall.runtime")
# How long a webhook waits for the model's reply before answering with a hold (Twilio gives
# up on a webhook after 15 s).
INLINE_REPLY_S = 5.0


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
    config_view: Mapping[str, Any] = field(default_factory=dict)


class FlowSource(Protocol):
    def flow(self, name: str) -> m.Flow:
        """A checked flow by name. Raises LookupError."""
        ...

    def flows(self) -> Mapping[str, m.Flow]:
        """Every named flow (for call_flow)."""
        ...


class Responder(Protocol):
    async def reply(self, call: CallRecord, heard: str, options: Mapping[str, Any]) -> str:
        """The model's answer to what the caller said (empty: say nothing)."""
        ...


Send = Callable[[], Awaitable[None]]


@dataclass(slots=True)
class _Outcome:
    reply: Reply
    record: CallRecord | None
    sends: list[Send] = field(default_factory=list)


class ManagerBase:
    """State and shared mechanics of the CallManager (see :mod:`voicecall.runtime.manager`)."""

    def __init__(  # noqa: PLR0917 - the collaborators, each named
        self,
        settings: ManagerSettings,
        store: Store,
        adapter: Adapter,
        flows: FlowSource,
        clock: Clock,
        responder: Responder | None = None,
    ):
        self.settings = settings
        self.store = store
        self.adapter = adapter
        self.flows = flows
        self.clock = clock
        self.responder = responder
        self._locks: dict[str, asyncio.Lock] = {}
        self._timers: dict[tuple[str, str], Timer] = {}
        self._waiters: dict[str, asyncio.Future[str]] = {}
        self._turn_started: dict[str, float] = {}
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._compiled: dict[str, CompiledFlow] = {}
        self._reaper: Timer | None = None
        self._tasks: set[asyncio.Future[None]] = set()
        self.inline_reply_s = INLINE_REPLY_S

    def compiled(self, name: str) -> CompiledFlow:
        flow = self.flows.flow(name)
        key = f"{flow.name}:{flow.digest}"
        if key not in self._compiled:
            self._compiled[key] = compile_flow(flow, self.settings.provider, self.flows.flows())
        return self._compiled[key]

    def interpreter(self, call: CallRecord) -> Interpreter:
        return Interpreter(self.compiled(call.flow), self.settings.webhook_base,
                           self.settings.config_view, self.clock.now)  # fmt: skip

    def lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _deliver(self, call: CallRecord, run: Run, out: _Outcome) -> _Outcome:
        """Turns a run into the webhook reply (XML) or queued commands (Telnyx)."""
        if self.interpreter(call).xml:
            return _Outcome(reply=self.adapter.document(run.fragments), record=call,
                            sends=out.sends)  # fmt: skip
        call.pending["queue"] = [_queued(c) for c in run.commands]
        call.pending["next"] = 0
        return self._pump(call, out)

    def _pump(self, call: CallRecord, out: _Outcome, completed: str | None = None) -> _Outcome:
        """Telnyx: sends queued commands up to the next one that must be waited for."""
        queue = call.pending.get("queue", [])
        index = int(call.pending.get("next", 0)) + (1 if completed else 0)
        sends = list(out.sends)
        while index < len(queue):
            cmd = queue[index]
            name = cmd["command"]
            if name == "pause":
                call.waiting = Waiting(block=cmd["block"], kind="timer", step=index)
                self._timer(call.call_id, "pause", cmd["body"]["duration_ms"] / 1000)
                break
            if name == "listen":
                call.waiting = Waiting(block=cmd["block"], kind="listen", step=cmd["step"])
                call.metadata["listenStartedAt"] = self.clock.now()
                if cmd["body"].get("timeout_ms"):
                    self._timer(call.call_id, "listen", cmd["body"]["timeout_ms"] / 1000)
                break
            if name == "continue":
                run = self.interpreter(call).advance(call, cmd["body"]["block"])
                queue[index + 1 : index + 1] = [_queued(c) for c in run.commands]
                index += 1
                continue
            sends.append(self._command_send(call, name, cmd["body"]))
            if cmd["awaits"]:
                kind = _AWAIT_KINDS.get(name, "command")
                call.waiting = Waiting(block=cmd["block"], kind=kind, step=cmd["step"],
                                       awaits=cmd["awaits"])  # fmt: skip
                if name == "transfer":  # Telnyx reports a failed transfer on the other leg
                    self._timer(call.call_id, "dial", cmd["body"].get("timeout_secs", 30) + 5)
                break
            index += 1
        call.pending["next"] = index
        return _Outcome(reply=self.adapter.empty(), record=call, sends=sends)

    def _command_send(self, call: CallRecord, name: str, body: Mapping[str, Any]) -> Send:
        pid = call.provider_call_id or ""
        payload = dict(body)

        async def send() -> None:
            await self.adapter.command(pid, name, payload)

        return send

    def _hold(self, call: CallRecord, out: _Outcome) -> _Outcome:
        """XML: keep the call on the line and ask again later (a pause, then a redirect)."""
        compiled = self.interpreter(call).compiled
        if compiled.hold is None:
            return _Outcome(reply=self.adapter.empty(), record=call, sends=out.sends)
        url = callback_url(self.settings.webhook_base, call.call_id, "live")
        body = compiled.hold.render({}, {"callback_url": url})
        return _Outcome(reply=self.adapter.document([body]), record=call, sends=out.sends)

    def _queue_sends(self, key: str, sends: list[Send]) -> None:
        """Runs REST side effects after the commit, in order per call."""
        if not sends:
            return
        previous = self._sending.get(key)

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            for send in sends:
                try:
                    await send()
                except Exception as exc:  # the carrier failing must not kill the runtime
                    log.warning("call %s: a request to the carrier failed: %s", key, exc)

        self._sending[key] = asyncio.get_running_loop().create_task(run())

    def _background(self, work: Awaitable[None]) -> None:
        """Runs work that outlives a webhook (a late model reply); :meth:`drain` waits for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Waits until every queued REST side effect and background reply has run."""
        while self._sending or self._tasks:
            tasks = [*self._sending.values(), *self._tasks]
            self._sending.clear()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _finalize(self, call: CallRecord, reason: str) -> None:
        if call.move(reason):
            call.end_reason = reason
            call.ended_at = self.clock.now()
            call.waiting = None
            log.info("call %s: ended (%s)", call.call_id, reason)
        for kind in ("ring", "max", "pause", "listen", "dial"):
            self._cancel(call.call_id, kind)
        waiter = self._waiters.pop(call.call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(CallError(f"the call ended: {reason}"))

    async def _finalize_now(self, call_id: str, reason: str, why: str) -> None:
        async with self.lock(call_id):
            call = self.store.get(call_id)
            if call is not None and not call.ended:
                call.metadata["error"] = why
                self._finalize(call, reason)
                self.store.save(call)

    def _after_commit(self, call: CallRecord) -> None:
        if call.answered_at is not None and not call.ended and (call.call_id, "max") not in (
            self._timers):  # fmt: skip
            limit = self._max_duration(call)
            self._timer(call.call_id, "max", limit - (self.clock.now() - call.answered_at))

    def _max_duration(self, call: CallRecord) -> float:
        ms = self.compiled(call.flow).flow.settings.max_duration_ms
        return ms / 1000 if ms else self.settings.max_duration_s

    async def on_timer(self, call_id: str, kind: str) -> None:
        """A timer came due (see :class:`voicecall.runtime.manager_timers.Timers`)."""
        raise NotImplementedError

    def _timer(self, call_id: str, kind: str, delay: float) -> None:
        self._cancel(call_id, kind)

        def fire() -> None:
            self._timers.pop((call_id, kind), None)
            asyncio.get_running_loop().create_task(self.on_timer(call_id, kind))

        self._timers[(call_id, kind)] = self.clock.call_later(max(0.0, delay), fire)

    def _cancel(self, call_id: str, kind: str) -> None:
        timer = self._timers.pop((call_id, kind), None)
        if timer is not None:
            timer.cancel()

    def _push(self, call: CallRecord, run: Run, why: str) -> _Outcome:
        """Delivers a run to a live call outside any webhook (a redirect, or commands)."""
        if not self.interpreter(call).xml:
            return self._deliver(call, run, _Outcome(reply=Reply(), record=call))
        call.pending["fetch"] = {"fragments": run.fragments, "why": why}
        url = callback_url(self.settings.webhook_base, call.call_id, "live")
        pid = call.provider_call_id or ""

        async def send() -> None:
            await self.adapter.redirect(pid, url)

        return _Outcome(reply=Reply(), record=call, sends=[send])

    def _hangup_send(self, call: CallRecord) -> Send:
        pid = call.provider_call_id

        async def send() -> None:
            if pid:
                await self.adapter.hangup(pid)

        return send

    def _answered(self, call: CallRecord) -> None:
        if call.answered_at is None:
            call.answered_at = self.clock.now()
        call.move("answered")
        self._cancel(call.call_id, "ring")


# Telnyx commands whose completion event is itself an answer, not just "done".
_AWAIT_KINDS = {"gather_using_speak": "input", "transfer": "dial"}


def _queued(c: Command) -> dict[str, Any]:
    return {"command": c.command, "body": c.body, "awaits": c.awaits, "block": c.block,
            "step": c.step}  # fmt: skip


def _mask(number: str) -> str:
    """A phone number for logs: the last four digits only."""
    digits = re.sub(r"\D", "", number)
    return f"…{digits[-4:]}" if digits else "(none)"
