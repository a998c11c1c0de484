"""The backend base class, the registry, and the compiled flow the runtime serves.

A backend is one module with one class: capability flags, a capability table (what the provider
runs natively, emulates, ignores or cannot do, per action and option), and one emitter per block
operation found by name (``say``, ``gather``, ``dial``…). Anything not native goes through
:meth:`Backend.note`, which turns the table entry into a diagnostic at the action's source, so
`voicecall validate --provider P` and `voicecall compile` report the same facts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any, ClassVar

from voicecall.compiler import blocks as b
from voicecall.compiler.lower import lower
from voicecall.compiler.render import (
    CommandTemplate,
    Placeholders,
    XmlTemplate,
    system_slot,
    template_slot,
)
from voicecall.compiler.voices import provider_voice
from voicecall.dsl import model as m
from voicecall.dsl.errors import Diagnostic, FlowError, Severity
from voicecall.dsl.lookup import load_named

# name -> module; backends are imported on first use (the SDKs are slow to import).
BACKENDS = {
    "twilio": "voicecall.compiler.twilio",
    "plivo": "voicecall.compiler.plivo",
    "telnyx": "voicecall.compiler.telnyx",
}


class Support(StrEnum):
    NATIVE = "native"
    EMULATED = "emulated"  # works, built from other primitives (said as info)
    IGNORED = "ignored"  # accepted, has no effect on this provider (a warning)
    UNSUPPORTED = "unsupported"  # cannot be expressed (an error)


_CODES = {
    Support.EMULATED: "I-PROVIDER-EMULATED",
    Support.IGNORED: "W-PROVIDER-IGNORED",
    Support.UNSUPPORTED: "E-PROVIDER-UNSUPPORTED",
}


@dataclass(frozen=True, slots=True)
class Capability:
    support: Support
    note: str = ""  # what the feature becomes on this provider; may use {placeholders}


def native(note: str = "") -> Capability:
    return Capability(Support.NATIVE, note)


def emulated(note: str) -> Capability:
    return Capability(Support.EMULATED, note)


def ignored(note: str) -> Capability:
    return Capability(Support.IGNORED, note)


def unsupported(note: str) -> Capability:
    return Capability(Support.UNSUPPORTED, note)


class ErrorLevel(Enum):
    IGNORE = "ignore"  # collect nothing
    COLLECT = "collect"  # collect every note as a diagnostic (validate --provider)
    RAISE = "raise"  # collect, then raise FlowError at the end if any is an error (compile)


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledBlock:
    """One block as the runtime serves it."""

    id: str
    scope: str
    flow: str
    source: b.Source
    end: b.End
    kind: str  # "xml" or "commands"
    xml: XmlTemplate | None = None
    commands: tuple[CommandTemplate, ...] = ()
    after_input: tuple[CommandTemplate, ...] = ()  # telnyx: sent once the answer arrived
    native_retries: bool = False  # the provider retries the ask itself (telnyx maximum_tries)
    ops: tuple[b.Op, ...] = ()  # what the block says and plays, for transcripts
    # A conversation served over a media stream (streaming on, or driver realtime): the
    # block's operations without the conversation's message (spoken over the stream
    # instead), then the stream's opening. Only on Converse blocks.
    stream_xml: XmlTemplate | None = None
    stream_commands: tuple[CommandTemplate, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class CompiledFlow:
    """A flow compiled for one provider: its blocks by id, entry points and notes."""

    flow: m.Flow
    provider: str
    kind: str
    start: str
    handlers: tuple[tuple[str, str], ...]
    blocks: Mapping[str, CompiledBlock]
    diagnostics: tuple[Diagnostic, ...] = ()
    answer: str | None = None  # telnyx: the block answering an inbound call
    # XML providers: a <Redirect> to the slot callback_url (to go on in a later request), and
    # a hold (a pause, then that redirect) for a call waiting on the agent.
    redirect: XmlTemplate | None = None
    hold: XmlTemplate | None = None

    def block(self, block_id: str) -> CompiledBlock:
        return self.blocks[block_id]


@dataclass(slots=True)
class Emitted:
    """What an emitter hands back for one block."""

    xml: XmlTemplate | None = None
    commands: list[CommandTemplate] = field(default_factory=list)
    after_input: list[CommandTemplate] = field(default_factory=list)
    native_retries: bool = False


class Backend:
    """One provider's code generator. Subclasses set the class attributes and the emitters."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "xml"
    CAPABILITIES: ClassVar[dict[str, Capability]] = {}

    def __init__(self, level: ErrorLevel = ErrorLevel.RAISE):
        self.level = level
        self.diagnostics: list[Diagnostic] = []
        self.settings = m.Settings()
        self.provider_settings = m.ProviderSettings()

    # --- the capability table ------------------------------------------------------------------

    def support(self, feature: str) -> Capability:
        return self.CAPABILITIES.get(feature, native())

    def note(self, feature: str, source: b.Source, **facts: Any) -> Capability:
        """Records a diagnostic for a feature that is not native on this provider."""
        cap = self.support(feature)
        if cap.support is not Support.NATIVE and self.level is not ErrorLevel.IGNORE:
            text = cap.note.format(**facts) if facts else cap.note
            msg = f"{feature} on {self.name}: {text}"
            self.diagnostics.append(Diagnostic.make(_CODES[cap.support], msg, source.file,
                                                    source.span, hint=""))  # fmt: skip
        return cap

    def adjust(self, feature: str, source: b.Source, message: str) -> None:
        """Records that a value was changed to one the provider accepts (a warning)."""
        if self.level is not ErrorLevel.IGNORE:
            self.diagnostics.append(
                Diagnostic.make(
                    "W-PROVIDER-ADJUSTED",
                    f"{feature} on {self.name}: {message}",
                    source.file,
                    source.span,
                    hint="",
                )
            )

    # --- compiling -----------------------------------------------------------------------------

    def compile(self, lowered: b.Lowered) -> CompiledFlow:
        """Emits every block of a lowered flow."""
        flow = lowered.flow
        self.settings = flow.settings
        self.provider_settings = flow.settings.for_provider(self.name)
        compiled: dict[str, CompiledBlock] = {}
        for block in lowered.blocks:
            emitted = self.emit_block(block)
            streamed = self.emit_stream(block) if isinstance(block.end, b.Converse) else None
            compiled[block.id] = CompiledBlock(
                id=block.id, scope=block.scope, flow=block.flow, source=block.source,
                end=block.end, kind=self.kind, xml=emitted.xml,
                commands=tuple(emitted.commands), after_input=tuple(emitted.after_input),
                native_retries=emitted.native_retries, ops=block.ops,
                stream_xml=streamed.xml if streamed else None,
                stream_commands=tuple(streamed.commands) if streamed else (),
            )  # fmt: skip
        answer = self.answer_block(lowered, compiled)
        redirect, hold = self.runtime_fragments()
        diags = tuple(sorted(set(self.diagnostics), key=lambda d: d.sort_key))
        if self.level is ErrorLevel.RAISE and any(d.severity is Severity.ERROR for d in diags):
            raise FlowError([d for d in diags if d.severity is Severity.ERROR])
        return CompiledFlow(flow=flow, provider=self.name, kind=self.kind, start=lowered.start,
                            handlers=lowered.handlers, blocks=compiled, diagnostics=diags,
                            answer=answer, redirect=redirect, hold=hold)  # fmt: skip

    def emit_block(self, block: b.Block) -> Emitted:
        raise NotImplementedError

    def emit_stream(self, block: b.Block) -> Emitted:
        """A conversation block as served over a media stream (see CompiledBlock)."""
        raise NotImplementedError

    def runtime_fragments(self) -> tuple[XmlTemplate | None, XmlTemplate | None]:
        """The redirect and hold fragments of XML providers (None for command providers)."""
        return None, None

    def answer_block(self, lowered: b.Lowered, compiled: dict[str, CompiledBlock]) -> str | None:
        """Adds a block that answers inbound calls, where the provider needs one."""
        return None

    # --- shared helpers ------------------------------------------------------------------------

    def voice(self, explicit: str | None) -> str | None:
        """The voice for a say: the action's, else the provider's setting, else the flow's."""
        return explicit or self.provider_settings.voice or self.settings.voice

    def language(self, explicit: str | None) -> str | None:
        return explicit or self.provider_settings.language or self.settings.language


class XmlBackend(Backend):
    """What the document providers (TwiML, Plivo XML) share: a document per block, built with
    the SDK's builder, placeholders for slots, and the redirect and hold fragments."""

    kind = "xml"
    HOLD_SECONDS = 20  # how long a call on hold waits before asking again

    def new_document(self) -> Any:
        raise NotImplementedError

    def serialize(self) -> str:
        """The built document without its <Response> wrapper."""
        raise NotImplementedError

    def add_pause(self, seconds: int) -> None:
        raise NotImplementedError

    def add_redirect(self, url: str) -> None:
        raise NotImplementedError

    def emit_block(self, block: b.Block) -> Emitted:
        self.doc = self.new_document()
        self.ph = Placeholders()
        for op in block.ops:
            getattr(self, f"op_{op.__class__.__name__}")(op)
        getattr(self, f"end_{block.end.__class__.__name__}", self.end_server)(block.end)
        return Emitted(xml=self.fragment())

    def emit_stream(self, block: b.Block) -> Emitted:
        self.doc = self.new_document()
        self.ph = Placeholders()
        for op in stream_ops(block.end, block.ops):
            getattr(self, f"op_{op.__class__.__name__}")(op)
        self.end_stream()
        return Emitted(xml=self.fragment())

    def end_stream(self) -> None:
        """The document's opening of a bidirectional media stream."""
        raise NotImplementedError

    def fragment(self) -> XmlTemplate:
        return XmlTemplate.split(self.serialize(), self.ph.slots)

    def runtime_fragments(self) -> tuple[XmlTemplate | None, XmlTemplate | None]:
        out = []
        for pause in (0, self.HOLD_SECONDS):
            self.doc, self.ph = self.new_document(), Placeholders()
            if pause:
                self.add_pause(pause)
            self.add_redirect(self.ph(system_slot("callback_url")))
            out.append(self.fragment())
        return out[0], out[1]

    def text(self, text: m.Text, source: b.Source) -> str:
        return self.ph(template_slot(text.source, source.short))

    def say_voice(self, voice: str | None, source: b.Source) -> str:
        name, ok = provider_voice(self.name, self.voice(voice))
        if not ok:
            self.note("voice", source, voice=name)
        return name

    def end_server(self, end: b.End) -> None:
        """Server decisions emit nothing: the runtime chains the next block."""


def stream_ops(end: b.End, ops: tuple[b.Op, ...]) -> tuple[b.Op, ...]:
    """A conversation block's operations without its message: over a media stream the
    message is synthesized and played on the stream, never a carrier <Say> beside it."""
    if (isinstance(end, b.Converse) and end.converse.message is not None and ops
            and isinstance(ops[-1], b.SayOp) and ops[-1].text is end.converse.message):  # fmt: skip
        return ops[:-1]
    return ops


# --- the registry ------------------------------------------------------------------------------


def get_backend(name: str) -> type[Backend]:
    """The backend class for a provider name.

    Raises:
        KeyError: "unknown provider 'twilo'; did you mean 'twilio'?"
    """
    backend: type[Backend] = load_named(BACKENDS, name, "BACKEND")
    return backend


_cache: dict[tuple[str, str, str], CompiledFlow] = {}


def compile_flow(
    flow: m.Flow,
    provider: str,
    subflows: Mapping[str, m.Flow] | None = None,
    level: ErrorLevel = ErrorLevel.RAISE,
) -> CompiledFlow:
    """Compiles a checked flow for one provider, once per content (cached by hash).

    Args:
        flow: a flow without errors.
        provider: twilio, plivo or telnyx.
        subflows: flows call_flow may name.
        level: RAISE to fail on what the provider cannot express, COLLECT to report it.
    Returns:
        The compiled flow, with the provider notes as diagnostics.
    """
    subs = dict(subflows or {})
    key = (provider, level.value, _fingerprint(flow, subs.values()))
    if key not in _cache:
        backend = get_backend(provider)(level)
        _cache[key] = backend.compile(lower(flow, subs))
    return _cache[key]


def _fingerprint(flow: m.Flow, subflows: Iterable[m.Flow]) -> str:
    digests = sorted(f"{f.name}:{f.digest}" for f in subflows)
    return hashlib.sha256("\n".join([flow.digest, *digests]).encode()).hexdigest()


def seconds(ms: int) -> int:
    """Whole seconds, rounded up, at least one."""
    return max(1, -(-ms // 1000))


def provider_notes(
    flow: m.Flow, providers: Iterable[str], subflows: Mapping[str, m.Flow]
) -> list[Diagnostic]:
    """What each provider cannot express (errors), ignores (warnings) or emulates (info)."""
    out: list[Diagnostic] = []
    for provider in providers:
        out += compile_flow(flow, provider, subflows, ErrorLevel.COLLECT).diagnostics
    return out
