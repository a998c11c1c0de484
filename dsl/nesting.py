"""How deep flow collections nest, read from the text itself, without a YAML parser.

The loader counts depth on the parser's events, but a parser may refuse deep input before it
emits a single event: inside ``[`` and ``{`` a YAML scanner holds tokens back until it knows
whether they start a key (up to a line or 1024 characters), and libyaml now stops at its own
nesting limit within that look-ahead. Whatever the library's limit, this scan finds where our
limit is crossed, so the diagnostic stays ``E-YAML-TOO-DEEP`` at the same place.

It tracks only what decides whether a bracket opens a collection: quoted scalars, comments,
block scalars (``|`` and ``>``) and the start of tokens. It is consulted only when the parser
failed, so a rare misreading can never reject a valid file.
"""

from __future__ import annotations

import re

_BLOCK_SCALAR = re.compile(r"(?:^|[\s:-])[|>][0-9+-]*\s*(?:#.*)?$")
_TOKEN_START = frozenset(" \t[{,:-?")


def first_too_deep(text: str, limit: int) -> tuple[int, int] | None:
    """The 1-based (line, column) of the first ``[`` or ``{`` nested ``limit + 1`` flow
    collections deep, or None if flow collections never nest that deep."""
    state = _State()
    scalar_indent: int | None = None  # inside a block scalar: lines indented deeper belong to it
    for number, line in enumerate(text.splitlines(), start=1):
        indent = len(line) - len(line.lstrip(" "))
        if scalar_indent is not None:
            if not line.strip() or indent > scalar_indent:
                continue
            scalar_indent = None
        where = _scan_line(line, state, limit)
        if where is not None:
            return number, where
        if not state.depth and not state.quote and _BLOCK_SCALAR.search(line):
            scalar_indent = indent
    return None


class _State:
    __slots__ = ("depth", "quote")

    def __init__(self) -> None:
        self.depth = 0
        self.quote = ""  # quoted scalars may span lines


def _scan_line(line: str, state: _State, limit: int) -> int | None:
    depth, quote = state.depth, state.quote
    previous = " "
    i = 0
    while i < len(line):
        char = line[i]
        if quote:
            if char == "\\" and quote == '"':
                i += 1
            elif char == quote and quote == "'" and line[i + 1 : i + 2] == "'":
                i += 1  # '' is a quote inside a single-quoted scalar
            elif char == quote:
                quote = ""
        elif char == "#" and previous in " \t":
            break
        elif char in "'\"" and previous in _TOKEN_START:
            quote = char
        elif char in "[{" and (depth or previous in _TOKEN_START):
            depth += 1
            if depth > limit:
                return i + 1
        elif char in "]}" and depth:
            depth -= 1
        previous = char
        i += 1
    state.depth, state.quote = depth, quote
    return None
