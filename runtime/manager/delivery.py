"""Delivery to the carrier: a run becomes the webhook's XML reply, or Telnyx commands pumped
one awaited event at a time; runs pushed to a live call outside any webhook (a redirect, or
commands); REST requests sent after the commit, in order per call."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from typing import Any

from voicecall.runtime.interpreter import Command, Run
from voicecall.runtime.manager.core import Calls, Outcome, Send
from voicecall.runtime.providers.base import Reply
from voicecall.runtime.state import CallRecord, Waiting
from voicecall.runtime.urls import callback_url

log = logging.getLogger("voicecall.runtime")
# Telnyx commands whose completion event is itself an answer, not just "done".
_AWAIT_KINDS = {"gather_using_speak": "input", "transfer": "dial"}


class Delivery:
    """Gets what the interpreter produced to the carrier, and the carrier's REST requests
    out after the commit."""

    def __init__(self, calls: Calls):
        self.calls = calls
        self._sending: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Future[None]] = set()

    def __len__(self) -> int:
        """Per-call send chains and background work in flight (0 when idle)."""
        return len(self._sending) + len(self._tasks)

    def deliver(self, call: CallRecord, run: Run, out: Outcome) -> Outcome:
        """Turns a run into the webhook reply (XML) or queued commands (Telnyx)."""
        if self.calls.interpreter(call).xml:
            return Outcome(reply=self.calls.adapter.document(run.fragments), record=call,
                           sends=out.sends)  # fmt: skip
        call.pending["queue"] = [_queued(c) for c in run.commands]
        call.pending["next"] = 0
        return self.pump(call, out)

    def pump(self, call: CallRecord, out: Outcome, completed: str | None = None) -> Outcome:
        """Telnyx: sends queued commands up to the next one that must be waited for."""
        queue = call.pending.get("queue", [])
        index = int(call.pending.get("next", 0)) + (1 if completed else 0)
        sends = list(out.sends)
        timers = self.calls.timers
        while index < len(queue):
            cmd = queue[index]
            name = cmd["command"]
            if name == "pause":
                call.waiting = Waiting(block=cmd["block"], kind="timer", step=index)
                timers.set(call.call_id, "pause", cmd["body"]["duration_ms"] / 1000)
                break
            if name == "listen":
                call.waiting = Waiting(block=cmd["block"], kind="listen", step=cmd["step"])
                call.metadata["listenStartedAt"] = self.calls.clock.now()
                if cmd["body"].get("timeout_ms"):
                    timers.set(call.call_id, "listen", cmd["body"]["timeout_ms"] / 1000)
                break
            if name == "continue":
                run = self.calls.interpreter(call).advance(call, cmd["body"]["block"])
                queue[index + 1 : index + 1] = [_queued(c) for c in run.commands]
                index += 1
                continue
            sends.append(self.command_send(call, name, cmd["body"]))
            if cmd["awaits"]:
                kind = _AWAIT_KINDS.get(name, "command")
                call.waiting = Waiting(block=cmd["block"], kind=kind, step=cmd["step"],
                                       awaits=cmd["awaits"])  # fmt: skip
                if name == "transfer":  # Telnyx reports a failed transfer on the other leg
                    timers.set(call.call_id, "dial", cmd["body"].get("timeout_secs", 30) + 5)
                break
            index += 1
        call.pending["next"] = index
        return Outcome(reply=self.calls.adapter.empty(), record=call, sends=sends)

    def command_send(self, call: CallRecord, name: str, body: Mapping[str, Any]) -> Send:
        pid = call.provider_call_id or ""
        payload = dict(body)
        adapter = self.calls.adapter

        async def send() -> None:
            await adapter.command(pid, name, payload)

        return send

    def hold(self, call: CallRecord, out: Outcome) -> Outcome:
        """XML: keep the call on the line and ask again later (a pause, then a redirect)."""
        compiled = self.calls.interpreter(call).compiled
        if compiled.hold is None:
            return self.calls.ack(call, out)
        url = callback_url(self.calls.settings.webhook_base, call.call_id, "live")
        body = compiled.hold.render({}, {"callback_url": url})
        return Outcome(reply=self.calls.adapter.document([body]), record=call, sends=out.sends)

    def push(self, call: CallRecord, run: Run, why: str) -> Outcome:
        """Delivers a run to a live call outside any webhook (a redirect, or commands)."""
        if not self.calls.interpreter(call).xml:
            return self.deliver(call, run, Outcome(reply=Reply(), record=call))
        call.pending["fetch"] = {"fragments": run.fragments, "why": why}
        url = callback_url(self.calls.settings.webhook_base, call.call_id, "live")
        pid = call.provider_call_id or ""
        adapter = self.calls.adapter

        async def send() -> None:
            await adapter.redirect(pid, url)

        return Outcome(reply=Reply(), record=call, sends=[send])

    def hangup_send(self, call: CallRecord) -> Send:
        pid = call.provider_call_id
        adapter = self.calls.adapter

        async def send() -> None:
            if pid:
                await adapter.hangup(pid)

        return send

    def queue_sends(self, key: str, sends: list[Send]) -> None:
        """Runs REST side effects after the commit, in order per call."""
        if not sends:
            return
        previous = self._sending.get(key)

        async def run() -> None:
            if previous is not None:
                await asyncio.gather(previous, return_exceptions=True)
            for send in sends:
                try:
                    await send()
                except Exception as exc:  # the carrier failing must not kill the runtime
                    log.warning("call %s: a request to the carrier failed: %s", key, exc)

        task = asyncio.get_running_loop().create_task(run())
        self._sending[key] = task

        def done(_: asyncio.Task[None]) -> None:
            if self._sending.get(key) is task:  # the last of the chain: the call is idle
                del self._sending[key]

        task.add_done_callback(done)

    def background(self, work: Awaitable[None]) -> None:
        """Runs work that outlives a webhook (a late model reply); :meth:`drain` waits for it."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Waits until every queued REST side effect and background reply has run."""
        while self._sending or self._tasks:
            tasks = [*self._sending.values(), *self._tasks]
            await asyncio.gather(*tasks, return_exceptions=True)


def _queued(c: Command) -> dict[str, Any]:
    return {"command": c.command, "body": c.body, "awaits": c.awaits, "block": c.block,
            "step": c.step}  # fmt: skip
