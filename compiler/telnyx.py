"""Telnyx Call Control v2: per block, the commands to send and the event that completes each.

Each command is a request body for ``POST /v2/calls/{call_control_id}/actions/{command}``,
exactly as sent (checked against Telnyx's OpenAPI spec in the tests). Every command carries the
call's ``client_state`` (base64 of call, block and step, echoed in the webhooks it causes) and a
``command_id`` that makes Telnyx ignore a repeat. ``pause`` and ``listen`` are not Telnyx
commands: the runtime performs them with a timer.
"""

from __future__ import annotations

from typing import Any, ClassVar

from voicecall.compiler import blocks as b
from voicecall.compiler.base import (
    Backend,
    Capability,
    CompiledBlock,
    Emitted,
    emulated,
    ignored,
    stream_ops,
    unsupported,
)
from voicecall.compiler.render import CommandTemplate, system_slot, template_slot
from voicecall.compiler.voices import provider_voice
from voicecall.dsl import model as m

# Commands the runtime performs itself rather than sending to Telnyx.
RUNTIME_COMMANDS = frozenset({"pause", "listen"})
MAX_DIGITS = 128  # gather_using_speak maximum_digits upper bound


class TelnyxBackend(Backend):
    name = "telnyx"
    kind = "commands"
    CAPABILITIES: ClassVar[dict[str, Capability]] = {
        "pause": emulated("a {ms}ms timer in the runtime: Call Control has no pause command"),
        "ask.speech": emulated("transcription_start, then the prompt, then the first final "
                               "call.transcription within {secs}s (a runtime timer)"),
        "ask.retries": emulated("{tries} tries become {tries} rounds of commands: the server "
                                "answers each unanswered try with the reprompt (maximum_tries "
                                "covers keypad-only asks)"),
        "ask.retries.native": emulated("{tries} tries become native maximum_tries={tries} on "
                                       "gather_using_speak"),
        "ask.match": emulated("the answer is checked on the server when it arrives"),
        "ask.speech_timeout": ignored("transcription has no end-of-speech timeout; the first "
                                      "final transcription ends the answer"),
        "ask.speech_model": ignored("speech_model is a Twilio and Plivo setting"),
        "voice": unsupported("'{voice}' is not a Telnyx voice (AWS.Polly.*, Azure.*, "
                             "ElevenLabs.*, Telnyx.*, female, male)"),
    }  # fmt: skip

    def emit_block(self, block: b.Block) -> Emitted:
        self.out = Emitted()
        for op in block.ops:
            getattr(self, f"op_{op.__class__.__name__}")(op)
        getattr(self, f"end_{block.end.__class__.__name__}", self.end_server)(block.end)
        return self.out

    def command(
        self, name: str, body: dict[str, Any], awaits: str | None, source: b.Source
    ) -> CommandTemplate:
        if name not in RUNTIME_COMMANDS:
            body = {**body, "client_state": system_slot("client_state"),
                    "command_id": system_slot("command_id")}  # fmt: skip
        clean = {k: v for k, v in body.items() if v is not None}
        return CommandTemplate(command=name, body=clean, awaits=awaits, where=source.short,
                               runtime=name in RUNTIME_COMMANDS)  # fmt: skip

    def send(self, name: str, body: dict[str, Any], awaits: str | None, source: b.Source) -> None:
        self.out.commands.append(self.command(name, body, awaits, source))

    def text(self, text: m.Text, source: b.Source) -> Any:
        slot = template_slot(text.source, source.short)
        return slot.constant if slot.constant is not None else slot

    def speech(self, voice: str | None, language: str | None, source: b.Source) -> dict[str, Any]:
        """voice and language for speak and gather_using_speak."""
        name, ok = provider_voice(self.name, self.voice(voice))
        if not ok:
            self.note("voice", source, voice=name)
        lang = self.language(language)
        # Telnyx ignores language for Polly voices, which carry their own.
        return {"voice": name, "language": None if name.startswith("AWS.Polly.") else lang}

    # --- operations ----------------------------------------------------------------------------

    def op_SayOp(self, op: b.SayOp) -> None:
        body = {"payload": self.text(op.text, op.source), "payload_type": "text",
                **self.speech(op.voice, op.language, op.source),
                "service_level": self.provider_settings.service_level,
                "loop": op.loop if op.loop > 1 else None}  # fmt: skip
        self.send("speak", body, "call.speak.ended", op.source)

    def op_PlayOp(self, op: b.PlayOp) -> None:
        body = {"audio_url": self.text(op.url, op.source), "loop": op.loop if op.loop > 1 else None}
        self.send("playback_start", body, "call.playback.ended", op.source)

    def op_PauseOp(self, op: b.PauseOp) -> None:
        self.note("pause", op.source, ms=op.ms)
        self.send("pause", {"duration_ms": op.ms}, "timer", op.source)

    def op_DigitsOp(self, op: b.DigitsOp) -> None:
        self.send("send_dtmf", {"digits": self.text(op.digits, op.source)}, None, op.source)

    # --- ends ----------------------------------------------------------------------------------

    def end_server(self, end: b.End) -> None:
        """Server decisions send nothing: the runtime chains the next block's commands."""

    def end_Gather(self, end: b.Gather) -> None:
        ask, src = end.ask, end.source
        prompt = ask.reprompt if end.retry and ask.reprompt else ask.prompt
        speech = "speech" in ask.input
        if ask.match is not None and not end.retry:
            self.note("ask.match", src)
        if speech:
            self.speech_gather(end, prompt)
        else:
            self.keypad_gather(end, prompt, tries=1 if end.retry else ask.retries + 1)

    def keypad_gather(self, end: b.Gather, prompt: m.Text, tries: int) -> None:
        ask, src = end.ask, end.source
        if tries > 1:
            self.note("ask.retries.native", src, tries=tries)
            self.out.native_retries = True
        body = {
            "payload": self.text(prompt, src),
            "payload_type": "text",
            **self.speech(ask.voice, ask.language, src),
            "minimum_digits": 1,
            "maximum_digits": ask.num_digits or MAX_DIGITS,
            "maximum_tries": tries,
            "timeout_millis": ask.timeout_ms,
            "terminating_digit": ask.finish_on_key or None,
            "valid_digits": ask.valid_digits,
            "invalid_payload": self.text(ask.reprompt, src) if ask.reprompt and tries > 1 else None,
            "service_level": self.provider_settings.service_level,
        }
        self.send("gather_using_speak", body, "call.gather.ended", src)

    def speech_gather(self, end: b.Gather, prompt: m.Text) -> None:
        ask, src = end.ask, end.source
        if not end.retry:
            self.note("ask.speech", src, secs=ask.timeout_ms // 1000)
            if ask.retries:
                self.note("ask.retries", src, tries=ask.retries + 1)
            if ask.speech_timeout_ms is not None:
                self.note("ask.speech_timeout", src)
            if self.provider_settings.speech_model:
                self.note("ask.speech_model", src)
        self.transcription(ask.language, ask.hints, src)
        if "dtmf" in ask.input:
            self.keypad_gather(end, prompt, tries=1)
        else:
            body = {"payload": self.text(prompt, src), "payload_type": "text",
                    **self.speech(ask.voice, ask.language, src),
                    "service_level": self.provider_settings.service_level}  # fmt: skip
            self.send("speak", body, "call.speak.ended", src)
        self.send("listen", {"timeout_ms": ask.timeout_ms}, "call.transcription", src)
        self.out.after_input.append(self.command("transcription_stop", {}, None, src))

    def transcription(self, language: str | None, hints: tuple[str, ...], src: b.Source) -> None:
        lang = self.language(language)
        config: dict[str, Any] = {"transcription_engine": "Google"}
        if lang:
            config["language"] = lang.split("-")[0]  # Google's engine takes the language only
        if hints:
            config["hints"] = list(hints)
        body = {"transcription_engine": "Google", "transcription_engine_config": config,
                "transcription_tracks": "inbound"}  # fmt: skip
        self.send("transcription_start", body, None, src)

    def end_Dial(self, end: b.Dial) -> None:
        body = {"to": self.text(end.to, end.source),
                "from": self.text(end.caller_id, end.source) if end.caller_id else None,
                "timeout_secs": max(1, end.timeout_ms // 1000)}  # fmt: skip
        self.send("transfer", body, "call.bridged", end.source)

    def end_Converse(self, end: b.Converse) -> None:
        # Each turn listens through transcription; with streaming enabled the runtime sends
        # streaming_start instead.
        self.transcription(None, (), end.source)
        self.send("listen", {"timeout_ms": 0}, "call.transcription", end.source)

    def end_Hangup(self, end: b.Hangup) -> None:
        self.send("hangup", {}, "call.hangup", end.source)

    def emit_stream(self, block: b.Block) -> Emitted:
        # The stream's client_state carries the call's key and token beside the usual state
        # (the runtime fills it); the call then listens on the stream, not by transcription.
        self.out = Emitted()
        for op in stream_ops(block.end, block.ops):
            getattr(self, f"op_{op.__class__.__name__}")(op)
        body = {"stream_url": system_slot("stream_url"), "stream_track": "inbound_track",
                "stream_codec": "PCMU", "stream_bidirectional_mode": "rtp",
                "stream_bidirectional_codec": "PCMU"}  # fmt: skip
        self.send("streaming_start", body, None, block.end.source)
        self.send("listen", {"timeout_ms": 0}, None, block.end.source)
        return self.out

    def answer_block(self, lowered: b.Lowered, compiled: dict[str, CompiledBlock]) -> str | None:
        """Inbound calls must be answered with a command before anything can be said."""
        if lowered.flow.direction == "outbound":
            return None
        source = b.Source(file=lowered.flow.file, span=lowered.flow.start.span, node="")
        answer = self.command("answer", {}, "call.answered", source)
        end = b.Continue(source=source, next=lowered.start)
        compiled[":answer"] = CompiledBlock(id=":answer", scope="", flow=lowered.flow.name,
                                            source=source, end=end, kind=self.kind,
                                            commands=(answer,))  # fmt: skip
        return ":answer"


BACKEND = TelnyxBackend
