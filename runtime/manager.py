"""The CallManager: calls' lifecycle, one event at a time, exactly once.

Every verified webhook becomes events (the adapter's job); :meth:`CallManager.handle` applies
them to the call under a per-call lock, computes the reply, and commits the processed-event key,
the new call record and the reply in one transaction before the webhook is answered. REST side
effects (Telnyx commands, hang-ups, live updates) run after that commit, in order per call; a
Telnyx command carries a ``command_id`` so that re-sending it after a crash is harmless.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from voicecall.compiler.base import CompiledFlow
from voicecall.dsl import model as m
from voicecall.runtime import adhoc
from voicecall.runtime.interpreter import Interpreter, Run
from voicecall.runtime.manager_base import (
    CallError,
    FlowSource,
    ManagerSettings,
    Responder,
    Send,
    _mask,
    _Outcome,
)
from voicecall.runtime.manager_timers import Timers
from voicecall.runtime.providers.base import Event, EventKind, Reply
from voicecall.runtime.state import CallRecord, Waiting
from voicecall.runtime.store import StoredReply

__all__ = ["CallError", "CallManager", "FlowSource", "ManagerSettings", "Responder", "Send"]

log = logging.getLogger("voicecall.runtime")


class CallManager(Timers):
    """Owns the calls of one process: events, timers, agent commands, restore."""

    async def initiate(
        self, *, to: str | None, flow: str, params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CallRecord:  # fmt: skip
        """Places an outbound call running ``flow``; returns its record once the carrier took it.

        Raises:
            CallError: no number, too many calls, unknown flow, missing params, carrier refusal.
        """
        target = to or self.settings.to_number
        if not target:
            raise CallError("no number to call: pass `to`, or set toNumber in the config")
        live = self.store.count_live()
        if live >= self.settings.max_concurrent:
            raise CallError(f"{live} call(s) in progress; maxConcurrentCalls is "
                            f"{self.settings.max_concurrent}")  # fmt: skip
        compiled = self._compiled_or_error(flow)
        values = _params(compiled.flow, params or {})
        call = CallRecord.new(provider=self.settings.provider, direction="outbound",
                              from_number=self.settings.from_number, to_number=target,
                              flow=compiled.flow.name, flow_digest=compiled.flow.digest,
                              params=values, started_at=self.clock.now(),
                              metadata=dict(metadata or {}))  # fmt: skip
        self.store.save(call)
        try:
            provider_id = await self.adapter.create_call(
                call_id=call.call_id, to=target, from_=self.settings.from_number,
                webhook_base=self.settings.webhook_base,
                timeout_s=int(self.settings.ring_timeout_s),
            )  # fmt: skip
        except Exception as exc:
            await self._finalize_now(call.call_id, "failed", f"the carrier refused: {exc}")
            raise CallError(f"the carrier refused the call: {exc}") from exc
        async with self.lock(call.call_id):
            fresh = self.store.get(call.call_id) or call
            fresh.provider_call_id = fresh.provider_call_id or provider_id
            self.store.save(fresh)
        self._timer(call.call_id, "ring", self.settings.ring_timeout_s)
        log.info("call %s: placed to %s with flow %s (%s)", call.call_id, _mask(target),
                 call.flow, provider_id)  # fmt: skip
        return fresh

    def _compiled_or_error(self, flow: str) -> CompiledFlow:
        try:
            return self.compiled(flow)
        except LookupError as exc:
            raise CallError(str(exc.args[0] if exc.args else exc)) from exc

    async def handle(self, events: list[Event], key: str) -> Reply:
        """Applies a verified request's events; returns the reply (stored with the event)."""
        if not events:
            await self.store.commit_event(key, None, None)
            return self.adapter.empty()
        first = events[0]
        lock_key = first.call_id or first.provider_call_id or key
        async with self.lock(lock_key):
            outcome = _Outcome(reply=self.adapter.empty(), record=None)
            try:
                for event in events:
                    outcome = await self._apply(event, outcome)
            except BaseException:
                self._forget(outcome.record, events)
                raise
            if self._changes_nothing(outcome):
                # Nothing to protect: doing it again is the same as doing it once, and it
                # would get the same reply. No processed-event row, no write.
                return outcome.reply
            reply = StoredReply(outcome.reply.body, outcome.reply.content_type)
            if not await self.store.commit_event(key, outcome.record, reply):
                # A duplicate that raced past the server's check: its work is dropped.
                stored = self.store.seen(key)
                assert stored is not None
                return Reply(stored.body, stored.content_type)
        if outcome.record is not None:
            self._after_commit(outcome.record)
            self._queue_sends(outcome.record.call_id, outcome.sends)
        return outcome.reply

    def _changes_nothing(self, outcome: _Outcome) -> bool:
        """No state change, no side effect, and the plain acknowledgement as the reply."""
        if outcome.sends or outcome.reply.body != self.adapter.empty().body:
            return False
        return outcome.record is None or self.store.unchanged(outcome.record)

    def _forget(self, record: CallRecord | None, events: list[Event]) -> None:
        """Drops in-memory changes that were not committed (the store reloads the call)."""
        for call_id in {record.call_id if record else None, *(e.call_id for e in events)}:
            if call_id:
                self.store.forget(call_id)

    async def _apply(self, event: Event, outcome: _Outcome) -> _Outcome:
        call = outcome.record or self._find(event)
        log.debug("event %s %s block=%s step=%s waiting=%s", event.kind, event.detail,
                  event.block, event.step, call.waiting if call else None)  # fmt: skip
        if call is None:
            return await self._unknown_call(event, outcome)
        if event.provider_call_id and event.provider_call_id != call.provider_call_id:
            renamed = call.provider_call_id is None or (
                event.previous_provider_call_id == call.provider_call_id)  # fmt: skip
            if not renamed:
                log.info("call %s: %s for another leg (%s): ignored", call.call_id, event.kind,
                         event.provider_call_id)  # fmt: skip
                return _Outcome(reply=self.adapter.empty(), record=call, sends=outcome.sends)
            _remap(call, event)
        if call.ended:
            return _Outcome(reply=self.adapter.empty(), record=call, sends=outcome.sends)
        handler = _HANDLERS[event.kind]
        result: _Outcome = await handler(self, call, event, outcome)
        return result

    def _find(self, event: Event) -> CallRecord | None:
        if event.call_id:
            found = self.store.get(event.call_id)
            if found is not None:
                return found
        for pid in (event.provider_call_id, event.previous_provider_call_id):
            if pid:
                found = self.store.find(self.settings.provider, pid)
                if found is not None:
                    return found
        return None

    async def _unknown_call(self, event: Event, outcome: _Outcome) -> _Outcome:
        inbound = event.direction == "inbound" and event.kind in (
            EventKind.FETCH,
            EventKind.INITIATED,
        )
        if not inbound:
            log.info("event %s for an unknown call (%s): acknowledged, ignored", event.kind,
                     event.provider_call_id)  # fmt: skip
            return outcome
        return self._inbound(event, outcome)

    def _inbound(self, event: Event, outcome: _Outcome) -> _Outcome:
        flow = self._compiled_or_error(self.settings.inbound_flow)
        admitted, why = self.admits(flow.flow, event.from_number)
        if not admitted:
            log.info("inbound call from %s rejected: %s", _mask(event.from_number or ""), why)
            return self._reject(event, flow.flow, outcome)
        if self.store.count_live() >= self.settings.max_concurrent:
            log.info("inbound call rejected: maxConcurrentCalls reached")
            return self._reject(event, flow.flow, outcome)
        call = CallRecord.new(provider=self.settings.provider, direction="inbound",
                              from_number=event.from_number or "", to_number=event.to_number or "",
                              flow=flow.flow.name, flow_digest=flow.flow.digest,
                              provider_call_id=event.provider_call_id,
                              started_at=self.clock.now())  # fmt: skip
        call.move("ringing")
        if flow.kind == "xml":
            self._answered(call)
        run = self.interpreter(call).start(call)
        return self._deliver(call, run, outcome)

    def admits(self, flow: m.Flow, caller: str | None) -> tuple[bool, str]:
        """Whether an inbound caller may reach ``flow``: its admit, else the plugin config."""
        policy = flow.admit.policy if flow.admit else self.settings.inbound_policy
        allowed = flow.admit.allow_from if flow.admit and flow.admit.allow_from else (
            self.settings.allow_from)  # fmt: skip
        digits = re.sub(r"\D", "", caller or "")
        if policy == "open":
            return True, ""
        if policy == "disabled":
            return False, "inbound calls are disabled"
        if not digits:
            return False, "no caller number (anonymous)"
        if digits in {re.sub(r"\D", "", n) for n in allowed}:
            return True, ""
        return False, "caller not in allow_from"

    def _reject(self, event: Event, flow: m.Flow, outcome: _Outcome) -> _Outcome:
        message = (
            flow.admit.reject_message.source if flow.admit and flow.admit.reject_message else ""
        )
        rejection = adhoc.reject_flow(self.settings.provider, bool(message))
        block = rejection.block(rejection.start)
        if block.xml is not None:
            body = block.xml.render({"message": message}, {"callback_url": ""})
            return _Outcome(reply=self.adapter.document([body]), record=None)
        pid = event.provider_call_id
        if pid:
            sends: list[Send] = [
                lambda: self.adapter.command(pid, "reject", {"cause": "CALL_REJECTED"})
            ]
            self._queue_sends(f"reject:{pid}", sends)
        return outcome

    async def on_progress(self, call: CallRecord, event: Event, out: _Outcome) -> _Outcome:
        call.move({EventKind.INITIATED: "initiated", EventKind.RINGING: "ringing"}.get(
            event.kind, "answered"))  # fmt: skip
        if event.kind is EventKind.ANSWERED:
            return self._on_answered(call, event, out)
        return _Outcome(reply=self.adapter.empty(), record=call, sends=out.sends)

    def _on_answered(self, call: CallRecord, event: Event, out: _Outcome) -> _Outcome:
        first = call.answered_at is None
        self._answered(call)
        if self.interpreter(call).compiled.kind == "xml":
            return _Outcome(reply=self.adapter.empty(), record=call, sends=out.sends)
        if call.waiting and call.waiting.awaits == "call.answered":
            return self._pump(call, out, completed="call.answered")
        if first and call.direction == "outbound":
            return self._deliver(call, self.interpreter(call).start(call), out)
        return _Outcome(reply=self.adapter.empty(), record=call, sends=out.sends)

    async def on_fetch(self, call: CallRecord, event: Event, out: _Outcome) -> _Outcome:
        interp = self.interpreter(call)
        pushed = call.pending.pop("fetch", None)
        if pushed is not None:  # what we pushed with a redirect: an agent turn, a handler
            call.metadata["listenStartedAt"] = self.clock.now()
            return _Outcome(reply=self.adapter.document(pushed["fragments"]), record=call,
                            sends=out.sends)  # fmt: skip
        if call.waiting and call.waiting.kind == "fetch":
            return self._deliver(call, interp.advance(call, call.waiting.block), out)
        if not call.scopes:
            self._answered(call)
            return self._deliver(call, interp.start(call), out)
        if call.waiting and call.waiting.kind == "converse":
            return self._deliver(call, interp.advance(call, call.waiting.block,
                                                      call.waiting.step), out)  # fmt: skip
        return self._hold(call, out)

    async def on_input(self, call: CallRecord, event: Event, out: _Outcome) -> _Outcome:
        waiting = call.waiting
        if waiting is None or waiting.kind not in ("input", "converse", "command", "listen"):
            log.info("call %s: input with nothing waiting for it: ignored", call.call_id)
            return self._hold(call, out)
        block = event.block or waiting.block
        step = event.step if event.step is not None else waiting.step
        if (block, step) != (waiting.block, waiting.step) and self.interpreter(call).xml:
            log.info("call %s: stale input for %s/%s (waiting for %s/%s): ignored",
                     call.call_id, block, step, waiting.block, waiting.step)  # fmt: skip
            return self._hold(call, out)
        return await self._answer(call, waiting, out, digits=event.digits or "",
                                  text=event.text or "", confidence=event.confidence,
                                  invalid=event.status == "invalid")  # fmt: skip

    async def _answer(
        self, call: CallRecord, waiting: Waiting, out: _Outcome, *, digits: str = "",
        text: str = "", confidence: float | None = None, invalid: bool = False,
    ) -> _Outcome:  # fmt: skip
        interp = self.interpreter(call)
        self._cancel(call.call_id, "listen")
        prefix = interp.after_input(call, waiting.block, waiting.step) if not interp.xml else []
        if self._conversing(call, waiting):
            run = await self._converse(call, waiting, text or digits)
        else:
            run = interp.answer_input(
                call,
                waiting.block,
                waiting.step,
                digits=digits,
                text=text,
                confidence=confidence,
                invalid=invalid,
            )
        run.commands[:0] = prefix
        return self._deliver(call, run, out)

    def _conversing(self, call: CallRecord, waiting: Waiting) -> bool:
        if waiting.kind == "converse":
            return True
        block = self.interpreter(call).block(waiting.block)
        return type(block.end).__name__ == "Converse"

    async def _converse(self, call: CallRecord, waiting: Waiting, text: str) -> Run:
        interp = self.interpreter(call)
        options = call.metadata.get("converse", {})
        if options.get("driver") == "model" and text:
            return await self._model_turn(call, interp, waiting, text, options)
        run = interp.converse_input(call, waiting.block, waiting.step, text)
        waiter = self._waiters.pop(call.call_id, None)
        if waiter is not None and text and not waiter.done():
            self._latency(call)
            waiter.set_result(text)
        return run

    def _latency(self, call: CallRecord) -> None:
        """The original plugin's turn metrics, kept on the record (`voicecall latency`)."""
        now = self.clock.now()
        meta = call.metadata
        started = self._turn_started.get(call.call_id, now)
        listening = float(meta.get("listenStartedAt") or started)
        meta["turnCount"] = int(meta.get("turnCount", 0)) + 1
        meta["lastTurnLatencyMs"] = round((now - started) * 1000)
        meta["lastTurnListenWaitMs"] = round((now - max(listening, started)) * 1000)
        meta["lastTurnCompletedAt"] = now

    async def _model_turn(
        self, call: CallRecord, interp: Interpreter, waiting: Waiting, text: str,
        options: Mapping[str, Any],
    ) -> Run:  # fmt: skip
        interp.heard(call, text, interp.block(waiting.block))
        turns = int(call.metadata.get("turns", 0)) + 1
        call.metadata["turns"] = turns
        last = options.get("max_turns") and turns >= int(options["max_turns"])
        kind = adhoc.FINAL if last else adhoc.TURN
        if self.responder is None:
            return interp.agent_turn(call, kind, "")
        timeout = (options.get("timeout_ms") or 30_000) / 1000
        reply = asyncio.ensure_future(
            asyncio.wait_for(self.responder.reply(call, text, options), timeout))  # fmt: skip
        # A carrier waiting for the document gives up after ~15 s (Twilio): a slower reply is
        # answered with a hold, and pushed to the call with a redirect when it arrives.
        inline = min(timeout, self.inline_reply_s) if interp.xml else timeout
        done, _ = await asyncio.wait({reply}, timeout=inline)
        if reply in done:
            return interp.agent_turn(call, kind, _reply_text(call, reply))
        self._background(self._late_reply(call.call_id, kind, reply))
        return interp.converse_input(call, waiting.block, waiting.step, "")

    async def _late_reply(self, call_id: str, kind: str, task: asyncio.Future[str]) -> None:
        await asyncio.wait({task})
        async with self.lock(call_id):
            call = self.store.get(call_id)
            if call is None or call.ended:
                return
            run = self.interpreter(call).agent_turn(call, kind, _reply_text(call, task))
            outcome = self._push(call, run, "model reply")
            self.store.save(call)
        self._queue_sends(call_id, outcome.sends)

    async def on_dial(self, call: CallRecord, event: Event, out: _Outcome) -> _Outcome:
        self._cancel(call.call_id, "dial")
        waiting = call.waiting
        if waiting is None or waiting.kind not in ("dial", "command"):
            return self._hold(call, out)
        run = self.interpreter(call).dial_result(call, waiting.block, event.status or "failed")
        return self._deliver(call, run, out)

    async def on_command_ended(self, call: CallRecord, event: Event, out: _Outcome) -> _Outcome:
        waiting = call.waiting
        if waiting is None or waiting.kind != "command" or waiting.awaits != event.detail:
            return _Outcome(reply=self.adapter.empty(), record=call, sends=out.sends)
        return self._pump(call, out, completed=event.detail)

    async def on_speech(self, call: CallRecord, event: Event, out: _Outcome) -> _Outcome:
        waiting = call.waiting
        if not event.final or waiting is None or waiting.kind not in ("listen", "command", "input"):
            return _Outcome(reply=self.adapter.empty(), record=call, sends=out.sends)
        return await self._answer(
            call, waiting, out, text=event.text or "", confidence=event.confidence
        )

    async def on_ended(self, call: CallRecord, event: Event, out: _Outcome) -> _Outcome:
        reason = call.ending or event.status or "completed"
        if (
            reason == "completed"
            and call.waiting
            and call.waiting.kind in ("input", "converse", "listen")
        ):
            reason = "hangup-user"  # they hung up while we were listening
        self._finalize(call, reason)
        run = self.interpreter(call).handler(call, "hangup") if call.answered_at else None
        del run  # the caller is gone: a hangup handler's server-side steps have run; no output
        return _Outcome(reply=self.adapter.empty(), record=call, sends=out.sends)

    async def on_dtmf(self, call: CallRecord, event: Event, out: _Outcome) -> _Outcome:
        return _Outcome(reply=self.adapter.empty(), record=call, sends=out.sends)

    async def continue_call(self, call_id: str, message: str) -> str:
        """Says ``message``, then waits for the caller's answer; returns what they said."""
        loop = asyncio.get_running_loop()
        if call_id in self._waiters:
            raise CallError("a turn is already waiting for the caller on this call")
        waiter: asyncio.Future[str] = loop.create_future()
        self._waiters[call_id] = waiter
        self._turn_started[call_id] = self.clock.now()
        try:
            await self._agent(call_id, adhoc.TURN, message)
            return await asyncio.wait_for(waiter, self.settings.transcript_timeout_s)
        except TimeoutError as exc:
            raise CallError("no answer from the caller in time") from exc
        finally:
            self._waiters.pop(call_id, None)
            self._turn_started.pop(call_id, None)

    async def speak(self, call_id: str, message: str) -> None:
        """Says ``message`` and goes on listening, without waiting for an answer."""
        await self._agent(call_id, adhoc.TURN, message)

    async def end_call(self, call_id: str, message: str = "") -> None:
        """Ends the call (saying ``message`` first, if any)."""
        if message:
            await self._agent(call_id, adhoc.FINAL, message)
            return
        async with self.lock(call_id):
            call = self._live(call_id)
            call.ending = "hangup-bot"
            self.store.save(call)
        self._queue_sends(call_id, [self._hangup_send(call)])

    async def _agent(self, call_id: str, kind: str, message: str) -> None:
        async with self.lock(call_id):
            call = self._live(call_id)
            if call.answered_at is None:
                raise CallError("the call is not answered yet")
            run = self.interpreter(call).agent_turn(call, kind, message)
            outcome = self._push(call, run, f"agent {kind}")
            self.store.save(call)
        self._queue_sends(call_id, outcome.sends)

    def _live(self, call_id: str) -> CallRecord:
        call = self.store.get(call_id)
        if call is None:
            raise CallError(f"no call {call_id}")
        if call.ended:
            raise CallError(f"call {call_id} has ended ({call.end_reason})")
        return call

    def get(self, call_id: str) -> CallRecord | None:
        return self.store.get(call_id) or self.store.find(self.settings.provider, call_id)


_HANDLERS: dict[EventKind, Callable[[CallManager, CallRecord, Event, _Outcome],
                                    Awaitable[_Outcome]]] = {
    EventKind.INITIATED: CallManager.on_progress,
    EventKind.RINGING: CallManager.on_progress,
    EventKind.ANSWERED: CallManager.on_progress,
    EventKind.ENDED: CallManager.on_ended,
    EventKind.FETCH: CallManager.on_fetch,
    EventKind.INPUT: CallManager.on_input,
    EventKind.DIAL_ENDED: CallManager.on_dial,
    EventKind.COMMAND_ENDED: CallManager.on_command_ended,
    EventKind.SPEECH: CallManager.on_speech,
    EventKind.DTMF: CallManager.on_dtmf,
}  # fmt: skip


def _reply_text(call: CallRecord, task: asyncio.Future[str]) -> str:
    """The model's reply; a failed or timed-out reply is silence, never a dropped call."""
    try:
        return task.result()
    except (TimeoutError, Exception) as exc:
        log.warning("call %s: the response model failed: %s", call.call_id, exc)
        return ""


def _remap(call: CallRecord, event: Event) -> None:
    """Plivo names a call by its request uuid first, its call uuid later: keep both."""
    if call.provider_call_id:
        previous = call.metadata.setdefault("previous_provider_ids", [])
        if call.provider_call_id not in previous:
            previous.append(call.provider_call_id)
    call.provider_call_id = event.provider_call_id


def _params(flow: m.Flow, given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = [k for k in given if flow.param(k) is None]
    if unknown:
        names = ", ".join(p.name for p in flow.params) or "none"
        raise CallError(f"flow {flow.name} has no param {', '.join(unknown)} (its params: {names})")
    missing = [
        p.name for p in flow.params if p.required and not p.has_default and p.name not in given
    ]
    if missing:
        raise CallError(f"flow {flow.name} needs {', '.join(missing)}")
    return dict(given)
