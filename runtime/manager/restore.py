"""Restoring calls after a restart (the original plugin's rules)."""

from __future__ import annotations

import logging

from voicecall.runtime.manager.core import Calls
from voicecall.runtime.manager.delivery import Delivery
from voicecall.runtime.manager.timers import Timeouts
from voicecall.runtime.providers.base import CallStatus
from voicecall.runtime.state import CallRecord

log = logging.getLogger("voicecall.runtime")


class Restorer:
    """Picks up the calls a previous process left unfinished."""

    def __init__(self, calls: Calls, delivery: Delivery, timeouts: Timeouts):
        self.calls = calls
        self.delivery = delivery
        self.timeouts = timeouts

    async def restore(self) -> list[str]:
        """Picks up unfinished calls after a restart; returns the ids of the calls kept.

        Calls with no carrier id are ended (``error``); the carrier is asked about the others:
        ended ones are closed; live and unknown ones older than the maximum duration are hung
        up at the carrier (``timeout``: left alone, they would go on costing money); the rest
        are kept (timers restarted, Telnyx commands in flight sent again under the same
        command_id).
        """
        return await self.adopt(self.calls.store.live())

    async def adopt(self, calls: list[CallRecord]) -> list[str]:
        """Picks up ``calls`` as :meth:`restore` does: after a restart, or taken over from a
        gateway whose lease expired. Returns the ids of the calls kept."""
        kept = []
        for call in calls:
            age = self.calls.clock.now() - call.started_at
            if not call.provider_call_id:
                await self.calls.finalize_now(call.call_id, "error", "not restorable after "
                                              "restart: the carrier never took it")  # fmt: skip
                continue
            status = await self._status(call.provider_call_id)
            if status is CallStatus.ENDED:
                await self.calls.finalize_now(call.call_id, call.ending or "completed",
                                              "ended while the runtime was down")  # fmt: skip
                continue
            if age > self.calls.max_duration(call):
                await self._time_out(call.call_id)
                continue
            kept.append(call.call_id)
            self.timeouts.after_commit(call)
            if call.answered_at is None:
                self.calls.timers.set(call.call_id, "ring",
                                      self.calls.settings.ring_timeout_s - age)  # fmt: skip
            self._resend(call)
        return kept

    async def _time_out(self, call_id: str) -> None:
        """Ends a call that outlived its maximum duration while the runtime was down."""
        async with self.calls.lock(call_id):
            call = self.calls.store.get(call_id)
            if call is None or call.ended:
                return
            log.info("call %s: past its maximum duration after a restart: hung up", call_id)
            self.calls.finalize(call, "timeout")
            await self.calls.store.save(call)
        self.delivery.queue_sends(call_id, [self.delivery.hangup_send(call)])

    async def _status(self, provider_call_id: str) -> CallStatus:
        try:
            return await self.calls.adapter.call_status(provider_call_id)
        except Exception as exc:
            log.warning("restore: status of %s unknown: %s", provider_call_id, exc)
            return CallStatus.UNKNOWN

    def _resend(self, call: CallRecord) -> None:
        waiting = call.waiting
        queue = call.pending.get("queue", [])
        index = int(call.pending.get("next", 0))
        if waiting is None or not queue or index >= len(queue):
            return
        cmd = queue[index]
        if cmd["command"] not in ("pause", "listen", "continue"):
            send = self.delivery.command_send(call, cmd["command"], cmd["body"])
            self.delivery.queue_sends(call.call_id, [send])
        elif cmd["command"] == "pause":
            self.calls.timers.set(call.call_id, "pause", 0)
