"""Where calls live: the store interface and its SQLite implementation (the embedded default).

Every webhook is applied in one transaction: the processed-event row (with the reply sent for
it) and the call's new record commit together, before the webhook is answered. So a duplicate
after a restart is still a duplicate, it gets the same reply, and nothing a webhook did is lost
or done twice. SQLite runs in WAL mode: a ``kill -9`` loses no committed transaction.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from voicecall.runtime.state import TERMINAL, CallRecord

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
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY,
    call_id TEXT,
    received_at REAL NOT NULL,
    reply BLOB,
    content_type TEXT
);
CREATE TABLE IF NOT EXISTS aliases (
    provider TEXT NOT NULL,
    provider_call_id TEXT NOT NULL,
    call_id TEXT NOT NULL,
    PRIMARY KEY (provider, provider_call_id)
);
"""


@dataclass(frozen=True, slots=True)
class StoredReply:
    """The reply a processed webhook got, replayed as it was for a duplicate."""

    body: bytes
    content_type: str


class Store(Protocol):
    def get(self, call_id: str) -> CallRecord | None: ...

    def find(self, provider: str, provider_call_id: str) -> CallRecord | None: ...

    def save(self, record: CallRecord) -> None: ...

    def seen(self, key: str) -> StoredReply | None:
        """The reply stored for an already processed event key, or None if it is new."""
        ...

    def commit_event(self, key: str, record: CallRecord | None, reply: StoredReply | None) -> bool:
        """Marks ``key`` processed and saves ``record`` in one transaction; False if seen."""
        ...

    def live(self) -> list[CallRecord]: ...

    def recent(self, limit: int) -> list[CallRecord]: ...

    def close(self) -> None: ...


class SQLiteStore:
    """The embedded store: one SQLite file, WAL, one connection on the event loop's thread."""

    def __init__(self, path: Path, synchronous: str = "NORMAL"):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode survives a process crash; FULL also survives power loss.
        self.db.execute(f"PRAGMA synchronous={synchronous}")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def get(self, call_id: str) -> CallRecord | None:
        row = self.db.execute("SELECT record FROM calls WHERE call_id = ?", (call_id,)).fetchone()
        return CallRecord.from_json(json.loads(row[0])) if row else None

    def find(self, provider: str, provider_call_id: str) -> CallRecord | None:
        row = self.db.execute(
            "SELECT record FROM calls WHERE provider = ? AND provider_call_id = ? "
            "UNION ALL SELECT c.record FROM aliases a JOIN calls c ON c.call_id = a.call_id "
            "WHERE a.provider = ? AND a.provider_call_id = ? LIMIT 1",
            (provider, provider_call_id, provider, provider_call_id),
        ).fetchone()
        return CallRecord.from_json(json.loads(row[0])) if row else None

    def save(self, record: CallRecord) -> None:
        with self._tx() as db:
            self._write(db, record)

    def _write(self, db: sqlite3.Connection, record: CallRecord) -> None:
        db.execute(
            "INSERT INTO calls (call_id, provider, provider_call_id, state, started_at, "
            "updated_at, record) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (call_id) DO UPDATE "
            "SET provider_call_id = excluded.provider_call_id, state = excluded.state, "
            "updated_at = excluded.updated_at, record = excluded.record",
            (record.call_id, record.provider, record.provider_call_id, record.state,
             record.started_at, time.time(), json.dumps(record.to_json())),
        )  # fmt: skip
        for alias in record.metadata.get("previous_provider_ids", []):
            db.execute(
                "INSERT OR IGNORE INTO aliases VALUES (?, ?, ?)",
                (record.provider, alias, record.call_id),
            )

    def seen(self, key: str) -> StoredReply | None:
        row = self.db.execute(
            "SELECT reply, content_type FROM events WHERE key = ?", (key,)
        ).fetchone()
        if row is None:
            return None
        return StoredReply(body=bytes(row[0] or b""), content_type=row[1] or "text/plain")

    def commit_event(self, key: str, record: CallRecord | None, reply: StoredReply | None) -> bool:
        with self._tx() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO events (key, call_id, received_at, reply, content_type) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, record.call_id if record else None, time.time(),
                 reply.body if reply else None, reply.content_type if reply else None),
            )  # fmt: skip
            if cursor.rowcount == 0:
                return False
            if record is not None:
                self._write(db, record)
        return True

    def live(self) -> list[CallRecord]:
        marks = ",".join("?" * len(TERMINAL))
        rows = self.db.execute(
            f"SELECT record FROM calls WHERE state NOT IN ({marks}) ORDER BY started_at",
            tuple(TERMINAL),
        ).fetchall()
        return [CallRecord.from_json(json.loads(r[0])) for r in rows]

    def recent(self, limit: int) -> list[CallRecord]:
        rows = self.db.execute(
            "SELECT record FROM calls ORDER BY started_at DESC LIMIT ?", (limit,)
        ).fetchall()
        return [CallRecord.from_json(json.loads(r[0])) for r in rows]

    def close(self) -> None:
        self.db.close()
