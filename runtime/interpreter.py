"""Runs a compiled flow for one call: from a block, until the call must wait for the carrier.

The interpreter changes a :class:`CallRecord` (variables, where the call waits, transcript,
nodes visited) and returns a :class:`Run`: the XML fragments to answer with (Twilio, Plivo) or
the commands to send (Telnyx). Server decisions (set, branch, goto, subflows) are evaluated on
the spot and the next block chained into the same answer; a chain longer than
:data:`MAX_CHAIN` ends with a redirect, so a loop without waits cannot build an endless answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Protocol

from voicecall.compiler import blocks as b
from voicecall.compiler.base import CompiledBlock, CompiledFlow, stream_ops
from voicecall.compiler.render import RenderError, template_slot
from voicecall.dsl import model as m
from voicecall.dsl.errors import Span
from voicecall.dsl.templates import environment
from voicecall.dsl.values import zone
from voicecall.runtime import adhoc
from voicecall.runtime.collect import CollectError, check_values, tool_parameters
from voicecall.runtime.state import CallRecord, TranscriptLine, Waiting
from voicecall.runtime.urls import callback_url, encode_state

MAX_CHAIN = 40  # blocks chained into one answer before handing over with a redirect


@dataclass(slots=True, kw_only=True)
class Command:
    """A Telnyx command ready to send (or a runtime pseudo-command: pause, listen)."""

    command: str
    body: dict[str, Any]
    awaits: str | None
    block: str
    step: int = 0


@dataclass(slots=True)
class Run:
    fragments: list[str] = field(default_factory=list)
    commands: list[Command] = field(default_factory=list)
    hangup: bool = False  # the answer ends the call


class StreamHook(Protocol):
    """Where conversations are served over media streams (:mod:`voicecall.runtime.voice.
    conversation`): whether one is, and the opening of its stream."""

    def wants(self, call: CallRecord, talk: m.Converse) -> bool:
        """Whether this conversation of this call is served over a media stream."""
        ...

    def open(
        self, call: CallRecord, block_id: str, greeting: str, driver: str = "agent"
    ) -> dict[str, str]:
        """Expects the call's stream; returns the opening's slots (stream_url, call_key,
        stream_token, stream_headers). ``greeting`` is said on the stream first."""
        ...

    def live(self, call_id: str) -> LiveStream | None:
        """The call's conversation on a started stream, if any."""
        ...

    def ring(self, call: CallRecord, interp: Interpreter) -> None:
        """An outbound call is ringing: its first words, if a streamed conversation says
        them, may be synthesized now."""
        ...


class LiveStream(Protocol):
    def say(self, text: str, *, final: bool = False) -> None:
        """Says ``text`` on the stream (``final``: then the call hangs up)."""
        ...


@lru_cache(maxsize=4096)
def _compiled_expression(source: str) -> Callable[..., Any]:
    return environment().compile_expression(source)


class _ExprError(RenderError):
    """An expression or assignment failed; ``span`` is where it is in the block's file."""

    def __init__(self, message: str, span: Span):
        super().__init__(message)
        self.span = span


def _located(source: object, exc: RenderError) -> str:
    """The error with its flow location, once: a template's error already names its own; an
    expression's is its own line:col in the block's file, not the block's first action."""
    text = str(exc)
    file = str(source).rsplit(":", 2)[0]
    if isinstance(exc, _ExprError):
        return f"{file}:{exc.span.line}:{exc.span.col}: {text}"
    return text if text.startswith(f"{file}:") else f"{source}: {text}"


def _eval(expr: m.Expr, values: Mapping[str, Any]) -> Any:
    """Evaluates a flow expression; any failure is a RenderError naming where it is."""
    try:
        return _compiled_expression(expr.source)(values)
    except Exception as exc:
        raise _ExprError(f"{expr.source!r}: {exc}", expr.span) from exc


def _storable(assignment: m.Assignment, value: Any) -> Any:
    """A value `set:` (or a call_flow param) may keep: what the store can write (JSON), else a
    RenderError."""
    if _is_plain(value):
        return value
    kind = type(value).__name__
    hint = " (save now.isoformat(), now.hour, …)" if hasattr(value, "isoformat") else ""
    raise _ExprError(f"{assignment.name}: a {kind} cannot be kept between turns; save "
                     f"text, numbers, lists or mappings{hint}", assignment.span)  # fmt: skip


def _is_plain(value: Any) -> bool:
    if value is None or isinstance(value, bool | int | float | str):
        return True
    if isinstance(value, list | tuple):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return False


class Interpreter:
    """One compiled flow, run against call records.

    Args:
        compiled: the flow compiled for the call's provider.
        webhook_base: the public URL of the webhook endpoint (callbacks are built from it).
        config: the non-secret config keys templates may read as ``config.*``.
        now: the clock.
    """

    def __init__(
        self,
        compiled: CompiledFlow,
        webhook_base: str,
        config: Mapping[str, Any],
        now: Callable[[], float],
        streams: StreamHook | None = None,
    ):
        self.compiled = compiled
        self.base = webhook_base
        self.config = dict(config)
        self.now = now
        self.xml = compiled.kind == "xml"
        self.streams = streams

    # --- entry points ----------------------------------------------------------------------------

    def start(self, call: CallRecord) -> Run:
        """Begins the flow (for an inbound Telnyx call: with the answer command)."""
        call.scopes.setdefault("", self.initial_scope(call.params))
        first = self.compiled.start
        if not self.xml and call.direction == "inbound" and self.compiled.answer:
            first = self.compiled.answer
        return self.advance(call, first)

    def initial_scope(self, params: Mapping[str, Any]) -> dict[str, Any]:
        scope = {p.name: p.default if p.has_default else None for p in self.compiled.flow.params}
        scope.update(params)
        return scope

    def advance(self, call: CallRecord, block_id: str, step: int = 0) -> Run:
        """Runs from ``block_id`` until a wait or the end of the call."""
        run = Run()
        current = block_id
        for _ in range(MAX_CHAIN):
            block = self.block(current)
            self.enter(call, block)
            try:
                self.emit(call, block, step, run)
                following = self.server_step(call, block)
            except RenderError as exc:
                return self.fail(call, run, _located(block.source, exc))
            if following is None:
                return run
            current, step = following, 0
        self.hand_over(call, current, run)
        return run

    def answer_input(
        self, call: CallRecord, block_id: str, step: int, *, digits: str = "", text: str = "",
        confidence: float | None = None, invalid: bool = False,
    ) -> Run:  # fmt: skip
        """The caller's answer to an ask (empty digits and text: no answer)."""
        block = self.block(block_id)
        end = block.end
        assert isinstance(end, b.Gather)
        ask = end.ask
        answer = {"text": text, "digits": digits, "confidence": confidence or 0.0}
        if text or digits:
            self.heard(call, text or digits, block)
        try:
            outcome = self.judge(call, block, end, answer, invalid)
        except RenderError as exc:
            return self.fail(call, Run(), _located(block.source, exc))
        if outcome == "ok":
            self.save(call, block.scope, ask.save_as, answer)
            return self.advance(call, end.on_input)
        # Telnyx already asked maximum_tries times when it reports silence or invalid digits.
        native = block.native_retries and (outcome == "no input" or invalid)
        tries = ask.retries + 1 if native else step + 1
        if tries <= ask.retries and end.retry_block is not None:
            return self.advance(call, end.retry_block, tries)
        self.save(call, block.scope, ask.save_as, answer)
        exit_to = end.on_no_input if outcome == "no input" else end.on_no_match
        return self.advance(call, exit_to or end.on_input)

    def dial_result(self, call: CallRecord, block_id: str, status: str) -> Run:
        """A transfer's outcome: bridged (the call goes on, bridged), over (it ends), or failed
        (on_fail runs, or the call ends)."""
        end = self.block(block_id).end
        assert isinstance(end, b.Dial)
        call.waiting = None
        if status == "answered":
            call.move("active")
            return Run()
        if status == "completed" or end.on_fail is None:
            call.ending = call.ending or ("completed" if status == "completed" else "hangup-bot")
            return self.hang_up(call, Run())
        return self.advance(call, end.on_fail)

    def after_input(self, call: CallRecord, block_id: str, step: int) -> list[Command]:
        """Telnyx: what to send once an answer arrived (stopping the transcription)."""
        block = self.block(block_id)
        state = encode_state(call.call_id, block.id, step)
        values = self.values(call, block.scope)
        seq = int(call.metadata.get("entries", 0))
        return [
            Command(command=c.command, awaits=c.awaits, block=block.id,
                    body=c.render(values, {"client_state": state,
                                           "command_id": f"{call.call_id}-{seq}-a{i}"}))
            for i, c in enumerate(block.after_input)
        ]  # fmt: skip

    def handler(self, call: CallRecord, event: str) -> Run | None:
        """Runs the flow's handler for ``event`` (max_duration, error, hangup), if it has one;
        a hangup during a conversation with ``on_hangup`` runs that node instead."""
        talk = self.conversation(call) if event == "hangup" else None
        target = talk.on_hangup if talk and talk.on_hangup else None
        if target is not None:
            call.metadata.pop("converse", None)
        else:
            target = dict(self.compiled.handlers).get(event)
        return self.advance(call, target) if target else None

    def redirect_to(self, call: CallRecord, block_id: str, kind: str = "live") -> str:
        return callback_url(self.base, call.call_id, kind, block_id, 0)

    def block(self, block_id: str) -> CompiledBlock:
        """A block of the flow, or of an agent turn (``@turn/turn.1``)."""
        if block_id.startswith(adhoc.PREFIX):
            kind, _, inner = block_id[1:].partition("/")
            return _prefixed(adhoc.agent_flow(self.compiled, kind).block(inner), kind)
        return self.compiled.block(block_id)

    # --- conversations ---------------------------------------------------------------------------

    def converse_input(self, call: CallRecord, block_id: str, step: int, text: str) -> Run:
        """A caller's turn in an agent-driven conversation: the call holds until the agent's
        next command (the model's replies come through :meth:`agent_turn` instead)."""
        block = self.block(block_id)
        if text:
            self.heard(call, text, block)
            call.metadata["turns"] = int(call.metadata.get("turns", 0)) + 1
        call.waiting = Waiting(block=block_id, kind="converse", step=step + 1)
        if self.compiled.hold is None:
            return Run()  # Telnyx: the transcription keeps listening
        url = callback_url(self.base, call.call_id, "live", block_id, step + 1)
        return Run(fragments=[self.compiled.hold.render({}, {"callback_url": url})])

    def conversation(self, call: CallRecord) -> b.Converse | None:
        """The flow's conversation the call is in, if any."""
        block_id = (call.metadata.get("converse") or {}).get("block")
        end = self.block(block_id).end if isinstance(block_id, str) else None
        return end if isinstance(end, b.Converse) else None

    def converse_done(self, call: CallRecord, values: Mapping[str, Any]) -> Run:
        """The conversation finished with ``values``: checked against its ``collect``, saved
        as flow variables, and the flow goes on at ``on_done``.

        Raises:
            CollectError: the values do not fit (nothing is saved; the driver may try again),
                or the call is in no conversation that can finish.
        """
        talk = self.conversation(call)
        if talk is None or talk.on_done is None:
            raise CollectError("this conversation has no on_done to finish to")
        saved = check_values(talk.converse.collect, values)
        call.scopes.setdefault(self.block(talk.on_done).scope, {}).update(saved)
        call.metadata.pop("converse", None)
        return self.advance(call, talk.on_done)

    def converse_timeout(self, call: CallRecord) -> Run | None:
        """The conversation's turns are used up: its ``on_timeout``, else None (the caller
        hears the last reply and the call ends)."""
        talk = self.conversation(call)
        if talk is None or talk.on_timeout is None:
            return None
        call.metadata.pop("converse", None)
        return self.advance(call, talk.on_timeout)

    def listen_again(self, call: CallRecord, step: int) -> Run:
        """A hold ran out with no agent command: listen once more, without saying the
        waiting turn's words (or sending its digits) a second time."""
        flow = adhoc.agent_flow(self.compiled, adhoc.LISTEN)
        return self.advance(call, f"{adhoc.PREFIX}{adhoc.LISTEN}/{flow.start}", step)

    def agent_turn(self, call: CallRecord, kind: str, message: str) -> Run:
        """Says ``message``, then listens (turn), only listens (listen) or hangs up (final)."""
        flow = adhoc.agent_flow(self.compiled, kind)
        call.scopes.setdefault(f"{adhoc.PREFIX}{kind}", {})["message"] = message
        return self.advance(call, f"{adhoc.PREFIX}{kind}/{flow.start}")

    def reject(self, call: CallRecord, message: str) -> Run:
        """A rejected caller hears ``message`` (if any), then the call is hung up.

        Telnyx: answered first (its ``reject`` command cannot speak), so the message is
        spoken, then hung up; without a message, the runtime sends ``reject`` instead.
        """
        run = Run()
        if message and not self.xml and self.compiled.answer:
            answer = self.block(self.compiled.answer)
            self.enter(call, answer)
            self.emit(call, answer, 0, run)
        kind = adhoc.REJECT if message else adhoc.HANGUP
        rest = self.agent_turn(call, kind, message)
        run.fragments += rest.fragments
        run.commands += rest.commands
        run.hangup = rest.hangup
        return run

    # --- one block -------------------------------------------------------------------------------

    def enter(self, call: CallRecord, block: CompiledBlock) -> None:
        node = _node_of(block.id)
        if node is not None:
            call.visited.append(node)
        call.metadata["entries"] = int(call.metadata.get("entries", 0)) + 1

    def values(self, call: CallRecord, scope: str) -> dict[str, Any]:
        flow = self.compiled.flow
        values = dict(call.scopes.get(scope, {}))
        values["call"] = {"id": call.call_id, "from": call.from_number, "to": call.to_number,
                          "direction": call.direction, "provider": call.provider}  # fmt: skip
        values["settings"] = {"voice": flow.settings.voice, "language": flow.settings.language,
                              "max_duration": flow.settings.max_duration_ms}  # fmt: skip
        values["config"] = self.config
        values["now"] = self.local_time()
        return values

    def local_time(self) -> datetime:
        """The clock's time in the flow's ``timezone``, else the config's, else UTC."""
        name = self.compiled.flow.timezone or self.config.get("timezone") or "UTC"
        return datetime.fromtimestamp(self.now(), zone(str(name)))

    def emit(self, call: CallRecord, block: CompiledBlock, step: int, run: Run) -> None:
        """Renders a block into the run and records what it says and what it waits for."""
        kind = _wait_kind(block.end)
        if kind is None and block.xml is not None and not block.xml.slots and not block.ops:
            # Says nothing and fills nothing in (a branch, a set, a hangup): its fixed text, no
            # values and no callback URL built (a branch is half the blocks of a menu loop).
            run.fragments.append(block.xml.parts[0])
            self.settle(call, block, kind, step, run)
            return
        values = self.values(call, block.scope)
        url_kind = "input" if kind == "converse" else kind or "live"  # a turn is an input too
        url = callback_url(self.base, call.call_id, url_kind, block.id, step)
        opening = self.stream_opening(call, block, values)
        # Over a stream the conversation's message is said (and recorded) on the stream.
        self.said(call, block, values, stream_ops(block.end, block.ops) if opening else block.ops)
        xml = block.stream_xml if opening else block.xml
        if xml is not None:
            run.fragments.append(xml.render(values, {"callback_url": url, **opening}))
        else:
            seq = int(call.metadata["entries"])
            extra = {"callId": opening["call_key"], "token": opening["stream_token"]} if (
                opening) else None  # fmt: skip
            state = encode_state(call.call_id, block.id, step, extra)
            system = {**opening, "client_state": state}
            for i, cmd in enumerate(block.stream_commands if opening else block.commands):
                body = cmd.render(values, {**system, "command_id": f"{call.call_id}-{seq}-{i}"})
                run.commands.append(Command(command=cmd.command, body=body, awaits=cmd.awaits,
                                            block=block.id, step=step))  # fmt: skip
        if isinstance(block.end, b.Converse) and not block.id.startswith(adhoc.PREFIX):
            talk = block.end.converse
            call.metadata["converse"] = {"block": block.id, "driver": talk.driver,
                                         "stream": bool(opening),
                                         "language": self.compiled.flow.settings.language,
                                         "model": talk.model,
                                         "max_turns": talk.max_turns,
                                         "timeout_ms": talk.response_timeout_ms,
                                         "collect": tool_parameters(talk.collect)
                                         if block.end.on_done else None,
                                         "system_prompt": template_slot(
                                             talk.system_prompt.source, str(block.end.source)
                                         ).value(values, {})
                                         if talk.system_prompt else None}  # fmt: skip
        self.settle(call, block, kind, step, run)

    def settle(
        self, call: CallRecord, block: CompiledBlock, kind: str | None, step: int, run: Run
    ) -> None:
        """Records what an emitted block waits for (``kind``), or that it ends the call."""
        if kind is not None:
            call.waiting = Waiting(block=block.id, kind=kind, step=step)
            call.move("listening" if kind in ("input", "converse") else "active")
        elif isinstance(block.end, b.Hangup):
            run.hangup = True
            call.ending = call.ending or "hangup-bot"
            call.waiting = None

    def stream_opening(
        self, call: CallRecord, block: CompiledBlock, values: Mapping[str, Any]
    ) -> dict[str, str]:
        """The slots of a conversation's media-stream opening, or {} when it is served by the
        carrier's speech recognition. A flow's conversation streams when the hook wants it; an
        agent's turn within a streamed conversation streams too (its words in the carrier's
        voice first: a stand-in when synthesis failed, never mixed into a live stream)."""
        if self.streams is None or not isinstance(block.end, b.Converse):
            return {}
        if not (block.stream_xml or block.stream_commands):
            return {}
        if block.id.startswith(adhoc.PREFIX):
            current = call.metadata.get("converse") or {}
            if not current.get("stream"):
                return {}
            greeting, driver = "", str(current.get("driver") or "agent")
        else:
            talk = block.end.converse
            if not self.streams.wants(call, talk):
                return {}
            message = talk.message
            greeting = (template_slot(message.source, str(block.end.source)).value(values, {})
                        if message is not None else "")  # fmt: skip
            # The greeting's line in the transcript names the flow action that says it.
            call.metadata.setdefault("stream", {})["said_at"] = str(block.end.source)
            driver = talk.driver
        return self.streams.open(call, block.id, greeting, driver)

    def opening_words(self, call: CallRecord) -> tuple[m.Converse, str] | None:
        """The conversation the flow starts with and its message, rendered for ``call`` (None
        when the flow starts otherwise or the message needs what only the call can tell)."""
        block = self.block(self.compiled.start)
        end = block.end
        if not isinstance(end, b.Converse) or end.converse.message is None or block.ops[:-1]:
            return None
        values = self.values(call, block.scope)
        values.update(self.initial_scope(call.params))
        try:
            text = template_slot(end.converse.message.source, str(end.source)).value(values, {})
        except RenderError:
            return None
        return end.converse, text

    def leave_stream(self, call: CallRecord, run: Run) -> Run:
        """Telnyx: a run that goes on after a streamed conversation stops the stream first
        (XML carriers end it themselves when the call's document is replaced)."""
        if self.xml or not (call.metadata.get("stream") or {}).get("open"):
            return run
        call.metadata["stream"]["open"] = False
        seq = int(call.metadata.get("entries", 0))
        body = {"client_state": encode_state(call.call_id),
                "command_id": f"{call.call_id}-{seq}-stop"}  # fmt: skip
        run.commands.insert(
            0,
            Command(
                command="streaming_stop",
                body=body,
                awaits=None,
                block=run.commands[0].block if run.commands else "",
            ),
        )
        return run

    def said(
        self, call: CallRecord, block: CompiledBlock, values: Mapping[str, Any],
        ops: tuple[b.Op, ...],
    ) -> None:  # fmt: skip
        texts: list[tuple[m.Text, str]] = [
            (op.text, str(op.source)) for op in ops if isinstance(op, b.SayOp)
        ]
        end = block.end
        if isinstance(end, b.Gather):
            prompt = end.ask.reprompt if end.retry and end.ask.reprompt else end.ask.prompt
            texts.append((prompt, str(end.source)))
        if block.id.startswith(adhoc.PREFIX):  # an agent's turn, or the model's reply
            driver = (call.metadata.get("converse") or {}).get("driver", "agent")
            texts = [(text, driver) for text, _ in texts]
        for text, source in texts:
            spoken = template_slot(text.source, source).value(values, {})
            call.transcript.append(TranscriptLine(at=self.now(), speaker="bot", text=spoken,
                                                  source=source, block=block.id))  # fmt: skip
        if texts:
            call.move("speaking")

    def heard(self, call: CallRecord, text: str, block: CompiledBlock) -> None:
        call.transcript.append(TranscriptLine(at=self.now(), speaker="user", text=text,
                                              block=block.id))  # fmt: skip

    def judge(
        self, call: CallRecord, block: CompiledBlock, end: b.Gather, answer: dict[str, Any],
        invalid: bool,
    ) -> str:  # fmt: skip
        ask = end.ask
        if invalid:
            return "no match"
        if not (answer["text"] or answer["digits"]):
            return "no input"
        digits = answer["digits"]
        if ask.valid_digits and digits and any(d not in ask.valid_digits for d in digits):
            return "no match"
        if ask.match is not None:
            values = self.values(call, block.scope)
            if ask.save_as:
                values[ask.save_as] = answer
            if not _eval(ask.match, values):
                return "no match"
        return "ok"

    def save(self, call: CallRecord, scope: str, name: str | None, value: Any) -> None:
        if name:
            call.scopes.setdefault(scope, {})[name] = value

    # --- server decisions ------------------------------------------------------------------------

    def server_step(self, call: CallRecord, block: CompiledBlock) -> str | None:
        """Evaluates a block's server decision; returns the next block, or None to stop."""
        step = _SERVER.get(type(block.end))
        if step is None:
            return None
        return step(self, call, block.end)

    def s_continue(self, call: CallRecord, end: b.Continue) -> str:
        return end.next

    def s_assign(self, call: CallRecord, end: b.Assign) -> str:
        scope = self.block(end.next).scope
        values = self.values(call, scope)
        results = {a.name: _storable(a, _eval(a.value, values)) for a in end.assignments}
        call.scopes.setdefault(scope, {}).update(results)
        return end.next

    def s_decide(self, call: CallRecord, end: b.Decide) -> str:
        values = self.values(call, self.block(end.otherwise).scope)
        for expr, target in end.cases:
            if _eval(expr, values):
                return target
        return end.otherwise

    def s_enter(self, call: CallRecord, end: b.EnterFlow) -> str:
        # The caller's scope: the subflow's scope id without its last part.
        values = self.values(call, end.scope.rpartition("~")[0])
        scope = dict(end.defaults)
        scope.update({a.name: _storable(a, _eval(a.value, values)) for a in end.params})
        call.scopes[end.scope] = scope
        return end.next

    def s_exit(self, call: CallRecord, end: b.ExitFlow) -> str:
        inner = call.scopes.pop(end.scope, {})
        caller = self.block(end.next).scope
        if end.save_as:
            saved = {name: inner.get(name) for name in end.outputs}
            call.scopes.setdefault(caller, {})[end.save_as] = saved
        return end.next

    # --- endings -------------------------------------------------------------------------------

    def fail(self, call: CallRecord, run: Run, reason: str) -> Run:
        """A template failed: run the error handler if the flow has one, else end the call."""
        call.metadata["error"] = reason
        if not call.metadata.get("in_error_handler"):
            call.metadata["in_error_handler"] = True
            handled = self.handler(call, "error")
            if handled is not None:
                return handled
        call.ending = "error"
        call.waiting = None
        return self.hang_up(call, run)

    def hang_up(self, call: CallRecord, run: Run) -> Run:
        """``run``, then the end of the call. An XML reply that ends hangs up by itself; Telnyx
        needs the hangup command, else the call stays up until its maximum duration."""
        if self.xml:
            return Run(fragments=run.fragments, commands=run.commands, hangup=True)
        end = self.agent_turn(call, adhoc.HANGUP, "")
        return Run(fragments=run.fragments, commands=[*run.commands, *end.commands], hangup=True)

    def hand_over(self, call: CallRecord, block_id: str, run: Run) -> None:
        """Ends a long chain with a redirect; the next request goes on at ``block_id``."""
        url = self.redirect_to(call, block_id)
        if self.compiled.redirect is not None:
            run.fragments.append(self.compiled.redirect.render({}, {"callback_url": url}))
        else:
            # Telnyx has no redirect: the runtime goes on from there once these commands ran.
            run.commands.append(Command(command="continue", body={"block": block_id},
                                        awaits=None, block=block_id))  # fmt: skip
        call.waiting = Waiting(block=block_id, kind="fetch")


_SERVER: dict[type[b.End], Callable[[Interpreter, CallRecord, Any], str]] = {
    b.Continue: Interpreter.s_continue,
    b.Assign: Interpreter.s_assign,
    b.Decide: Interpreter.s_decide,
    b.EnterFlow: Interpreter.s_enter,
    b.ExitFlow: Interpreter.s_exit,
}


def _wait_kind(end: b.End) -> str | None:
    if isinstance(end, b.Gather):
        return "input"
    if isinstance(end, b.Dial):
        return "dial"
    if isinstance(end, b.Converse):
        return "converse"
    return None


def _node_of(block_id: str) -> str | None:
    """The node a block id enters at its first action (``greet``, ``callback~ask``), else None."""
    if ":" in block_id or block_id.startswith(adhoc.PREFIX):
        return None
    return None if "." in block_id.rsplit("~", 1)[-1] else block_id


def _prefixed(block: CompiledBlock, kind: str) -> CompiledBlock:
    """An agent-turn block with ids (its own and where it goes next) that name the turn."""
    return replace(block, id=f"{adhoc.PREFIX}{kind}/{block.id}", scope=f"{adhoc.PREFIX}{kind}")
