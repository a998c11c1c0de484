"""The SQLite store (the embedded default).

Every webhook is applied in one transaction: the processed-event row (with the reply sent for
it) and the call's changes commit together, before the webhook is answered. So a duplicate
after a restart is still a duplicate, it gets the same reply, and nothing a webhook did is lost
or done twice. SQLite runs in WAL mode: a ``kill -9`` loses no committed transaction.

A call's row holds its compact record; its transcript lines and visited nodes go to
append-only tables, so a webhook writes only what it added, however long the call. The store
keeps live calls in memory (it is the file's only writer), so a webhook decodes nothing; what
it holds of a call is dropped when the call ends (a long run must not grow with every call).

Processed-event keys are kept as long as a carrier may redeliver a webhook: :meth:`prune`
sweeps the table in key order, a small batch at a time, and deletes the older ones, so webhooks
never wait long behind it. A sweep instead of an index on the time received: the index costs
every webhook a page write (measured: 12% fewer calls per second), a sweep costs a read of each
row a few times over its life, in the background.

A replay check asks an in-memory set of the processed-event keys before the file: the set is
loaded at open (bounded by retention) and a key joins it only once its commit has landed, so it
is a cache of what is committed and a ``kill -9`` loses nothing it holds. A key absent from it
is new without a SELECT (most webhooks); a key in it still reads its stored reply.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicecall.runtime.state import TERMINAL, CallRecord, TranscriptLine
from voicecall.runtime.store.base import StoredReply
from voicecall.runtime.store.memory import LiveCalls, encode_row

log = logging.getLogger("voicecall.runtime")

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id TEXT PRIMARY KEY,
    provider TEXT NOT NULL,
    provider_call_id TEXT,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS calls_provider_id ON calls (provider, provider_call_id);
CREATE INDEX IF NOT EXISTS calls_state ON calls (state);
CREATE TABLE IF NOT EXISTS lines (
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    speaker TEXT NOT NULL,
    text TEXT NOT NULL,
    source TEXT NOT NULL,
    block TEXT NOT NULL,
    PRIMARY KEY (call_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS visits (
    call_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    node TEXT NOT NULL,
    PRIMARY KEY (call_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY,
    call_id TEXT,
    received_at REAL NOT NULL,
    reply BLOB,
    content_type TEXT
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS rejected (
    provider TEXT NOT NULL,
    provider_call_id TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (provider, provider_call_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS aliases (
    provider TEXT NOT NULL,
    provider_call_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    PRIMARY KEY (provider, provider_call_id)
);
CREATE TABLE IF NOT EXISTS history (
    session TEXT NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    role TEXT NOT NULL,
    content TEXT NOT NULL,
    PRIMARY KEY (session, seq)
) WITHOUT ROWID;
"""
# Processed-event keys kept in memory in front of the replay lookup (~35 MB at most).
MAX_INDEXED_KEYS = 250_000

# Webhooks arriving within this window share one commit; each is answered once it committed.
# A trade-off measured with `make bench`: at 8 requests in flight, 1 ms gave batches of about
# six and the best throughput; longer windows add more latency than they save in commits.
GROUP_WINDOW_S = 0.001
_TERMINAL = tuple(sorted(TERMINAL))
_NOT_ENDED = f"state NOT IN ({','.join('?' * len(_TERMINAL))})"


@dataclass(slots=True)
class _Batch:
    """Webhooks written in one open transaction, committed together (group commit)."""

    done: asyncio.Future[None]
    keys: set[str] = field(default_factory=set)
    settles: list[tuple[CallRecord, _Written]] = field(default_factory=list)


@dataclass(slots=True)
class _Written:
    """What the file holds of a call: its row text, how many lines and visits, and its indexed
    columns (state, carrier id)."""

    row: str
    lines: int
    visits: int
    state: str = ""
    provider_call_id: str | None = None


class SQLiteStore(LiveCalls["_Written"]):
    """The embedded store: one SQLite file, WAL, one connection on the event loop's thread."""

    def __init__(
        self, path: Path, synchronous: str = "NORMAL", now: Callable[[], float] = time.time
    ):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.now = now  # when events are received (the manager's clock: pruning uses it too)
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; FULL also survives power loss.
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA busy_timeout=5000")
        # Checkpoint the WAL less often: the same hot pages (live calls) are copied back once
        # per checkpoint, not once per commit's worth of checkpoints (measured: -17% per write).
        self.db.execute("PRAGMA wal_autocheckpoint=10000")
        self.db.execute("PRAGMA mmap_size=268435456")
        self.db.executescript(SCHEMA)
        # The committed processed-event keys (this process is the file's only writer), while
        # there are at most MAX_INDEXED_KEYS of them (~140 bytes each); past that, None: every
        # key is looked up in the file, as before the index.
        count = self.db.execute("SELECT count(*) FROM events").fetchone()[0]
        self._keys: set[str] | None = (
            {k for (k,) in self.db.execute("SELECT key FROM events")}
            if count <= MAX_INDEXED_KEYS else None
        )  # fmt: skip
        super().__init__()  # the live calls in memory (LiveCalls)
        self._batch: _Batch | None = None
        self._sweep = ""  # the last key the prune sweep examined ("": from the start)
        self.group_window_s = GROUP_WINDOW_S
        self.batches = 0  # commits of batches, and the webhooks in them (for `make bench`)
        self.batched = 0

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.flush()  # a synchronous write first commits the webhooks waiting in a batch
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # --- reading --------------------------------------------------------------------------------

    def get(self, call_id: str) -> CallRecord | None:
        if call_id in self._live:
            return self._live[call_id]
        row = self.db.execute("SELECT record FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return self._load(call_id, row[0]) if row else None

    def _load(self, call_id: str, row: str) -> CallRecord:
        data: dict[str, Any] = json.loads(row)
        lines = self.db.execute(
            "SELECT at, speaker, text, source, block FROM lines WHERE call_id = ? ORDER BY seq",
            (call_id,),
        ).fetchall()
        visits = [v[0] for v in self.db.execute(
            "SELECT node FROM visits WHERE call_id = ? ORDER BY seq", (call_id,))]  # fmt: skip
        data["transcript"] = [
            {"at": a, "speaker": s, "text": t, "source": src, "block": b}
            for a, s, t, src, b in lines
        ]
        data["visited"] = visits
        record = CallRecord.from_json(data)
        if not record.ended:  # an ended call is read, not cached
            self._written[call_id] = _Written(row, len(lines), len(visits), record.state,
                                              record.provider_call_id)  # fmt: skip
            self._remember(record)
        return record

    def find(self, provider: str, provider_call_id: str) -> CallRecord | None:
        cached = self._pids.get((provider, provider_call_id))
        if cached is not None and cached in self._live:
            return self._live[cached]
        row = self.db.execute(
            "SELECT call_id FROM calls WHERE provider = ? AND provider_call_id = ? "
            "UNION ALL SELECT call_id FROM aliases WHERE provider = ? AND provider_call_id = ? "
            "LIMIT 1",
            (provider, provider_call_id, provider, provider_call_id),
        ).fetchone()
        return self.get(row[0]) if row else None

    async def seen(self, key: str) -> StoredReply | None:
        if self._batch is not None and key in self._batch.keys:
            self.flush()  # only what is committed counts as seen
        if self._keys is not None and key not in self._keys:
            return None  # never committed: new, without reading the file
        row = self.db.execute(
            "SELECT reply, content_type FROM events WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return StoredReply(body=bytes(row[0] or b""), content_type=row[1] or "text/plain")

    async def was_rejected(self, provider: str, provider_call_id: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM rejected WHERE provider = ? AND provider_call_id = ?",
            (provider, provider_call_id),
        ).fetchone()
        return row is not None

    def live(self) -> list[CallRecord]:
        rows = self.db.execute(
            f"SELECT call_id FROM calls WHERE {_NOT_ENDED} ORDER BY started_at", _TERMINAL
        ).fetchall()
        return [r for r in (self.get(row[0]) for row in rows) if r is not None and not r.ended]

    def all_live(self) -> list[CallRecord]:
        """Every unfinished call (this process is the file's only user)."""
        return self.live()

    def peek(self, call_id: str) -> CallRecord | None:
        return self.get(call_id)  # a local file

    def peek_by(self, provider: str, provider_call_id: str) -> CallRecord | None:
        return self.find(provider, provider_call_id)

    async def read(self, call_id: str) -> CallRecord | None:
        return self.get(call_id)  # a local file: answers at once

    async def read_by(self, provider: str, provider_call_id: str) -> CallRecord | None:
        return self.find(provider, provider_call_id)

    async def count_live(self) -> int:
        row = self.db.execute(f"SELECT count(*) FROM calls WHERE {_NOT_ENDED}", _TERMINAL)
        count: int = row.fetchone()[0]
        return count

    def recent(self, limit: int) -> list[CallRecord]:
        rows = self.db.execute(
            "SELECT call_id FROM calls ORDER BY started_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [r for r in (self.get(row[0]) for row in rows) if r is not None]

    # --- writing --------------------------------------------------------------------------------

    async def save(self, record: CallRecord) -> None:
        self.write(record)  # a local file: at once

    def write(self, record: CallRecord) -> None:
        """:meth:`save`, synchronously (tools and tests that fill a store file)."""
        with self._tx() as db:
            written = self._write(db, record)
        self._written[record.call_id] = written
        self._settle(record)

    async def commit_event(
        self, key: str, record: CallRecord | None, reply: StoredReply | None,
        rejected: tuple[str, str] | None = None,
    ) -> bool:  # fmt: skip
        batch = self._open_batch()
        cursor = self.db.execute(
            "INSERT OR IGNORE INTO events (key, call_id, received_at, reply, content_type) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, record.call_id if record else None, self.now(),
             reply.body if reply else None, reply.content_type if reply else None),
        )  # fmt: skip
        if cursor.rowcount == 0:
            if record is not None:  # its changes are not committed: reload it next time
                self.forget(record.call_id)
            await asyncio.shield(batch.done)
            return False
        batch.keys.add(key)
        if rejected is not None:
            self.db.execute("INSERT OR IGNORE INTO rejected VALUES (?, ?, ?)",
                            (*rejected, self.now()))  # fmt: skip
        if record is not None:
            batch.settles.append((record, self._write(self.db, record)))
        await asyncio.shield(batch.done)
        return True

    def _open_batch(self) -> _Batch:
        if self._batch is None:
            loop = asyncio.get_running_loop()
            self.db.execute("BEGIN IMMEDIATE")
            self._batch = _Batch(done=loop.create_future())
            loop.call_later(self.group_window_s, self.flush)
        return self._batch

    def flush(self) -> None:
        """Commits the open batch, if any, and answers the webhooks waiting on it."""
        batch, self._batch = self._batch, None
        if batch is None:
            return
        self.batches += 1
        self.batched += len(batch.keys)
        try:
            self.db.execute("COMMIT")
        except sqlite3.Error as exc:
            self.db.execute("ROLLBACK")
            for record, _ in batch.settles:
                self.forget(record.call_id)
            batch.done.set_exception(exc)
            return
        if self._keys is not None:  # only once committed
            self._keys.update(batch.keys)
            if len(self._keys) > MAX_INDEXED_KEYS:
                log.info("%d processed-event keys: looked up in the file from now on",
                         len(self._keys))  # fmt: skip
                self._keys = None
        for record, written in batch.settles:
            self._written[record.call_id] = written
            self._settle(record)
        batch.done.set_result(None)

    def _write(self, db: sqlite3.Connection, record: CallRecord) -> _Written:
        """Writes what changed since the last commit; returns what the file will then hold."""
        before = self._stored(record.call_id)
        row = encode_row(record.to_row())
        if row != before.row and before.row and (before.state, before.provider_call_id) == (
                record.state, record.provider_call_id):  # fmt: skip
            # Neither indexed column changed: the indexes' pages stay as they are (an upsert
            # rewrites their entries, two more pages in every commit's WAL frames).
            db.execute("UPDATE calls SET updated_at = ?, record = ? WHERE call_id = ?",
                       (time.time(), row, record.call_id))  # fmt: skip
        elif row != before.row:
            db.execute(
                "INSERT INTO calls (call_id, provider, provider_call_id, state, started_at, "
                "updated_at, record) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO "
                "UPDATE SET provider_call_id = excluded.provider_call_id, state = excluded.state,"
                " updated_at = excluded.updated_at, record = excluded.record",
                (record.call_id, record.provider, record.provider_call_id, record.state,
                 record.started_at, time.time(), row),
            )  # fmt: skip
            for alias in record.metadata.get("previous_provider_ids", []):
                db.execute("INSERT OR IGNORE INTO aliases VALUES (?, ?, ?)",
                           (record.provider, alias, record.call_id))  # fmt: skip
        lines = record.transcript[before.lines :]
        if lines:
            db.executemany("INSERT INTO lines VALUES (?, ?, ?, ?, ?, ?, ?)",
                           [_line(record.call_id, before.lines + i, line)
                            for i, line in enumerate(lines)])  # fmt: skip
        visits = record.visited[before.visits :]
        if visits:
            db.executemany("INSERT INTO visits VALUES (?, ?, ?)",
                           [(record.call_id, before.visits + i, node)
                            for i, node in enumerate(visits)])  # fmt: skip
        return _Written(row, len(record.transcript), len(record.visited), record.state,
                        record.provider_call_id)  # fmt: skip

    def _stored(self, call_id: str) -> _Written:
        """What the file holds of a call: cached while it is live, else read from the file."""
        cached = self._written.get(call_id)
        if cached is not None:
            return cached
        row = self.db.execute("SELECT record, state, provider_call_id FROM calls "
                              "WHERE call_id = ?", (call_id,)).fetchone()  # fmt: skip
        if row is None:
            return _Written("", 0, 0)
        lines = self.db.execute("SELECT count(*) FROM lines WHERE call_id = ?", (call_id,))
        visits = self.db.execute("SELECT count(*) FROM visits WHERE call_id = ?", (call_id,))
        return _Written(row[0], lines.fetchone()[0], visits.fetchone()[0], row[1], row[2])

    # --- retention ------------------------------------------------------------------------------

    def prune(self, before: float, limit: int = 500) -> tuple[int, bool]:
        """Examines the next ``limit`` processed-event keys of the sweep and deletes those
        received before ``before``.

        Returns:
            How many were deleted, and whether the sweep reached the end of the table (the
            next call starts over from the first key).
        """
        rows = self.db.execute(
            "SELECT key, received_at FROM events WHERE key > ? ORDER BY key LIMIT ?",
            (self._sweep, limit),
        ).fetchall()
        self._sweep = rows[-1][0] if len(rows) == limit else ""
        old = [(key,) for key, received in rows if received < before]
        if old:
            with self._tx() as db:
                db.executemany("DELETE FROM events WHERE key = ?", old)
            if self._keys is not None:
                self._keys.difference_update(key for (key,) in old)
        if self._sweep == "":  # a sweep is complete: rejected call ids too (a small table)
            with self._tx() as db:
                db.execute("DELETE FROM rejected WHERE at < ?", (before,))
        return len(old), self._sweep == ""

    def count_events(self) -> int:
        count: int = self.db.execute("SELECT count(*) FROM events").fetchone()[0]
        return count

    # --- the response model's conversation history ----------------------------------------------

    async def history(self, session: str, limit: int) -> list[tuple[str, str]]:
        """The last ``limit`` messages of a responder session, oldest first: (role, content)."""
        rows = self.db.execute(
            "SELECT role, content FROM history WHERE session = ? ORDER BY seq DESC LIMIT ?",
            (session, limit),
        ).fetchall()
        return [(str(role), str(content)) for role, content in reversed(rows)]

    async def add_history(
        self, session: str, messages: Sequence[tuple[str, str]], keep: int
    ) -> None:
        """Appends messages to a session, durably, and drops all but its last ``keep``."""
        with self._tx() as db:
            row = db.execute("SELECT max(seq) FROM history WHERE session = ?", (session,))
            last = row.fetchone()[0]
            seq = -1 if last is None else int(last)
            db.executemany("INSERT INTO history VALUES (?, ?, ?, ?, ?)",
                           [(session, seq + i + 1, self.now(), role, content)
                            for i, (role, content) in enumerate(messages)])  # fmt: skip
            db.execute("DELETE FROM history WHERE session = ? AND seq <= ?",
                       (session, seq + len(messages) - keep))  # fmt: skip

    def close(self) -> None:
        self.flush()
        self.db.close()

    async def aclose(self) -> None:
        self.close()


def _line(call_id: str, seq: int, line: TranscriptLine) -> tuple[Any, ...]:
    return (call_id, seq, line.at, line.speaker, line.text, line.source, line.block)
