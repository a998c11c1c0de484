"""Where each key and value of a JSON5 document is: (line, column) by key path.

The json5 library returns plain data without positions, so config errors could not say where
they are. This scanner reads a document the library has already accepted and records, for
each path (a tuple of keys and list indexes), where its value starts and where its key is.
It understands just enough JSON5 to stay in step: comments, both quote styles with escapes,
unquoted keys, and bare scalars (numbers, true, Infinity, ...). If it ever loses its way it
stops and returns what it found; a missing position only makes a message less precise.
"""

from __future__ import annotations

import bisect
import contextlib
import json
from dataclasses import dataclass

import json5

Path = tuple[str | int, ...]

MAX_DEPTH = 64  # configs are shallow; deeper input is left without positions


@dataclass(frozen=True, slots=True)
class Position:
    """1-based line and column."""

    line: int
    col: int


@dataclass(slots=True)
class Positions:
    """Value and key positions of a document, by path."""

    values: dict[Path, Position]
    keys: dict[Path, Position]

    def of(self, path: Path, *, key: bool = False) -> Position | None:
        """Where ``path`` is (its key when ``key``), else where its nearest parent is."""
        table = self.keys if key else self.values
        for end in range(len(path), -1, -1):
            found = table.get(path[:end]) or self.values.get(path[:end])
            if found is not None:
                return found
        return None


class _Stop(Exception):
    """The scanner met something it does not understand."""


def find_positions(text: str) -> Positions:
    """Positions of every key and value in ``text`` (a valid JSON5 document)."""
    scanner = _Scanner(text)
    with contextlib.suppress(_Stop, IndexError, RecursionError):
        scanner.value(())
    return Positions(values=scanner.values, keys=scanner.keys)


_SPACE = frozenset(" \t\r\n\f\v\u00a0\u2028\u2029\ufeff")
_DELIMITERS = _SPACE | frozenset(",:]}[{/\"'")


class _Scanner:
    def __init__(self, text: str):
        self.text = text
        self.i = 0
        self.values: dict[Path, Position] = {}
        self.keys: dict[Path, Position] = {}
        self.line_starts = [0] + [n + 1 for n, ch in enumerate(text) if ch == "\n"]

    def position(self, offset: int) -> Position:
        line = bisect.bisect_right(self.line_starts, offset)
        return Position(line, offset - self.line_starts[line - 1] + 1)

    def value(self, path: Path) -> None:
        if len(path) > MAX_DEPTH:
            raise _Stop
        self.blank()
        self.values[path] = self.position(self.i)
        ch = self.text[self.i]
        if ch == "{":
            self.mapping(path)
        elif ch == "[":
            self.sequence(path)
        elif ch in "\"'":
            self.string()
        else:
            self.bare()

    def mapping(self, path: Path) -> None:
        self.i += 1
        while True:
            self.blank()
            if self.text[self.i] == "}":
                self.i += 1
                return
            start = self.i
            key = self.string() if self.text[self.i] in "\"'" else self.bare()
            self.keys[(*path, key)] = self.position(start)
            self.blank()
            if self.text[self.i] != ":":
                raise _Stop
            self.i += 1
            self.value((*path, key))
            self.separator("}")

    def sequence(self, path: Path) -> None:
        self.i += 1
        index = 0
        while True:
            self.blank()
            if self.text[self.i] == "]":
                self.i += 1
                return
            self.value((*path, index))
            index += 1
            self.separator("]")

    def separator(self, close: str) -> None:
        self.blank()
        if self.text[self.i] == ",":
            self.i += 1
        elif self.text[self.i] != close:
            raise _Stop

    def string(self) -> str:
        quote, start = self.text[self.i], self.i
        self.i += 1
        while self.text[self.i] != quote:
            self.i += 2 if self.text[self.i] == "\\" else 1
        self.i += 1
        token = self.text[start : self.i]
        try:
            decoded = json5.loads(token)
        except ValueError:
            decoded = json.loads(token) if quote == '"' else token[1:-1]
        return str(decoded)

    def bare(self) -> str:
        start = self.i
        while self.i < len(self.text) and self.text[self.i] not in _DELIMITERS:
            self.i += 1
        if self.i == start:
            raise _Stop
        return self.text[start : self.i]

    def blank(self) -> None:
        text = self.text
        while True:
            while text[self.i] in _SPACE:
                self.i += 1
            if text.startswith("//", self.i):
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
            elif text.startswith("/*", self.i):
                end = text.find("*/", self.i + 2)
                if end < 0:
                    raise _Stop
                self.i = end + 2
            else:
                return
