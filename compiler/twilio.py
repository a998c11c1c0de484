"""Twilio: one TwiML fragment per block, built with the SDK's VoiceResponse.

TwiML reference: https://www.twilio.com/docs/voice/twiml. `<Gather>` posts its result to the
block's callback URL; ``actionOnEmptyResult`` makes it post on silence too, so the server decides
every retry and exit. The `<Redirect>` after a `<Gather>` only runs if no post was made.
"""

from __future__ import annotations

from typing import ClassVar

from twilio.twiml.voice_response import VoiceResponse

from voicecall.compiler import blocks as b
from voicecall.compiler.base import Capability, XmlBackend, emulated, seconds, unsupported
from voicecall.compiler.render import system_slot

_HEAD = '<?xml version="1.0" encoding="UTF-8"?><Response>'


class TwilioBackend(XmlBackend):
    name = "twilio"
    CAPABILITIES: ClassVar[dict[str, Capability]] = {
        "pause.ms": emulated("{ms}ms becomes {secs}s: <Pause length> counts whole seconds"),
        "ask.retries": emulated("{tries} tries become {tries} <Gather> round trips: each "
                                "unanswered try is posted back and answered with the reprompt"),
        "ask.match": emulated("the answer is checked on the server after <Gather> posts it"),
        "ask.valid_digits": emulated("the digits are checked on the server after <Gather>"),
        "voice": unsupported("'{voice}' is not a Twilio voice (Polly.*, Google.*, man, woman)"),
    }  # fmt: skip

    def new_document(self) -> VoiceResponse:
        return VoiceResponse()

    def serialize(self) -> str:
        xml = str(self.doc)
        return (
            "" if xml.endswith("<Response />") else xml.removeprefix(_HEAD)[: -len("</Response>")]
        )

    def add_pause(self, seconds: int) -> None:
        self.doc.pause(length=seconds)

    def add_redirect(self, url: str) -> None:
        self.doc.redirect(url, method="POST")

    # --- operations ----------------------------------------------------------------------------

    def op_SayOp(self, op: b.SayOp) -> None:
        self.doc.say(
            self.text(op.text, op.source),
            voice=self.say_voice(op.voice, op.source),
            language=self.language(op.language),
            loop=op.loop if op.loop > 1 else None,
        )

    def op_PlayOp(self, op: b.PlayOp) -> None:
        self.doc.play(self.text(op.url, op.source), loop=op.loop if op.loop > 1 else None)

    def op_PauseOp(self, op: b.PauseOp) -> None:
        if op.ms % 1000:
            self.note("pause.ms", op.source, ms=op.ms, secs=seconds(op.ms))
        self.doc.pause(length=seconds(op.ms))

    def op_DigitsOp(self, op: b.DigitsOp) -> None:
        self.doc.play(digits=self.text(op.digits, op.source))

    # --- ends ----------------------------------------------------------------------------------

    def end_Gather(self, end: b.Gather) -> None:
        ask, src = end.ask, end.source
        if ask.retries and not end.retry:
            self.note("ask.retries", src, tries=ask.retries + 1)
        for option in ("match", "valid_digits"):
            if getattr(ask, option) is not None and not end.retry:
                self.note(f"ask.{option}", src)
        callback = self.ph(system_slot("callback_url"))
        dtmf = "dtmf" in ask.input
        gather = self.doc.gather(
            input=" ".join(ask.input),
            action=callback,
            method="POST",
            timeout=seconds(ask.timeout_ms),
            speech_timeout=None if "speech" not in ask.input else
            ("auto" if ask.speech_timeout_ms is None else seconds(ask.speech_timeout_ms)),
            num_digits=ask.num_digits if dtmf else None,
            finish_on_key=ask.finish_on_key if dtmf and ask.finish_on_key != "#" else None,
            hints=",".join(ask.hints) or None,
            language=self.language(ask.language),
            speech_model=self.provider_settings.speech_model,
            action_on_empty_result=True,
        )  # fmt: skip
        prompt = ask.reprompt if end.retry and ask.reprompt else ask.prompt
        gather.say(
            self.text(prompt, src),
            voice=self.say_voice(ask.voice, src),
            language=self.language(ask.language),
        )
        self.doc.redirect(callback, method="POST")

    def end_Dial(self, end: b.Dial) -> None:
        dial = self.doc.dial(
            action=self.ph(system_slot("callback_url")) if end.on_fail else None,
            method="POST" if end.on_fail else None,
            timeout=seconds(end.timeout_ms),
            caller_id=self.text(end.caller_id, end.source) if end.caller_id else None,
        )
        target = self.text(end.to, end.source)
        if end.to.source.startswith(("sip:", "sips:")):
            dial.sip(target)
        else:
            dial.number(target)
        if not end.on_fail:
            self.doc.hangup()

    def end_Converse(self, end: b.Converse) -> None:
        # Without a media stream each turn is a speech <Gather>; with streaming enabled the
        # runtime answers with <Connect><Stream> instead.
        callback = self.ph(system_slot("callback_url"))
        self.doc.gather(
            input="speech",
            action=callback,
            method="POST",
            speech_timeout="auto",
            language=self.language(None),
            action_on_empty_result=True,
        )
        self.doc.redirect(callback, method="POST")

    def end_Hangup(self, end: b.Hangup) -> None:
        self.doc.hangup()

    def end_stream(self) -> None:
        # <Connect><Stream> holds the call while the stream is open; Twilio strips query
        # strings from stream URLs, so the call's key and token travel as <Parameter>s. When
        # the stream ends without a live update, Twilio posts to the action URL.
        connect = self.doc.connect(action=self.ph(system_slot("callback_url")), method="POST")
        stream = connect.stream(url=self.ph(system_slot("stream_url")))
        stream.parameter(name="callId", value=self.ph(system_slot("call_key")))
        stream.parameter(name="token", value=self.ph(system_slot("stream_token")))


BACKEND = TwilioBackend
