"""The values a conversation collects (``converse: {collect: …, on_done: …}``).

Whatever drives the conversation (the response model through its finishing tool, a realtime
session, a simulation's scripted model) hands the values back as a :class:`Done`; they are
checked here against the declared fields before they become flow variables. A rejected set of
values goes back to the driver with a message saying what to fix, so a model can try again.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.values import is_e164

MAX_TEXT = 1000  # characters of one collected text value: a conversation's answer, not a file
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True, slots=True, kw_only=True)
class Done:
    """The conversation finished with these values (the driver's finishing tool)."""

    values: Mapping[str, Any] = field(default_factory=dict)


class CollectError(ValueError):
    """Values that do not fit the declared fields; the message says what to fix."""


def check_values(fields: Sequence[m.Field], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values to save, one per field (an optional one left out is None).

    Raises:
        CollectError: naming every problem (unknown names, missing or mistyped values).
    """
    declared = {f.name: f for f in fields}
    problems = [f"'{name}' is not collected here" for name in values if name not in declared]
    out: dict[str, Any] = {}
    for f in fields:
        value = values.get(f.name)
        if value is None:
            if f.required:
                problems.append(f"'{f.name}' is missing ({f.description})")
            out[f.name] = None
            continue
        try:
            out[f.name] = _typed(f.type, value)
        except ValueError as exc:
            problems.append(f"'{f.name}' {exc}")
    if problems:
        expected = ", ".join(f"{f.name} ({f.type})" for f in fields) or "nothing"
        raise CollectError("; ".join(problems) + f"; expected: {expected}")
    return out


def _typed(kind: str, value: Any) -> Any:
    """The value as its field type stores it, else ValueError saying what it should be."""
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        raise ValueError(f"must be true or false, not {_show(value)}")
    if isinstance(value, bool):
        raise ValueError(f"must be {_WORDS[kind]}, not {_show(value)}")
    if kind == "integer":
        if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
            return int(value)
        raise ValueError(f"must be a whole number, not {_show(value)}")
    if kind == "number":
        if isinstance(value, int | float) and math.isfinite(value):
            return value
        raise ValueError(f"must be a number, not {_show(value)}")
    if not isinstance(value, str):
        raise ValueError(f"must be {_WORDS[kind]}, not {_show(value)}")
    return _text(kind, value)


def _text(kind: str, value: str) -> str:
    text = value.strip()
    if not text or len(text) > MAX_TEXT:
        raise ValueError(f"must be {_WORDS[kind]} of 1 to {MAX_TEXT} characters")
    if kind == "phone" and not is_e164(text):
        raise ValueError(f"must be an E.164 number such as +15551234567, not {_show(value)}")
    if kind == "date":
        try:
            if not _DATE.match(text):
                raise ValueError(text)
            date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"must be a date as YYYY-MM-DD, not {_show(value)}") from None
    return text


_WORDS = {"string": "text", "integer": "a whole number", "number": "a number",
          "boolean": "true or false", "phone": "an E.164 phone number",
          "date": "a date as YYYY-MM-DD"}  # fmt: skip


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def tool_parameters(fields: Sequence[m.Field]) -> dict[str, Any]:
    """The JSON Schema of the finishing tool's arguments (what the model is asked for)."""
    types = {"string": {"type": "string"}, "integer": {"type": "integer"},
             "number": {"type": "number"}, "boolean": {"type": "boolean"},
             "phone": {"type": "string", "pattern": r"^\+[1-9]\d{1,14}$"},
             "date": {"type": "string", "format": "date"}}  # fmt: skip
    props = {f.name: {**types.get(f.type, types["string"]), "description": f.description}
             for f in fields}  # fmt: skip
    required = [f.name for f in fields if f.required]
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}  # fmt: skip
