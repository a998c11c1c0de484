"""The long run's driver: calls paced at a fixed rate, the server's allocator environment."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from bench import longrun
from bench.webhooks import RawClient, _server, _stop

RATE = 100.0
CALLS = 40


@pytest.mark.e2e
async def test_no_call_starts_before_its_turn_and_every_call_completes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    starts: list[tuple[int, float]] = []
    real_call = longrun.one_call

    async def timed_call(client: RawClient, i: int) -> None:
        starts.append((i, time.perf_counter()))
        await real_call(client, i)

    monkeypatch.setattr(longrun, "one_call", timed_call)
    with open(tmp_path / "server.log", "w+") as server_log:
        proc, port = _server("runtime", tmp_path / "store", None, server_log)
        try:
            began = time.perf_counter()
            samples = await longrun.drive(port, proc.pid, CALLS, rate=RATE)
        finally:
            _stop(proc)
    assert sorted(i for i, _ in starts) == list(range(CALLS))
    clock = time.get_clock_info("perf_counter").resolution
    # The loop's timers may fire up to a clock tick early, never a whole turn.
    early = [i for i, at in starts if at - began < i / RATE - 0.001 - clock]
    assert early == []
    assert samples[0][0] == 0 and samples[0][1] > 0
    calls = longrun.table_sizes(tmp_path / "store" / "calls.sqlite")["calls_rows"]
    assert calls == CALLS


def test_the_server_starts_with_the_fixed_mmap_threshold_and_the_environment_is_restored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (name, value), = longrun.ALLOCATOR_ENV.items()  # fmt: skip
    seen: list[str | None] = []
    monkeypatch.delenv(name, raising=False)
    longrun._allocator_fixed(lambda: seen.append(os.environ.get(name)))
    assert name not in os.environ
    monkeypatch.setenv(name, "65536")
    longrun._allocator_fixed(lambda: seen.append(os.environ.get(name)))
    assert os.environ[name] == "65536"
    assert seen == [value, value]
