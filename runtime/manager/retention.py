"""Keeping storage bounded: processed-event keys older than the retention window (config
``eventRetentionHours``: as long as a carrier may redeliver a webhook) are pruned in the
background: a sweep through the keys, a small batch at a time, so that no webhook waits long
behind it.

The window covers restarts: the keys live in the store, so a redelivery after a restart is
still recognised (the original plugin restores the dedupe keys of terminal calls too).
"""

from __future__ import annotations

import asyncio
import logging

from voicecall.runtime.clock import Timer
from voicecall.runtime.manager.core import Calls

log = logging.getLogger("voicecall.runtime")
PRUNE_EVERY_S = 300.0
# Keys examined per batch (one read, and one short delete if some expired; well under a
# millisecond): the event loop runs webhooks between batches.
PRUNE_BATCH = 500


class Retention:
    """Prunes expired processed-event keys now and then."""

    def __init__(self, calls: Calls, batch: int = PRUNE_BATCH):
        self.calls = calls
        self.batch = batch
        self._timer: Timer | None = None
        self._running: asyncio.Task[int] | None = None

    def start(self, every_s: float = PRUNE_EVERY_S) -> None:
        """Prunes every ``every_s`` seconds of real time until :meth:`stop`.

        Housekeeping runs on the event loop's own timer, not on the call clock: a simulation's
        virtual clock jumps from one call timer to the next, and a timer that is always due
        would hide a stuck call from it.
        """
        loop = asyncio.get_running_loop()

        def tick() -> None:
            if self._running is None or self._running.done():
                self._running = loop.create_task(self.prune())
            self._timer = loop.call_later(every_s, tick)

        self.stop()
        self._timer = loop.call_later(every_s, tick)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def wait(self) -> None:
        """Waits for a prune in progress, if any."""
        if self._running is not None:
            await asyncio.gather(self._running, return_exceptions=True)

    async def prune(self) -> int:
        """Sweeps all processed-event keys once, deleting those older than the window;
        returns how many were deleted."""
        before = self.calls.clock.now() - self.calls.settings.event_retention_s
        total = 0
        while True:
            try:
                deleted, complete = self.calls.store.prune(before, self.batch)
            except Exception as exc:  # a busy or failing file: try again next time
                log.warning("pruning processed events failed: %s", exc)
                return total
            total += deleted
            if complete:
                break
            await asyncio.sleep(0)  # let webhooks run between batches
        if total:
            log.info("pruned %d processed-event key(s) older than %.0f h", total,
                     self.calls.settings.event_retention_s / 3600)  # fmt: skip
        return total
