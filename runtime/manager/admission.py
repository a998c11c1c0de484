"""Admission of inbound calls: the flow's admit block or the plugin's inbound policy, the
allowlist, the concurrency cap, and what a rejected caller gets."""

from __future__ import annotations

import logging
import re

from voicecall.dsl import model as m
from voicecall.runtime import adhoc
from voicecall.runtime.manager.core import Calls, Outcome, Send, mask
from voicecall.runtime.manager.delivery import Delivery
from voicecall.runtime.providers.base import Event
from voicecall.runtime.state import CallRecord

log = logging.getLogger("voicecall.runtime")


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

    def inbound(self, event: Event, outcome: Outcome) -> Outcome:
        """A first event of an unknown inbound call: the call starts, or is rejected."""
        calls = self.calls
        flow = calls.compiled_or_error(calls.settings.inbound_flow)
        admitted, why = self.admits(flow.flow, event.from_number)
        if not admitted:
            log.info("inbound call from %s rejected: %s", mask(event.from_number or ""), why)
            return self.reject(event, flow.flow, outcome)
        if calls.store.count_live() >= calls.settings.max_concurrent:
            log.info("inbound call rejected: maxConcurrentCalls reached")
            return self.reject(event, flow.flow, outcome)
        call = CallRecord.new(provider=calls.settings.provider, direction="inbound",
                              from_number=event.from_number or "", to_number=event.to_number or "",
                              flow=flow.flow.name, flow_digest=flow.flow.digest,
                              provider_call_id=event.provider_call_id,
                              params=dict(calls.settings.inbound_params),
                              started_at=calls.clock.now())  # fmt: skip
        call.move("ringing")
        if flow.kind == "xml":
            calls.answered(call)
        run = calls.interpreter(call).start(call)
        return self.delivery.deliver(call, run, outcome)

    def reject(self, event: Event, flow: m.Flow, outcome: Outcome) -> Outcome:
        message = (
            flow.admit.reject_message.source if flow.admit and flow.admit.reject_message else ""
        )
        rejection = adhoc.reject_flow(self.calls.settings.provider, bool(message))
        block = rejection.block(rejection.start)
        if block.xml is not None:
            body = block.xml.render({"message": message}, {"callback_url": ""})
            return Outcome(reply=self.calls.adapter.document([body]), record=None)
        return self._reject_command(event, outcome)

    def _reject_command(self, event: Event, outcome: Outcome) -> Outcome:
        """Telnyx: one ``reject`` per carrier call, however often its first event comes (a
        replay, or a redelivery under a new event id): the id is committed with the event."""
        pid = event.provider_call_id
        if not pid:
            return outcome
        if self.calls.store.was_rejected(self.calls.settings.provider, pid):
            log.info("inbound call %s: rejected already; acknowledged", pid)
            return outcome
        adapter = self.calls.adapter
        # The command_id makes a resend after a crash harmless (Telnyx ignores a repeat).
        body = {"cause": "CALL_REJECTED", "command_id": f"reject-{pid}"}
        sends: list[Send] = [*outcome.sends, lambda: adapter.command(pid, "reject", body)]
        return Outcome(reply=outcome.reply, record=None, sends=sends, rejected=pid)
