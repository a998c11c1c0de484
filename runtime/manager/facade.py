"""The CallManager: one object for the server, the Gateway host, the CLI and simulations,
over collaborators with one job each.

==============  ===========================================================================
``calls``       :class:`~.core.Calls`: settings, store, adapter, flows, clock, locks, timers,
                answering and ending a call (end hooks free per-call state)
``delivery``    :class:`~.delivery.Delivery`: replies, Telnyx command pump, pushes, REST sends
``timeouts``    :class:`~.timers.Timeouts`: what due timers do, the stale-call reaper
``admission``   :class:`~.admission.Admission`: inbound policy, allowlist, rejection
``turns``       :class:`~.turns.AgentTurns`: agent commands, conversations, model replies
``events``      :class:`~.events.Events`: carrier events applied exactly once
``outbound``    :class:`~.outbound.Outbound`: placing calls
``restorer``    :class:`~.restore.Restorer`: picking calls up after a restart
``retention``   :class:`~.retention.Retention`: pruning expired processed-event keys
==============  ===========================================================================

Each is built once here and handed what it uses; none inherits from another. Where the next
capabilities plug in: the Gateway calls this facade's public methods; a media stream attaches
to a call through ``calls.end_hooks`` (closed when the call ends) and sends through
``delivery``; a responder is ``turns.responder``; Redis routing is a :class:`Store` plus a
check in :meth:`Events.handle` that forwards a call's events to the process that owns it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

from voicecall.compiler.base import CompiledFlow
from voicecall.dsl import model as m
from voicecall.runtime.clock import Clock
from voicecall.runtime.manager.admission import Admission
from voicecall.runtime.manager.core import Calls, FlowSource, ManagerSettings, Responder
from voicecall.runtime.manager.delivery import Delivery
from voicecall.runtime.manager.events import Events
from voicecall.runtime.manager.outbound import Outbound
from voicecall.runtime.manager.restore import Restorer
from voicecall.runtime.manager.retention import Retention
from voicecall.runtime.manager.timers import Timeouts
from voicecall.runtime.manager.turns import AGENT_COMMANDS, AgentTurns
from voicecall.runtime.providers.base import Adapter, Event, Reply
from voicecall.runtime.state import CallRecord
from voicecall.runtime.store import Store

if TYPE_CHECKING:
    from voicecall.runtime.cluster import Cluster


class CallManager:
    """Owns the calls of one process: events, timers, agent commands, restore."""

    def __init__(  # noqa: PLR0917 - the services, each named
        self, settings: ManagerSettings, store: Store, adapter: Adapter, flows: FlowSource,
        clock: Clock, responder: Responder | None = None,
    ):  # fmt: skip
        self.calls = Calls(settings, store, adapter, flows, clock)
        self.delivery = Delivery(self.calls)
        self.timeouts = Timeouts(self.calls, self.delivery)
        self.admission = Admission(self.calls, self.delivery)
        self.turns = AgentTurns(self.calls, self.delivery, responder)
        self.events = Events(self.calls, self.delivery, self.admission, self.turns,
                             self.timeouts)  # fmt: skip
        self.outbound = Outbound(self.calls)
        self.restorer = Restorer(self.calls, self.delivery, self.timeouts)
        self.retention = Retention(self.calls)
        self.cluster: Cluster | None = None  # several gateways on one Redis store

    # --- what the services are (settings may be replaced once the server has its URL) -------

    @property
    def settings(self) -> ManagerSettings:
        return self.calls.settings

    @settings.setter
    def settings(self, settings: ManagerSettings) -> None:
        self.calls.settings = settings

    @property
    def clock(self) -> Clock:
        return self.calls.clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self.calls.clock = clock

    @property
    def responder(self) -> Responder | None:
        return self.turns.responder

    @responder.setter
    def responder(self, responder: Responder | None) -> None:
        self.turns.responder = responder

    @property
    def inline_reply_s(self) -> float:
        return self.turns.inline_reply_s

    @inline_reply_s.setter
    def inline_reply_s(self, seconds: float) -> None:
        self.turns.inline_reply_s = seconds

    @property
    def store(self) -> Store:
        return self.calls.store

    @property
    def adapter(self) -> Adapter:
        return self.calls.adapter

    @property
    def flows(self) -> FlowSource:
        return self.calls.flows

    def compiled(self, name: str) -> CompiledFlow:
        return self.calls.compiled(name)

    def lock(self, key: str) -> AbstractAsyncContextManager[None]:
        return self.calls.lock(key)

    # --- the public API ----------------------------------------------------------------------

    async def initiate(
        self, *, to: str | None, flow: str, params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CallRecord:  # fmt: skip
        """Places an outbound call (see :meth:`Outbound.initiate`)."""
        return await self.outbound.initiate(to=to, flow=flow, params=params, metadata=metadata)

    async def handle(self, events: list[Event], key: str) -> Reply:
        """Applies a verified webhook's events (see :meth:`Events.handle`)."""
        if self.cluster is not None:
            return await self.cluster.handle(events, key)
        return await self.events.handle(events, key)

    def admits(self, flow: m.Flow, caller: str | None) -> tuple[bool, str]:
        return self.admission.admits(flow, caller)

    async def continue_call(self, call_id: str, message: str) -> str:
        if self.cluster is not None:  # it waits for the caller's answer: as long as that may
            wait = self.settings.transcript_timeout_s + self.cluster.route_timeout_s
            return str(await self.cluster.command("continue", call_id, message, timeout_s=wait))
        return await self.turns.continue_call(call_id, message)

    async def speak(self, call_id: str, message: str) -> None:
        await self._command("speak", call_id, message)

    async def send_dtmf(self, call_id: str, digits: str) -> None:
        await self._command("dtmf", call_id, digits)

    async def end_call(self, call_id: str, message: str = "") -> None:
        await self._command("end", call_id, message)

    async def _command(self, op: str, call_id: str, *args: Any) -> None:
        if self.cluster is not None:
            await self.cluster.command(op, call_id, *args, timeout_s=self.cluster.route_timeout_s)
        else:
            await AGENT_COMMANDS[op](self.turns, call_id, *args)

    def watch(self, listener: Callable[[CallRecord], None], *, everywhere: bool = False) -> None:
        """Calls ``listener`` with every call record once its change is committed: each
        state change and each new transcript line (the Gateway's events). ``everywhere``: with
        several gateways, the changes other gateways commit too (read when they are told)."""
        self.calls.store.watchers.append(listener)
        if everywhere and self.cluster is not None:
            self.cluster.watchers.append(listener)

    def get(self, call_id: str) -> CallRecord | None:
        store = self.calls.store
        return store.get(call_id) or store.find(self.settings.provider, call_id)

    async def restore(self) -> list[str]:
        return await self.restorer.restore()

    async def on_timer(self, call_id: str, kind: str) -> None:
        await self.timeouts.on_timer(call_id, kind)

    def start_reaper(self, every_s: float = 30.0) -> None:
        self.timeouts.start_reaper(every_s)

    def stop_reaper(self) -> None:
        self.timeouts.stop_reaper()

    def reap(self) -> None:
        self.timeouts.reap()

    def start_background(self) -> None:
        """Starts the periodic work of a serving process: the reaper and event pruning."""
        self.timeouts.start_reaper()
        self.retention.start()

    async def stop_background(self) -> None:
        self.timeouts.stop_reaper()
        self.retention.stop()
        await self.retention.wait()

    def held(self) -> dict[str, int]:
        """Per-call state held in memory, by table (all 0 when no call is live and idle)."""
        return {"locks": len(self.calls.locks), "timers": len(self.calls.timers),
                "sends": len(self.delivery), "turns": len(self.turns)}  # fmt: skip

    async def drain(self) -> None:
        """Waits until every queued REST side effect and background reply has run."""
        await self.delivery.drain()
