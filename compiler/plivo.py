"""Plivo: one Plivo XML fragment per block, built with the SDK's plivoxml elements.

XML reference: https://www.plivo.com/docs/voice/xml. `<GetInput redirect="true">` posts the
answer to the block's callback URL; with no answer Plivo goes on to the next element, so a
`<Redirect>` to the same URL follows it and the server sees the empty result.
"""

from __future__ import annotations

from typing import ClassVar

from plivo import plivoxml

from voicecall.compiler import blocks as b
from voicecall.compiler.base import Capability, XmlBackend, emulated, seconds, unsupported
from voicecall.compiler.render import system_slot

# GetInput limits (seconds), from the GetInput reference.
EXECUTION_TIMEOUT = (5, 60)
END_TIMEOUT = (2, 10)


class PlivoBackend(XmlBackend):
    name = "plivo"
    CAPABILITIES: ClassVar[dict[str, Capability]] = {
        "pause.ms": emulated("{ms}ms becomes {secs}s: <Wait length> counts whole seconds"),
        "ask.retries": emulated("{tries} tries become {tries} <GetInput> round trips: each "
                                "unanswered try falls through to a <Redirect> answered with the "
                                "reprompt"),
        "ask.match": emulated("the answer is checked on the server after <GetInput> posts it"),
        "ask.valid_digits": emulated("the digits are checked on the server after <GetInput>"),
        "voice": unsupported("'{voice}' is not a Plivo voice (Polly.*, WOMAN, MAN)"),
        "transfer.sip": unsupported("<Dial> to a SIP URI needs <User>, which this flow's "
                                    "templated target cannot choose; use a literal sip: URI"),
    }  # fmt: skip

    def new_document(self) -> plivoxml.ResponseElement:
        return plivoxml.ResponseElement()

    def serialize(self) -> str:
        xml: str = self.doc.to_string(pretty=False)
        return "" if xml == "<Response/>" else xml.removeprefix("<Response>")[: -len("</Response>")]

    def add_pause(self, seconds: int) -> None:
        self.doc.add_wait(length=seconds)

    def add_redirect(self, url: str) -> None:
        self.doc.add_redirect(url, method="POST")

    def clamp(self, feature: str, source: b.Source, ms: int, bounds: tuple[int, int]) -> int:
        secs = seconds(ms)
        low, high = bounds
        if not low <= secs <= high:
            fixed = min(max(secs, low), high)
            self.adjust(feature, source, f"{secs}s becomes {fixed}s (Plivo accepts {low}-{high}s)")
            return fixed
        return secs

    # --- operations ----------------------------------------------------------------------------

    def op_SayOp(self, op: b.SayOp) -> None:
        self.doc.add_speak(self.text(op.text, op.source), voice=self.say_voice(op.voice, op.source),
                           language=self.language(op.language),
                           loop=op.loop if op.loop > 1 else None)  # fmt: skip

    def op_PlayOp(self, op: b.PlayOp) -> None:
        self.doc.add_play(self.text(op.url, op.source), loop=op.loop if op.loop > 1 else None)

    def op_PauseOp(self, op: b.PauseOp) -> None:
        if op.ms % 1000:
            self.note("pause.ms", op.source, ms=op.ms, secs=seconds(op.ms))
        self.doc.add_wait(length=seconds(op.ms))

    def op_DigitsOp(self, op: b.DigitsOp) -> None:
        self.doc.add(plivoxml.DTMFElement(self.text(op.digits, op.source)))

    # --- ends ----------------------------------------------------------------------------------

    def end_Gather(self, end: b.Gather) -> None:
        ask, src = end.ask, end.source
        if ask.retries and not end.retry:
            self.note("ask.retries", src, tries=ask.retries + 1)
        for option in ("match", "valid_digits"):
            if getattr(ask, option) is not None and not end.retry:
                self.note(f"ask.{option}", src)
        callback = self.ph(system_slot("callback_url"))
        speech, dtmf = "speech" in ask.input, "dtmf" in ask.input
        speech_end = None
        if speech and ask.speech_timeout_ms is not None:
            speech_end = self.clamp("ask.speech_timeout", src, ask.speech_timeout_ms, END_TIMEOUT)
        gather = plivoxml.GetInputElement(
            action=callback,
            method="POST",
            input_type=" ".join(ask.input),
            execution_timeout=self.clamp("ask.timeout", src, ask.timeout_ms, EXECUTION_TIMEOUT),
            speech_end_timeout=speech_end,
            finish_on_key=ask.finish_on_key if dtmf and ask.finish_on_key != "#" else None,
            num_digits=ask.num_digits if dtmf else None,
            speech_model=self.provider_settings.speech_model if speech else None,
            hints=",".join(ask.hints) if speech and ask.hints else None,
            language=self.language(ask.language),
            redirect=True,
        )
        prompt = ask.reprompt if end.retry and ask.reprompt else ask.prompt
        gather.add_speak(
            self.text(prompt, src),
            voice=self.say_voice(ask.voice, src),
            language=self.language(ask.language),
        )
        self.doc.add(gather)
        self.doc.add_redirect(callback, method="POST")

    def end_Dial(self, end: b.Dial) -> None:
        dial = plivoxml.DialElement(
            action=self.ph(system_slot("callback_url")) if end.on_fail else None,
            method="POST" if end.on_fail else None,
            timeout=seconds(end.timeout_ms),
            caller_id=self.text(end.caller_id, end.source) if end.caller_id else None,
            redirect=True if end.on_fail else None,
        )
        target = self.text(end.to, end.source)
        if end.to.source.startswith(("sip:", "sips:")):
            dial.add(plivoxml.UserElement(target))
        else:
            dial.add(plivoxml.NumberElement(target))
        self.doc.add(dial)
        if not end.on_fail:
            self.doc.add_hangup()

    def end_Converse(self, end: b.Converse) -> None:
        callback = self.ph(system_slot("callback_url"))
        self.doc.add(
            plivoxml.GetInputElement(
                action=callback,
                method="POST",
                input_type="speech",
                language=self.language(None),
                redirect=True,
            )
        )
        self.doc.add_redirect(callback, method="POST")

    def end_Hangup(self, end: b.Hangup) -> None:
        self.doc.add_hangup()

    def end_stream(self) -> None:
        # keepCallAlive holds the call while the stream is open; the key and token travel in
        # extraHeaders. When the stream ends, Plivo goes on with the redirect.
        self.doc.add(plivoxml.StreamElement(
            self.ph(system_slot("stream_url")), bidirectional=True, audioTrack="inbound",
            keepCallAlive=True, contentType="audio/x-mulaw;rate=8000",
            extraHeaders=self.ph(system_slot("stream_headers"))))  # fmt: skip
        self.doc.add_redirect(self.ph(system_slot("callback_url")), method="POST")


BACKEND = PlivoBackend
