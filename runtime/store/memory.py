"""What a store keeps in memory of the unfinished calls it holds, shared by the SQLite and Redis
stores: the records (a webhook decodes nothing), their carrier ids, and what is stored of each
(so a commit writes only what changed), dropped when a call ends or a write is not committed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

import orjson

from voicecall.runtime.state import CallRecord

log = logging.getLogger("voicecall.runtime")


class Stored(Protocol):
    """What the store holds of a call: its row text and how many lines and visits."""

    row: str
    lines: int
    visits: int


W = TypeVar("W", bound=Stored)


class LiveCalls(Generic[W]):
    """The calls a store holds in memory (all its live ones; with Redis, the ones it owns)."""

    def __init__(self) -> None:
        self._live: dict[str, CallRecord] = {}
        self._pids: dict[tuple[str, str], str] = {}
        self._written: dict[str, W] = {}
        # Called with each call record once its change is committed (Gateway events).
        self.watchers: list[Callable[[CallRecord], None]] = []

    def _stored(self, call_id: str) -> W:
        """What the store holds of a call (the memory first)."""
        raise NotImplementedError

    def _settle(self, record: CallRecord) -> None:
        """A committed change: the call kept (or dropped, if it ended); the watchers told."""
        if record.ended:
            self._drop(record)
        else:
            self._remember(record)
        for watcher in list(self.watchers):
            try:
                watcher(record)
            except Exception:  # a listener failing must not undo a commit
                log.exception("call %s: a store watcher failed", record.call_id)

    def _drop(self, record: CallRecord) -> None:
        """Forgets an ended call: it is read from the store if it is ever needed again."""
        self._live.pop(record.call_id, None)
        self._written.pop(record.call_id, None)
        for pid in (record.provider_call_id, *record.metadata.get("previous_provider_ids", [])):
            if pid and self._pids.get((record.provider, pid)) == record.call_id:
                del self._pids[(record.provider, pid)]

    def _remember(self, record: CallRecord) -> None:
        self._live[record.call_id] = record
        if record.provider_call_id:
            self._pids[(record.provider, record.provider_call_id)] = record.call_id

    def unchanged(self, record: CallRecord) -> bool:
        """Whether ``record`` is exactly as last committed."""
        before = self._stored(record.call_id)
        return before.row != "" and (
            len(record.transcript) == before.lines and len(record.visited) == before.visits
            and encode_row(record.to_row()) == before.row
        )  # fmt: skip

    def forget(self, call_id: str) -> None:
        """Drops a call changed by work that was not committed (read again when needed)."""
        self._live.pop(call_id, None)
        self._written.pop(call_id, None)
        for key in [k for k, v in self._pids.items() if v == call_id]:
            del self._pids[key]

    def cached(self) -> dict[str, int]:
        """How many entries each in-memory table holds (all of them per live call)."""
        return {"live": len(self._live), "pids": len(self._pids), "written": len(self._written)}


def encode_row(row: dict[str, object]) -> str:
    """A call's row as compact JSON: orjson (a webhook's row costs a tenth of json.dumps's);
    json.dumps for what orjson refuses (integers past 64 bits), so any row still encodes."""
    try:
        return orjson.dumps(row, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(row, separators=(",", ":"))
