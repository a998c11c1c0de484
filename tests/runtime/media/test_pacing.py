"""Frames cut from any chunking and paced on an absolute schedule under a jittery sleep."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator

import pytest

from voicecall.runtime.media.pacing import FRAME_BYTES, FRAME_SECONDS, Framer, Pacer

EARLY = 0.0005  # an event loop may wake up to its clock resolution early
LATE = 0.008


class JitteryTime:
    """A fake monotonic clock whose sleep wakes up late by 0–8 ms, sometimes slightly early."""

    def __init__(self, seed: int = 9) -> None:
        self.t = 1000.0
        self._random = random.Random(seed)

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds + self._random.uniform(-EARLY, LATE))

    def stall(self, seconds: float) -> None:
        self.t += seconds


async def test_no_cumulative_drift_over_1000_frames() -> None:
    clock = JitteryTime()
    pacer = Pacer(now=clock.now, sleep=clock.sleep)
    start = clock.t
    sent = []
    for _ in range(1000):
        await pacer.wait()
        sent.append(clock.t)
    errors = [t - (start + n * FRAME_SECONDS) for n, t in enumerate(sent)]
    # Each frame is off by at most one wake-up's jitter, the 1000th as much as the 2nd.
    assert min(errors) >= -EARLY
    assert max(errors) <= LATE
    assert max(errors[-100:]) <= LATE
    assert pacer.resyncs == 0
    assert pacer.sent == 1000


async def test_sleeping_one_period_per_frame_would_drift() -> None:
    # The fake's jitter is real: the naive loop ends seconds behind on the same clock.
    clock = JitteryTime()
    start = clock.t
    for _ in range(1000):
        await clock.sleep(FRAME_SECONDS)
    assert clock.t - (start + 1000 * FRAME_SECONDS) > 1.0


async def test_a_short_stall_is_caught_up_on_the_same_schedule() -> None:
    clock = JitteryTime()
    pacer = Pacer(now=clock.now, sleep=clock.sleep, max_lag=0.1)
    start = clock.t
    for _ in range(10):
        await pacer.wait()
    clock.stall(0.05)  # 2.5 frames late: the next ones go out back to back, then on time
    due = [await pacer.wait() for _ in range(10)]
    assert due == pytest.approx([start + n * FRAME_SECONDS for n in range(10, 20)])
    assert clock.t - due[-1] <= LATE
    assert pacer.resyncs == 0


async def test_a_long_gap_restarts_the_schedule_instead_of_bursting() -> None:
    clock = JitteryTime()
    pacer = Pacer(now=clock.now, sleep=clock.sleep, max_lag=0.1)
    for _ in range(5):
        await pacer.wait()
    clock.stall(2.0)  # an idle gap between two utterances
    resumed = clock.t
    due = [await pacer.wait() for _ in range(5)]
    assert due == pytest.approx([resumed + n * FRAME_SECONDS for n in range(5)])
    assert pacer.resyncs == 1


async def test_restart_sends_the_next_frame_at_once() -> None:
    clock = JitteryTime()
    pacer = Pacer(now=clock.now, sleep=clock.sleep)
    await pacer.wait()
    pacer.restart()
    before = clock.t
    assert await pacer.wait() == before
    assert clock.t == before


async def test_pace_yields_every_frame_in_order_on_schedule() -> None:
    clock = JitteryTime()
    pacer = Pacer(now=clock.now, sleep=clock.sleep)

    async def frames() -> AsyncIterator[bytes]:
        for n in range(50):
            yield bytes([n]) * FRAME_BYTES

    start = clock.t
    out = [(frame[0], clock.t) async for frame in pacer.pace(frames())]
    assert [n for n, _ in out] == list(range(50))
    assert all(-EARLY <= t - (start + n * FRAME_SECONDS) <= LATE for n, t in out)


def test_framer_cuts_any_chunking_into_whole_frames() -> None:
    data = bytes(range(256)) * 20  # 5120 bytes = 32 frames
    rng = random.Random(3)
    framer = Framer()
    frames: list[bytes] = []
    i = 0
    while i < len(data):
        size = rng.randint(1, 700)
        frames += framer.push(data[i : i + size])
        i += size
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert b"".join(frames) == data
    assert framer.pending == 0
    assert framer.flush() is None


def test_framer_pads_the_last_frame_with_silence_and_clear_drops() -> None:
    framer = Framer()
    assert framer.push(b"\x01" * 200) == [b"\x01" * 160]
    assert framer.flush() == b"\x01" * 40 + b"\xff" * 120
    framer.push(b"\x02" * 100)
    framer.clear()
    assert framer.pending == 0
    assert framer.flush() is None


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="frame_bytes must be positive"):
        Framer(0)
    with pytest.raises(ValueError, match="period must be positive"):
        Pacer(period=0)
