"""Agent turns: the agent's continue / speak / end commands on a live call, the caller's
turns in a conversation, and the response model's replies (inline, or pushed when late)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from voicecall.runtime import adhoc
from voicecall.runtime.collect import CollectError, check_values
from voicecall.runtime.interpreter import Interpreter, Run
from voicecall.runtime.manager.core import CallError, Calls, ModelReply, Responder
from voicecall.runtime.manager.delivery import Delivery
from voicecall.runtime.providers.errors import ProviderError
from voicecall.runtime.state import CallRecord, TranscriptLine, Waiting

log = logging.getLogger("voicecall.runtime")
# How long a webhook waits for the model's reply before answering with a hold (Twilio gives
# up on a webhook after 15 s).
INLINE_REPLY_S = 5.0
# Over responseTimeoutMs: a responder answers its own deadline with a spoken fallback; this
# only stops one that does not.
REPLY_GRACE_S = 1.0
MAX_TURNS = 100  # turn metrics kept per call (`voicecall latency`)
MAX_STREAM_RECOVERIES = 2  # a dropped media stream is opened again this often per call
# What the model is told when the values it finished with do not fit (then the problem), and
# what the caller hears when it finishes badly twice in a turn.
REJECTED = ("(Not finished: the values do not fit what the conversation collects. Ask the "
            "caller to fix:)")  # fmt: skip
RETRY = "Sorry, could you say that again?"
STREAM_DROP_GRACE_S = 1.5  # real seconds (the original's stream-disconnect grace)
STREAM_LOST = "Sorry, the line is breaking up. Please call again."


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamReply:
    """What to say on the stream after the caller's turn; ``end``: then hang up."""

    text: str
    end: bool = False
    left: bool = False  # the conversation is over: the stream is left, or the call ends


LEFT = StreamReply(text="", left=True)


class AgentTurns:
    """Who speaks next on a conversation: the agent (through commands) or the model."""

    def __init__(self, calls: Calls, delivery: Delivery, responder: Responder | None = None):
        self.calls = calls
        self.delivery = delivery
        self.responder = responder
        self.inline_reply_s = INLINE_REPLY_S
        self._waiters: dict[str, asyncio.Future[str]] = {}
        self._turn_started: dict[str, float] = {}
        calls.end_hooks.append(self._ended)

    def __len__(self) -> int:
        """Agent turns waiting for a caller (0 when idle)."""
        return len(self._waiters) + len(self._turn_started)

    def _ended(self, call_id: str, reason: str) -> None:
        waiter = self._waiters.pop(call_id, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(CallError(f"the call ended: {reason}"))

    # --- the agent's commands ------------------------------------------------------------------

    async def continue_call(self, call_id: str, message: str) -> str:
        """Says ``message``, then waits for the caller's answer; returns what they said."""
        loop = asyncio.get_running_loop()
        if call_id in self._waiters:
            raise CallError("a turn is already waiting for the caller on this call")
        waiter: asyncio.Future[str] = loop.create_future()
        self._waiters[call_id] = waiter
        self._turn_started[call_id] = self.calls.clock.now()
        try:
            await self._agent(call_id, adhoc.TURN, message)
            return await asyncio.wait_for(waiter, self.calls.settings.transcript_timeout_s)
        except TimeoutError as exc:
            raise CallError("no answer from the caller in time") from exc
        finally:
            self._waiters.pop(call_id, None)
            self._turn_started.pop(call_id, None)

    async def speak(self, call_id: str, message: str) -> None:
        """Says ``message`` and goes on listening, without waiting for an answer."""
        await self._agent(call_id, adhoc.TURN, message)

    async def send_dtmf(self, call_id: str, digits: str) -> None:
        """Sends keypad tones (``w``: wait half a second) to the call: Plivo through its DTMF
        API (what the call runs goes on); Twilio gets <Play digits> through a live update and
        Telnyx a send_dtmf command, then the call listens again."""
        async with self.calls.lock(call_id):
            call = self.calls.live(call_id)
            if call.answered_at is None:
                raise CallError("the call is not answered yet")
            pid = call.provider_call_id or ""
        try:
            if await self.calls.adapter.send_dtmf(pid, digits):
                return
        except ProviderError as exc:
            raise CallError(f"the carrier refused the digits: {exc}") from exc
        await self._agent(call_id, adhoc.DTMF, digits)

    async def end_call(self, call_id: str, message: str = "") -> None:
        """Ends the call (saying ``message`` first, if any)."""
        if message:
            await self._agent(call_id, adhoc.FINAL, message)
            return
        async with self.calls.lock(call_id):
            call = self.calls.live(call_id)
            call.ending = "hangup-bot"
            await self.calls.store.save(call)
        self.delivery.queue_sends(call_id, [self.delivery.hangup_send(call)])

    async def finish(self, call_id: str, values: Mapping[str, Any]) -> None:
        """The agent (or a model's tool) finished the conversation with ``values``: saved as
        flow variables, and the flow goes on at the conversation's on_done.

        Raises:
            CallError: the values do not fit its collect (saying what to fix), or the call
                is in no conversation that can finish.
        """
        async with self.calls.lock(call_id):
            call = self.calls.live(call_id)
            interp = self.calls.interpreter(call)
            try:
                run = interp.leave_stream(call, interp.converse_done(call, values))
            except CollectError as exc:
                raise CallError(f"not finished: {exc}") from None
            outcome = self.delivery.push(call, run, "conversation done")
            await self.calls.store.save(call)
        self.delivery.queue_sends(call_id, outcome.sends)

    async def _agent(self, call_id: str, kind: str, message: str) -> None:
        live = self.calls.streams.live(call_id) if self.calls.streams is not None else None
        if live is not None and kind in (adhoc.TURN, adhoc.FINAL):
            # On a media stream the words are synthesized and played there; the caller's
            # answer comes back through the stream's transcriber.
            self._turn_started.setdefault(call_id, self.calls.clock.now())
            live.say(message, final=kind == adhoc.FINAL)
            return
        await self._push_turn(call_id, kind, message, f"agent {kind}", answered=True)

    async def _push_turn(
        self, call_id: str, kind: str, message: str, why: str, *, answered: bool = False
    ) -> None:
        """Pushes an agent-turn block (say, then listen / hang up …) to the live call, leaving
        its media stream first where it has one. ``answered``: refuse an unanswered call."""
        async with self.calls.lock(call_id):
            call = self.calls.live(call_id)
            if answered and call.answered_at is None:
                raise CallError("the call is not answered yet")
            interp = self.calls.interpreter(call)
            run = interp.leave_stream(call, interp.agent_turn(call, kind, message))
            outcome = self.delivery.push(call, run, why)
            await self.calls.store.save(call)
        self.delivery.queue_sends(call_id, outcome.sends)

    # --- the caller's turns --------------------------------------------------------------------

    def conversing(self, call: CallRecord, waiting: Waiting) -> bool:
        """Whether what the call waits for is a turn of a conversation."""
        if waiting.kind == "converse":
            return True
        block = self.calls.interpreter(call).block(waiting.block)
        return type(block.end).__name__ == "Converse"

    async def converse(self, call: CallRecord, waiting: Waiting, text: str) -> Run:
        """The caller said ``text`` in a conversation: the model answers, or an agent's
        waiting turn gets it."""
        interp = self.calls.interpreter(call)
        options = _options(call)
        if options.get("stream") and not text:
            return self._stream_lost(call, interp)
        # A realtime conversation served without a stream (no realtime service configured)
        # is answered by the response model instead.
        if options.get("driver") in ("model", "realtime") and text:
            return await self._model_turn(call, interp, waiting, text, options)
        run = interp.converse_input(call, waiting.block, waiting.step, text)
        waiter = self._waiters.pop(call.call_id, None)
        if waiter is not None and text and not waiter.done():
            self._latency(call)
            waiter.set_result(text)
        return run

    def _latency(self, call: CallRecord) -> None:
        """The original plugin's turn metrics, kept on the record (`voicecall latency`)."""
        now = self.calls.clock.now()
        meta = call.metadata
        started = self._turn_started.get(call.call_id, now)
        listening = float(meta.get("listenStartedAt") or started)
        meta["turnCount"] = int(meta.get("turnCount", 0)) + 1
        meta["lastTurnLatencyMs"] = round((now - started) * 1000)
        meta["lastTurnListenWaitMs"] = round((now - max(listening, started)) * 1000)
        meta["lastTurnCompletedAt"] = now
        # Every turn, not only the last: the original's latency read one snapshot per change
        # from calls.jsonl and so saw each turn; our store keeps one row per call. Bounded.
        kept = [t for t in meta.get("turnMetrics", []) if isinstance(t, dict)]
        turns = kept[len(kept) - MAX_TURNS + 1 :] if len(kept) >= MAX_TURNS else kept
        turns.append({"latencyMs": meta["lastTurnLatencyMs"],
                      "listenWaitMs": meta["lastTurnListenWaitMs"]})  # fmt: skip
        meta["turnMetrics"] = turns

    # --- conversations on a media stream ------------------------------------------------------

    async def carrier_turn(self, call_id: str, message: str, *, final: bool = False) -> None:
        """Says ``message`` in the carrier's voice (synthesis failed on a stream): the stream
        is left for it and, unless ``final``, opened again after."""
        kind = adhoc.FINAL if final else adhoc.TURN
        await self._push_turn(call_id, kind, message, "carrier voice")

    async def stream_heard(
        self, call_id: str, text: str, *, block: str | None = None,
        on_request: Callable[[], None] | None = None,
    ) -> StreamReply | None:  # fmt: skip
        """The caller said ``text`` on a streamed conversation. The model answers (what to
        say, and whether the call ends after it); an agent's waiting turn gets it (None: the
        agent speaks through its commands); a finished conversation goes on in the flow
        (None: the stream is left)."""
        async with self.calls.lock(call_id):
            call = self.calls.store.get(call_id)
            options = _options(call) if call is not None else {}
            if call is None or call.ended or call.ending or block is None or (
                    options.get("block") != block):  # fmt: skip
                # Words the stream carried after the conversation finished (the carrier has
                # not swapped the document yet) or while the call ends: not a turn of it.
                return LEFT
            interp = self.calls.interpreter(call)
            interp.heard(call, text, interp.block(block))
            turns = int(call.metadata.get("turns", 0)) + 1
            call.metadata["turns"] = turns
            if call.waiting is not None:  # the caller's turn N of the conversation, as on XML
                call.waiting = Waiting(block=call.waiting.block, kind="converse", step=turns)
            await self.calls.store.save(call)
        if options.get("driver") != "model":
            waiter = self._waiters.pop(call_id, None)
            if waiter is not None and not waiter.done():
                self._latency(call)
                waiter.set_result(text)
            return None
        last = bool(options.get("max_turns") and turns >= int(options["max_turns"]))
        answer = await self._ask(call, text, options, on_request)
        async with self.calls.lock(call_id):
            call = self.calls.live(call_id)
            interp = self.calls.interpreter(call)
            run: Run | None = None
            if answer.done is not None:
                try:
                    run = interp.converse_done(call, answer.done)
                except CollectError as exc:  # checked in _fitting: the flow changed since
                    log.warning("call %s: the conversation's values were rejected: %s",
                                call_id, exc)  # fmt: skip
                    answer = ModelReply(text=answer.text or RETRY)
            if run is None and last and not answer.end:
                run = interp.converse_timeout(call)
            if run is None:
                await self.calls.store.save(call)
                return StreamReply(text=answer.text, end=answer.end or last)
            outcome = self.delivery.push(call, interp.leave_stream(call, run), "conversation done")
            await self.calls.store.save(call)
        self.delivery.queue_sends(call_id, outcome.sends)
        return LEFT

    async def _ask(
        self, call: CallRecord, heard: str, options: Mapping[str, Any],
        on_request: Callable[[], None] | None,
    ) -> ModelReply:  # fmt: skip
        """The responder's answer within its deadline (silence without a responder)."""
        if self.responder is None:
            return ModelReply(text="")
        timeout = (options.get("timeout_ms") or 30_000) / 1000 + REPLY_GRACE_S
        if on_request is not None:
            on_request()
        task = asyncio.ensure_future(asyncio.wait_for(
            self._fitting(call, heard, options), timeout))  # fmt: skip
        try:
            await asyncio.wait({task})
        except asyncio.CancelledError:  # the call ended: its model request goes too
            task.cancel()
            raise
        return _reply_text(call, task)

    async def _fitting(
        self, call: CallRecord, heard: str, options: Mapping[str, Any]
    ) -> ModelReply:
        """The model's answer; when it finishes with values that do not fit the conversation's
        collect, it is told what to fix and asked once more (what it says then is spoken:
        the caller never waits in silence for a rejected form)."""
        assert self.responder is not None
        first = await self.responder.reply(call, heard, options)
        answer = first if isinstance(first, ModelReply) else ModelReply(text=first)
        problem = self._misfit(call, answer)
        if problem is None:
            return answer
        log.warning("call %s: the conversation's values were rejected: %s", call.call_id, problem)
        again = await self.responder.reply(call, f"{REJECTED} {problem}", options)
        retry = again if isinstance(again, ModelReply) else ModelReply(text=again)
        if self._misfit(call, retry) is None:
            return retry
        return ModelReply(text=retry.text or RETRY)

    def _misfit(self, call: CallRecord, answer: ModelReply) -> str | None:
        """Why the values a model finished with do not fit, or None."""
        if answer.done is None:
            return None
        talk = self.calls.interpreter(call).conversation(call)
        if talk is None or talk.on_done is None:
            return "this conversation has no on_done to finish to"
        try:
            check_values(talk.converse.collect, answer.done)
        except CollectError as exc:
            return str(exc)
        return None

    async def stream_timeout(self, call_id: str) -> None:
        """A streamed conversation used up its turns (a realtime one counts them itself): the
        flow goes on at its ``on_timeout``, else the call ends."""
        async with self.calls.lock(call_id):
            call = self.calls.store.get(call_id)
            if call is None or call.ended:
                return
            interp = self.calls.interpreter(call)
            run = interp.converse_timeout(call)
            if run is None:
                call.ending = call.ending or "hangup-bot"
                await self.calls.store.save(call)
                sends = [self.delivery.hangup_send(call)]
            else:
                outcome = self.delivery.push(call, interp.leave_stream(call, run), "turns used up")
                await self.calls.store.save(call)
                sends = outcome.sends
        self.delivery.queue_sends(call_id, sends)

    async def stream_dropped(self, call_id: str) -> None:
        """Telnyx: the stream of a conversation still on it stopped (see :meth:`_stream_lost`).
        A stream we left on purpose (the conversation finished, the carrier's voice) is not
        one: leaving marks it closed first. A grace first: a caller hanging up stops the
        stream a moment before the hangup webhook arrives."""
        await asyncio.sleep(STREAM_DROP_GRACE_S)
        async with self.calls.lock(call_id):
            call = self.calls.store.get(call_id)
            if call is None or call.ended or not (call.metadata.get("stream") or {}).get("open"):
                return
            if not (call.metadata.get("converse") or {}).get("stream"):
                return
            call.metadata["stream"]["open"] = False
            run = self._stream_lost(call, self.calls.interpreter(call))
            outcome = self.delivery.push(call, run, "stream dropped")
            await self.calls.store.save(call)
        self.delivery.queue_sends(call_id, outcome.sends)

    def _stream_lost(self, call: CallRecord, interp: Interpreter) -> Run:
        """The carrier came back from a streamed conversation that had not finished (the
        stream dropped): open it again, a bounded number of times; then the caller hears why
        and the call ends. Never silence."""
        meta = call.metadata.setdefault("stream", {})
        lost = int(meta.get("lost", 0)) + 1
        meta["lost"] = lost
        if lost > MAX_STREAM_RECOVERIES:
            log.warning("call %s: the media stream dropped %d times; ending the call",
                        call.call_id, lost)  # fmt: skip
            return interp.agent_turn(call, adhoc.FINAL, STREAM_LOST)
        log.warning("call %s: the media stream dropped; opening it again", call.call_id)
        return interp.agent_turn(call, adhoc.LISTEN, "")

    def stream_said(self, call_id: str, line: TranscriptLine) -> None:
        """A line our side said on a stream, recorded once it has played or been cut off."""
        self.delivery.background(self._record(call_id, line))

    async def _record(self, call_id: str, line: TranscriptLine) -> None:
        async with self.calls.lock(call_id):
            call = self.calls.store.get(call_id)
            if call is None:
                return
            call.transcript.append(line)
            await self.calls.store.save(call)

    # --- the response model --------------------------------------------------------------------

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
            return _answered(call, interp, kind, ModelReply(text=""))
        timeout = (options.get("timeout_ms") or 30_000) / 1000 + REPLY_GRACE_S
        reply = asyncio.ensure_future(
            asyncio.wait_for(self._fitting(call, text, options), timeout))  # fmt: skip
        # A carrier waiting for the document gives up after ~15 s (Twilio): a slower reply is
        # answered with a hold, and pushed to the call with a redirect when it arrives.
        inline = min(timeout, self.inline_reply_s) if interp.xml else timeout
        done, _ = await asyncio.wait({reply}, timeout=inline)
        if reply in done:
            return _answered(call, interp, kind, _reply_text(call, reply))
        self.delivery.background(self._late_reply(call.call_id, kind, reply))
        return interp.converse_input(call, waiting.block, waiting.step, "")

    async def _late_reply(self, call_id: str, kind: str, task: asyncio.Future[ModelReply]) -> None:
        await asyncio.wait({task})
        async with self.calls.lock(call_id):
            call = self.calls.store.get(call_id)
            if call is None or call.ended:
                return
            run = _answered(call, self.calls.interpreter(call), kind, _reply_text(call, task))
            outcome = self.delivery.push(call, run, "model reply")
            await self.calls.store.save(call)
        self.delivery.queue_sends(call_id, outcome.sends)


def _answered(call: CallRecord, interp: Interpreter, kind: str, answer: ModelReply) -> Run:
    """The model's reply as the call's next step: finished with values, the flow goes on at
    on_done (values that still do not fit after :meth:`AgentTurns._fitting` are logged and the
    conversation goes on); on the last
    turn, at on_timeout if the conversation has one; else the reply is said."""
    if answer.done is not None:
        try:
            return interp.converse_done(call, answer.done)
        except CollectError as exc:
            log.warning("call %s: the conversation's values were rejected: %s", call.call_id, exc)
            call.metadata["collectError"] = str(exc)
    if kind == adhoc.FINAL and not answer.end:
        timed_out = interp.converse_timeout(call)
        if timed_out is not None:
            return timed_out
    return interp.agent_turn(call, adhoc.FINAL if answer.end else kind, answer.text)


# The flow's converse options, and the dialled number's responder settings where the flow
# sets none (config `numbers`).
_ROUTE_OPTIONS = {"responseModel": "model", "responseSystemPrompt": "system_prompt",
                  "responseTimeoutMs": "timeout_ms", "agentId": "agent_id"}  # fmt: skip


def _options(call: CallRecord) -> dict[str, Any]:
    options = dict(call.metadata.get("converse", {}))
    for key, option in _ROUTE_OPTIONS.items():
        value = call.metadata.get("route", {}).get(key)
        if value is not None and options.get(option) is None:
            options[option] = value
    return options


def _reply_text(call: CallRecord, task: asyncio.Future[ModelReply]) -> ModelReply:
    """The model's reply (the end-call tool: its farewell, then the hangup); a failed or
    timed-out reply is silence, never a dropped call."""
    try:
        answer = task.result()
    except (TimeoutError, Exception) as exc:
        log.warning("call %s: the response model failed: %s", call.call_id, exc)
        return ModelReply(text="")
    return answer if isinstance(answer, ModelReply) else ModelReply(text=answer)


# What an agent may tell a call, by name (routed by name to the gateway that owns the call).
AGENT_COMMANDS: dict[str, Callable[..., Awaitable[Any]]] = {
    "continue": AgentTurns.continue_call, "speak": AgentTurns.speak,
    "dtmf": AgentTurns.send_dtmf, "end": AgentTurns.end_call,
}  # fmt: skip
