"""The Timers's timers (ring timeout, maximum duration, Telnyx pauses, listening windows
and transfers), the stale-call reaper, and restoring calls after a restart."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from voicecall.runtime.manager_base import ManagerBase, _Outcome
from voicecall.runtime.providers.base import CallStatus, Reply
from voicecall.runtime.state import CallRecord

log = logging.getLogger("voicecall.runtime")


class Timers(ManagerBase):
    """What happens when time passes, and after a restart."""

    async def on_timer(self, call_id: str, kind: str) -> None:
        """A timer came due: ring timeout, max duration, a Telnyx pause or listen window."""
        async with self.lock(call_id):
            call = self.store.get(call_id)
            if call is None or call.ended:
                return
            outcome = _TIMERS[kind](self, call)
            if outcome is None:
                return
            self.store.save(call)
        self._queue_sends(call_id, outcome.sends)

    def t_ring(self, call: CallRecord) -> _Outcome | None:
        if call.answered_at is not None:
            return None
        log.info("call %s: not answered in %ss", call.call_id, self.settings.ring_timeout_s)
        self._finalize(call, "no-answer")
        return _Outcome(reply=Reply(), record=call, sends=[self._hangup_send(call)])

    def t_max(self, call: CallRecord) -> _Outcome | None:
        log.info("call %s: reached its maximum duration", call.call_id)
        interp = self.interpreter(call)
        call.ending = "timeout"
        run = interp.handler(call, "max_duration")
        if run is None:
            self._finalize(call, "timeout")
            return _Outcome(reply=Reply(), record=call, sends=[self._hangup_send(call)])
        return self._push(call, run, "max_duration")

    def t_pause(self, call: CallRecord) -> _Outcome | None:
        if call.waiting is None or call.waiting.kind != "timer":
            return None
        return self._pump(call, _Outcome(reply=Reply(), record=call), completed="timer")

    def t_dial(self, call: CallRecord) -> _Outcome | None:
        """Telnyx: a transfer that never bridged within its timeout did not connect."""
        waiting = call.waiting
        if waiting is None or waiting.kind != "dial":
            return None
        run = self.interpreter(call).dial_result(call, waiting.block, "no-answer")
        return self._deliver(call, run, _Outcome(reply=Reply(), record=call))

    def t_listen(self, call: CallRecord) -> _Outcome | None:
        waiting = call.waiting
        if waiting is None or waiting.kind != "listen":
            return None
        interp = self.interpreter(call)
        prefix = interp.after_input(call, waiting.block, waiting.step)
        run = interp.answer_input(call, waiting.block, waiting.step)  # silence
        run.commands[:0] = prefix
        return self._deliver(call, run, _Outcome(reply=Reply(), record=call))

    async def restore(self) -> list[str]:
        """Picks up unfinished calls after a restart (the original plugin's rules).

        Calls with no carrier id, or older than the maximum duration, are ended; the carrier is
        asked about the others: ended ones are closed, live and unknown ones kept (timers
        restarted, Telnyx commands in flight sent again under the same command_id).
        """
        kept = []
        for call in self.store.live():
            age = self.clock.now() - call.started_at
            if not call.provider_call_id or age > self._max_duration(call):
                await self._finalize_now(call.call_id, "error", "not restorable after restart")
                continue
            status = await self._status(call.provider_call_id)
            if status is CallStatus.ENDED:
                await self._finalize_now(call.call_id, call.ending or "completed", "ended while "
                                         "the runtime was down")  # fmt: skip
                continue
            kept.append(call.call_id)
            self._after_commit(call)
            if call.answered_at is None:
                self._timer(call.call_id, "ring", self.settings.ring_timeout_s - age)
            self._resend(call)
        return kept

    async def _status(self, provider_call_id: str) -> CallStatus:
        try:
            return await self.adapter.call_status(provider_call_id)
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
            self._queue_sends(call.call_id, [self._command_send(call, cmd["command"],
                                                                cmd["body"])])  # fmt: skip
        elif cmd["command"] == "pause":
            self._timer(call.call_id, "pause", 0)

    def start_reaper(self, every_s: float = 30.0) -> None:
        """Runs :meth:`reap` every ``every_s`` seconds (when staleCallReaperSeconds is set)."""
        if self.settings.stale_reaper_s <= 0:
            return

        def tick() -> None:
            self.reap()
            self._reaper = self.clock.call_later(every_s, tick)

        self._reaper = self.clock.call_later(every_s, tick)

    def stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    def reap(self) -> None:
        """Ends calls that were never answered and are older than staleCallReaperSeconds.

        A call that was answered is never reaped: it ends by the carrier or max duration.
        """
        limit = self.settings.stale_reaper_s
        if limit <= 0:
            return
        for call in self.store.live():
            if call.answered_at is None and self.clock.now() - call.started_at > limit:
                asyncio.get_running_loop().create_task(
                    self._finalize_now(call.call_id, "no-answer", "stale: never answered")
                )


_TIMERS: dict[str, Callable[[Timers, CallRecord], _Outcome | None]] = {
    "ring": Timers.t_ring,
    "max": Timers.t_max,
    "pause": Timers.t_pause,
    "listen": Timers.t_listen,
    "dial": Timers.t_dial,
}
