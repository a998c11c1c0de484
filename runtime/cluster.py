"""Several gateways on one Redis store: leases, call ownership, routing to the owner.

Each gateway process is a node with a lease in Redis (``node:{id}``, renewed every third of
``redis.leaseSeconds``). An unfinished call is owned by one node (``owner:{id}``): the one that
created it, or took it over. Only the owner applies the call's events, runs its timers and
holds its media streams (their URL names the owner: ``redis.nodeUrl``), so per-call locks,
timers and in-memory state stay what they are with one process, and nothing needs sticky load
balancing.

What reaches another node for a call it does not own — a verified webhook's events, an agent
command (speak, continue, dtmf, end) — is routed to the owner through the owner's stream
(``inbox:{id}``); the answer comes back on the sender's. The signature was checked by the node
the carrier reached; the owner applies the events exactly once (the processed-event key is set
in the same atomic write as the call's changes) and its reply is the webhook's reply.

A node whose lease expired (``kill -9``, a lost host) has its calls taken over by the others:
each node looks for expired leases at every renewal, claims the dead node's calls one by one
(atomically: one node gets each), reads them from Redis and restores them as after a restart
(timers, a Telnyx command in flight sent again under the same ``command_id``). A webhook for a
call whose owner is dead is handled by the node it reached, which claims the call first.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import orjson

from voicecall.runtime.manager.core import CallError
from voicecall.runtime.manager.turns import AGENT_COMMANDS
from voicecall.runtime.providers.base import Event, EventKind, Reply
from voicecall.runtime.state import CallRecord
from voicecall.runtime.store.redis import NotOwner, RedisStore

if TYPE_CHECKING:
    from voicecall.runtime.manager import CallManager

log = logging.getLogger("voicecall.runtime")

DEFAULT_LEASE_S = 10.0
INBOX_MAXLEN = 10_000  # routed messages kept per node (approximate trim)
# An inbox expires this long after its last message: a message for a node that is gone (an
# answer to a dead sender, a request to an owner that died meanwhile) recreates its inbox
# after the sweep deleted it, and nothing would ever delete it again.
INBOX_TTL_MS = 3600_000
INBOX_BLOCK_MS = 1000  # how long one read of the inbox waits for a message
# A routed request is routed again at most this often (its call changed owner meanwhile: a
# takeover, a lease that lapsed); past it, the webhook is answered 503 and the carrier retries.
MAX_HOPS = 4

# Where a call's work goes, in one round trip. KEYS: 1 call:{id} of the id named (or any key),
# 2.. pid:{provider}:{pid} of the carrier ids named. ARGV: 1 the id named (or ''), 2 the owner
# key prefix, 3 the node-lease key prefix. Returns {call id or '', owner or '', lease alive}.
_WHERE = """
local id = false
if ARGV[1] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then id = ARGV[1] end
for i = 2, #KEYS do
  if id then break end
  id = redis.call('GET', KEYS[i])
end
if not id then return {'', '', 0} end
local owner = redis.call('GET', ARGV[2] .. id)
if not owner then return {id, '', 0} end
return {id, owner, redis.call('EXISTS', ARGV[3] .. owner)}
"""


class Unrouted(Exception):
    """A routed request got no answer in time (the owner is alive but does not answer)."""


class OwnerGone(Exception):
    """The owner's lease expired while it had a routed request: it is handled elsewhere."""


class Cluster:
    """This process's node: its lease, its inbox, routing and takeovers.

    Args:
        store: the shared store (its ``node`` is this node's id).
        manager: the call manager of this process.
        lease_s: how long the lease lasts without renewal.
        node_url: this node's own public base URL (media streams reach it there).
    """

    def __init__(
        self, store: RedisStore, manager: CallManager, *, lease_s: float = DEFAULT_LEASE_S,
        node_url: str | None = None,
    ):  # fmt: skip
        self.store = store
        self.manager = manager
        self.node = store.node
        self.lease_s = lease_s
        self.node_url = node_url or ""
        self.route_timeout_s = max(5.0, lease_s + 2.0)
        self._where = store.aio.register_script(_WHERE)
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._running: list[asyncio.Task[Any]] = []
        self._stopping = False
        # Called with the call records other nodes commit (the Gateway's events for clients
        # of this node); this node's own commits reach the store's watchers.
        self.watchers: list[Callable[[CallRecord], None]] = []
        self.taken_over = 0  # calls this node took over from dead ones (for tests, /metrics)
        self.routed = 0  # requests this node sent to another

    def key(self, *parts: str) -> str:
        return self.store.key(*parts)

    # --- the node's life ------------------------------------------------------------------------

    async def start(self) -> None:
        """Takes the lease, starts renewing it and reading the inbox, and takes over the calls
        of nodes whose lease expired (a restarted gateway's earlier self among them)."""
        aio = self.store.aio
        await aio.sadd(self.key("nodes"), self.node)  # type: ignore[misc]
        await aio.set(self.key("node", self.node), self.node_url, px=int(self.lease_s * 1000))
        # A blocking read holds its connection: a client of its own. Its idle connections (the
        # change notices' subscription) are pinged, so a silently dead one is found and opened
        # again (notices published meanwhile are missed: the next change of the call tells).
        self._reader = self.store.aio.__class__.from_url(self.store.url, socket_timeout=None,
                                                         health_check_interval=15)  # fmt: skip
        self._running = [asyncio.create_task(self._renew(), name="cluster-lease"),
                         asyncio.create_task(self._read(), name="cluster-inbox"),
                         asyncio.create_task(self._listen(), name="cluster-changes")]  # fmt: skip
        self.store.changes = self.key("changes")  # every commit tells the other nodes
        await self.sweep()
        log.info("cluster: node %s up (lease %.0fs)", self.node, self.lease_s)

    async def stop(self) -> None:
        """Gives the lease up: the other nodes take this node's unfinished calls over at once.

        Routed work in hand is finished first (its side effects sent), for at most the time a
        sender waits: cut off, what it committed would never reach the carrier, or its sender,
        unanswered, would run it again. New routed work is left to the next owner."""
        self._stopping = True
        if self._tasks:  # the inbox is still read: their own routed requests get answers
            await asyncio.wait(list(self._tasks), timeout=self.route_timeout_s)
        await self.manager.drain()
        self.store.changes = ""
        for task in self._running:
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await self.store.aio.delete(self.key("node", self.node), self.key("inbox", self.node))
        except Exception as exc:  # Redis gone: the lease expires by itself
            log.warning("cluster: lease not released (%s)", exc)
        await self._reader.aclose()

    # --- changes: every node's clients hear of every call --------------------------------------

    async def _listen(self) -> None:
        pubsub = self._reader.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(self.key("changes"))
        try:
            while True:
                try:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is not None:
                        await self._changed(message["data"])
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("cluster: change notice failed (%s)", exc)
                    await asyncio.sleep(0.5)
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _changed(self, data: bytes) -> None:
        node, _, call_id = data.decode().partition(" ")
        if node == self.node or not self.watchers:
            return
        record = await self.store.read(call_id)
        for watcher in list(self.watchers) if record is not None else []:
            try:
                watcher(record)  # type: ignore[arg-type]
            except Exception:
                log.exception("call %s: a change watcher failed", call_id)

    async def _renew(self) -> None:
        aio = self.store.aio
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                kept = await aio.set(self.key("node", self.node), self.node_url, xx=True,
                                     px=int(self.lease_s * 1000))  # fmt: skip
                # Another node's sweep drops a node whose lease lapsed with no call from the
                # nodes it sweeps: registered again, or its later calls are never taken over.
                await aio.sadd(self.key("nodes"), self.node)  # type: ignore[misc]
                if not kept:  # it expired (this process was paused): calls may have moved
                    log.warning("cluster: node %s lost its lease; checking its calls", self.node)
                    await aio.set(self.key("node", self.node), self.node_url,
                                  px=int(self.lease_s * 1000))  # fmt: skip
                    await self._recheck()
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster: lease renewal failed (%s); retrying", exc)

    async def _recheck(self) -> None:
        """After a lost lease: drops the calls another node took meanwhile."""
        for call_id in self.store.owned():
            owner = await self.store.aio.get(self.key("owner", call_id))
            if owner is None or owner.decode() != self.node:
                log.warning("call %s: taken over by another gateway", call_id)
                self.manager.calls.timers.cancel_all(call_id)
                self.store.forget(call_id)
                for hook in self.manager.calls.end_hooks:  # its stream and waiting turn too
                    hook(call_id, "taken over by another gateway")

    async def sweep(self) -> list[str]:
        """Takes over the unfinished calls of every node whose lease expired; returns them."""
        aio = self.store.aio
        taken: list[str] = []
        nodes = [n.decode() for n in await aio.smembers(self.key("nodes"))]  # type: ignore[misc]
        for node in nodes:
            if node == self.node or await aio.exists(self.key("node", node)):
                continue
            owned = await aio.smembers(self.key("owned", node))  # type: ignore[misc]
            for call_id in sorted(c.decode() for c in owned):
                if await self.store.claim(call_id, node):
                    taken.append(call_id)
            if not await aio.scard(self.key("owned", node)):  # type: ignore[misc]
                await aio.srem(self.key("nodes"), node)  # type: ignore[misc]
                await aio.delete(self.key("inbox", node), self.key("owned", node))
        if taken:
            await self._adopt(taken)
        return taken

    async def _adopt(self, call_ids: list[str]) -> None:
        records = [r for r in [await self.store.load(c) for c in call_ids] if r is not None]
        self.taken_over += len(records)
        for record in records:
            log.info("call %s: taken over by node %s", record.call_id, self.node)
        await self.manager.restorer.adopt(records)

    # --- routing --------------------------------------------------------------------------------

    async def owner(self, call_id: str | None, pids: Sequence[tuple[str, str]] = ()) -> str:
        """The node that is to handle the call named by ``call_id`` or by one of its carrier
        ids (provider, id) now: its owner if alive; this node if the call is unknown, has no
        owner (new, or ended) or its owner is dead (this node takes it over first)."""
        if call_id is not None and self.store.owns(call_id):
            return self.node  # the common case: no round trip
        if any(self.store.owns(self.store.cached_pid(p) or "") for p in pids):
            return self.node
        keys = [self.key("call", call_id or ""), *(self.key("pid", *p) for p in pids)]
        args = [call_id or "", self.key("owner", ""), self.key("node", "")]
        for _ in range(3):
            found, owner, alive = await self._where(keys=keys, args=args)
            found, owner = _text(found), _text(owner)
            if not found or not owner or owner == self.node:  # (ours: read when needed)
                return self.node
            if alive:
                return owner
            if await self.store.claim(found, owner):
                await self._adopt([found])
                return self.node
        return self.node

    async def handle(self, events: list[Event], key: str, hops: int = 0) -> Reply:
        """Applies a verified webhook's events here, or at the call's owner."""
        if not events:
            return await self.manager.events.handle(events, key)
        provider = self.manager.settings.provider
        pids = [(provider, p) for e in events
                for p in (e.provider_call_id, e.previous_provider_call_id) if p]  # fmt: skip
        here, answer = await self._at_owner(
            events[0].call_id, pids, lambda: self.manager.events.handle(events, key),
            kind="webhook", body=lambda: {"events": [_event_json(e) for e in events], "key": key},
            timeout_s=self.route_timeout_s, hops=hops)  # fmt: skip
        if here:
            return cast(Reply, answer)
        if "error" in answer:
            raise Unrouted(f"the call's owner: {answer['error']}")
        return Reply(body=base64.b64decode(answer["body"]), content_type=answer["type"],
                     status=int(answer["status"]))  # fmt: skip

    async def command(
        self, op: str, call_id: str, *args: Any, timeout_s: float, hops: int = 0
    ) -> Any:
        """Runs an agent command (``continue``, ``speak``, ``dtmf``, ``end``) where the call is:
        here, at its owner, or here after taking the call over from a dead owner."""
        here, answer = await self._at_owner(
            call_id, (), lambda: AGENT_COMMANDS[op](self.manager.turns, call_id, *args),
            kind="command", body=lambda: {"op": op, "call": call_id, "args": list(args)},
            timeout_s=timeout_s, hops=hops)  # fmt: skip
        if here:
            return answer
        if not answer.get("ok"):
            raise CallError(str(answer.get("error") or f"{op} failed"))
        return answer.get("result")

    async def _at_owner(
        self, call_id: str | None, pids: Sequence[tuple[str, str]],
        here: Callable[[], Awaitable[Any]], *, kind: str, body: Callable[[], Mapping[str, Any]],
        timeout_s: float, hops: int = 0,
    ) -> tuple[bool, Any]:  # fmt: skip
        """Runs ``here`` if this node owns the call (or takes it over), else sends ``kind`` with
        ``body()`` to the owner (built only then). Returns (True, what ``here`` returned) or
        (False, the owner's answer). Where the call moved meanwhile (a commit refused here, an
        owner gone before answering), it is done again where the call is now, up to MAX_HOPS
        times."""
        while True:
            target = await self.owner(call_id, pids) if hops < MAX_HOPS else self.node
            try:
                if target == self.node:
                    return True, await here()
                return False, await self._route(target, kind, {**body(), "hops": hops + 1},
                                                timeout_s)  # fmt: skip
            except (NotOwner, OwnerGone) as exc:  # nothing of it was sent from here
                if hops >= MAX_HOPS:
                    raise
                log.warning("%s: done again where the call is now", exc)
                hops += 1

    async def _route(
        self, node: str, kind: str, payload: Mapping[str, Any], timeout_s: float
    ) -> dict[str, Any]:
        request = uuid.uuid4().hex
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[request] = future
        self.routed += 1
        try:
            await self._send(node, {"kind": kind, "id": request, "from": self.node,
                                    "body": orjson.dumps(payload)})  # fmt: skip
            async with asyncio.timeout(timeout_s):
                return await self._answer(node, future)
        except TimeoutError:
            raise Unrouted(
                f"node {node} did not answer a routed {kind} in {timeout_s:.0f}s"
            ) from None
        finally:
            self._waiting.pop(request, None)

    async def _answer(self, node: str, future: asyncio.Future[dict[str, Any]]) -> dict[str, Any]:
        """The answer to a routed request; OwnerGone as soon as ``node``'s lease expires."""
        lease = self.key("node", node)
        while True:
            done, _ = await asyncio.wait([future], timeout=self.lease_s / 2)
            if done:
                return future.result()
            if not await self.store.aio.exists(lease):
                raise OwnerGone(f"node {node} is gone")

    async def _read(self) -> None:
        inbox, last = self.key("inbox", self.node), "0-0"
        # Past the read's own wait, its answer was lost (a silent network partition): the
        # connection is dropped and the read sent again, else the inbox is never read again.
        wait_s = INBOX_BLOCK_MS / 1000 + max(1.0, self.lease_s / 2)
        while True:
            try:
                async with asyncio.timeout(wait_s):
                    found = await self._reader.xread({inbox: last}, count=200,
                                                     block=INBOX_BLOCK_MS)  # fmt: skip
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("cluster: inbox read failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for _stream, messages in found or []:
                for message_id, fields in messages:
                    last = message_id
                    try:
                        self._dispatch({k.decode(): v for k, v in fields.items()})
                    except Exception as exc:  # one bad message must not stop the inbox
                        log.warning("cluster: routed message %s dropped (%s: %s)",
                                    message_id.decode(), type(exc).__name__, exc)  # fmt: skip

    def _dispatch(self, fields: dict[str, bytes]) -> None:
        kind, request = fields["kind"].decode(), fields["id"].decode()
        body = orjson.loads(fields["body"])
        if kind == "answer":
            future = self._waiting.get(request)
            if future is not None and not future.done():
                future.set_result(body)
            return
        if self._stopping:  # its sender gets OwnerGone once the lease is given up
            return
        task = asyncio.get_running_loop().create_task(
            self._serve(kind, request, fields["from"].decode(), body))  # fmt: skip
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, kind: str, request: str, sender: str, body: dict[str, Any]) -> None:
        try:
            if kind == "webhook":
                events = [_event_of(e) for e in body["events"]]
                reply = await self.handle(events, str(body["key"]), int(body.get("hops", 1)))
                answer: dict[str, Any] = {
                    "body": base64.b64encode(reply.body).decode(),
                    "type": reply.content_type,
                    "status": reply.status,
                }
            elif kind == "command":
                result = await self.command(str(body["op"]), str(body["call"]), *body["args"],
                                            timeout_s=self.route_timeout_s,
                                            hops=int(body.get("hops", 1)))  # fmt: skip
                answer = {"ok": True, "result": result}
            else:
                return
        except CallError as exc:
            answer = {"ok": False, "error": str(exc)}
        except Exception as exc:  # the sender answers its carrier with a retryable refusal
            log.exception("cluster: routed %s failed", kind)
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        await self._send(sender, {"kind": "answer", "id": request, "from": self.node,
                                  "body": orjson.dumps(answer)})  # fmt: skip

    async def _send(self, node: str, message: dict[Any, Any]) -> None:
        inbox = self.key("inbox", node)
        async with self.store.aio.pipeline(transaction=False) as pipe:
            pipe.xadd(inbox, message, maxlen=INBOX_MAXLEN, approximate=True)
            pipe.pexpire(inbox, INBOX_TTL_MS)
            await pipe.execute()


def _event_json(event: Event) -> dict[str, Any]:
    return {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}


def _event_of(data: Mapping[str, Any]) -> Event:
    fields = dict(data)
    fields["kind"] = EventKind(fields["kind"])
    return Event(**fields)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
