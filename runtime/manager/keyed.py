"""Per-call locks and timers that free themselves: nothing keyed by a call outlives its use.

A lock entry exists while someone holds or waits for it; a timer entry until it fires or is
cancelled. So after any number of calls, both tables are back to empty (section 3 of issue 7:
a dict per call id that only grows is a leak under a long run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

from voicecall.runtime.clock import Clock, Timer

# Every kind of per-call timer: ring timeout, maximum duration, a Telnyx pause, a listening
# window, a Telnyx transfer that never reports back.
KINDS = ("ring", "max", "pause", "listen", "dial")


@dataclass(slots=True)
class _Entry:
    lock: asyncio.Lock
    users: int = 0


class KeyedLocks:
    """One asyncio lock per key, created on first use and dropped when the last user leaves."""

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def hold(self, key: str) -> AbstractAsyncContextManager[None]:
        """Holds the lock of ``key`` for the ``async with`` body."""
        return _Held(self._entries, key)


class _Held(AbstractAsyncContextManager[None]):
    """One ``async with`` of a key's lock: a plain class, not a generator-based context
    manager (every webhook takes its call's lock; the generator cost 2 us of it)."""

    __slots__ = ("_entries", "_entry", "_key")

    def __init__(self, entries: dict[str, _Entry], key: str):
        self._entries = entries
        self._key = key

    async def __aenter__(self) -> None:
        entry = self._entries.get(self._key)
        if entry is None:
            entry = self._entries[self._key] = _Entry(asyncio.Lock())
        entry.users += 1
        self._entry = entry
        try:
            await entry.lock.acquire()
        except BaseException:  # cancelled while waiting: never held
            self._leave()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        self._entry.lock.release()
        self._leave()

    def _leave(self) -> None:
        self._entry.users -= 1
        if self._entry.users == 0:
            del self._entries[self._key]


OnDue = Callable[[str, str], Coroutine[Any, Any, None]]


class CallTimers:
    """Named timers per call on a :class:`Clock`; a due timer runs ``on_due(call_id, kind)``.

    Args:
        clock: where time comes from (a virtual clock in simulations and tests).
        on_due: what to run when a timer comes due (set once the collaborators exist).
    """

    def __init__(self, clock: Clock, on_due: OnDue | None = None):
        self.clock = clock
        self.on_due = on_due
        self._timers: dict[tuple[str, str], Timer] = {}
        self._running: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._timers)

    def has(self, call_id: str, kind: str) -> bool:
        return (call_id, kind) in self._timers

    def set(self, call_id: str, kind: str, delay: float) -> None:
        """(Re)starts the ``kind`` timer of a call: due in ``delay`` seconds (now, if past)."""
        self.cancel(call_id, kind)

        def fire() -> None:
            self._timers.pop((call_id, kind), None)
            if self.on_due is not None:
                task = asyncio.get_running_loop().create_task(self.on_due(call_id, kind))
                self._running.add(task)  # a task nobody references may be collected mid-run
                task.add_done_callback(self._running.discard)

        self._timers[(call_id, kind)] = self.clock.call_later(max(0.0, delay), fire)

    def cancel(self, call_id: str, kind: str) -> None:
        timer = self._timers.pop((call_id, kind), None)
        if timer is not None:
            timer.cancel()

    def cancel_all(self, call_id: str) -> None:
        for kind in KINDS:
            self.cancel(call_id, kind)
