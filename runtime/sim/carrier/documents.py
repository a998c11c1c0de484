"""Executing XML documents (TwiML, Plivo XML): the verb loop both carriers share.

A document runs verb by verb; a verb either goes on to the next one, or hands the call over to
another document (Redirect, a Gather / GetInput action, a Dial action), which the carrier
fetches with a signed request. The end of a document hangs up, as both carriers do. A REST
update (Twilio ``Url``/``Twiml``, Plivo transfer) abandons the running document for a new one.

Provider sessions name their verbs (a dispatch table from tag to method) and their request
parameters; the behaviour of Gather/GetInput and Dial is common and lives here.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import urljoin

from voicecall.runtime.sim.script import Step

from .model import MockCall
from .session import CallSession

Verb = Callable[[ET.Element, str], Awaitable["Goto | None"]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Goto:
    """The document to run next: fetched from ``url``, or already in hand (``root``)."""

    url: str
    method: str = "POST"
    params: Mapping[str, str] | None = None  # None: the call's standard parameters
    root: ET.Element | None = None
    event: str = "redirect"  # the request's purpose, for the delivery log


@dataclass(frozen=True, slots=True, kw_only=True)
class InputSpec:
    """A Gather / GetInput, in common terms."""

    action: str
    method: str
    kinds: frozenset[str]  # dtmf, speech
    timeout_s: float
    on_empty: bool  # post the action even without input (Twilio actionOnEmptyResult)
    follow: bool  # run the action's reply (Plivo redirect="false" only posts it)
    finish_key: str
    num_digits: int | None


@dataclass(frozen=True, slots=True, kw_only=True)
class DialSpec:
    """A Dial, in common terms."""

    targets: tuple[str, ...]
    action: str | None
    method: str
    timeout_s: float
    follow: bool


def text_of(element: ET.Element) -> str:
    return "".join(element.itertext()).strip()


def normalize_digits(digits: str, finish_key: str, num_digits: int | None) -> str:
    """The digits a carrier reports: up to the finishing key, at most ``num_digits``."""
    if finish_key and finish_key in digits:
        digits = digits[: digits.index(finish_key)]
    return digits[:num_digits] if num_digits else digits


def heard(step: Step, spec: InputSpec) -> tuple[str, str] | None:
    """What an input collects from a caller step: (kind, value), or None (no input)."""
    if step.action == "say" and "speech" in spec.kinds and step.value:
        return ("speech", step.value)
    if step.action == "press" and "dtmf" in spec.kinds:
        digits = normalize_digits(step.value, spec.finish_key, spec.num_digits)
        return ("dtmf", digits) if digits else None
    return None


class DocumentSession(CallSession):
    """A call driven by XML documents fetched from the bot."""

    # Tag -> method name; tags not listed are recorded as unsupported and skipped.
    verbs: ClassVar[dict[str, str]]
    # The verbs a Gather / GetInput plays as its prompt.
    prompt_verbs: ClassVar[frozenset[str]]
    # The wait verb's length attribute.
    pause_attribute: ClassVar[str] = "length"

    def __init__(self, carrier: Any, call: MockCall, *, url: str, method: str = "POST"):
        super().__init__(carrier, call)
        self.answer = Goto(url=url, method=method or "POST", event="answer")
        self.inline: ET.Element | None = None  # a document given with the create request
        self.send_digits = ""  # keypad tones the create request asked to play on answer
        self.runner: asyncio.Task[None] | None = None
        self.doc_url = url  # the running document's URL (relative URLs resolve against it)

    # --- provider hooks ------------------------------------------------------------------------

    def params(self, **extra: str) -> dict[str, str]:
        """The parameters of every request about this call, plus ``extra``."""
        raise NotImplementedError

    def input_spec(self, element: ET.Element, doc_url: str) -> InputSpec:
        raise NotImplementedError

    def input_params(self, kind: str, value: str, spec: InputSpec) -> dict[str, str]:
        raise NotImplementedError

    def dial_spec(self, element: ET.Element, doc_url: str) -> DialSpec:
        raise NotImplementedError

    def dial_params(self, outcome: str, duration_s: int) -> dict[str, str]:
        raise NotImplementedError

    def request_extra(self, event: str) -> dict[str, str]:
        """Parameters a document request adds for its purpose (answer, redirect, update)."""
        return {}

    async def on_answered(self) -> None:
        """Webhooks when the call is answered (before the answer URL is fetched)."""

    # --- entry points --------------------------------------------------------------------------

    async def run_outbound(self, ring_timeout_s: float) -> None:
        """Rings, then runs the answer document if the script answers."""
        if not await self.ring(ring_timeout_s):
            return
        await self.on_answered()
        if self.send_digits:  # Twilio SendDigits, Plivo send_digits: played on answer
            self.record("bot", "dtmf", digits=self.send_digits, via="create")
        if self.inline is not None:
            self.start(Goto(url=self.answer.url, root=self.inline, event="answer"))
        else:
            self.start(self.answer)

    async def run_inbound(self) -> None:
        """Asks the number's URL what to do (the call is answered when a document comes)."""
        self.set_state("ringing")
        self.start(self.answer)

    def update(self, goto: Goto) -> None:
        """A REST update: a live call runs ``goto`` now, abandoning its document; a call not
        answered yet will run it when answered."""
        if self.call.ended:
            return
        if self.call.answered:
            self.start(goto)
        elif goto.root is not None:
            self.inline = goto.root
        else:
            self.answer = Goto(url=goto.url, method=goto.method, event="answer")
            self.inline = None

    def start(self, goto: Goto) -> None:
        """Runs ``goto``'s document from now on, abandoning the one running."""
        if self.runner is not None and self.runner is not asyncio.current_task():
            self.runner.cancel()
        self.runner = self.spawn(self._run(goto))

    # --- the document loop ---------------------------------------------------------------------

    async def _run(self, goto: Goto) -> None:
        following: Goto | None = goto
        while following is not None and not self.call.ended:
            root = following.root if following.root is not None else await self.fetch(following)
            if root is None or self.call.ended:
                return
            if not self.call.answered:
                self.mark_answered()
            self.doc_url = following.url
            following = await self.execute(root, following.url)

    async def fetch(self, goto: Goto) -> ET.Element | None:
        """The document at ``goto``; None when the request or the document failed."""
        if goto.params is not None:
            params = dict(goto.params)
        else:
            params = self.params(**self.request_extra(goto.event))
        delivery = await self.carrier.sender.form(
            self.call, goto.url, params, method=goto.method, event=goto.event
        )
        if not delivery.ok:
            self.fail("webhook", url=goto.url, status=delivery.status, error=delivery.error)
            return None
        try:
            root = ET.fromstring(delivery.reply)
        except ET.ParseError as exc:
            self.fail("document", url=goto.url, error=str(exc))
            return None
        if root.tag != "Response":
            self.fail("document", url=goto.url, error=f"root element <{root.tag}>")
            return None
        return root

    async def notify(self, url: str, method: str, params: Mapping[str, str], event: str) -> None:
        """A request whose reply is not used (status callbacks); failures are only recorded."""
        await self.carrier.sender.form(self.call, url, params, method=method, event=event)

    async def execute(self, root: ET.Element, doc_url: str) -> Goto | None:
        """Runs a document's verbs; the document to run next, or None when the call ended."""
        for element in root:
            try:
                following = await self.verb(element.tag)(element, doc_url)
            except ValueError as exc:  # an attribute the carrier cannot read
                self.fail("document", url=doc_url, error=f"<{element.tag}>: {exc}")
                return None
            if self.call.ended:
                return None
            if following is not None:
                return following
        self.record("carrier", "end-of-document")
        self.end("hangup-bot", "document")
        return None

    def verb(self, tag: str) -> Verb:
        name = self.verbs.get(tag)
        handler: Verb = getattr(self, f"verb_{name}") if name else self.verb_unsupported
        return handler

    # --- verbs ---------------------------------------------------------------------------------

    async def verb_unsupported(self, element: ET.Element, doc_url: str) -> Goto | None:
        self.record("carrier", "unsupported", verb=element.tag)
        return None

    async def verb_say(self, element: ET.Element, doc_url: str) -> Goto | None:
        detail = {k: v for k, v in element.attrib.items() if k in ("voice", "language")}
        self.record("bot", "say", text=text_of(element), **detail)
        return None

    async def verb_play(self, element: ET.Element, doc_url: str) -> Goto | None:
        self.record("bot", "play", url=text_of(element))
        if element.get("digits"):
            self.record("bot", "dtmf", digits=element.get("digits"))
        return None

    async def verb_pause(self, element: ET.Element, doc_url: str) -> Goto | None:
        seconds = float(element.get(self.pause_attribute) or 1)
        self.record("bot", "pause", seconds=seconds)
        await self.sleep(seconds)
        return None

    async def verb_dtmf(self, element: ET.Element, doc_url: str) -> Goto | None:
        self.record("bot", "dtmf", digits=text_of(element))
        return None

    async def verb_redirect(self, element: ET.Element, doc_url: str) -> Goto | None:
        url = urljoin(doc_url, text_of(element))
        self.record("bot", "redirect", url=url)
        return Goto(url=url, method=element.get("method") or "POST", event="redirect")

    async def verb_hangup(self, element: ET.Element, doc_url: str) -> Goto | None:
        reason = element.get("reason")
        self.record("bot", "hangup", **({"reason": reason} if reason else {}))
        self.end(reason if reason in ("busy", "rejected") else "hangup-bot", "bot")
        return None

    async def verb_gather(self, element: ET.Element, doc_url: str) -> Goto | None:
        spec = self.input_spec(element, doc_url)
        self.record("bot", "gather", input=" ".join(sorted(spec.kinds)), action=spec.action)
        for child in element:
            if child.tag in self.prompt_verbs:
                await self.verb(child.tag)(child, doc_url)
        step = await self.take_turn()
        if self.call.ended:
            return None
        result = heard(step, spec)
        if result is None:
            await self.sleep(spec.timeout_s)  # the input times out
            if not spec.on_empty:
                return None
        params = self.params(**(self.input_params(*result, spec) if result else {}))
        return await self.post_action(spec.action, spec.method, params, spec.follow, "input")

    async def verb_dial(self, element: ET.Element, doc_url: str) -> Goto | None:
        spec = self.dial_spec(element, doc_url)
        self.record("bot", "dial", to=list(spec.targets))
        outcome = await self.caller.dial_outcome()
        self.record("caller", "dial", outcome=outcome)
        if outcome == "answered":
            await self.bridge(spec)
            return None
        if outcome == "no-answer":
            await self.sleep(spec.timeout_s)
        if spec.action is None:
            return None
        params = self.params(**self.dial_params(outcome, 0))
        return await self.post_action(spec.action, spec.method, params, spec.follow, "dial")

    async def bridge(self, spec: DialSpec) -> None:
        """An answered transfer lasts until the caller's next step; then the call is over."""
        self.record("carrier", "bridged", to=list(spec.targets))
        started = self.clock.now()
        step = await self.caller.take()
        self.record("caller", "hangup" if step.action == "hangup" else "bridge-end")
        if spec.action is not None:
            # As the carriers do when the caller hangs up during a Dial: the action URL is
            # still requested (its reply is ignored, the call being over).
            duration = int(self.clock.now() - started)
            params = self.params(**self.dial_params("answered", duration), CallStatus="completed")
            await self.notify(spec.action, spec.method, params, "dial")
        self.end("completed", "remote")

    async def post_action(
        self, url: str, method: str, params: Mapping[str, str], follow: bool, event: str
    ) -> Goto | None:
        """Requests an action URL: its reply runs next, or (follow=False) is ignored."""
        if follow:
            return Goto(url=url, method=method, params=params, event=event)
        await self.notify(url, method, params, event)
        return None
