"""Carrier events applied to calls, one verified webhook at a time, exactly once.

Every verified webhook becomes events (the adapter's job); :meth:`Events.handle` applies them
to the call under its lock, computes the reply, and commits the processed-event key, the new
call record and the reply in one transaction before the webhook is answered. REST side effects
(Telnyx commands, hang-ups, live updates) run after that commit, in order per call; a Telnyx
command carries a ``command_id`` so that re-sending it after a crash is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

from voicecall.compiler import blocks as b
from voicecall.runtime.interpreter import Command
from voicecall.runtime.manager.admission import Admission
from voicecall.runtime.manager.core import Calls, Outcome
from voicecall.runtime.manager.delivery import Delivery
from voicecall.runtime.manager.timers import Timeouts
from voicecall.runtime.manager.turns import AgentTurns
from voicecall.runtime.providers.base import Event, EventKind, Reply
from voicecall.runtime.state import CallRecord, Waiting
from voicecall.runtime.store import StoredReply

log = logging.getLogger("voicecall.runtime")
Handler = Callable[[CallRecord, Event, Outcome], Awaitable[Outcome]]


class Events:
    """The call state machine driven by the carrier's events."""

    def __init__(
        self, calls: Calls, delivery: Delivery, admission: Admission, turns: AgentTurns,
        timeouts: Timeouts,
    ):  # fmt: skip
        self.calls = calls
        self.delivery = delivery
        self.admission = admission
        self.turns = turns
        self.timeouts = timeouts
        self._handlers: dict[EventKind, Handler] = {
            EventKind.INITIATED: self.on_progress, EventKind.RINGING: self.on_progress,
            EventKind.ANSWERED: self.on_progress, EventKind.ENDED: self.on_ended,
            EventKind.FETCH: self.on_fetch, EventKind.INPUT: self.on_input,
            EventKind.DIAL_ENDED: self.on_dial, EventKind.COMMAND_ENDED: self.on_command_ended,
            EventKind.SPEECH: self.on_speech, EventKind.DTMF: self.on_dtmf,
        }  # fmt: skip

    async def handle(self, events: list[Event], key: str) -> Reply:
        """Applies a verified request's events; returns the reply (stored with the event)."""
        calls = self.calls
        if not events:
            await calls.store.commit_event(key, None, None)
            return calls.adapter.empty()
        first = events[0]
        async with calls.lock(first.call_id or first.provider_call_id or key):
            outcome = Outcome(reply=calls.adapter.empty(), record=None)
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
            rejected = (calls.settings.provider, outcome.rejected) if outcome.rejected else None
            if not await calls.store.commit_event(key, outcome.record, reply, rejected):
                # A duplicate that raced past the server's check: its work is dropped.
                stored = await calls.store.seen(key)
                assert stored is not None
                return Reply(stored.body, stored.content_type)
        if outcome.record is not None:
            self.timeouts.after_commit(outcome.record)
            self.delivery.queue_sends(outcome.record.call_id, outcome.sends)
        elif outcome.rejected:
            self.delivery.queue_sends(f"rejected:{outcome.rejected}", outcome.sends)
        return outcome.reply

    def _changes_nothing(self, outcome: Outcome) -> bool:
        """No state change, no side effect, and the plain acknowledgement as the reply."""
        if outcome.sends or outcome.reply.body != self.calls.adapter.empty().body:
            return False
        return outcome.record is None or self.calls.store.unchanged(outcome.record)

    def _forget(self, record: CallRecord | None, events: list[Event]) -> None:
        """Drops in-memory changes that were not committed (the store reloads the call)."""
        for call_id in {record.call_id if record else None, *(e.call_id for e in events)}:
            if call_id:
                self.calls.store.forget(call_id)

    async def _apply(self, event: Event, outcome: Outcome) -> Outcome:
        call = outcome.record or await self._find(event)
        log.debug("event %s %s block=%s step=%s waiting=%s", event.kind, event.detail,
                  event.block, event.step, call.waiting if call else None)  # fmt: skip
        if call is None:
            return await self._unknown_call(event, outcome)
        if event.provider_call_id and event.provider_call_id != call.provider_call_id:
            renamed = call.provider_call_id is None or (
                event.previous_provider_call_id == call.provider_call_id)  # fmt: skip
            if not renamed:
                failed = _failed_transfer(call, event)
                if failed is not None:
                    return await self.on_dial(call, failed, outcome)
                log.info("call %s: %s for another leg (%s): ignored", call.call_id, event.kind,
                         event.provider_call_id)  # fmt: skip
                return self.calls.ack(call, outcome)
            _remap(call, event)
        if call.ended:
            return self.calls.ack(call, outcome)
        return await self._handlers[event.kind](call, event, outcome)

    async def _find(self, event: Event) -> CallRecord | None:
        store = self.calls.store
        if event.call_id:
            found = await store.read(event.call_id)
            if found is not None:
                return found
        for pid in (event.provider_call_id, event.previous_provider_call_id):
            if pid:
                found = await store.read_by(self.calls.settings.provider, pid)
                if found is not None:
                    return found
        return None

    async def _unknown_call(self, event: Event, outcome: Outcome) -> Outcome:
        inbound = event.direction == "inbound" and event.kind in (
            EventKind.FETCH,
            EventKind.INITIATED,
        )
        if not inbound:
            log.info("event %s for an unknown call (%s): acknowledged, ignored", event.kind,
                     event.provider_call_id)  # fmt: skip
            return outcome
        return await self.admission.inbound(event, outcome)

    # --- one handler per event kind ------------------------------------------------------------

    async def on_progress(self, call: CallRecord, event: Event, out: Outcome) -> Outcome:
        call.move({EventKind.INITIATED: "initiated", EventKind.RINGING: "ringing"}.get(
            event.kind, "answered"))  # fmt: skip
        if event.kind is EventKind.ANSWERED:
            return self._on_answered(call, out)
        return self.calls.ack(call, out)

    def _on_answered(self, call: CallRecord, out: Outcome) -> Outcome:
        first = call.answered_at is None
        self.calls.answered(call)
        interp = self.calls.interpreter(call)
        if interp.compiled.kind == "xml":
            return self.calls.ack(call, out)
        if call.waiting and call.waiting.awaits == "call.answered":
            return self.delivery.pump(call, out, completed="call.answered")
        if first and call.direction == "outbound":
            run = interp.start(call)
            digits = call.metadata.get("dtmfSequence")
            if digits:  # Telnyx dials without digits: send them before the flow's first command
                block = run.commands[0].block if run.commands else ""
                run.commands.insert(0, Command(command="send_dtmf", body={"digits": digits},
                                               awaits=None, block=block))  # fmt: skip
            return self.delivery.deliver(call, run, out)
        return self.calls.ack(call, out)

    async def on_fetch(self, call: CallRecord, event: Event, out: Outcome) -> Outcome:
        interp = self.calls.interpreter(call)
        pushed = call.pending.pop("fetch", None)
        if pushed is not None:  # what we pushed with a redirect: an agent turn, a handler
            call.metadata["listenStartedAt"] = self.calls.clock.now()
            return Outcome(reply=self.calls.adapter.document(pushed["fragments"]), record=call,
                           sends=out.sends)  # fmt: skip
        waiting = call.waiting
        if waiting and waiting.kind == "fetch":
            return self.delivery.deliver(call, interp.advance(call, waiting.block), out)
        if not call.scopes:
            self.calls.answered(call)
            return self.delivery.deliver(call, interp.start(call), out)
        if waiting and waiting.kind == "converse":
            # The hold ran out before the agent's next command: listen again, saying nothing.
            run = interp.listen_again(call, waiting.step)
            return self.delivery.deliver(call, run, out)
        return self.delivery.hold(call, out)

    async def on_input(self, call: CallRecord, event: Event, out: Outcome) -> Outcome:
        waiting = call.waiting
        if waiting is None or waiting.kind not in ("input", "converse", "command", "listen"):
            log.info("call %s: input with nothing waiting for it: ignored", call.call_id)
            return self.delivery.hold(call, out)
        block = event.block or waiting.block
        step = event.step if event.step is not None else waiting.step
        # The URL (Twilio, Plivo) or client_state (Telnyx) names the question answered: a
        # result for an earlier one (a Telnyx redelivery under a new event id) answers nothing.
        if (block, step) != (waiting.block, waiting.step):
            log.info("call %s: stale input for %s/%s (waiting for %s/%s): ignored",
                     call.call_id, block, step, waiting.block, waiting.step)  # fmt: skip
            return self.delivery.hold(call, out)
        return await self._answer(call, waiting, out, digits=event.digits or "",
                                  text=event.text or "", confidence=event.confidence,
                                  invalid=event.status == "invalid")  # fmt: skip

    async def _answer(
        self, call: CallRecord, waiting: Waiting, out: Outcome, *, digits: str = "",
        text: str = "", confidence: float | None = None, invalid: bool = False,
    ) -> Outcome:  # fmt: skip
        interp = self.calls.interpreter(call)
        conversing = self.turns.conversing(call, waiting)
        if not conversing and not isinstance(interp.block(waiting.block).end, b.Gather):
            # Input for a block that asks nothing (its greeting still being spoken, say): an
            # early, late or forged event; the call goes on waiting for what it waits for.
            log.info("call %s: input while %s asks nothing: ignored", call.call_id,
                     waiting.block)  # fmt: skip
            return self.delivery.hold(call, out)
        self.calls.timers.cancel(call.call_id, "listen")
        prefix = interp.after_input(call, waiting.block, waiting.step) if not interp.xml else []
        if conversing:
            run = await self.turns.converse(call, waiting, text or digits)
        else:
            run = interp.answer_input(call, waiting.block, waiting.step, digits=digits,
                                      text=text, confidence=confidence,
                                      invalid=invalid)  # fmt: skip
        run.commands[:0] = prefix
        return self.delivery.deliver(call, run, out)

    async def on_dial(self, call: CallRecord, event: Event, out: Outcome) -> Outcome:
        self.calls.timers.cancel(call.call_id, "dial")
        waiting = call.waiting
        if waiting is None or waiting.kind not in ("dial", "command"):
            return self.delivery.hold(call, out)
        interp = self.calls.interpreter(call)
        run = interp.dial_result(call, waiting.block, event.status or "failed")
        return self.delivery.deliver(call, run, out)

    async def on_command_ended(self, call: CallRecord, event: Event, out: Outcome) -> Outcome:
        waiting = call.waiting
        if waiting is None or waiting.kind != "command" or waiting.awaits != event.detail:
            return self.calls.ack(call, out)
        return self.delivery.pump(call, out, completed=event.detail)

    async def on_speech(self, call: CallRecord, event: Event, out: Outcome) -> Outcome:
        waiting = call.waiting
        if not event.final or waiting is None or waiting.kind not in ("listen", "command", "input"):
            return self.calls.ack(call, out)
        return await self._answer(call, waiting, out, text=event.text or "",
                                  confidence=event.confidence)  # fmt: skip

    async def on_ended(self, call: CallRecord, event: Event, out: Outcome) -> Outcome:
        reason = call.ending or event.status or "completed"
        waiting = call.waiting
        if reason == "completed" and waiting and waiting.kind in ("input", "converse", "listen"):
            reason = "hangup-user"  # they hung up while we were listening
        self.calls.finalize(call, reason)
        if call.answered_at:
            # The caller is gone: a hangup handler's server-side steps run; nothing is sent.
            self.calls.interpreter(call).handler(call, "hangup")
        return self.calls.ack(call, out)

    async def on_dtmf(self, call: CallRecord, event: Event, out: Outcome) -> Outcome:
        return self.calls.ack(call, out)


def _remap(call: CallRecord, event: Event) -> None:
    """Plivo names a call by its request uuid first, its call uuid later: keep both."""
    if call.provider_call_id:
        previous = call.metadata.setdefault("previous_provider_ids", [])
        if call.provider_call_id not in previous:
            previous.append(call.provider_call_id)
    call.provider_call_id = event.provider_call_id


_DIAL_FAILURES = frozenset({"busy", "no-answer", "failed"})


def _failed_transfer(call: CallRecord, event: Event) -> Event | None:
    """Telnyx: the hang-up of a transfer's new leg, while the call waits on that transfer.

    Telnyx reports a transfer that did not connect only as ``call.hangup`` of the other leg
    (carrying the transfer's client_state); the original call stays up (TransferCallRequest in
    the Call Control API). Seen as the transfer's outcome, it is handled at once rather than
    when the transfer's safety timer expires.
    """
    waiting = call.waiting
    if event.kind is not EventKind.ENDED or waiting is None or waiting.kind != "dial":
        return None
    if event.call_id != call.call_id or event.block != waiting.block:
        return None
    status = event.status if event.status in _DIAL_FAILURES else "failed"
    return replace(event, kind=EventKind.DIAL_ENDED, status=status,
                   provider_call_id=call.provider_call_id)  # fmt: skip
