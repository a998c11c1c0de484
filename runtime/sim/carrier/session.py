"""What every call shares, whatever the carrier: the scripted caller, time, the call's life.

A :class:`CallSession` plays one call: it rings, answers or not as the script's opener says,
records the timeline, and ends the call exactly once (its final webhooks then go out in the
background, so that a REST request never waits on a webhook, as with the real carriers).
Provider sessions (``twiml.py``, ``plivoxml.py``, ``telnyx.py``) add what the call executes.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from voicecall.runtime.clock import Clock
from voicecall.runtime.sim.script import PATIENT_REPLIES, Step

from .model import Entry, MockCall
from .streams import CarrierStream, StreamSpec

if TYPE_CHECKING:
    from .carrier import MockCarrier

T = TypeVar("T")
PATIENT_PAUSE_S = 0.3  # how long a patient callee thinks before it answers
STREAM_CLOSE_S = 3.0  # real seconds the call's end waits for its streams to close


class Work:
    """The carrier's tasks and timers, counted so that ``idle`` tells when nothing is going on.

    A task counts as busy from its creation until it ends, except while it waits on the clock
    (:meth:`sleep`) or on the bot (:meth:`wait`). A timer that fires counts as busy at once, so
    whoever advances a virtual clock sees the woken task before advancing again.
    """

    def __init__(self, clock: Clock):
        self.clock = clock
        self.busy = 0
        self.tasks: set[asyncio.Task[Any]] = set()
        self.errors: list[BaseException] = []  # tasks that failed (a bug in the carrier)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Starts a background task (busy until it ends)."""
        self.busy += 1
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.busy -= 1
        self.tasks.discard(task)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            self.errors.append(error)
            task.get_loop().call_exception_handler(
                {"message": "mock carrier task failed", "exception": error, "task": task}
            )

    async def sleep(self, seconds: float) -> None:
        """Waits ``seconds`` of clock time."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        woke = False

        def wake() -> None:
            nonlocal woke
            if not fut.done():
                woke = True
                self.busy += 1
                fut.set_result(None)

        timer = self.clock.call_later(max(0.0, seconds), wake)
        self.busy -= 1
        try:
            await fut
        finally:
            timer.cancel()
            if not woke:
                self.busy += 1

    async def wait(self, awaitable: Awaitable[T]) -> T:
        """Waits for the bot (a command): not busy meanwhile."""
        self.busy -= 1
        try:
            return await awaitable
        finally:
            self.busy += 1

    @contextmanager
    def holding(self) -> Iterator[None]:
        """Counts as busy for the duration (a REST request being handled)."""
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1

    async def cancel_all(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


class Caller:
    """The scripted party: hands out its steps, each after its delay (in clock time)."""

    def __init__(self, steps: tuple[Step, ...], opener: Step, work: Work):
        self.opener = opener
        # An answering machine says nothing, whatever the script holds.
        self.machine = opener.action == "voicemail"
        self._steps = deque(steps)
        self._work = work

    def peek(self) -> Step | None:
        return None if self.machine or not self._steps else self._steps[0]

    @property
    def left(self) -> tuple[Step, ...]:
        """The steps not taken yet (an answering machine takes none)."""
        return tuple(self._steps)

    def pop(self) -> Step | None:
        """The next step at once, whatever its delay (a stream waits it out in real time)."""
        if self.machine or not self._steps:
            return None
        return self._steps.popleft()

    async def take(self) -> Step:
        """The next step, once its delay has passed; ``hangup`` when there is none left."""
        if self.machine:
            return Step(action="silence")
        if not self._steps:
            return Step(action="hangup", where="<no step left>")
        step = self._steps[0]
        if step.after_s > 0:
            await self._work.sleep(step.after_s)
        self._steps.popleft()
        return step

    async def dial_outcome(self) -> str:
        """How a transfer goes: the next step when it is ``dial: …``, else answered."""
        step = self.peek()
        if step is None or step.action != "dial":
            return "answered"
        return (await self.take()).value or "answered"


def _step_detail(step: Step) -> dict[str, Any]:
    key = {"say": "text", "interrupt": "text", "press": "digits", "dial": "outcome"}.get(
        step.action)  # fmt: skip
    return {key: step.value} if key else {}


class CallSession:
    """Plays one call; subclasses add what the carrier executes and the webhooks it sends."""

    provider: ClassVar[str]

    def __init__(self, carrier: MockCarrier, call: MockCall):
        self.carrier = carrier
        self.call = call
        self.work = carrier.work
        self.clock = carrier.clock
        script = call.script
        self.caller = Caller(script.turns, script.opener, carrier.work)
        self._tasks: set[asyncio.Task[Any]] = set()
        # Open media streams and the tasks that run them (see streams.py).
        self._streams: dict[CarrierStream, asyncio.Task[Any]] = {}

    # --- recording -----------------------------------------------------------------------------

    def record(self, who: str, what: str, **detail: Any) -> None:
        t = round(self.clock.now() - self.call.started_at, 3)
        self.call.timeline.append(Entry(t, who, what, detail))

    def set_state(self, state: str) -> None:
        self.call.state = state
        self.record("carrier", "status", status=state)

    # --- tasks and time ------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """A task of this call: cancelled when the call ends."""
        task = self.work.spawn(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def sleep(self, seconds: float) -> None:
        await self.before_wait()
        await self.work.sleep(seconds)

    async def before_wait(self) -> None:
        """Called before the call waits on the clock or the bot (Telnyx flushes held events)."""

    async def take_turn(self) -> Step:
        """The caller's next step, recorded; a ``hangup`` ends the call."""
        await self.before_wait()
        if self.call.script.patient and self.caller.peek() is None and not self.caller.machine:
            step = await self._patient_step()
        else:
            step = await self.caller.take()
        if step.action == "interrupt":
            # Barge-in needs a media stream; at a Gather the words are simply said.
            step = replace(step, action="say")
        self.record("caller", step.action, **_step_detail(step))
        if step.action == "hangup":
            self.end("hangup-user", "remote")
        return step

    async def _patient_step(self) -> Step:
        """A patient callee: a short reply when the bot said something since its last turn,
        else silence (a prompt repeated without words gets no answer)."""
        if not self._prompted():
            return Step(action="silence")
        said = sum(1 for e in self.call.timeline if e.who == "caller" and e.what == "say")
        await self.work.sleep(PATIENT_PAUSE_S)
        return Step(action="say", value=PATIENT_REPLIES[said % len(PATIENT_REPLIES)])

    def _prompted(self) -> bool:
        for entry in reversed(self.call.timeline):
            if entry.who == "caller" and entry.what in ("say", "press", "silence"):
                return False
            if entry.who == "bot" and entry.what in ("say", "play", "dtmf"):
                return True
        return False

    # --- media streams -------------------------------------------------------------------------

    def open_stream(
        self, spec: StreamSpec, on_end: Callable[[CarrierStream], Awaitable[None]] | None = None
    ) -> CarrierStream:
        """Opens a media stream to the bot (in the background); ``on_end`` runs once it has
        ended (a Telnyx ``streaming.stopped``). The call's end stops it and waits for both."""
        stream = CarrierStream(self, spec)
        self._streams[stream] = self.work.spawn(self._stream_life(stream, on_end))
        return stream

    async def _stream_life(
        self, stream: CarrierStream, on_end: Callable[[CarrierStream], Awaitable[None]] | None
    ) -> None:
        try:
            await stream.run()
            if on_end is not None:
                await on_end(stream)
        finally:
            self._streams.pop(stream, None)

    async def await_stream(self, stream: CarrierStream) -> str:
        """Waits (as on the bot: not busy) until ``stream`` has ended; why it ended."""
        return await self.work.wait(stream.wait())

    @property
    def streams(self) -> tuple[CarrierStream, ...]:
        """The media streams open now."""
        return tuple(self._streams)

    # --- the call's life -----------------------------------------------------------------------

    async def ring(self, timeout_s: float) -> bool:
        """initiated, ringing, then the opener: True when answered (else the call has ended)."""
        opener = self.caller.opener
        self.set_state("initiated")
        await self.on_initiated()
        self.set_state("ringing")
        await self.on_ringing()
        if opener.action == "no-answer":
            await self.sleep(timeout_s)
        elif opener.after_s > 0:
            await self.sleep(opener.after_s)
        self.record("caller", opener.action)
        if opener.action in ("no-answer", "busy"):
            self.end(opener.action, "remote")
            return False
        self.mark_answered()
        return True

    def mark_answered(self) -> None:
        self.call.answered_at = self.clock.now()
        self.set_state("in-progress")

    async def on_initiated(self) -> None:
        """Webhooks when the carrier starts dialing."""

    async def on_ringing(self) -> None:
        """Webhooks when the phone rings."""

    async def on_ended(self, reason: str, by: str) -> None:
        """The webhooks that report the end of the call."""

    def end(self, reason: str, by: str) -> None:
        """Ends the call (once): ``by`` is bot, remote, api or carrier."""
        if self.call.ended:
            return
        self.call.state = final_state(reason, self.call.answered)
        self.call.end_reason = reason
        self.call.ended_at = self.clock.now()
        self.record("carrier", "status", status=self.call.state, reason=reason, by=by)
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current:
                task.cancel()
        for stream in self._streams:
            stream.stop("call-ended")
        self.work.spawn(self._finish(reason, by))

    async def _finish(self, reason: str, by: str) -> None:
        try:
            # A stream ends (its stop frame, a Telnyx streaming.stopped) before the call's end
            # is reported, as the carriers do.
            running = [t for t in self._streams.values() if t is not asyncio.current_task()]
            if running:
                await asyncio.wait(running, timeout=STREAM_CLOSE_S)
            await self.on_ended(reason, by)
        finally:
            self.call.ended_event.set()

    def fail(self, failure: str, **detail: Any) -> None:
        """A webhook failed: the carrier plays its error message and hangs up."""
        self.record("carrier", "error", failure=failure, **detail)
        self.end("error", "carrier")


def final_state(reason: str, answered: bool) -> str:
    """The call's last state for an end reason."""
    if reason in ("no-answer", "busy", "canceled"):
        return reason
    if reason == "rejected":
        return "busy"
    if reason == "error" and not answered:
        return "failed"
    return "completed"
