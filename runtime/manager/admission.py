"""Admission of inbound calls: the flow's admit block or the plugin's inbound policy, the
allowlist, the concurrency cap, and what a rejected caller gets."""

from __future__ import annotations

import logging
import re

from voicecall.compiler.render import RenderError, template_slot
from voicecall.dsl import model as m
from voicecall.runtime.manager.core import Calls, Outcome, Send, mask
from voicecall.runtime.manager.delivery import Delivery
from voicecall.runtime.providers.base import Event
from voicecall.runtime.state import CallRecord

log = logging.getLogger("voicecall.runtime")
# What a `numbers` entry sets for the calls to its number (kept on the call record).
ROUTE_KEYS = ("inboundGreeting", "agentId", "responseModel", "responseSystemPrompt",
              "responseTimeoutMs", "tts")  # fmt: skip


class Admission:
    """Decides whether an inbound caller gets the flow; starts the call or rejects it."""

    def __init__(self, calls: Calls, delivery: Delivery):
        self.calls = calls
        self.delivery = delivery

    def admits(self, flow: m.Flow, caller: str | None) -> tuple[bool, str]:
        """Whether an inbound caller may reach ``flow``: its admit, else the plugin config."""
        settings = self.calls.settings
        policy = flow.admit.policy if flow.admit else settings.inbound_policy
        allowed = flow.admit.allow_from if flow.admit and flow.admit.allow_from else (
            settings.allow_from)  # fmt: skip
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

    async def inbound(self, event: Event, outcome: Outcome) -> Outcome:
        """A first event of an unknown inbound call: the call starts, or is rejected."""
        calls = self.calls
        number, route = calls.settings.number_route(event.to_number)
        flow = calls.compiled_or_error(str(route.get("flow") or calls.settings.inbound_flow))
        call = self._new_call(event, flow.flow)
        if number:
            call.metadata["number"] = number
            call.metadata["route"] = {k: route[k] for k in ROUTE_KEYS if k in route}
        admitted, why = self.admits(flow.flow, event.from_number)
        if admitted and await calls.store.count_live() >= calls.settings.max_concurrent:
            admitted, why = False, "maxConcurrentCalls reached"
        if not admitted:
            log.info("inbound call from %s rejected: %s", mask(event.from_number or ""), why)
            return await self.reject(call, why, outcome)
        if flow.kind == "xml":
            calls.answered(call)
        run = calls.interpreter(call).start(call)
        return self.delivery.deliver(call, run, outcome)

    def _new_call(self, event: Event, flow: m.Flow) -> CallRecord:
        settings = self.calls.settings
        call = CallRecord.new(provider=settings.provider, direction="inbound",
                              from_number=event.from_number or "", to_number=event.to_number or "",
                              flow=flow.name, flow_digest=flow.digest,
                              provider_call_id=event.provider_call_id,
                              params=dict(settings.inbound_params),
                              started_at=self.calls.clock.now())  # fmt: skip
        call.move("ringing")
        return call

    async def reject(self, call: CallRecord, why: str, outcome: Outcome) -> Outcome:
        """What a rejected caller gets: the flow's ``admit.reject_message`` (rendered for this
        call), then a hang-up; without a message, a plain hang-up (Telnyx: ``reject``).

        Twilio and Plivo answer the webhook with the document, and no call record is kept.
        Telnyx cannot speak in a ``reject``: the call is answered, hears the message and is
        hung up, like on the others; that takes a record, marked ``rejected``, so that its
        events find it. Answering costs the same as on Twilio and Plivo, where speaking also
        answers the call; without a message, nothing is answered.
        """
        interp = self.calls.interpreter(call)
        message = self._message(call)
        if not interp.xml and not message:
            return await self._reject_command(call.provider_call_id, outcome)
        run = interp.reject(call, message)
        if interp.xml:
            return Outcome(reply=self.calls.adapter.document(run.fragments), record=None,
                           sends=outcome.sends)  # fmt: skip
        call.metadata["rejected"] = why
        return self.delivery.deliver(call, run, outcome)

    def _message(self, call: CallRecord) -> str:
        """The flow's reject message rendered with the call's values ('' if none, or if it
        fails: the caller is then rejected without it)."""
        interp = self.calls.interpreter(call)
        admit = interp.compiled.flow.admit
        if admit is None or admit.reject_message is None:
            return ""
        text = admit.reject_message
        where = f"{interp.compiled.flow.file}:{text.span.line}:{text.span.col}"
        call.scopes.setdefault("", interp.initial_scope(call.params))
        try:
            return template_slot(text.source, where).value(interp.values(call, ""), {})
        except RenderError as exc:
            log.warning("inbound call %s: reject_message failed: %s", call.provider_call_id, exc)
            return ""

    async def _reject_command(self, pid: str | None, outcome: Outcome) -> Outcome:
        """Telnyx: one ``reject`` per carrier call, however often its first event comes (a
        replay, or a redelivery under a new event id): the id is committed with the event."""
        if not pid:
            return outcome
        if await self.calls.store.was_rejected(self.calls.settings.provider, pid):
            log.info("inbound call %s: rejected already; acknowledged", pid)
            return outcome
        adapter = self.calls.adapter
        # The command_id makes a resend after a crash harmless (Telnyx ignores a repeat).
        body = {"cause": "CALL_REJECTED", "command_id": f"reject-{pid}"}
        sends: list[Send] = [*outcome.sends, lambda: adapter.command(pid, "reject", body)]
        return Outcome(reply=outcome.reply, record=None, sends=sends, rejected=pid)
