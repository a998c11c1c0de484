"""The Redis store: the calls of several gateway processes in one Redis server.

Every gateway that shares the server (and the ``redis.keyPrefix``) sees every call, but each
unfinished call has one owner, the gateway that created or took it over: only the owner
applies the call's events, runs its timers and holds its media streams; the others route what
they receive for it to the owner (:mod:`voicecall.runtime.cluster`). So, as with SQLite, the
owner keeps its live calls in memory and a webhook decodes nothing.

A webhook is committed by one Lua script, atomic in Redis: the processed-event key is set with
``SET NX`` and the retention as its expiry, and only if it was new are the call's row, its new
transcript lines and visited nodes, its carrier ids and its owner written; a duplicate changes
nothing. The script refuses a write for a call another gateway now owns (a gateway that lost
its lease while paused cannot overwrite the new owner's work).

Keys, all under the prefix::

    call:{id}             the call's row (compact JSON, as SQLite's calls.record)
    lines:{id}            its transcript lines, append-only (one JSON array each)
    visits:{id}           the nodes it visited, append-only
    pid:{provider}:{pid}  the call id of a carrier call id (earlier ids too)
    live, recent          sorted sets by start time: the unfinished calls, and all of them
    ev:{key}              a processed webhook's reply (content type, newline, body); expires
    rej:{provider}:{pid}  an inbound call that was rejected; expires
    hist:{session}        a responder session's messages
    owner:{id}            the node that owns an unfinished call
    owned:{node}          the calls a node owns (a set)
    node:{node}           a node's lease: expires unless renewed; its value is its stream URL
    nodes                 every node that has registered (a set)
    inbox:{node}          work routed to a node (a stream; see cluster.py)

Redis acknowledges a write once it is in memory; how much a crash of the Redis server itself
may lose is its persistence setting (``appendonly yes`` with ``appendfsync everysec``: about
a second). A ``kill -9`` of a gateway loses nothing that was answered.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

import orjson
import redis
import redis.asyncio as aioredis

from voicecall.runtime.state import CallRecord, TranscriptLine
from voicecall.runtime.store.base import StoredReply
from voicecall.runtime.store.memory import LiveCalls, encode_row

log = logging.getLogger("voicecall.runtime")

DEFAULT_PREFIX = "voicecall:"
# How long a processed-event key (and a rejected carrier call id) is kept when the manager does
# not say (its eventRetentionHours).
DEFAULT_RETENTION_S = 72 * 3600.0
# What was read of calls this node does not keep (ended, or another node's), for `unchanged`:
# at most this many, the least recently read dropped first.
READ_KEPT = 1024
# How long an ended call's record, transcript and carrier ids stay in Redis (redis.keepEndedHours).
DEFAULT_ENDED_KEPT_S = 7 * 24 * 3600.0

# KEYS: 1 ev, 2 call, 3 lines, 4 visits, 5 live, 6 recent, 7 owner, 8 owned:{me}, 9 rej,
#       10.. pid keys.
# ARGV: 1 me, 2 retention ms, 3 reply, 4 has event, 5 has record, 6 row, 7 started_at,
#       8 ended, 9 call id, 10 lines before, 11 new lines, 12 visits before, 13 new visits,
#       14 rejected, 15 the channel to tell of the change ('' for none), 16 how long an ended
#       call is kept (ms; 0: for ever), 17.. the new lines then the new visits.
# Returns 1 (committed), 0 (the event key was processed before: nothing written) or -1 (the
# call belongs to another node, or it is new and its carrier id names another call already:
# nothing written).
_COMMIT = """
local me = ARGV[1]
if ARGV[5] == '1' then
  local owner = redis.call('GET', KEYS[7])
  if owner and owner ~= me then return -1 end
  -- Two nodes that both found no call for a carrier id (a retry of the first webhook under
  -- another replay key, at the other node) create one each: the second is refused.
  if redis.call('EXISTS', KEYS[2]) == 0 then
    for k = 10, #KEYS do
      local other = redis.call('GET', KEYS[k])
      if other and other ~= ARGV[9] then return -1 end
    end
  end
end
if ARGV[4] == '1' then
  if not redis.call('SET', KEYS[1], ARGV[3], 'NX', 'PX', ARGV[2]) then return 0 end
end
if ARGV[14] == '1' then redis.call('SET', KEYS[9], '1', 'PX', ARGV[2]) end
if ARGV[5] ~= '1' then return 1 end
local id = ARGV[9]
redis.call('SET', KEYS[2], ARGV[6])
local at = 17
-- The items given start at index `before`; only those Redis does not hold yet are appended
-- (a node that had not read the call sends them all: nothing is doubled).
local function append(key, before, count)
  if count == 0 then return end
  local skip = redis.call('LLEN', key) - before
  if skip < 0 then skip = 0 end
  for i = at + skip, at + count - 1 do redis.call('RPUSH', key, ARGV[i]) end
  at = at + count
end
append(KEYS[3], tonumber(ARGV[10]), tonumber(ARGV[11]))
append(KEYS[4], tonumber(ARGV[12]), tonumber(ARGV[13]))
redis.call('ZADD', KEYS[6], ARGV[7], id)
if ARGV[8] == '1' then
  redis.call('ZREM', KEYS[5], id)
  redis.call('DEL', KEYS[7])
  redis.call('SREM', KEYS[8], id)
else
  redis.call('ZADD', KEYS[5], ARGV[7], id)
  redis.call('SET', KEYS[7], me)
  redis.call('SADD', KEYS[8], id)
end
for k = 10, #KEYS do redis.call('SET', KEYS[k], id) end
local kept = tonumber(ARGV[16])
if ARGV[8] == '1' and kept > 0 then
  -- An ended call leaves the server after the retention (Redis memory is not a disk).
  for _, key in ipairs({KEYS[2], KEYS[3], KEYS[4]}) do redis.call('PEXPIRE', key, kept) end
  for k = 10, #KEYS do redis.call('PEXPIRE', KEYS[k], kept) end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. (tonumber(ARGV[7]) - kept / 1000))
end
if ARGV[15] ~= '' then redis.call('PUBLISH', ARGV[15], me .. ' ' .. id) end
return 1
"""

# KEYS: 1 owner:{id}, 2 live, 3 owned:{me}, 4 owned:{from}, 5 node:{from}. ARGV: 1 me,
# 2 from, 3 call id. Takes a call over from ``from`` if its lease is still gone (it may have
# renewed it since the caller looked), it still owns the call and the call is unfinished.
# Returns 1 if taken.
_CLAIM = """
if redis.call('EXISTS', KEYS[5]) == 1 then return 0 end
local owner = redis.call('GET', KEYS[1])
if owner ~= false and owner ~= ARGV[2] then return 0 end
redis.call('SREM', KEYS[4], ARGV[3])
if not redis.call('ZSCORE', KEYS[2], ARGV[3]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"""


class NotOwner(Exception):
    """A write for a call another gateway owns now (this one lost its lease)."""


@dataclass(slots=True)
class _Written:
    """What Redis holds of a call: its row and how many lines and visits."""

    row: str
    lines: int
    visits: int


class RedisStore(LiveCalls["_Written"]):
    """The shared store: Redis, read through an in-memory copy of the calls this node owns.

    Args:
        url: ``redis://host:port/db`` (or ``rediss://``).
        prefix: prepended to every key (``redis.keyPrefix``).
        node: this process's node id (unique per process: a restarted gateway is a new node
            and takes its old calls over like any other).
        now: when events are received (the manager's clock).
        retention_s: how long processed-event keys are kept.
    """

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, node: str | None = None,
        now: Callable[[], float] = time.time, retention_s: float = DEFAULT_RETENTION_S,
        ended_kept_s: float = DEFAULT_ENDED_KEPT_S,
    ):  # fmt: skip
        self.url = url
        self.prefix = prefix
        self.node = node or uuid.uuid4().hex[:12]
        self.now = now
        self.retention_s = retention_s
        self.ended_kept_s = ended_kept_s  # how long an ended call stays (0: for ever)
        # Sync for what the manager reads under its locks (loopback round trips of tens of
        # microseconds, off the webhook path), async for commits and routing.
        self.sync = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self.aio = aioredis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)
        self._commit = self.aio.register_script(_COMMIT)
        self._claim = self.aio.register_script(_CLAIM)
        super().__init__()  # the calls this node owns, in memory (LiveCalls)
        self._read: OrderedDict[str, _Written] = OrderedDict()
        # The pub/sub channel each commit of a call is told on, in the same script ("": none;
        # the cluster sets it: other gateways' clients hear of this gateway's calls).
        self.changes = ""

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    # --- reading --------------------------------------------------------------------------------

    def get(self, call_id: str) -> CallRecord | None:
        if call_id in self._live:
            return self._live[call_id]
        pipe = self.sync.pipeline(transaction=False)
        pipe.get(self.key("call", call_id))
        pipe.lrange(self.key("lines", call_id), 0, -1)
        pipe.lrange(self.key("visits", call_id), 0, -1)
        pipe.get(self.key("owner", call_id))
        row, lines, visits, owner = pipe.execute()
        return self._decode(call_id, row, lines, visits, owner)

    async def load(self, call_id: str) -> CallRecord | None:
        """Reads a call from Redis (dropping what this node held of it): after a takeover."""
        self.forget(call_id)
        return await self.read(call_id)

    async def read(self, call_id: str) -> CallRecord | None:
        """Reads a call from Redis, without blocking (kept in memory only if this node owns
        it: see :meth:`get`)."""
        if call_id in self._live:
            return self._live[call_id]
        async with self.aio.pipeline(transaction=False) as pipe:
            pipe.get(self.key("call", call_id))
            pipe.lrange(self.key("lines", call_id), 0, -1)
            pipe.lrange(self.key("visits", call_id), 0, -1)
            pipe.get(self.key("owner", call_id))
            row, lines, visits, owner = await pipe.execute()
        return self._decode(call_id, row, lines, visits, owner)

    def _decode(
        self, call_id: str, row: bytes | None, lines: list[bytes], visits: list[bytes],
        owner: bytes | None,
    ) -> CallRecord | None:  # fmt: skip
        if row is None:
            return None
        data: dict[str, Any] = orjson.loads(row)
        data["transcript"] = [dict(zip(_LINE_FIELDS, orjson.loads(x), strict=True))
                              for x in lines]  # fmt: skip
        data["visited"] = [v.decode() for v in visits]
        record = CallRecord.from_json(data)
        # Only what this node owns is kept: another node's call changes under it.
        written = _Written(row.decode(), len(lines), len(visits))
        if not record.ended and owner is not None and owner.decode() == self.node:
            self._written[call_id] = written
            self._remember(record)
        else:  # a late webhook for an ended call asks `unchanged` of it: no blocking read then
            self._read[call_id] = written
            self._read.move_to_end(call_id)
            if len(self._read) > READ_KEPT:
                self._read.popitem(last=False)
        return record

    def find(self, provider: str, provider_call_id: str) -> CallRecord | None:
        cached = self._pids.get((provider, provider_call_id))
        if cached is not None and cached in self._live:
            return self._live[cached]
        call_id = cast(bytes | None, self.sync.get(self.key("pid", provider, provider_call_id)))
        return self.get(call_id.decode()) if call_id else None

    def peek(self, call_id: str) -> CallRecord | None:
        """What this node holds of a call in memory (never a round trip: log lines use it)."""
        return self._live.get(call_id)

    def peek_by(self, provider: str, provider_call_id: str) -> CallRecord | None:
        return self._live.get(self._pids.get((provider, provider_call_id), ""))

    async def read_by(self, provider: str, provider_call_id: str) -> CallRecord | None:
        cached = self._pids.get((provider, provider_call_id))
        if cached is not None and cached in self._live:
            return self._live[cached]
        call_id = await self.aio.get(self.key("pid", provider, provider_call_id))
        return await self.read(call_id.decode()) if call_id else None

    def cached_pid(self, pid: tuple[str, str]) -> str | None:
        """The call id of a carrier id (provider, id) of a call this node holds, if any."""
        return self._pids.get(pid)

    async def seen(self, key: str) -> StoredReply | None:
        stored = await self.aio.get(self.key("ev", key))
        if stored is None:
            return None
        content_type, _, body = bytes(stored).partition(b"\n")
        return StoredReply(body=body, content_type=content_type.decode() or "text/plain")

    async def was_rejected(self, provider: str, provider_call_id: str) -> bool:
        return bool(await self.aio.exists(self.key("rej", provider, provider_call_id)))

    def live(self) -> list[CallRecord]:
        """The unfinished calls this node owns (what its timers, reaper and restore act on)."""
        return sorted((c for c in self._live.values() if not c.ended), key=lambda c: c.started_at)

    def all_live(self) -> list[CallRecord]:
        """Every unfinished call of the deployment, whichever node owns it."""
        ids = [i.decode() for i in cast(list[bytes], self.sync.zrange(self.key("live"), 0, -1))]
        return [c for c in self._get_many(ids) if c is not None and not c.ended]

    async def count_live(self) -> int:
        """Unfinished calls of the whole deployment (maxConcurrentCalls counts them all)."""
        return int(await self.aio.zcard(self.key("live")))

    def recent(self, limit: int) -> list[CallRecord]:
        found = self.sync.zrange(self.key("recent"), 0, limit - 1, desc=True)
        ids = [i.decode() for i in cast(list[bytes], found)]
        return [c for c in self._get_many(ids) if c is not None]

    def _get_many(self, ids: list[str]) -> list[CallRecord | None]:
        """:meth:`get` of each of ``ids``, in one round trip (not one a call)."""
        missing = [i for i in ids if i not in self._live]
        read: dict[str, CallRecord | None] = {}
        if missing:
            pipe = self.sync.pipeline(transaction=False)
            for call_id in missing:
                pipe.get(self.key("call", call_id))
                pipe.lrange(self.key("lines", call_id), 0, -1)
                pipe.lrange(self.key("visits", call_id), 0, -1)
                pipe.get(self.key("owner", call_id))
            rows = pipe.execute()
            for n, call_id in enumerate(missing):
                read[call_id] = self._decode(call_id, *rows[4 * n : 4 * n + 4])
        return [self._live[i] if i in self._live else read.get(i) for i in ids]

    def owns(self, call_id: str) -> bool:
        """Whether this node holds ``call_id`` in memory as its owner."""
        return call_id in self._live

    def owned(self) -> set[str]:
        """The ids of the calls this node holds in memory as their owner."""
        return set(self._live)

    # --- writing --------------------------------------------------------------------------------

    async def save(self, record: CallRecord) -> None:
        await self._commit_change(None, record, None, None)

    async def commit_event(
        self, key: str, record: CallRecord | None, reply: StoredReply | None,
        rejected: tuple[str, str] | None = None,
    ) -> bool:  # fmt: skip
        return await self._commit_change(key, record, reply, rejected)

    async def _commit_change(
        self, key: str | None, record: CallRecord | None, reply: StoredReply | None,
        rejected: tuple[str, str] | None,
    ) -> bool:  # fmt: skip
        """One run of the commit script (``key`` None: a change outside a webhook)."""
        keys, args, written = self._commit_args(key, record, reply, rejected)
        done = await self._commit(keys=keys, args=args)
        if done != 1:
            if record is not None:  # not committed: reloaded from Redis when next needed
                self.forget(record.call_id)
            if done == -1:
                assert record is not None
                raise NotOwner(f"call {record.call_id} belongs to another gateway now")
            return False
        if record is not None:
            self._written[record.call_id] = written
            self._settle(record)
        return True

    def _commit_args(
        self, key: str | None, record: CallRecord | None, reply: StoredReply | None,
        rejected: tuple[str, str] | None,
    ) -> tuple[list[str], list[Any], _Written]:  # fmt: skip
        call_id = record.call_id if record is not None else ""
        keys = [self.key("ev", key or ""), self.key("call", call_id), self.key("lines", call_id),
                self.key("visits", call_id), self.key("live"), self.key("recent"),
                self.key("owner", call_id), self.key("owned", self.node),
                self.key("rej", *(rejected or ("", "")))]  # fmt: skip
        stored = b"" if reply is None else reply.content_type.encode() + b"\n" + reply.body
        flags = ["1" if key is not None else "0", "1" if record is not None else "0"]
        args: list[Any] = [self.node, int(self.retention_s * 1000), stored, *flags]
        if record is None:
            args += ["", 0, "0", "", 0, 0, 0, 0, "1" if rejected else "0", "", 0]
            return keys, args, _Written("", 0, 0)
        # What this node knows Redis holds; for a call it has not read, everything is sent and
        # the script appends what is missing (no read first).
        before = self._written.get(record.call_id) or _Written("", 0, 0)
        row = encode_row(record.to_row())
        lines = [orjson.dumps([getattr(line, f) for f in _LINE_FIELDS])
                 for line in record.transcript[before.lines :]]  # fmt: skip
        visits = record.visited[before.visits :]
        args += [row, record.started_at, "1" if record.ended else "0", record.call_id,
                 before.lines, len(lines), before.visits, len(visits),
                 "1" if rejected else "0", self.changes, int(self.ended_kept_s * 1000),
                 *lines, *visits]  # fmt: skip
        pids = [record.provider_call_id, *record.metadata.get("previous_provider_ids", [])]
        keys += [self.key("pid", record.provider, pid) for pid in pids if pid]
        return keys, args, _Written(row, len(record.transcript), len(record.visited))

    def _stored(self, call_id: str) -> _Written:
        cached = self._written.get(call_id) or self._read.get(call_id)
        if cached is not None:
            return cached
        pipe = self.sync.pipeline(transaction=False)
        pipe.get(self.key("call", call_id))
        pipe.llen(self.key("lines", call_id))
        pipe.llen(self.key("visits", call_id))
        row, lines, visits = pipe.execute()
        return _Written(row.decode() if row else "", int(lines), int(visits))

    def _drop(self, record: CallRecord) -> None:
        self.forget(record.call_id)

    def forget(self, call_id: str) -> None:
        super().forget(call_id)
        self._read.pop(call_id, None)

    # --- ownership ------------------------------------------------------------------------------

    async def claim(self, call_id: str, dead: str) -> bool:
        """Takes ``call_id`` over from the node ``dead`` (whose lease expired); True if taken."""
        keys = [self.key("owner", call_id), self.key("live"), self.key("owned", self.node),
                self.key("owned", dead), self.key("node", dead)]  # fmt: skip
        return bool(await self._claim(keys=keys, args=[self.node, dead, call_id]))

    # --- retention: processed-event keys and rejected ids expire by themselves --------------

    def prune(self, before: float, limit: int = 500) -> tuple[int, bool]:
        return 0, True

    # --- the response model's conversation history ----------------------------------------------

    async def history(self, session: str, limit: int) -> list[tuple[str, str]]:
        if limit <= 0:
            return []
        rows: list[bytes] = await self.aio.lrange(  # type: ignore[misc]
            self.key("hist", session), -limit, -1
        )
        return [(str(role), str(content)) for role, content in map(orjson.loads, rows)]

    async def add_history(
        self, session: str, messages: Sequence[tuple[str, str]], keep: int
    ) -> None:
        key = self.key("hist", session)
        async with self.aio.pipeline(transaction=True) as pipe:
            pipe.rpush(key, *(orjson.dumps([role, content]) for role, content in messages))
            pipe.ltrim(key, -keep, -1) if keep > 0 else pipe.delete(key)
            await pipe.execute()

    def close(self) -> None:
        self.sync.close()

    async def aclose(self) -> None:
        await self.aio.aclose()
        self.close()

    async def delete_all(self) -> int:
        """Deletes every key under the prefix (tests, and `voicecall` tooling); returns how many."""
        deleted = 0
        async for batch in _batches(self.aio.scan_iter(match=self.prefix + "*", count=1000)):
            deleted += int(await self.aio.unlink(*batch))
        return deleted


_LINE_FIELDS = tuple(f.name for f in fields(TranscriptLine))


async def _batches(keys: Any, size: int = 500) -> Any:
    batch: list[Any] = []
    async for key in keys:
        batch.append(key)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
