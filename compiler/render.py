"""Compiled blocks that the webhook path only fills in: no parsing, no building, no YAML.

At compile time a backend builds each block's XML with the provider's SDK builder (or its
Telnyx command bodies), putting a placeholder wherever a value is known only during the call:
a template of the flow (``Hello {{ patient }}``) or a runtime value (the callback URL, the
Telnyx client_state). The serialized document is then split at the placeholders into literal
pieces and slots. Rendering evaluates each slot (a precompiled Jinja2 template), escapes it for
XML, and joins: a few microseconds, and a value can never become markup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from jinja2 import Template
from markupsafe import escape

from voicecall.dsl.templates import environment

_MARK = re.compile("\ue000([0-9]+)\ue001")
# Characters XML 1.0 forbids even when escaped; a caller's value could carry them.
_XML_FORBIDDEN = dict.fromkeys([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0xFFFE, 0xFFFF])

# The runtime values a compiled block may hold: its callback URL, Telnyx state and command id,
# and a media stream's opening (URL, the call's key and one-use token, Plivo's extraHeaders).
SYSTEM_SLOTS = ("callback_url", "client_state", "command_id", "stream_url", "call_key",
                "stream_token", "stream_headers")  # fmt: skip


class RenderError(Exception):
    """A template failed while rendering a block; the message names its flow source."""


@dataclass(frozen=True, slots=True)
class Slot:
    """A value filled in at run time: a flow template, or a runtime value by name."""

    source: str  # the template's text, or the runtime value's name
    where: str  # file:line of the template
    template: Template | None  # None for runtime values
    constant: str | None = None  # set when the text has no {{ }}: used as it is

    def value(self, values: Mapping[str, Any], system: Mapping[str, str]) -> str:
        if self.constant is not None:
            return self.constant
        if self.template is None:
            return system[self.source]
        try:
            return self.template.render(values)
        except Exception as exc:  # any failure of a flow's template is that flow's error
            raise RenderError(f"{self.where}: {self.source!r}: {exc}") from exc

    @property
    def label(self) -> str:
        """How the slot is shown in compiled output: the template, or {{ name }}."""
        return self.source if self.template is not None else "{{ " + self.source + " }}"


@lru_cache(maxsize=8192)
def _compiled(source: str) -> Template:
    return environment().from_string(source)


def template_slot(source: str, where: str) -> Slot:
    """A slot for a flow template (constant text is kept as it is)."""
    if "{{" not in source and "{%" not in source:
        return Slot(source=source, where=where, template=None, constant=source)
    return Slot(source=source, where=where, template=_compiled(source))


def system_slot(name: str) -> Slot:
    assert name in SYSTEM_SLOTS, name
    return Slot(source=name, where="", template=None)


class Placeholders:
    """Hands out placeholder strings for slots while a document is being built."""

    def __init__(self) -> None:
        self.slots: list[Slot] = []

    def __call__(self, slot: Slot) -> str:
        if slot.constant is not None:
            _check_literal(slot.constant)
            return slot.constant
        self.slots.append(slot)
        return f"\ue000{len(self.slots) - 1}\ue001"


def _check_literal(text: str) -> None:
    if "\ue000" in text or "\ue001" in text:
        raise ValueError("flow text may not contain U+E000 or U+E001")


@dataclass(frozen=True, slots=True)
class XmlTemplate:
    """An XML fragment split into literal pieces and the slots between them."""

    parts: tuple[str, ...]
    slots: tuple[Slot, ...]

    @classmethod
    def split(cls, xml: str, slots: Sequence[Slot]) -> XmlTemplate:
        pieces = _MARK.split(xml)
        parts = tuple(pieces[0::2])
        order = tuple(slots[int(i)] for i in pieces[1::2])
        return cls(parts=parts, slots=order)

    def render(self, values: Mapping[str, Any], system: Mapping[str, str]) -> str:
        """Fills every slot, escaped for XML text and attributes alike."""
        out = [self.parts[0]]
        for slot, part in zip(self.slots, self.parts[1:], strict=True):
            out.append(escape(slot.value(values, system).translate(_XML_FORBIDDEN)))
            out.append(part)
        return "".join(out)

    def show(self, values: Mapping[str, Any]) -> str:
        """The fragment for people: slots rendered where ``values`` allow, else their template."""
        out = [self.parts[0]]
        for slot, part in zip(self.slots, self.parts[1:], strict=True):
            out.append(escape(_preview(slot, values)))
            out.append(part)
        return "".join(out)


def _preview(slot: Slot, values: Mapping[str, Any]) -> str:
    if slot.template is None:
        return slot.label
    try:
        return slot.template.render(values)
    except Exception:  # a preview shows the template where values are missing
        pass
    if "{%" in slot.source:  # a missing value may decide a branch: show it all
        return slot.label
    return _EXPRESSION.sub(lambda m: _preview_expression(m.group(0), values), slot.source)


_EXPRESSION = re.compile(r"\{\{.*?\}\}", re.S)


def _preview_expression(expression: str, values: Mapping[str, Any]) -> str:
    """One ``{{ … }}`` filled in when its values are given, else shown as written."""
    try:
        return _compiled(expression).render(values)
    except Exception:
        return expression


Body = dict[str, Any]


@dataclass(frozen=True, slots=True)
class CommandTemplate:
    """One Telnyx Call Control command with its request body; slots are filled at run time."""

    command: str
    body: Body  # values may be Slot objects, at any depth
    awaits: str | None  # the webhook event that completes it, or None
    where: str
    # Performed by the runtime itself (a timer), never sent to the carrier.
    runtime: bool = False

    def render(self, values: Mapping[str, Any], system: Mapping[str, str]) -> Body:
        """The request body exactly as sent."""
        body: Body = _fill(self.body, lambda s: s.value(values, system))
        return body

    def show(self, values: Mapping[str, Any]) -> Body:
        body: Body = _fill(self.body, lambda s: _preview(s, values) if s.template else s.label)
        return body


def _fill(value: Any, fill: Callable[[Slot], str]) -> Any:
    if isinstance(value, Slot):
        return fill(value)
    if isinstance(value, dict):
        return {k: _fill(v, fill) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, fill) for v in value]
    return value
