"""Placing outbound calls: checks, the record, the carrier's REST request, the ring timer."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.values import is_e164
from voicecall.runtime.manager.core import CallError, Calls, mask
from voicecall.runtime.state import CallRecord

log = logging.getLogger("voicecall.runtime")


class Outbound:
    """Places calls for the agent, the CLI and simulations."""

    def __init__(self, calls: Calls):
        self.calls = calls

    async def initiate(
        self, *, to: str | None, flow: str, params: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CallRecord:  # fmt: skip
        """Places an outbound call running ``flow``; returns its record once the carrier took it.

        Raises:
            CallError: no number, too many calls, unknown flow, missing params, carrier refusal.
        """
        calls, settings = self.calls, self.calls.settings
        target = to or settings.to_number
        if not target:
            raise CallError("no number to call: pass `to`, or set toNumber in the config")
        live = await calls.store.count_live()
        if live >= settings.max_concurrent:
            raise CallError(f"{live} call(s) in progress; maxConcurrentCalls is "
                            f"{settings.max_concurrent}")  # fmt: skip
        compiled = calls.compiled_or_error(flow)
        problem = outbound_problem(compiled.flow, target)
        if problem:
            raise CallError(problem)
        values = _params(compiled.flow, params or {})
        call = CallRecord.new(provider=settings.provider, direction="outbound",
                              from_number=settings.from_number, to_number=target,
                              flow=compiled.flow.name, flow_digest=compiled.flow.digest,
                              params=values, started_at=calls.clock.now(),
                              metadata=dict(metadata or {}))  # fmt: skip
        await calls.store.save(call)
        if calls.streams is not None:  # a greeting on a stream is synthesized while it rings
            calls.streams.ring(call, calls.interpreter(call))
        try:
            provider_id = await calls.adapter.create_call(
                call_id=call.call_id, to=target, from_=settings.from_number,
                webhook_base=settings.webhook_base, timeout_s=int(settings.ring_timeout_s),
                send_digits=call.metadata.get("dtmfSequence") or None,
            )  # fmt: skip
        except Exception as exc:
            await calls.finalize_now(call.call_id, "failed", f"the carrier refused: {exc}")
            raise CallError(f"the carrier refused the call: {exc}") from exc
        async with calls.lock(call.call_id):
            fresh = calls.store.get(call.call_id) or call
            fresh.provider_call_id = fresh.provider_call_id or provider_id
            await calls.store.save(fresh)
        if not fresh.ended:
            calls.timers.set(call.call_id, "ring", settings.ring_timeout_s)
        log.info("call %s: placed to %s with flow %s (%s)", call.call_id, mask(target),
                 call.flow, provider_id)  # fmt: skip
        return fresh


def outbound_problem(flow: m.Flow, to: str) -> str | None:
    """Why ``flow`` cannot call ``to``, or None: TO must be E.164, the flow not inbound-only."""
    if not is_e164(to):
        return f"{to!r} is not an E.164 number (+ then country code and number, digits only)"
    if flow.direction == "inbound":
        return (f"flow {flow.name} only answers calls (direction: inbound); it cannot place "
                "an outbound call")  # fmt: skip
    return None


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
