"""The voice-call service: the runtime behind the Gateway methods, the agent tool and MCP.

:class:`VoiceCallService` owns one runtime (webhook server, timers, restore; the mock carrier
with ``provider: mock``) and does what the ``voicecall.*`` methods ask, with the original
plugin's params, payloads and error texts (reference: openclaw-gateway.md §6). Each operation
takes the raw, untrusted params mapping and returns the RPC payload, or raises a
:class:`~voicecall.plugin.host.GatewayError` (``invalid`` for bad input and unknown calls,
``unavailable`` for what the runtime could not do). Every committed call change is pushed as
events: ``voicecall.call`` (the redacted status view, on each state change) and
``voicecall.transcript`` (each new transcript line).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.catalog import Catalog
from voicecall.dsl.errors import FlowError, did_you_mean
from voicecall.plugin.config import flow_dirs
from voicecall.plugin.config_effective import mode_flow
from voicecall.plugin.expose import Exposure, expose_runtime
from voicecall.plugin.flowparams import check_params, describe_flow
from voicecall.plugin.host import EventSink, GatewayError, invalid, unavailable
from voicecall.runtime.app import Runtime, RuntimeConfig, start_runtime
from voicecall.runtime.clock import Clock
from voicecall.runtime.manager import CallError, CallManager
from voicecall.runtime.ops import ops_of
from voicecall.runtime.sim.script import script_from_config
from voicecall.runtime.state import CallRecord

OPERATION_TTL_S = 300.0  # an operation is forgotten this long after it finished
MAX_OPERATIONS = 1000  # continue operations held at once (pending or unread)
TTS_TIMEOUT_MS = 8000  # the original's TTS synthesis timeout, part of pollTimeoutMs
POLL_MARGIN_MS = 30_000
MODES = ("notify", "conversation")
DIGITS = re.compile(r"^[0-9*#wW]+$")
MAX_TEXT = 4000  # longest message an agent may have spoken in one turn
MAX_KEY = 512  # longest session key or dtmf sequence kept with a call
BEFORE_ANSWER = ("", "initiated", "ringing")


@dataclass(slots=True, kw_only=True)
class Operation:
    """A continue started with ``voicecall.continue.start``."""

    id: str
    call_id: str
    task: asyncio.Task[str]
    finished_at: float | None = None


def _text(params: Mapping[str, Any], key: str) -> str:
    """A trimmed string param; anything else, or empty, counts as missing (as the original)."""
    value = params.get(key)
    return value.strip() if isinstance(value, str) else ""


def unicode_problem(params: Any) -> str | None:
    """Names the first string (key or value) in ``params`` that is not valid Unicode text.

    JSON may escape a lone surrogate (``"\\ud800"``); such text cannot be encoded for a
    carrier, the store or a log, so it is refused before it reaches a call (iterative: the
    params came from a bounded frame, but their depth is the sender's)."""
    stack: list[tuple[str, Any]] = [("", params)]
    while stack:
        path, value = stack.pop()
        items: list[tuple[str, Any]] = []
        if isinstance(value, str):
            items = [(path or "params", value)]
        elif isinstance(value, Mapping):
            for key, inner in value.items():
                # The key is the sender's text too: shown escaped and short in the error.
                shown = str(key).encode("utf-8", "backslashreplace").decode()[:64]
                name = f"{path}.{shown}" if path else shown
                items.append((name, str(key)))
                stack.append((name, inner))
        elif isinstance(value, list | tuple):
            stack.extend((f"{path}[{i}]", inner) for i, inner in enumerate(value))
        for name, text in items:
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                return f"{name} is not valid Unicode text (a lone surrogate)"
    return None


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def status_view(call: CallRecord, provider: str) -> dict[str, Any]:
    """The original's ``toVoiceCallStatus``: no numbers, transcript or event ids."""
    out: dict[str, Any] = {"callId": call.call_id}
    if call.provider_call_id:
        out["providerCallId"] = call.provider_call_id
    out.update(provider=provider, direction=call.direction, state=call.state,
               startedAt=_ms(call.started_at))  # fmt: skip
    for key, value in (("answeredAt", _ms(call.answered_at)), ("endedAt", _ms(call.ended_at)),
                       ("endReason", call.end_reason)):  # fmt: skip
        if value is not None:
            out[key] = value
    return out


def not_active(call: CallRecord) -> str:
    ended = _ms(call.ended_at)
    return (f"call is not active (last state={call.state}, endReason={call.end_reason}, "
            f"endedAt={ended})")  # fmt: skip


class VoiceCallService:
    """One plugin instance's runtime and the operations the Gateway methods call."""

    def __init__(
        self, plugin_config: Mapping[str, Any], *, config_path: str | None,
        logger: logging.Logger, emit: EventSink, clock: Clock | None = None,
        catalog: Catalog | None = None, mock_backend: str = "twilio",
    ):  # fmt: skip
        base = Path(config_path).parent if config_path else Path.cwd()
        self.raw = dict(plugin_config)
        self.config = RuntimeConfig(raw=self.raw, base_dir=base)
        self.catalog = catalog if catalog is not None else Catalog(flow_dirs(self.raw, base))
        self.log = logger
        self.emit = emit
        self.clock = clock
        self.mock_backend = mock_backend
        self.runtime: Runtime | None = None
        self.exposure: Exposure | None = None
        self.stopping = False
        self._ops: dict[str, Operation] = {}
        self._seen: dict[str, tuple[str, int]] = {}  # call id: (state, lines) already pushed

    @property
    def enabled(self) -> bool:
        return bool(self.raw.get("enabled", True))

    @property
    def provider(self) -> str:
        return self.config.provider

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the runtime (webhook server, timers, restore); nothing when disabled."""
        if not self.enabled:
            self.log.info("[voice-call] disabled in plugin config; the runtime is not started")
            return
        if self.runtime is not None:
            return
        script = script_from_config(self.raw.get("mock")) if self.provider == "mock" else None
        runtime = await start_runtime(self.config, clock=self.clock, catalog=self.catalog,
                                      mock_backend=self.mock_backend,
                                      ready=False)  # fmt: skip  # ready once exposed
        if runtime.carrier is not None and script is not None:
            runtime.carrier.script = script
        try:  # publicUrl, or the tunnel: the URL callbacks get and signatures are checked on
            self.exposure = await expose_runtime(self.config, runtime)
        except BaseException:
            await runtime.stop()
            raise
        for call in runtime.store.live():
            self._seen[call.call_id] = (call.state, len(call.transcript))
        runtime.manager.watch(self._observe, everywhere=True)
        self.runtime = runtime
        _freeze_startup_objects()
        _ops_state(runtime, ready=True)
        self.stopping = False
        self.log.info("[voice-call] runtime started; webhook %s", runtime.webhook_url)

    async def stop(self) -> None:
        """Stops admitting, ends waiting operations, drains the runtime; twice is fine."""
        runtime, self.runtime = self.runtime, None
        if runtime is None:
            return
        self.stopping = True
        _ops_state(runtime, ready=False)
        for op in list(self._ops.values()):
            op.task.cancel()
        await asyncio.gather(*(op.task for op in self._ops.values()), return_exceptions=True)
        self._ops.clear()
        await runtime.stop()
        exposure, self.exposure = self.exposure, None
        if exposure is not None:  # after the drain: webhooks in flight come through it
            await exposure.close()
        self._seen.clear()
        self.log.info("[voice-call] runtime stopped")

    def _manager(self) -> CallManager:
        if not self.enabled:
            raise unavailable("Voice call disabled in plugin config")
        if self.runtime is None:
            raise unavailable("Voice call runtime is stopping" if self.stopping else
                              "Voice call runtime is not running")  # fmt: skip
        return self.runtime.manager

    def _now(self) -> float:
        return self._manager().clock.now()

    # --- events --------------------------------------------------------------------------------

    def _observe(self, call: CallRecord) -> None:
        state, lines = self._seen.get(call.call_id, ("", 0))
        if call.state != state:
            view = status_view(call, self.provider)
            if call.answered_at is not None and state in BEFORE_ANSWER and call.state not in (
                "answered", *BEFORE_ANSWER):  # fmt: skip
                # Answered and started in one commit (one webhook): the answer is a state
                # change of its own to the clients (a ringing spinner stops on it).
                self.emit("voicecall.call", {**view, "state": "answered"})
            self.emit("voicecall.call", view)
        for line in call.transcript[lines:]:
            self.emit("voicecall.transcript", {"callId": call.call_id, "speaker": line.speaker,
                                               "text": line.text, "at": _ms(line.at)})  # fmt: skip
        if call.ended:
            self._seen.pop(call.call_id, None)
        else:
            self._seen[call.call_id] = (call.state, len(call.transcript))

    # --- placing calls -------------------------------------------------------------------------

    async def initiate(
        self, params: Mapping[str, Any], *, agent_id: str | None = None
    ) -> dict[str, Any]:
        """``voicecall.initiate``: ``message`` required, ``to`` defaults to ``toNumber``.

        ``agent_id``: the agent of a trusted caller (the tool's session), kept with the call.
        """
        manager = self._manager()
        message = _text(params, "message")
        if not message and not _text(params, "flow"):
            raise invalid("message required")
        to = _text(params, "to") or str(manager.settings.to_number or "")
        if not to:
            raise invalid("to required")
        return await self._place(manager, to, message, params, agent_id)

    async def start_call(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``voicecall.start``: ``to`` required; ``agentId`` only from trusted plugin callers."""
        manager = self._manager()
        to = _text(params, "to")
        if not to:
            raise invalid("to required")
        if _text(params, "agentId"):
            # No RPC client is a trusted plugin caller (the original checks the caller).
            raise invalid("agentId requires a trusted plugin caller and a valid agent id")
        return await self._place(manager, to, _text(params, "message"), params)

    async def _place(
        self, manager: CallManager, to: str, message: str, params: Mapping[str, Any],
        agent_id: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        if len(message) > MAX_TEXT:
            raise invalid(f"message is longer than {MAX_TEXT} characters")
        flow_name, values, mode = self._plan(message, params)
        metadata: dict[str, Any] = {"mode": mode}
        if agent_id:
            metadata["agentId"] = agent_id
        if message:
            metadata["initialMessage"] = message
        for key in ("sessionKey", "requesterSessionKey", "dtmfSequence"):
            value = _text(params, key)
            if len(value) > MAX_KEY:
                raise invalid(f"{key} is longer than {MAX_KEY} characters")
            if value:
                metadata[key] = value
        sequence = metadata.get("dtmfSequence")
        if sequence is not None and not DIGITS.match(sequence):
            raise invalid("dtmfSequence may only hold 0-9, *, # and w (wait)")
        try:
            record = await manager.initiate(to=to, flow=flow_name, params=values,
                                            metadata=metadata)  # fmt: skip
        except CallError as exc:
            raise unavailable(str(exc) or "initiate failed") from exc
        return {"callId": record.call_id, "initiated": True}

    def _plan(self, message: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any], str]:
        """Which flow runs, with which params: ``flow`` + ``params``, else the mode's flow."""
        mode = _text(params, "mode") or str(
            (self.raw.get("outbound") or {}).get("defaultMode", "notify"))  # fmt: skip
        if mode not in MODES:
            raise invalid(f"mode must be notify or conversation, not {mode!r}")
        asked = _text(params, "flow")
        if asked and asked not in self.catalog.entries:
            # A client names a flow, never a file: the catalog would take a path.
            hint = did_you_mean(asked, self.catalog.entries)
            known = ", ".join(sorted(self.catalog.entries))
            raise invalid(f"no flow named '{asked}'; {hint or 'known flows: ' + known}")
        name = asked or mode_flow(self.raw, mode) or mode  # config flows.<mode>
        given = params.get("params")
        if given is not None and not isinstance(given, Mapping):
            raise invalid("params must be an object of the flow's param values")
        flow = self.flow(name)
        values = dict(given or {})
        if flow.param("message") is not None and (message or not _text(params, "flow")):
            # A mode's flow without a message (voicecall.start allows it): nothing is said
            # before the agent's first turn.
            values.setdefault("message", message)
        try:
            return flow.name, check_params(flow, values), mode
        except ValueError as exc:
            raise invalid(str(exc)) from exc

    def flow(self, name: str) -> m.Flow:
        """A named flow that may place calls.

        Raises:
            GatewayError: INVALID_REQUEST naming the flow (unknown, invalid, inbound-only).
        """
        try:
            flow = self._manager().flows.flow(name)
        except LookupError as exc:
            raise invalid(str(exc.args[0] if exc.args else exc)) from exc
        except FlowError as exc:
            raise invalid(f"flow {name} has errors; `voicecall validate` lists them") from exc
        if flow.direction == "inbound":
            raise invalid(f"flow {name} only answers calls (direction: inbound)")
        return flow

    # --- live calls ----------------------------------------------------------------------------

    def _live(self, manager: CallManager, call_id: str, *, input_error: bool = True) -> CallRecord:
        """The live call ``call_id`` (or its carrier id); INVALID_REQUEST for continue and
        speak, UNAVAILABLE for dtmf and end, as the original."""
        fail = invalid if input_error else unavailable
        call = manager.get(call_id)
        if call is None:
            raise fail("Call not found")
        if call.ended:
            raise fail(not_active(call))
        return call

    def _turn_params(self, params: Mapping[str, Any]) -> tuple[CallManager, CallRecord, str]:
        manager = self._manager()
        call_id, message = _text(params, "callId"), _text(params, "message")
        if not call_id or not message:
            raise invalid("callId and message required")
        if len(message) > MAX_TEXT:
            raise invalid(f"message is longer than {MAX_TEXT} characters")
        return manager, self._live(manager, call_id), message

    async def continue_call(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``voicecall.continue``: says the message, blocks until the caller's answer."""
        manager, call, message = self._turn_params(params)
        text = await self._continue(manager, call.call_id, message)
        return {"success": True, "transcript": text}

    async def _continue(self, manager: CallManager, call_id: str, message: str) -> str:
        try:
            return await manager.continue_call(call_id, message)
        except CallError as exc:
            raise unavailable(str(exc) or "continue failed") from exc

    async def continue_start(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``voicecall.continue.start``: the same turn as an operation to poll."""
        manager, call, message = self._turn_params(params)
        self._prune()
        if len(self._ops) >= MAX_OPERATIONS:
            raise unavailable(f"too many continue operations in progress ({MAX_OPERATIONS})")
        op_id = str(uuid.uuid4())
        task = asyncio.ensure_future(self._continue(manager, call.call_id, message))
        op = Operation(id=op_id, call_id=call.call_id, task=task)
        self._ops[op_id] = op
        task.add_done_callback(lambda _: self._finished(op))
        return {"operationId": op_id, "status": "pending", "pollTimeoutMs": self._poll_ms()}

    def _finished(self, op: Operation) -> None:
        if self.runtime is not None:
            op.finished_at = self.runtime.manager.clock.now()

    def _poll_ms(self) -> int:
        transcript_ms = round(self._manager().settings.transcript_timeout_s * 1000)
        return transcript_ms + TTS_TIMEOUT_MS + POLL_MARGIN_MS

    def _prune(self) -> None:
        """Forgets operations that finished more than OPERATION_TTL_S ago."""
        now = self._now()
        for op_id, op in list(self._ops.items()):
            if op.finished_at is not None and now - op.finished_at >= OPERATION_TTL_S:
                del self._ops[op_id]

    async def continue_result(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``voicecall.continue.result``: pending, or the terminal result (deleted once read)."""
        self._manager()
        op_id = _text(params, "operationId")
        if not op_id:
            raise invalid("operationId required")
        self._prune()
        op = self._ops.get(op_id)
        if op is None:
            raise invalid("operation not found")
        if not op.task.done():
            return {"operationId": op_id, "status": "pending", "pollTimeoutMs": self._poll_ms()}
        del self._ops[op_id]
        if op.task.cancelled():
            return {"operationId": op_id, "status": "failed", "error": "continue failed"}
        error = op.task.exception()
        if error is not None:
            message = error.message if isinstance(error, GatewayError) else "continue failed"
            return {"operationId": op_id, "status": "failed", "error": message}
        return {"operationId": op_id, "status": "completed",
                "result": {"success": True, "transcript": op.task.result()}}  # fmt: skip

    async def speak(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``voicecall.speak``: says the message and goes on listening."""
        manager, call, message = self._turn_params(params)
        try:
            await manager.speak(call.call_id, message)
        except CallError as exc:
            raise unavailable(str(exc) or "speak failed") from exc
        return {"success": True}

    async def dtmf(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``voicecall.dtmf``: sends keypad tones to the live call (``w``: a half-second wait)."""
        manager = self._manager()
        call_id, digits = _text(params, "callId"), _text(params, "digits")
        if not call_id or not digits:
            raise invalid("callId and digits required")
        if not DIGITS.match(digits) or len(digits) > 64:
            raise invalid("digits may only hold 0-9, *, # and w (wait), at most 64")
        call = self._live(manager, call_id, input_error=False)
        try:
            await manager.send_dtmf(call.call_id, digits)
        except CallError as exc:
            raise unavailable(str(exc) or "dtmf failed") from exc
        return {"success": True}

    async def end(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``voicecall.end``: hangs up."""
        manager = self._manager()
        call_id = _text(params, "callId")
        if not call_id:
            raise invalid("callId required")
        call = self._live(manager, call_id, input_error=False)
        try:
            await manager.end_call(call.call_id)
        except CallError as exc:
            raise unavailable(str(exc) or "end failed") from exc
        return {"success": True}

    async def status(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``voicecall.status``: the active calls, or one call from memory or the store."""
        manager = self._manager()
        wanted = _text(params, "callId") or _text(params, "sid")
        if not wanted:
            calls = sorted(manager.store.all_live(), key=lambda c: c.started_at)
            return {"found": True, "calls": [status_view(c, self.provider) for c in calls]}
        call = manager.get(wanted)
        if call is None:
            return {"found": False}
        return {"found": True, "call": status_view(call, self.provider)}

    def flows(self) -> dict[str, Any]:
        """``voicecall.flows``: every valid named flow, with what it does and its params."""
        return {"flows": [describe_flow(e.flow) for e in self.catalog if e.ok]}


def _ops_state(runtime: Runtime, *, ready: bool) -> None:
    """/readyz: 200 once the runtime is started and exposed; 503 from the start of its drain."""
    ops = ops_of(runtime.runner.app)
    if ops is None:
        return
    if ready:
        ops.ready()
    else:
        ops.draining()


_FROZEN = False


def _freeze_startup_objects() -> None:
    """Once per process, after start-up: what was imported and built at start is moved out of
    the garbage collector's sight. A full collection over it (~140k objects with the SDKs)
    stalls the event loop ~70 ms, and so every media stream's frames; frozen, ~0 ms. Not in
    start_runtime: tests and simulations build many runtimes in one process."""
    global _FROZEN  # noqa: PLW0603 - one process-wide switch
    if not _FROZEN:
        _FROZEN = True
        gc.collect()
        gc.freeze()
