"""The load test's carriers: the mock carrier, timed, with retries, duplicates and reorders.

:class:`LoadCarrier` is the project's :class:`MockCarrier` (its REST API is the fake carrier
API the gateways are pointed at, its webhooks are signed with each carrier's real algorithm)
with a :class:`TimedSender` that

- times every webhook (request to reply) by provider and kind (answer, action, status, …;
  Telnyx's event type),
- sends a share of webhooks twice (the mock's own ``duplicate_rate``) and checks that the
  second copy is answered with the very reply of the first,
- delays a share of the webhooks whose reply a carrier does not use (Twilio status callbacks,
  Plivo ring and hangup callbacks) until after the call's next one; Telnyx events are held
  back and sent after the next event by the mock's own reordering, turned on for that share,
- retries a webhook that found no gateway (connection refused or cut: a gateway restarting)
  or was answered 5xx (the runtime's 503 for a store that failed under it), every
  ``RETRY_EVERY_S`` for up to ``retry_s``, as Telnyx retries a failed delivery (and Twilio
  with its connection-override retries); each 5xx answer is counted in the report.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from voicecall.runtime.clock import RealClock
from voicecall.runtime.sim.carrier import Delivery, MockCall, MockCarrier
from voicecall.runtime.sim.carrier.delivery import WebhookSender, _Outgoing

RETRY_EVERY_S = 0.2
REORDER_DELAY_S = 0.4  # a delayed callback goes out this much later: after the call's next one
NOTIFY_KINDS = frozenset({"status", "ring", "hangup"})  # replies the carriers ignore


@dataclass(slots=True)
class WebhookStats:
    """What the carriers' webhooks met, for the report."""

    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    errors: dict[tuple[str, str], int] = field(default_factory=dict)  # non-2xx after retries
    error_kinds: dict[str, int] = field(default_factory=dict)
    retried: int = 0  # deliveries that needed more than one attempt
    answered_5xx: dict[str, int] = field(default_factory=dict)  # attempts answered 5xx, retried
    duplicated: int = 0
    duplicate_same_reply: int = 0
    duplicate_other_reply: list[str] = field(default_factory=list)
    reordered: int = 0
    sent: int = 0

    def add(self, provider: str, kind: str, seconds: float, delivery: Delivery) -> None:
        key = (provider, kind)
        self.sent += 1
        self.latencies.setdefault(key, []).append(seconds)
        if not delivery.ok:
            self.errors[key] = self.errors.get(key, 0) + 1
            why = f"{provider} {kind}: {delivery.status or delivery.error[:60]}"
            self.error_kinds[why] = self.error_kinds.get(why, 0) + 1


class TimedSender(WebhookSender):
    """A :class:`WebhookSender` that times, retries, compares duplicates and reorders."""

    def __init__(
        self,
        carrier: MockCarrier,
        stats: WebhookStats,
        *,
        seed: int,
        reorder_rate: float,
        retry_s: float,
    ):
        super().__init__(carrier.provider, carrier.credentials, carrier.signing_key,
                         clock=carrier.clock, timeout_s=30.0,
                         in_flight=carrier._count_flight)  # fmt: skip
        self.stats = stats
        self.random = random.Random(seed)
        self.reorder_random = random.Random(seed + 1)
        self.reorder_rate = reorder_rate
        self.retry_s = retry_s
        self.delayed: set[asyncio.Task[Delivery]] = set()

    async def form(
        self, call: MockCall, url: str, params: Mapping[str, str], *, method: str, event: str
    ) -> Delivery:
        if event in NOTIFY_KINDS and self.reorder_random.random() < self.reorder_rate:
            self.stats.reordered += 1
            task = asyncio.get_running_loop().create_task(
                self._later(call, url, params, method=method, event=event))  # fmt: skip
            self.delayed.add(task)
            task.add_done_callback(self.delayed.discard)
            # The caller of a notify ignores the reply: what it gets back says only "sent".
            return Delivery(provider=self.provider, call=call.provider_call_id, method=method,
                            url=url, headers={}, body=b"", params=dict(params), event=event,
                            status=200)  # fmt: skip
        return await super().form(call, url, params, method=method, event=event)

    async def _later(
        self, call: MockCall, url: str, params: Mapping[str, str], *, method: str, event: str
    ) -> Delivery:
        await asyncio.sleep(REORDER_DELAY_S)
        return await super().form(call, url, params, method=method, event=event)

    async def _send(self, call: MockCall, out: _Outgoing) -> Delivery:
        first = await self._timed(call, out, duplicate=False)
        if self._twice():
            self.stats.duplicated += 1
            second = await self._timed(call, out, duplicate=True)
            if second.ok and first.ok and second.reply == first.reply:
                self.stats.duplicate_same_reply += 1
            else:
                self.stats.duplicate_other_reply.append(
                    f"{self.provider} {out.event}: {first.status} {first.reply[:80]!r} then "
                    f"{second.status} {second.reply[:80]!r}"
                )
        return first

    async def _timed(self, call: MockCall, out: _Outgoing, *, duplicate: bool) -> Delivery:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_s
        started = time.perf_counter()
        attempts = 0
        while True:
            attempts += 1
            delivery = await self._attempt(call, out, duplicate=duplicate)
            retry = delivery.status is None or delivery.status >= 500
            if not retry or loop.time() >= deadline:
                break
            if delivery.status is not None:
                why = f"{self.provider} {out.event}: {delivery.status} {delivery.reply[:60]!r}"
                self.stats.answered_5xx[why] = self.stats.answered_5xx.get(why, 0) + 1
            await asyncio.sleep(RETRY_EVERY_S)  # a carrier's retry
        self.stats.retried += attempts > 1
        self.stats.add(self.provider, out.event or "webhook", time.perf_counter() - started,
                       delivery)  # fmt: skip
        return delivery

    async def drain(self) -> None:
        """Waits for the delayed callbacks still on their way."""
        while self.delayed:
            await asyncio.gather(*self.delayed, return_exceptions=True)


class LoadCarrier(MockCarrier):
    """A mock carrier on the real clock whose webhooks go through a :class:`TimedSender`."""

    def __init__(
        self,
        provider: str,
        stats: WebhookStats,
        *,
        seed: int,
        duplicate_rate: float,
        reorder_rate: float,
        retry_s: float,
    ):
        super().__init__(provider, RealClock())
        self.load_sender = TimedSender(self, stats, seed=seed, reorder_rate=reorder_rate,
                                       retry_s=retry_s)  # fmt: skip
        self.sender = self.load_sender
        self.duplicate_rate = duplicate_rate
        self.stats = stats
        self._telnyx_random = random.Random(seed + 2)
        self._reorder_rate = reorder_rate if provider == "telnyx" else 0.0

    @property
    def reorder_telnyx(self) -> bool:
        """Asked by a Telnyx call for every event: hold this one back (after the next)?"""
        if self._reorder_rate and self._telnyx_random.random() < self._reorder_rate:
            self.stats.reordered += 1
            return True
        return False

    @reorder_telnyx.setter
    def reorder_telnyx(self, value: bool) -> None:
        del value  # the share above decides

    async def settle(self) -> None:
        """Waits until every call has ended and every webhook has been sent."""
        for call in list(self.calls.values()):
            await call.ended_event.wait()
        await self.load_sender.drain()
        while self._in_flight:
            await asyncio.sleep(0.05)
