"""Telnyx: Call Control commands in (through REST), webhook events out.

Commands run in the order they arrive, one at a time; what waits for the caller (a gather, a
listen turn, a transfer) runs beside them as the call's *input*, so that a hangup or a
gather_stop is handled at once. Event payloads follow the ``webhooks`` section of Telnyx's
OpenAPI spec (https://developers.telnyx.com/api/call-control): every event carries the
call's ids, the latest client_state (the command's own for the events it causes), a unique
``data.id`` and ``occurred_at`` on the carrier's clock.

The caller speaks when the bot waits for it: at a gather (keys go to the gather; words become
``call.transcription`` when transcription is on), or, with transcription on and no gather,
after a prompt (a speak or playback) ends — after a short reaction time, so that a gather sent
right after the prompt takes the turn instead.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from voicecall.runtime.media.telnyx import client_state_params

from .model import MockCall
from .session import CallSession
from .streams import CarrierStream, StreamSpec

# Events that name both parties (per the spec's payload schemas).
_WITH_PARTIES = frozenset({"call.initiated", "call.answered", "call.hangup", "call.bridged",
                           "call.gather.ended", "call.dtmf.received"})  # fmt: skip
# Our end reason -> (hangup_cause, sip_hangup_cause).
_HANGUPS = {
    "hangup-bot": ("normal_clearing", "200"), "hangup-user": ("normal_clearing", "200"),
    "completed": ("normal_clearing", "200"), "no-answer": ("timeout", "480"),
    "busy": ("user_busy", "486"), "rejected": ("call_rejected", "603"),
    "canceled": ("originator_cancel", "487"), "error": ("unspecified", "unspecified"),
}  # fmt: skip
_FAILED_TRANSFER = {"busy": "user_busy", "no-answer": "timeout", "failed": "unspecified"}
_REJECT_CAUSES = {"USER_BUSY": "busy"}
AMD_MODES = frozenset({"detect", "detect_beep", "detect_words", "greeting_end", "premium"})


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="microseconds").replace(
        "+00:00", "Z")  # fmt: skip


def new_call_control_id() -> str:
    return "v3:" + secrets.token_urlsafe(24)


@dataclass(frozen=True, slots=True)
class Command:
    name: str  # the REST path's action
    body: dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class GatherSpec:
    """A gather command's parameters, with Telnyx's defaults."""

    prompt: tuple[str, str] | None  # ("say", text) or ("play", url)
    invalid: tuple[str, str] | None
    valid_digits: str
    minimum: int
    maximum: int
    terminator: str
    tries: int
    timeout_s: float
    client_state: str | None

    @classmethod
    def of(cls, name: str, body: dict[str, Any], client_state: str | None) -> GatherSpec:
        kind, key = ("play", "audio_url") if name == "gather_using_audio" else ("say", "payload")
        prompt = body.get(key)
        invalid = body.get("invalid_audio_url" if kind == "play" else "invalid_payload")
        return cls(
            prompt=(kind, str(prompt)) if prompt else None,
            invalid=(kind, str(invalid)) if invalid else None,
            valid_digits=str(body.get("valid_digits") or "0123456789#*"),
            minimum=int(body.get("minimum_digits") or 1),
            maximum=int(body.get("maximum_digits") or 128),
            terminator=str(body.get("terminating_digit") or "#"),
            tries=int(body.get("maximum_tries") or 3),
            timeout_s=int(body.get("timeout_millis") or 60_000) / 1000,
            client_state=client_state,
        )

    def check(self, pressed: str) -> tuple[str, bool]:
        """The digits Telnyx reports for a key sequence, and whether they are valid."""
        digits = pressed.split(self.terminator, maxsplit=1)[0] if self.terminator else pressed
        digits = digits[: self.maximum]
        valid = len(digits) >= self.minimum and all(d in self.valid_digits for d in digits)
        return digits, valid


class TelnyxSession(CallSession):
    """One Telnyx call."""

    provider = "telnyx"
    # REST action -> method; anything else is acknowledged and recorded only.
    commands: ClassVar[dict[str, str]] = {
        "answer": "answer", "hangup": "hangup", "reject": "reject", "speak": "speak",
        "playback_start": "playback", "gather_using_speak": "gather",
        "gather_using_audio": "gather", "gather": "gather", "gather_stop": "gather_stop",
        "transcription_start": "transcription_start",
        "transcription_stop": "transcription_stop", "transfer": "transfer",
        "send_dtmf": "send_dtmf", "streaming_start": "streaming_start",
        "streaming_stop": "streaming_stop",
    }  # fmt: skip

    def __init__(
        self,
        carrier: Any,
        call: MockCall,
        *,
        webhook_url: str,
        connection_id: str,
        client_state: str | None = None,
        machine_detection: str | None = None,
        timeout_s: float = 30,
    ):
        super().__init__(carrier, call)
        self.webhook_url = webhook_url
        self.connection_id = connection_id
        self.client_state = client_state
        self.machine_detection = machine_detection in AMD_MODES
        self.timeout_s = timeout_s
        self.leg_id = str(uuid.uuid4())
        self.session_id = str(uuid.uuid4())
        self.queue: asyncio.Queue[Command] = asyncio.Queue()
        self.seen_commands: set[str] = set()
        self.transcribing = False
        self.prompt_waiting = False  # a prompt ended that the caller has not answered yet
        self.input: asyncio.Task[None] | None = None
        self.input_kind = ""  # listen | gather | transfer
        self.committed = False  # the input is sending its result: not to be cancelled
        self.gather_spec: GatherSpec | None = None
        self.ringing: asyncio.Task[Any] | None = None
        self._held: dict[str, Any] | None = None

    # --- events --------------------------------------------------------------------------------

    def event(
        self, name: str, *, client_state: str | None = None, **payload: Any
    ) -> dict[str, Any]:
        """A webhook envelope (client_state: the command's; by default the call's latest)."""
        body: dict[str, Any] = {
            "call_control_id": self.call.provider_call_id,
            "call_leg_id": self.leg_id,
            "call_session_id": self.session_id,
            "connection_id": self.connection_id,
            "client_state": client_state if client_state is not None else self.client_state,
        }
        if name in _WITH_PARTIES:
            body.update({"from": self.call.from_, "to": self.call.to})
        body.update(payload)
        data = {"record_type": "event", "event_type": name, "id": str(uuid.uuid4()),
                "occurred_at": iso(self.clock.now()), "payload": body}  # fmt: skip
        return {"data": data, "meta": {"attempt": 1, "delivered_to": self.webhook_url}}

    async def emit(self, event: dict[str, Any]) -> None:
        """Sends an event; with ``reorder_telnyx`` each one waits and goes after the next."""
        if not self.carrier.reorder_telnyx:
            await self._deliver(event)
        elif self._held is None:
            self._held = event
            # If no other event follows in this burst (the call now waits on the bot, which
            # needs this very event), it goes out on its own.
            self.spawn(self._flush_after_burst(event))
        else:
            held, self._held = self._held, None
            await self._deliver(event)
            await self._deliver(held)

    async def _flush_after_burst(self, event: dict[str, Any]) -> None:
        for _ in range(3):
            await asyncio.sleep(0)
        if self._held is event:
            await self.before_wait()

    async def before_wait(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            await self._deliver(held)

    async def _deliver(self, event: dict[str, Any]) -> None:
        delivery = await self.carrier.sender.event(self.call, self.webhook_url, event)
        if not delivery.ok and not self.call.ended:
            name = event["data"]["event_type"]
            self.fail("webhook", url=self.webhook_url, event=name, status=delivery.status,
                      error=delivery.error)  # fmt: skip

    # --- the call's life -----------------------------------------------------------------------

    async def run_outbound(self) -> None:
        self.spawn(self._work())
        if not await self.ring(self.timeout_s):
            return
        await self.emit(self.event("call.answered", state="answered", start_time=self._start()))
        if self.machine_detection:
            result = "machine" if self.caller.machine else "human"
            await self.emit(self.event("call.machine.detection.ended", result=result))

    async def run_inbound(self) -> None:
        """Offers the call; the caller gives up if the bot does not answer in time."""
        self.spawn(self._work())
        self.set_state("ringing")
        self.ringing = self.spawn(self._give_up(self.carrier.inbound_ring_timeout_s))
        await self.on_initiated()

    async def _give_up(self, seconds: float) -> None:
        await self.sleep(seconds)
        if not self.call.answered:
            self.record("caller", "hangup")
            self.end("canceled", "remote")

    def _start(self) -> str:
        return iso(self.call.started_at)

    async def on_initiated(self) -> None:
        outbound = self.call.direction == "outbound"
        await self.emit(self.event(
            "call.initiated", direction="outgoing" if outbound else "incoming",
            state="bridging" if outbound else "parked", start_time=self._start(),
        ))  # fmt: skip

    async def on_ended(self, reason: str, by: str) -> None:
        cause, sip = _HANGUPS.get(reason, _HANGUPS["hangup-bot"])
        await self.emit(self.event(
            "call.hangup", state="hangup", hangup_cause=cause, hangup_source=self._source(by),
            sip_hangup_cause=sip, start_time=self._start(), call_quality_stats=None,
        ))  # fmt: skip
        await self.before_wait()

    def _source(self, by: str) -> str:
        """hangup_source: caller or callee, from who hung up and the call's direction."""
        if by == "carrier":
            return "unknown"
        bot = by in ("bot", "api", "document")
        outbound = self.call.direction == "outbound"
        return "caller" if bot == outbound else "callee"

    # --- commands ------------------------------------------------------------------------------

    def submit(self, command: Command) -> None:
        """Queues a command received through REST (it counts as work until it has run)."""
        self.work.busy += 1
        self.queue.put_nowait(command)

    async def _work(self) -> None:
        try:
            while not self.call.ended:
                await self.before_wait()
                command = await self.work.wait(self.queue.get())
                try:
                    await self.execute(command)
                finally:
                    self.work.busy -= 1
        finally:
            while not self.queue.empty():
                self.queue.get_nowait()
                self.work.busy -= 1

    async def execute(self, command: Command) -> None:
        body = command.body
        command_id = body.get("command_id")
        if command_id:
            # command_id makes a command idempotent within the call.
            if command_id in self.seen_commands:
                return
            self.seen_commands.add(str(command_id))
        if body.get("client_state"):
            self.client_state = str(body["client_state"])  # echoed from now on
        if body.get("webhook_url"):
            self.webhook_url = str(body["webhook_url"])
        name = self.commands.get(command.name)
        if name is None:
            self.record("bot", "command", name=command.name)
            return
        try:
            await getattr(self, f"cmd_{name}")(command.name, body)
        except (ValueError, TypeError) as exc:  # a parameter the carrier cannot read
            self.record("carrier", "error", failure="command", command=command.name,
                        error=str(exc))  # fmt: skip

    async def cmd_answer(self, name: str, body: dict[str, Any]) -> None:
        if self.call.answered:
            return
        if self.ringing is not None:
            self.ringing.cancel()
        self.record("bot", "answer")
        self.mark_answered()
        await self.emit(self.event("call.answered", state="answered", start_time=self._start()))

    async def cmd_hangup(self, name: str, body: dict[str, Any]) -> None:
        self.record("bot", "hangup")
        self.end("hangup-bot" if self.call.answered else "canceled", "bot")

    async def cmd_reject(self, name: str, body: dict[str, Any]) -> None:
        cause = str(body.get("cause") or "CALL_REJECTED")
        self.record("bot", "reject", cause=cause)
        self.end(_REJECT_CAUSES.get(cause, "rejected"), "bot")

    async def cmd_speak(self, name: str, body: dict[str, Any]) -> None:
        self.cancel_input("listen")  # a new prompt: the caller answers after it instead
        self.record("bot", "say", text=str(body.get("payload", "")), voice=body.get("voice"))
        await self.emit(self.event("call.speak.started"))
        await self.emit(self.event("call.speak.ended", status="completed"))
        self.prompt_ended()

    async def cmd_playback(self, name: str, body: dict[str, Any]) -> None:
        self.cancel_input("listen")
        url = body.get("audio_url") or body.get("media_name") or ""
        self.record("bot", "play", url=url)
        await self.emit(self.event("call.playback.started", media_url=url, overlay=False))
        await self.emit(self.event("call.playback.ended", media_url=url, overlay=False,
                                   status="completed"))  # fmt: skip
        self.prompt_ended()

    async def cmd_send_dtmf(self, name: str, body: dict[str, Any]) -> None:
        self.record("bot", "dtmf", digits=str(body.get("digits", "")))

    async def cmd_transcription_start(self, name: str, body: dict[str, Any]) -> None:
        self.transcribing = True
        self.record("bot", "transcription", on=True)
        if self.prompt_waiting and self.input is None:
            self.listen()

    async def cmd_transcription_stop(self, name: str, body: dict[str, Any]) -> None:
        self.transcribing = False
        self.record("bot", "transcription", on=False)
        self.cancel_input("listen")

    async def cmd_gather(self, name: str, body: dict[str, Any]) -> None:
        self.cancel_input()
        spec = GatherSpec.of(name, body, self.client_state)
        self.record("bot", "gather", valid_digits=spec.valid_digits, tries=spec.tries)
        self.prompt_waiting = False
        self.gather_spec = spec
        self.start_input("gather", self.gather(spec))

    async def cmd_gather_stop(self, name: str, body: dict[str, Any]) -> None:
        spec = self.gather_spec
        self.record("bot", "gather-stop")
        if spec is not None and self.cancel_input("gather"):
            ended = self.event("call.gather.ended", client_state=spec.client_state, digits="",
                               status="cancelled")  # fmt: skip
            await self.emit(ended)

    async def cmd_transfer(self, name: str, body: dict[str, Any]) -> None:
        self.cancel_input()
        to = str(body.get("to", ""))
        self.record("bot", "dial", to=[to])
        timeout = float(body.get("timeout_secs") or 30)
        self.start_input("transfer", self.transfer(to, timeout, self.client_state))

    async def cmd_streaming_start(self, name: str, body: dict[str, Any]) -> None:
        """Telnyx answers ``streaming.started`` and opens the WebSocket; ``streaming.stopped``
        follows when it ends (``streaming_stop``, the bot closing it, the call's end), or
        ``streaming.failed`` when it cannot be opened."""
        url = str(body.get("stream_url") or "")
        state = str(body.get("client_state") or self.client_state or "")
        for stream in self.streams:  # one stream a call: a new one replaces it
            stream.stop("replaced")
            await self.await_stream(stream)
        self.record("bot", "stream", url=url, codec=body.get("stream_codec"),
                    mode=body.get("stream_bidirectional_mode"))  # fmt: skip
        spec = StreamSpec(url=url, params=client_state_params(state), client_state=state)
        stream = self.open_stream(spec, on_end=self._streaming_ended)
        await self.emit(self.event("streaming.started", client_state=state,
                                   stream_url=url, stream_id=stream.record.stream_id))  # fmt: skip

    async def cmd_streaming_stop(self, name: str, body: dict[str, Any]) -> None:
        self.record("bot", "stream-stop")
        for stream in self.streams:
            stream.stop("streaming_stop")
            await self.await_stream(stream)

    async def _streaming_ended(self, stream: CarrierStream) -> None:
        record = stream.record
        state = stream.spec.client_state
        if record.ended == "connect-failed":
            params = {"stream_url": record.url, "track": "inbound_track"}
            failed = self.event("streaming.failed", client_state=state, stream_params=params,
                                stream_id=record.stream_id, stream_type="websocket",
                                failure_reason=record.error)  # fmt: skip
            await self.emit(failed)
            return
        await self.emit(self.event("streaming.stopped", client_state=state,
                                   stream_url=record.url, stream_id=record.stream_id))  # fmt: skip

    # --- input: what waits for the caller ------------------------------------------------------

    def start_input(self, kind: str, coro: Coroutine[Any, Any, None]) -> None:
        self.input_kind, self.committed = kind, False
        self.input = self.spawn(coro)
        self.input.add_done_callback(self._input_done)

    def _input_done(self, task: asyncio.Task[None]) -> None:
        if self.input is task:
            self.input, self.input_kind, self.gather_spec = None, "", None

    def cancel_input(self, kind: str | None = None) -> bool:
        """Stops the input (of that kind) unless it is already sending its result."""
        task = self.input
        if task is None or self.committed or (kind is not None and self.input_kind != kind):
            return False
        task.cancel()
        self._input_done(task)
        return True

    def prompt_ended(self) -> None:
        self.prompt_waiting = True
        if self.transcribing and self.input is None:
            self.listen()

    def listen(self) -> None:
        self.prompt_waiting = False
        self.start_input("listen", self.listen_turn())

    async def listen_turn(self) -> None:
        """The caller answers a prompt while transcription is on."""
        await self.sleep(self.carrier.reaction_s)
        step = await self.take_turn()
        if self.call.ended:
            return
        self.committed = True
        if step.action == "say":
            await self.emit(self.transcription(step.value))
        elif step.action == "press":
            for digit in step.value:
                await self.emit(self.event("call.dtmf.received", digit=digit))
        # Silence: nothing is sent; the bot's own timer decides.

    def transcription(self, text: str) -> dict[str, Any]:
        data = {"transcript": text, "is_final": True, "transcription_track": "inbound",
                "confidence": self.carrier.speech_confidence}  # fmt: skip
        return self.event("call.transcription", transcription_data=data)

    async def gather(self, spec: GatherSpec) -> None:
        """A DTMF gather, with Telnyx's own retries (maximum_tries, invalid_payload)."""
        prompt = spec.prompt
        for attempt in range(1, spec.tries + 1):
            if prompt is not None:
                kind, value = prompt
                self.record("bot", kind, **{"text" if kind == "say" else "url": value})
            step = await self.take_turn()
            if self.call.ended:
                return
            last = attempt == spec.tries
            if step.action == "press":
                digits, valid = spec.check(step.value)
                if valid or last:
                    await self.gather_ended(spec, digits, "valid" if valid else "invalid")
                    return
                prompt = spec.invalid or spec.prompt
                continue
            if step.action == "say" and self.transcribing:
                self.committed = True
                await self.emit(self.transcription(step.value))
                self.committed = False
            await self.sleep(spec.timeout_s)  # no keys: the gather times out
            prompt = spec.prompt
        await self.gather_ended(spec, "", "timeout")

    async def gather_ended(self, spec: GatherSpec, digits: str, status: str) -> None:
        self.committed = True
        ended = self.event("call.gather.ended", client_state=spec.client_state, digits=digits,
                           status=status)  # fmt: skip
        await self.emit(ended)

    async def transfer(self, to: str, timeout_s: float, state: str | None) -> None:
        """An answered transfer bridges until the caller's next step; then the call is over."""
        await self.before_wait()
        outcome = await self.caller.dial_outcome()
        self.record("caller", "dial", outcome=outcome)
        if outcome == "answered":
            self.committed = True
            await self.emit(self.event("call.bridged", client_state=state))
            self.committed = False
            self.record("carrier", "bridged", to=[to])
            step = await self.caller.take()
            self.record("caller", "hangup" if step.action == "hangup" else "bridge-end")
            self.end("completed", "remote")
            return
        if outcome == "no-answer":
            await self.sleep(timeout_s)
        if self.carrier.report_failed_transfer:
            # What Telnyx sends: the hang-up of the new leg (its own call_control_id); the
            # original call stays up and takes further commands.
            cause = _FAILED_TRANSFER.get(outcome, "unspecified")
            event = self.event("call.hangup", client_state=state, state="hangup",
                               hangup_cause=cause, hangup_source="callee", to=to)  # fmt: skip
            event["data"]["payload"]["call_control_id"] = new_call_control_id()
            self.committed = True
            await self.emit(event)
