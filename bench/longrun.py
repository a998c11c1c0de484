"""A long run of whole calls: the runtime's memory (RSS) and its events table must level off.

Each call is three webhooks, as a carrier sends them: the inbound request (answered with a
Gather), the caller pressing 0 (answered with a hang-up) and the final status callback. The
server's RSS is sampled every ``SAMPLE`` calls; the slope of a least-squares line through the
samples taken after ``WARMUP`` calls is reported in KB per 1000 calls (target: flat, i.e. a
few KB at most, which is allocator noise). The runtime runs with a short retention window
(eventRetentionHours), pruned as the run goes, so the events table stays at about a window's
worth of webhooks instead of growing with every call.

The runtime holds two bounded structures that fill during the warm-up, and the slope starts
after both are full: the metrics' ended call ids (``ENDED_KEPT`` calls, ~1.7 MB) and the
replay-key index, which holds the events table's keys (a retention window plus a prune
interval of webhooks; reported as the events table's rows). The index's size follows the
webhook rate, so calls are paced at ``RATE`` per second: a faster or slower moment of a
shared machine changes neither the index nor the slope (unpaced, runs measured +100 to +320
KB per 1000 calls after 5,000 calls: the two filling and the C heap growing with them, flat
from ~15,000 calls on; neither the Python objects nor the heap in use grew after that).

The server runs with glibc's mmap threshold fixed (``ALLOCATOR_ENV``). By default glibc raises
the threshold to the size of each large block freed, so later large blocks (the index's table
when it is rebuilt, a query's rows) come from the heap and leave it at a high-water mark that
moves in 0.4-1.3 MB steps, in use or not (measured: +49 KB per 1000 calls with the heap in use
flat; +0.0 to +0.4 with the threshold fixed). A leak still shows: Python objects, small blocks and
large blocks alike stay in RssAnon while they are held.

    python -m bench.longrun [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import html
import json
import os
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from bench.webhooks import PATH, RawClient, _fields, _server, _stop, log
from voicecall.runtime.ops import ENDED_KEPT

RATE = 200  # calls per second (600 webhooks): below what the server carries (~250-430)
RETENTION_H = 20 / 3600  # 20 s: pruned every 5 s during the run
# The ended call ids fill in ENDED_KEPT calls; the replay-key index (25 s of webhooks) and the
# allocator's heap settle within 12,000 calls at RATE (measured).
WARMUP = ENDED_KEPT + 5_000
CALLS = WARMUP + 30_000
SAMPLE = 500
WORKERS = 8
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}  # glibc's default, never raised
TARGET_KB_PER_1000 = 10.0

_T = TypeVar("_T")


def rss_kb(pid: int, field: str = "RssAnon") -> int:
    """Resident memory of a process, in KB: RssAnon (the heap: what a leak grows) by default.

    VmRSS also counts the SQLite file's pages mapped in (mmap_size), which grow with the file
    and are the kernel's to drop, not a leak of the process.
    """
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def slope(points: list[tuple[int, int]]) -> float:
    """Least-squares slope of (calls, KB) points, in KB per 1000 calls."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 1000 * sum((x - mx) * (y - my) for x, y in points) / den if den else 0.0


def _target(url: str) -> bytes:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}".encode()


async def one_call(client: RawClient, i: int) -> None:
    """Ring, press 0, hang up: one call from start to end."""
    sid = f"CA{i:032x}"
    status, text = await client.post(PATH.encode(), urlencode(_fields(sid, "ringing")).encode())
    found = re.search(rb'<Gather action="([^"]+)"', text)
    if status != 200 or found is None:
        raise RuntimeError(f"call {i}: {status} {text[:200]!r}")
    action = html.unescape(found.group(1).decode())
    call_id = re.search(r"[?&]call=([^&]+)", action)
    assert call_id is not None, action
    body = urlencode({**_fields(sid, "in-progress"), "Digits": "0"}).encode()
    status, text = await client.post(_target(action), body)
    if status != 200 or b"<Hangup" not in text:
        raise RuntimeError(f"call {i}: gather answered {status} {text[:200]!r}")
    done = f"{PATH}?{urlencode({'call': call_id.group(1), 'kind': 'status'})}".encode()
    status, text = await client.post(done, urlencode(_fields(sid, "completed")).encode())
    if status != 200:
        raise RuntimeError(f"call {i}: status callback answered {status} {text[:200]!r}")


async def drive(port: int, pid: int, calls: int, rate: float = RATE) -> list[tuple[int, int, int]]:
    """Runs ``calls`` calls over WORKERS connections, call ``i`` started no earlier than
    ``i / rate`` seconds in; returns samples of (calls done, anonymous RSS KB, total RSS KB)."""
    counter = iter(range(calls))
    started = time.perf_counter()
    done = 0
    samples: list[tuple[int, int, int]] = [(0, rss_kb(pid), rss_kb(pid, "VmRSS"))]

    async def worker() -> None:
        nonlocal done
        client = RawClient(port)
        for i in counter:
            if (ahead := started + i / rate - time.perf_counter()) > 0:
                await asyncio.sleep(ahead)
            await one_call(client, i)
            done += 1
            if done % SAMPLE == 0:
                samples.append((done, rss_kb(pid), rss_kb(pid, "VmRSS")))
                if done % (SAMPLE * 10) == 0:
                    log(f"longrun: {done} calls, RSS {samples[-1][1] / 1024:.1f} MB")
        client.close()

    await asyncio.gather(*(worker() for _ in range(WORKERS)))
    return samples


def table_sizes(db_path: Path) -> dict[str, Any]:
    db = sqlite3.connect(db_path)
    try:
        out: dict[str, Any] = {
            "events_rows": db.execute("SELECT count(*) FROM events").fetchone()[0],
            "calls_rows": db.execute("SELECT count(*) FROM calls").fetchone()[0],
            "live_calls": db.execute(
                "SELECT count(*) FROM calls WHERE state IN "
                "('initiated','ringing','answered','active','speaking','listening')"
            ).fetchone()[0],
        }
        try:  # dbstat is compiled into most SQLite builds; the size is a bonus
            row = db.execute("SELECT sum(pgsize) FROM dbstat WHERE name IN "
                             "('events', 'events_received')").fetchone()  # fmt: skip
            out["events_bytes"] = int(row[0] or 0)
        except sqlite3.Error:
            out["events_bytes"] = None
    finally:
        db.close()
    out["db_file_bytes"] = db_path.stat().st_size
    return out


def _allocator_fixed(start: Callable[[], _T]) -> _T:
    """Calls ``start`` (which starts the server) with :data:`ALLOCATOR_ENV` in the environment
    it inherits; the environment is as it was afterwards."""
    saved = {name: os.environ.get(name) for name in ALLOCATOR_ENV}
    os.environ.update(ALLOCATOR_ENV)
    try:
        return start()
    finally:
        for name, value in saved.items():
            if value is None:
                del os.environ[name]
            else:
                os.environ[name] = value


def run(repeat: int = 0, calls: int = CALLS, retention_h: float = RETENTION_H) -> dict[str, Any]:
    """One server with a short retention window; ``repeat`` is unused (one long run)."""
    del repeat
    with tempfile.TemporaryDirectory(prefix="bench-longrun-") as tmp:
        store = Path(tmp) / "store"
        with open(Path(tmp) / "server.log", "w+") as server_log:
            proc, port = _allocator_fixed(
                lambda: _server("runtime", store, None, server_log, retention_h=retention_h)
            )
            started = time.perf_counter()
            try:
                samples = asyncio.run(drive(port, proc.pid, calls))
            finally:
                elapsed = time.perf_counter() - started
                _stop(proc)
        sizes = table_sizes(store / "calls.sqlite")
    after = [p for p in samples if p[0] >= min(WARMUP, calls // 2)]
    anon = [(n, kb) for n, kb, _ in after]
    return {
        "calls": calls,
        "calls_per_s": calls / elapsed,
        "paced_calls_per_s": RATE,
        "warmup_calls": min(WARMUP, calls // 2),
        "rss_kb": {"start": samples[0][1], "after_warmup": after[0][1], "end": samples[-1][1]},
        "rss_slope_kb_per_1000_calls": slope(anon),
        "vmrss_slope_kb_per_1000_calls": slope([(n, kb) for n, _, kb in after]),
        "samples": samples,
        "retention_s": retention_h * 3600,
        # Every call's three webhooks change it: without pruning, this many rows would remain.
        "events_rows_without_pruning": 3 * calls,
        **sizes,
        "target_kb_per_1000": TARGET_KB_PER_1000,
    }


def report(r: dict[str, Any]) -> None:
    rss = r["rss_kb"]
    flat = "flat" if abs(r["rss_slope_kb_per_1000_calls"]) <= r["target_kb_per_1000"] else "GROWS"
    print(f"long run: {r['calls']} whole calls (3 webhooks each), {r['calls_per_s']:.0f} calls/s "
          f"(paced at {r['paced_calls_per_s']})")  # fmt: skip
    print(f"  RSS (anonymous) {rss['start'] / 1024:.1f} MB at start, "
          f"{rss['after_warmup'] / 1024:.1f} MB after "
          f"{r['warmup_calls']} calls, {rss['end'] / 1024:.1f} MB at the end")  # fmt: skip
    print(f"  RSS (anonymous) slope after warm-up {r['rss_slope_kb_per_1000_calls']:+.1f} KB per "
          f"1000 calls ({flat}; target within ±{r['target_kb_per_1000']:.0f}); VmRSS, with the "
          f"SQLite file mapped in, {r['vmrss_slope_kb_per_1000_calls']:+.1f}")  # fmt: skip
    size = f", {r['events_bytes'] / 1024:.0f} KB" if r["events_bytes"] is not None else ""
    print(f"  events table {r['events_rows']} rows{size} (the replay-key index holds as many "
          f"keys) with a {r['retention_s']:.0f} s window "
          f"({r['events_rows_without_pruning']} without pruning); calls table "
          f"{r['calls_rows']} rows, {r['live_calls']} live; file "
          f"{r['db_file_bytes'] / 1e6:.1f} MB")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=CALLS)
    parser.add_argument(
        "--retention-hours",
        type=float,
        default=RETENTION_H,
        help="eventRetentionHours for the run (0: the default window, 72 h)",
    )
    args = parser.parse_args()
    result = run(calls=args.calls, retention_h=args.retention_hours)
    report(result)
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
