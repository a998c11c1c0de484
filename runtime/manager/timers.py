"""What happens when time passes: ring timeout, maximum duration, Telnyx pauses, listening
windows and transfers that never report back, and the stale-call reaper."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from voicecall.runtime.clock import Timer
from voicecall.runtime.manager.core import Calls, Outcome
from voicecall.runtime.manager.delivery import Delivery
from voicecall.runtime.providers.base import Reply
from voicecall.runtime.state import CallRecord

log = logging.getLogger("voicecall.runtime")


class Timeouts:
    """Handles due timers (set through ``calls.timers``) and runs the stale-call reaper."""

    def __init__(self, calls: Calls, delivery: Delivery):
        self.calls = calls
        self.delivery = delivery
        self._reaper: Timer | None = None
        self._handlers: dict[str, Callable[[CallRecord], Outcome | None]] = {
            "ring": self.t_ring, "max": self.t_max, "pause": self.t_pause,
            "listen": self.t_listen, "dial": self.t_dial,
        }  # fmt: skip
        calls.timers.on_due = self.on_timer

    async def on_timer(self, call_id: str, kind: str) -> None:
        """A timer came due: ring timeout, max duration, a Telnyx pause or listen window."""
        async with self.calls.lock(call_id):
            call = self.calls.store.get(call_id)
            if call is None or call.ended:
                return
            outcome = self._handlers[kind](call)
            if outcome is None:
                return
            await self.calls.store.save(call)
        self.delivery.queue_sends(call_id, outcome.sends)

    def after_commit(self, call: CallRecord) -> None:
        """Starts the maximum-duration timer of a call once it is answered."""
        timers = self.calls.timers
        if call.answered_at is not None and not call.ended and not timers.has(call.call_id,
                                                                              "max"):  # fmt: skip
            limit = self.calls.max_duration(call)
            timers.set(call.call_id, "max", limit - (self.calls.clock.now() - call.answered_at))

    def t_ring(self, call: CallRecord) -> Outcome | None:
        if call.answered_at is not None:
            return None
        log.info("call %s: not answered in %ss", call.call_id, self.calls.settings.ring_timeout_s)
        self.calls.finalize(call, "no-answer")
        return Outcome(reply=Reply(), record=call, sends=[self.delivery.hangup_send(call)])

    def t_max(self, call: CallRecord) -> Outcome | None:
        log.info("call %s: reached its maximum duration", call.call_id)
        interp = self.calls.interpreter(call)
        call.ending = "timeout"
        run = interp.handler(call, "max_duration")
        if run is None:
            self.calls.finalize(call, "timeout")
            return Outcome(reply=Reply(), record=call, sends=[self.delivery.hangup_send(call)])
        return self.delivery.push(call, run, "max_duration")

    def t_pause(self, call: CallRecord) -> Outcome | None:
        if call.waiting is None or call.waiting.kind != "timer":
            return None
        return self.delivery.pump(call, Outcome(reply=Reply(), record=call), completed="timer")

    def t_dial(self, call: CallRecord) -> Outcome | None:
        """Telnyx: a transfer that never bridged within its timeout did not connect."""
        waiting = call.waiting
        if waiting is None or waiting.kind != "dial":
            return None
        run = self.calls.interpreter(call).dial_result(call, waiting.block, "no-answer")
        return self.delivery.deliver(call, run, Outcome(reply=Reply(), record=call))

    def t_listen(self, call: CallRecord) -> Outcome | None:
        waiting = call.waiting
        if waiting is None or waiting.kind != "listen":
            return None
        interp = self.calls.interpreter(call)
        prefix = interp.after_input(call, waiting.block, waiting.step)
        run = interp.answer_input(call, waiting.block, waiting.step)  # silence
        run.commands[:0] = prefix
        return self.delivery.deliver(call, run, Outcome(reply=Reply(), record=call))

    # --- the stale-call reaper -----------------------------------------------------------------

    def start_reaper(self, every_s: float = 30.0) -> None:
        """Runs :meth:`reap` every ``every_s`` seconds (when staleCallReaperSeconds is set)."""
        if self.calls.settings.stale_reaper_s <= 0:
            return

        def tick() -> None:
            self.reap()
            self._reaper = self.calls.clock.call_later(every_s, tick)

        self._reaper = self.calls.clock.call_later(every_s, tick)

    def stop_reaper(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None

    def reap(self) -> None:
        """Ends calls that were never answered and are older than staleCallReaperSeconds.

        A call that was answered is never reaped: it ends by the carrier or max duration.
        """
        limit = self.calls.settings.stale_reaper_s
        if limit <= 0:
            return
        for call in self.calls.store.live():
            if call.answered_at is None and self.calls.clock.now() - call.started_at > limit:
                asyncio.get_running_loop().create_task(
                    self.calls.finalize_now(call.call_id, "no-answer", "stale: never answered")
                )
