"""Explaining YAML syntax errors caused by one key indented wrongly.

libyaml reports a key dedented under a block where the damage shows, not where it was done:
``save_as: reply`` indented like the ``ask:`` above it ends ``ask``, and when the next line is
indented deeper, YAML reads that line as more text of ``reply`` and stops at its ``: `` with
"mapping values are not allowed" — a message whose usual cause is an unquoted colon. This
module reads the lines around the error and, when they show a key indented less (or more)
than its neighbours, says so at the key that moved. It only rewords errors the parser already
found, so a misreading can never reject a valid file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from voicecall.dsl.errors import Span

# A block mapping key: optional `- ` list markers, a plain key, then `:` and a space or the end.
_KEY = re.compile(r"^( *)((?:- +)*)([A-Za-z_][\w-]*):(?: +(.*))?$")
_PLAIN_START = re.compile(r"[^\s'\"\[{|>&*!#%@`]")


@dataclass(frozen=True, slots=True, kw_only=True)
class Explanation:
    """A clearer message for a syntax error, at the key it is about."""

    message: str
    span: Span
    hint: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _Line:
    index: int  # 0-based
    indent: int  # 0-based column of the first character
    key: str | None
    key_col: int  # 0-based column of the key (after any `- `)
    value: str  # the text after `key: `, without a trailing comment


def explain_indentation(problem: str, text: str, span: Span) -> Explanation | None:
    """A message and position for an error caused by one key's indentation, if it is one.

    Args:
        problem: the parser's message, e.g. "mapping values are not allowed in this context".
        text: the whole file.
        span: where the parser stopped.

    Returns:
        The explanation, or None when the lines do not show a misindented key.
    """
    lines = text.splitlines()
    if not 0 < span.line <= len(lines):
        return None
    here = _parse(lines, span.line - 1)
    if "mapping values are not allowed" in problem:
        return _after_plain_value(lines, here)
    if "did not find expected" in problem and span.col - 1 == here.indent and here.key:
        above = _previous(lines, here.index)
        if above is not None and here.indent < above.indent:
            return _misaligned(lines, here, above)
    return None


def _after_plain_value(lines: list[str], here: _Line) -> Explanation | None:
    """A `: ` found on a line that YAML read as more of the plain value on the line before."""
    before = _previous(lines, here.index)
    if before is None or before.key is None or not _is_plain(before.value):
        return None
    above = _previous(lines, before.index)
    if above is not None and before.indent < above.indent:
        return _dedented(lines, before, above)
    if here.key is not None and here.indent > before.key_col:
        return _indented(here, before)
    return None


def _dedented(lines: list[str], moved: _Line, above: _Line) -> Explanation:
    ended = _ended_blocks(lines, above, moved.indent)
    key = f"`{moved.key}`"
    if ended:
        message = f"{key} is indented less than the keys above it, so it ends {_names(ended)} here"
    else:
        message = f"{key} is indented less than the keys above it"
    message += f"; the next line is then read as more of its value {_quoted(moved.value)}"
    hint = f"indent {key} like the line above it (column {above.indent + 1})"
    if ended:
        hint += f" to keep it in `{ended[0]}`"
    return Explanation(message=message, span=_key_span(moved), hint=hint)


def _indented(here: _Line, before: _Line) -> Explanation:
    message = (
        f"`{here.key}` is indented more than `{before.key}` above it, so YAML reads it as more "
        f"of the text of `{before.key}`"
    )
    hint = f"line `{here.key}` up with `{before.key}` (column {before.key_col + 1})"
    return Explanation(message=message, span=_key_span(here), hint=hint)


def _misaligned(lines: list[str], here: _Line, above: _Line) -> Explanation:
    message = (
        f"`{here.key}` is indented less than the keys above it, and lines up with no key of the "
        "blocks around it"
    )
    hint = f"indent `{here.key}` like the line above it (column {above.indent + 1})"
    owner = _owner(lines, above)
    if owner is not None and owner.key:
        hint += f" to keep it in `{owner.key}`"
    return Explanation(message=message, span=_key_span(here), hint=hint)


def _ended_blocks(lines: list[str], inner: _Line, indent: int) -> list[str]:
    """The keys whose block values a line at ``indent`` closes, innermost first."""
    ended: list[str] = []
    child = inner
    while (owner := _owner(lines, child)) is not None and indent < child.indent:
        if owner.key:
            ended.append(owner.key)
        child = owner
    return ended


def _owner(lines: list[str], child: _Line) -> _Line | None:
    """The nearest line above ``child`` indented less: the block it belongs to."""
    line = _previous(lines, child.index)
    while line is not None and line.indent >= child.indent:
        line = _previous(lines, line.index)
    return line


def _previous(lines: list[str], index: int) -> _Line | None:
    for i in range(index - 1, -1, -1):
        stripped = lines[i].strip()
        if stripped and not stripped.startswith("#"):
            return _parse(lines, i)
    return None


def _parse(lines: list[str], index: int) -> _Line:
    text = lines[index]
    indent = len(text) - len(text.lstrip(" "))
    match = _KEY.match(text)
    if match is None:
        return _Line(index=index, indent=indent, key=None, key_col=indent, value="")
    value = (match.group(4) or "").split(" #", 1)[0].strip()
    key_col = len(match.group(1)) + len(match.group(2))
    return _Line(index=index, indent=indent, key=match.group(3), key_col=key_col, value=value)


def _is_plain(value: str) -> bool:
    return bool(value) and _PLAIN_START.match(value) is not None


def _key_span(line: _Line) -> Span:
    assert line.key is not None
    return Span.point(line.index + 1, line.key_col + 1, len(line.key))


def _names(keys: list[str]) -> str:
    quoted = [f"`{k}`" for k in keys]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _quoted(value: str) -> str:
    return f"'{value}'" if len(value) <= 30 else f"'{value[:27]}…'"
