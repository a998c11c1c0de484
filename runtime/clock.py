"""Time, injectable: the real clock for calls, a virtual one for simulations and tests.

Runtime timers (max duration, ring timeout, the notify hang-up delay, Telnyx pauses and listen
windows, the stale-call reaper) are scheduled through a :class:`Clock`. On a
:class:`VirtualClock` nothing waits in real time: the simulator advances it to the next timer
when nothing else is happening, so a flow with pauses and timeouts runs in milliseconds.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


class Timer(Protocol):
    def cancel(self) -> None: ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        """Runs ``callback`` (a plain function; it may start tasks) after ``delay`` seconds."""
        ...


class RealClock:
    """Wall time and the running event loop's timers."""

    def now(self) -> float:
        return time.time()

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        return asyncio.get_running_loop().call_later(max(0.0, delay), callback)


@dataclass(order=True)
class _Entry:
    when: float
    seq: int
    callback: Callable[[], object] = field(compare=False)
    cancelled: bool = field(default=False, compare=False)

    def cancel(self) -> None:
        self.cancelled = True


class VirtualClock:
    """A clock that moves only when told to: :meth:`advance` runs the timers that come due."""

    def __init__(self, start: float = 1_767_225_600.0):  # 2026-01-01T00:00:00Z
        self._now = start
        self._heap: list[_Entry] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[[], object]) -> Timer:
        entry = _Entry(self._now + max(0.0, delay), next(self._seq), callback)
        heapq.heappush(self._heap, entry)
        return entry

    def next_due(self) -> float | None:
        """When the next live timer is due, or None."""
        while self._heap and self._heap[0].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0].when if self._heap else None

    def advance(self, seconds: float) -> int:
        """Moves time forward, running every timer that comes due, in order; returns how many."""
        target = self._now + seconds
        ran = 0
        while (due := self.next_due()) is not None and due <= target:
            entry = heapq.heappop(self._heap)
            self._now = max(self._now, entry.when)
            entry.callback()
            ran += 1
        self._now = max(self._now, target)
        return ran

    def advance_to_next(self) -> bool:
        """Jumps to the next timer and runs it (and any due at the same time)."""
        due = self.next_due()
        if due is None:
            return False
        self.advance(max(0.0, due - self._now))
        return True
