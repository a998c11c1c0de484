"""Outgoing audio cut into 20 ms μ-law frames and sent in real time, without drift.

Carriers play what they receive at 8 kHz: send frames faster and their buffer grows (a barge-in
then has more to clear), slower and the caller hears gaps. ``sleep(0.02)`` per frame drifts,
because every wake-up is late by the event loop's jitter and the lateness adds up (a few ms
per frame is seconds per minute). :class:`Pacer` instead keeps an absolute schedule from a start
time, so frame *n* is due at ``start + n × 20 ms`` and a late wake-up only shortens the next
wait. A stall longer than ``max_lag`` (an idle gap between utterances, a blocked loop) starts
a new schedule instead of bursting every missed frame at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Final

from voicecall.runtime.media.codec import SILENCE_BYTE

FRAME_SECONDS: Final = 0.02
# 20 ms of 8 kHz μ-law: the frame size Twilio, Telnyx and Plivo streams use.
FRAME_BYTES: Final = 160


class Framer:
    """Cuts audio arriving in chunks of any size (a TTS stream) into whole frames."""

    __slots__ = ("_buffer", "frame_bytes")

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes <= 0:
            raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
        self.frame_bytes = frame_bytes
        self._buffer = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back until a frame is full."""
        return len(self._buffer)

    def push(self, data: bytes) -> list[bytes]:
        """Every frame completed by ``data``, in order."""
        self._buffer += data
        whole = len(self._buffer) - len(self._buffer) % self.frame_bytes
        if not whole:
            return []
        out = [
            bytes(self._buffer[i : i + self.frame_bytes]) for i in range(0, whole, self.frame_bytes)
        ]
        del self._buffer[:whole]
        return out

    def flush(self) -> bytes | None:
        """The last partial frame, padded with μ-law silence, or None if nothing is held."""
        if not self._buffer:
            return None
        frame = bytes(self._buffer).ljust(self.frame_bytes, bytes([SILENCE_BYTE]))
        self._buffer.clear()
        return frame

    def clear(self) -> None:
        """Drop what is held (barge-in: nothing queued may still be played)."""
        self._buffer.clear()


class Pacer:
    """Releases one frame per period on an absolute schedule.

    Args:
        period: seconds per frame.
        max_lag: how far behind schedule the sender may fall before the schedule restarts
            rather than catching up with a burst.
        now: monotonic clock in seconds (injectable for tests).
        sleep: coroutine that waits the given seconds (injectable for tests).
    """

    __slots__ = ("_next", "_now", "_sleep", "max_lag", "period", "resyncs", "sent")

    def __init__(
        self,
        *,
        period: float = FRAME_SECONDS,
        max_lag: float = 0.1,
        now: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if period <= 0 or max_lag < 0:
            raise ValueError(
                f"period must be positive and max_lag not negative: {period}, {max_lag}"
            )
        self.period = period
        self.max_lag = max_lag
        self._now = now
        self._sleep = sleep
        self._next: float | None = None
        self.sent = 0
        self.resyncs = 0

    def restart(self) -> None:
        """The next frame goes out at once and starts a new schedule (e.g. after a clear)."""
        self._next = None

    async def wait(self) -> float:
        """Wait until the next frame is due; returns its scheduled time."""
        now = self._now()
        if self._next is None:
            self._next = now
        elif now - self._next > self.max_lag:
            self._next = now
            self.resyncs += 1
        due = self._next
        if due > now:
            await self._sleep(due - now)
        self._next = due + self.period
        self.sent += 1
        return due

    async def pace(self, frames: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
        """Yields each frame when it is due."""
        async for frame in frames:
            await self.wait()
            yield frame
