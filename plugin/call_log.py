"""The call store read from the command line: `status` without a Gateway, `tail`, `latency`.

The Gateway is the store's only writer; these commands open the SQLite file read-only, so
they never create a store, take a write lock or disturb a running Gateway (WAL lets them read
while it writes).
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from voicecall.runtime.state import TERMINAL, CallRecord

STORE_FILE = "calls.sqlite"


class StoreError(Exception):
    """The store file cannot be read; the message names it."""


def store_file(path: Path) -> Path:
    """The SQLite file of a store given as its folder (the `store` key) or as the file."""
    return path / STORE_FILE if path.is_dir() or not path.suffix else path


class CallLog:
    """Read-only access to a store file; a missing file is an empty store."""

    def __init__(self, path: Path):
        self.path = store_file(path)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection | None]:
        if not self.path.exists():
            yield None
            return
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open the call store: {exc}") from exc
        with closing(db):
            db.execute("PRAGMA busy_timeout=2000")
            try:
                yield db
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot read the call store: {exc}") from exc

    def _records(self, sql: str, args: Sequence[Any] = ()) -> list[CallRecord]:
        with self._db() as db:
            if db is None:
                return []
            return [_record(db, call_id, row) for call_id, row in db.execute(sql, args)]

    def get(self, call_id: str) -> CallRecord | None:
        """The call with this id or carrier call id."""
        found = self._records(
            "SELECT call_id, record FROM calls WHERE call_id = ? OR provider_call_id = ? LIMIT 1",
            (call_id, call_id),
        )
        return found[0] if found else None

    def live(self) -> list[CallRecord]:
        """The calls that have not ended, oldest first."""
        marks = ",".join("?" * len(TERMINAL))
        return self._records(
            f"SELECT call_id, record FROM calls WHERE state NOT IN ({marks}) ORDER BY started_at",
            sorted(TERMINAL),
        )

    def recent(self, limit: int) -> list[CallRecord]:
        """The last ``limit`` calls started, oldest first."""
        rows = self._records(
            "SELECT call_id, record FROM calls ORDER BY started_at DESC LIMIT ?", (limit,)
        )
        return rows[::-1]

    def changed_since(self, updated_at: float) -> tuple[list[CallRecord], float]:
        """The calls changed after ``updated_at`` (store time), and the newest change seen."""
        with self._db() as db:
            if db is None:
                return [], updated_at
            rows = db.execute(
                "SELECT call_id, record, updated_at FROM calls WHERE updated_at > ? "
                "ORDER BY updated_at",
                (updated_at,),
            ).fetchall()
            records = [_record(db, call_id, row) for call_id, row, _ in rows]
        return records, max([updated_at, *(r[2] for r in rows)])

    def last_update(self) -> float:
        with self._db() as db:
            if db is None:
                return 0.0
            row = db.execute("SELECT max(updated_at) FROM calls").fetchone()
        return float(row[0] or 0.0)


def _record(db: sqlite3.Connection, call_id: str, row: str) -> CallRecord:
    data: dict[str, Any] = json.loads(row)
    lines = db.execute(
        "SELECT at, speaker, text, source, block FROM lines WHERE call_id = ? ORDER BY seq",
        (call_id,),
    ).fetchall()
    data["transcript"] = [
        {"at": a, "speaker": s, "text": t, "source": src, "block": b} for a, s, t, src, b in lines
    ]
    data["visited"] = [v for (v,) in db.execute(
        "SELECT node FROM visits WHERE call_id = ? ORDER BY seq", (call_id,))]  # fmt: skip
    return CallRecord.from_json(data)


# --- latency ------------------------------------------------------------------------------------


def summarize(values: Sequence[float]) -> dict[str, int]:
    """``{count, minMs, maxMs, avgMs, p50Ms, p95Ms}`` as the original's latency command
    (nearest-rank percentiles; zeros when there is nothing)."""
    if not values:
        return {"count": 0, "minMs": 0, "maxMs": 0, "avgMs": 0, "p50Ms": 0, "p95Ms": 0}
    ordered = sorted(values)

    def rank(p: float) -> int:
        index = min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))
        return round(ordered[index])

    return {"count": len(ordered), "minMs": round(ordered[0]), "maxMs": round(ordered[-1]),
            "avgMs": round(sum(ordered) / len(ordered)), "p50Ms": rank(50),
            "p95Ms": rank(95)}  # fmt: skip


def turn_samples(records: Iterable[CallRecord]) -> tuple[list[float], list[float]]:
    """Each answered turn's latency and listen wait (ms) kept on the records.

    A call keeps the metrics of each of its turns (``turnMetrics``); a record written without
    them counts its last turn (``lastTurnLatencyMs`` / ``lastTurnListenWaitMs``, the original's
    fields).
    """
    return metadata_samples(r.metadata for r in records)


def metadata_samples(metas: Iterable[Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    latency: list[float] = []
    wait: list[float] = []
    for meta in metas:
        turns = meta.get("turnMetrics")
        if isinstance(turns, list) and turns:
            for turn in turns:
                _add(latency, turn.get("latencyMs") if isinstance(turn, dict) else None)
                _add(wait, turn.get("listenWaitMs") if isinstance(turn, dict) else None)
            continue
        _add(latency, meta.get("lastTurnLatencyMs"))
        _add(wait, meta.get("lastTurnListenWaitMs"))
    return latency, wait


def _add(into: list[float], value: Any) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        into.append(float(value))


def latency_report(records: Sequence[CallRecord]) -> dict[str, Any]:
    """The original's ``latency`` payload over ``records``."""
    return _report(len(records), turn_samples(records))


def _report(scanned: int, samples: tuple[list[float], list[float]]) -> dict[str, Any]:
    latency, wait = samples
    return {
        "recordsScanned": scanned,
        "turnLatency": summarize(latency),
        "listenWait": summarize(wait),
    }


# --- the original's calls.jsonl ------------------------------------------------------------------
# The original plugin appended a full JSON snapshot of a call on every change to
# <store>/calls.jsonl; `tail --file` and `latency --file` still read such a file as it did.

MAX_LINE_BYTES = 1024 * 1024  # a longer line is not a call snapshot: skipped


def is_jsonl(path: Path) -> bool:
    return path.suffix == ".jsonl"


def jsonl_tail(path: Path, limit: int) -> tuple[list[str], int]:
    """The last ``limit`` lines of a JSONL file, and the offset after them (its size)."""
    try:
        with path.open("rb") as file:
            kept = (raw for raw in file if raw.strip() and len(raw) <= MAX_LINE_BYTES)
            lines = deque((raw.decode("utf-8", "replace").rstrip("\n") for raw in kept),
                          maxlen=limit)  # fmt: skip
            return list(lines), file.tell()
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def jsonl_since(path: Path, offset: int) -> tuple[list[str], int]:
    """Whole lines appended after ``offset``; a file that shrank is read from its start."""
    try:
        with path.open("rb") as file:
            file.seek(0, 2)
            if file.tell() < offset:
                offset = 0
            file.seek(offset)
            data = file.read()
    except FileNotFoundError:
        return [], 0
    except OSError as exc:
        raise StoreError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
    lines = [raw.decode("utf-8", "replace") for raw in complete.splitlines() if raw.strip()]
    return lines, offset + len(complete)


def jsonl_latency(path: Path, last: int) -> dict[str, Any]:
    """``latency`` over the last ``last`` snapshots of a calls.jsonl, as the original."""
    lines, _ = jsonl_tail(path, last)
    metas = []
    for line in lines:
        try:
            snapshot = json.loads(line)
        except ValueError:
            continue
        meta = snapshot.get("metadata") if isinstance(snapshot, dict) else None
        if isinstance(meta, Mapping):
            metas.append(meta)
    return _report(len(lines), metadata_samples(metas))
