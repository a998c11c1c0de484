"""YAML to plain data that remembers where every key and value came from.

The tree is built from the parser's event stream with an explicit stack rather than with
PyYAML's composer: libyaml's composer recurses in C and crashes on deeply nested input, and
building it ourselves lets duplicate keys, non-string keys, unsupported tags and alias bombs be
reported as diagnostics while the document is read, never as a traceback or a hang.

The result is a :class:`Document`: the data as dicts, lists and scalars, plus a table from
each value's path (a tuple of keys and indexes) to its :class:`Span`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import ScalarNode
from yaml.resolver import Resolver

from voicecall.dsl.errors import Diagnostic, Span
from voicecall.dsl.indentation import explain_indentation
from voicecall.dsl.nesting import first_too_deep

try:  # libyaml's event parser when present: several times faster than the pure one.
    from yaml import CSafeLoader as _Loader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    from yaml import SafeLoader as _Loader  # type: ignore[assignment]

MAX_BYTES = 1 << 20
MAX_DEPTH = 50
MAX_VALUES = 100_000

Path = tuple[str | int, ...]

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_SCALAR_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "timestamp")
)
_COLLECTION_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq", "!"})
_resolver = Resolver()
_constructor = SafeConstructor()


@dataclass(slots=True)
class Document:
    """A loaded YAML file: plain data and the source span of every value and key."""

    file: str
    text: str
    data: Any
    spans: dict[Path, Span] = field(default_factory=dict)
    key_spans: dict[Path, Span] = field(default_factory=dict)
    styles: dict[Path, str] = field(default_factory=dict)
    # Where the loader already reported a problem, so that later checks stay quiet there:
    # mappings that lost a key (rejected or duplicate), and values with a rejected tag.
    damaged: set[Path] = field(default_factory=set)
    _lines: list[str] | None = None

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = self.text.splitlines()
        return self._lines

    def span(self, path: Path, *, key: bool = False) -> Span:
        """Returns the span of the value (or key) at ``path``, else of its nearest ancestor."""
        if key and path in self.key_spans:
            return self.key_spans[path]
        while path:
            if path in self.spans:
                return self.spans[path]
            path = path[:-1]
        return self.spans.get((), Span.point(1, 1))

    def is_plain(self, path: Path) -> bool:
        """Whether the scalar at ``path`` was written unquoted (so YAML typed it)."""
        return self.styles.get(path, "") == ""


@dataclass(slots=True)
class LoadResult:
    document: Document | None
    diagnostics: list[Diagnostic]
    text: str | None = None  # the decoded text, also when it could not be loaded


class _Abort(Exception):
    """Stops reading: the diagnostic is already recorded."""


def load_bytes(raw: bytes, file: str) -> LoadResult:
    """Checks size, binary content and encoding, then loads the text."""
    if len(raw) > MAX_BYTES:
        msg = f"the file is larger than {MAX_BYTES // 1024} KiB"
        return LoadResult(None, [Diagnostic.make("E-FILE-TOO-LARGE", msg, file, Span.point(1, 1))])
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        msg = "the file is UTF-16; flows are UTF-8 text"
        return LoadResult(None, [Diagnostic.make("E-FILE-ENCODING", msg, file, Span.point(1, 1))])
    if b"\x00" in raw:
        span = _byte_span(raw, raw.index(b"\x00"))
        msg = "the file contains NUL bytes: it is binary, not YAML text"
        return LoadResult(None, [Diagnostic.make("E-FILE-BINARY", msg, file, span)])
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        msg = f"byte 0x{raw[exc.start]:02x} is not valid UTF-8"
        span = _byte_span(raw, exc.start)
        return LoadResult(None, [Diagnostic.make("E-FILE-ENCODING", msg, file, span)])
    return load_text(text, file)


def load_text(text: str, file: str) -> LoadResult:
    """Loads YAML text into a :class:`Document`, collecting diagnostics."""
    builder = _Builder(file, text)
    try:
        builder.run()
    except _Abort:
        return LoadResult(None, builder.diagnostics, text)
    if builder.root is _NOTHING or builder.root is None:
        if not builder.diagnostics:
            builder.diag("E-YAML-EMPTY", "the file holds no flow", Span.point(1, 1))
        return LoadResult(None, builder.diagnostics, text)
    doc = Document(file, text, builder.root, builder.spans, builder.key_spans, builder.styles,
                   builder.damaged)  # fmt: skip
    return LoadResult(doc, builder.diagnostics, text)


def _byte_span(raw: bytes, offset: int) -> Span:
    line = raw.count(b"\n", 0, offset) + 1
    start = raw.rfind(b"\n", 0, offset) + 1
    col = len(raw[start:offset].decode("utf-8", "replace")) + 1
    return Span.point(line, col)


def _mark_span(start: Any, end: Any) -> Span:
    return Span(
        line=start.line + 1, col=start.column + 1, end_line=end.line + 1, end_col=end.column + 1
    )


_NOTHING: Any = object()
_SKIP = object()


@dataclass(slots=True)
class _Frame:
    path: Path
    value: Any  # dict or list under construction, or None while skipping
    start: Any
    anchor: str | None
    size: int = 1
    key: Any = _NOTHING  # mappings: the pending key (str, or _SKIP for a rejected key)
    seen: dict[str, Span] = field(default_factory=dict)
    merges: list[dict[str, Any]] = field(default_factory=list)
    skip_depth: int = 0  # > 0 while consuming a complex key
    flow: bool = False  # a [ ] or { } collection rather than an indented one


class _Builder:
    def __init__(self, file: str, text: str):
        self.file = file
        self.text = text
        self.diagnostics: list[Diagnostic] = []
        self.spans: dict[Path, Span] = {}
        self.key_spans: dict[Path, Span] = {}
        self.styles: dict[Path, str] = {}
        self.anchors: dict[str, tuple[Any, int]] = {}
        self.open_anchors: set[str] = set()
        self.stack: list[_Frame] = []
        self.damaged: set[Path] = set()
        self.root: Any = _NOTHING
        self.documents = 0
        self.total = 0

    def diag(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        self.diagnostics.append(Diagnostic.make(code, message, self.file, span, hint))

    def abort(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        self.diag(code, message, span, hint)
        raise _Abort

    def run(self) -> None:
        try:
            for event in self._events():
                self.feed(event)
        except yaml.MarkedYAMLError as exc:
            self._refuse_if_too_deep()
            mark = exc.problem_mark or exc.context_mark
            # At the end of the file (an unclosed quote or bracket), where it was opened helps.
            if exc.context_mark and mark and mark.line >= len(self.text.splitlines()):
                mark = exc.context_mark
            span = Span.point(mark.line + 1, mark.column + 1) if mark else Span.point(1, 1)
            problem = exc.problem or exc.context or "invalid YAML"
            context = f" ({exc.context})" if exc.context and exc.problem else ""
            moved = explain_indentation(problem, self.text, span)
            if moved is not None:
                self.abort("E-YAML-SYNTAX", moved.message, moved.span, moved.hint)
            self.abort(
                "E-YAML-SYNTAX", f"{problem}{context}", span, _syntax_hint(problem, self.text, span)
            )
        except yaml.reader.ReaderError as exc:
            span = _byte_span(self.text.encode("utf-8"), len(self.text[: exc.position].encode()))
            self.abort("E-YAML-SYNTAX", f"character {exc.character!r} is not allowed", span)

    def _refuse_if_too_deep(self) -> None:
        """E-YAML-TOO-DEEP where our limit is crossed, even if the parser stopped first.

        A parser may refuse deep flow collections (libyaml has a limit of its own) before it
        emits the events our stack counts, so the text decides; block levels already on the
        stack count towards the limit as they do for events.
        """
        blocks = sum(1 for frame in self.stack if not frame.flow)
        where = first_too_deep(self.text, MAX_DEPTH - blocks)
        if where is not None:
            span = Span.point(*where)
            self.abort("E-YAML-TOO-DEEP", f"nesting deeper than {MAX_DEPTH} levels", span)

    def text_at(self, mark: Any) -> str:
        """The source text from a mark to the end of its line."""
        lines = self.text.splitlines()
        return lines[mark.line][mark.column :] if mark.line < len(lines) else ""

    def _events(self) -> Iterator[yaml.Event]:
        loader = _Loader(self.text)
        try:
            while loader.check_event():
                event = loader.get_event()
                if event is not None:
                    yield event
        finally:
            loader.dispose()

    # --- events -----------------------------------------------------------------------------

    def feed(self, event: yaml.Event) -> None:
        if self.stack and self.stack[-1].skip_depth:
            self._skip(event)
        elif isinstance(event, yaml.DocumentStartEvent):
            self.documents += 1
            if self.documents > 1:
                span = _mark_span(event.start_mark, event.end_mark)
                self.abort("E-YAML-MULTI-DOC", "a second YAML document starts here", span)
        elif isinstance(event, yaml.ScalarEvent):
            self._scalar(event)
        elif isinstance(event, yaml.AliasEvent):
            self._alias(event)
        elif isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            self._open(event)
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            self._close(event)

    def _skip(self, event: yaml.Event) -> None:
        frame = self.stack[-1]
        if isinstance(event, yaml.MappingStartEvent | yaml.SequenceStartEvent):
            frame.skip_depth += 1
        elif isinstance(event, yaml.MappingEndEvent | yaml.SequenceEndEvent):
            frame.skip_depth -= 1
        if frame.skip_depth == 0:
            frame.key = _SKIP

    def _count(self, n: int, span: Span) -> None:
        self.total += n
        if self.total > MAX_VALUES:
            msg = f"the document expands to more than {MAX_VALUES} values through aliases"
            self.abort("E-YAML-ALIAS", msg, span)

    def _scalar(self, event: yaml.ScalarEvent) -> None:
        span = _mark_span(event.start_mark, event.end_mark)
        if self._taking_key():
            self._key(event, span)
            return
        self._count(1, span)
        value = self._construct(event, span)
        if event.anchor:
            self.anchors[event.anchor] = (value, 1)
        self._attach(value, span, 1, style=event.style or "")

    def _alias(self, event: yaml.AliasEvent) -> None:
        span = _mark_span(event.start_mark, event.end_mark)
        name = event.anchor or ""
        if name in self.open_anchors:
            self.abort(
                "E-YAML-ALIAS",
                f"alias *{name} refers to the node that contains it",
                span,
                f"a node cannot contain itself; copy the part of &{name} you need",
            )
        if name not in self.anchors:
            self.abort(
                "E-YAML-ALIAS",
                f"alias *{name} has no anchor &{name} before it",
                span,
                f"write &{name} on the value to reuse, above this line",
            )
        if self._taking_key():
            self.diag("E-YAML-KEY-TYPE", f"alias *{name} used as a key", span)
            self.stack[-1].key = _SKIP
            return
        value, size = self.anchors[name]
        self._count(size, span)
        self._attach(value, span, size, style="")

    def _open(self, event: yaml.MappingStartEvent | yaml.SequenceStartEvent) -> None:
        span = _mark_span(event.start_mark, event.end_mark)
        if self._taking_key():
            parent = self.stack[-1]
            self.damaged.add(parent.path)
            if self.text_at(parent.start).startswith("{{"):
                # `say: {{ name }}` unquoted: YAML reads a mapping inside a mapping.
                self.diag(
                    "E-YAML-TEMPLATE-QUOTES",
                    "text that starts with {{ must be quoted",
                    _mark_span(parent.start, event.end_mark),
                    'quote the whole value: say: "{{ name }}"',
                )
            else:
                self.diag(
                    "E-YAML-KEY-TYPE",
                    "a mapping or list used as a key",
                    span,
                    "keys are plain names: `name: value`",
                )
            parent.skip_depth = 1
            return
        if len(self.stack) >= MAX_DEPTH:
            self.abort("E-YAML-TOO-DEEP", f"nesting deeper than {MAX_DEPTH} levels", span)
        self._count(1, span)
        path = self._child_path()
        if event.tag and event.tag not in _COLLECTION_TAGS:
            self.diag("E-YAML-TAG", f"unsupported tag {_short(event.tag)}", span)
            self.damaged.add(path)
        value: Any = {} if isinstance(event, yaml.MappingStartEvent) else []
        if event.anchor:
            self.open_anchors.add(event.anchor)
        self.stack.append(
            _Frame(
                path=path,
                value=value,
                start=event.start_mark,
                anchor=event.anchor,
                flow=bool(event.flow_style),
            )
        )

    def _close(self, event: yaml.Event) -> None:
        frame = self.stack.pop()
        span = _mark_span(frame.start, event.end_mark)
        if isinstance(frame.value, dict):
            for merged in frame.merges:
                for k, v in merged.items():
                    frame.value.setdefault(k, v)
        if frame.anchor:
            self.open_anchors.discard(frame.anchor)
            self.anchors[frame.anchor] = (frame.value, frame.size)
        self._attach(frame.value, span, frame.size, style="", path=frame.path)

    # --- building -----------------------------------------------------------------------------

    def _taking_key(self) -> bool:
        return (
            bool(self.stack)
            and isinstance(self.stack[-1].value, dict)
            and (self.stack[-1].key is _NOTHING)
        )

    def _child_path(self) -> Path:
        if not self.stack:
            return ()
        frame = self.stack[-1]
        if isinstance(frame.value, list):
            return (*frame.path, len(frame.value))
        key = frame.key if isinstance(frame.key, str) else "<invalid key>"
        return (*frame.path, key)

    def _key(self, event: yaml.ScalarEvent, span: Span) -> None:
        frame = self.stack[-1]
        tag = self._tag(event)
        if tag == _MERGE:
            frame.key = _MERGE
            return
        if tag != _STR:
            kind = _KINDS.get(tag.rsplit(":", 1)[-1], "value")
            msg = f"key {event.value!r} is read as {kind} by YAML 1.1, not as text"
            self.diag("E-YAML-KEY-TYPE", msg, span, f"quote it: '{event.value}':")
            # Kept as the text it was written as, so that later checks still see it (a goto to
            # node `yes`), but marked so that no other check reports the key again.
            self.damaged.add((*frame.path, str(event.value)))
        key = str(event.value)
        if key in frame.seen:
            first = frame.seen[key]
            self.diag(
                "E-YAML-DUPLICATE-KEY",
                f"key '{key}' appears twice in this mapping",
                span,
                f"the first '{key}' is at line {first.line}; remove or rename one",
            )
            self.damaged.add(frame.path)
            frame.key = _SKIP
            return
        frame.seen[key] = span
        frame.key = key
        self.key_spans[(*frame.path, key)] = span

    def _tag(self, event: yaml.ScalarEvent) -> str:
        if event.tag and event.tag != "!":
            return str(event.tag)
        if event.tag == "!":
            return _STR
        return str(_resolver.resolve(ScalarNode, event.value, event.implicit))  # type: ignore[no-untyped-call]

    def _construct(self, event: yaml.ScalarEvent, span: Span) -> Any:
        tag = self._tag(event)
        if tag not in _SCALAR_TAGS:
            self.diag("E-YAML-TAG", f"unsupported tag {_short(tag)}", span)
            self.damaged.add(self._child_path())
            return event.value
        node = ScalarNode(tag, event.value, style=event.style)
        try:
            return _constructor.yaml_constructors[tag](_constructor, node)
        except (ConstructorError, ValueError) as exc:
            self.diag("E-YAML-TAG", f"{event.value!r} is not a valid {tag}: {exc}", span)
            return event.value

    def _attach(
        self, value: Any, span: Span, size: int, style: str, path: Path | None = None
    ) -> None:
        if not self.stack:
            self.root = value
            self.spans[()] = span
            return
        frame = self.stack[-1]
        frame.size += size
        if isinstance(frame.value, list):
            child: Path = path if path is not None else (*frame.path, len(frame.value))
            frame.value.append(value)
        else:
            key, frame.key = frame.key, _NOTHING
            if key is _SKIP:
                return
            if key is _MERGE:
                self._merge(frame, value, span)
                return
            child = (*frame.path, key)
            frame.value[key] = value
        self.spans[child] = span
        if style:
            self.styles[child] = style

    def _merge(self, frame: _Frame, value: Any, span: Span) -> None:
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(item, dict) for item in items):
            self.diag(
                "E-YAML-MERGE", "a merge key (<<) takes a mapping or a list of mappings", span
            )
            return
        for item in items:
            frame.merges.append(item)
            for k in item:
                self.spans.setdefault((*frame.path, k), span)
                self.key_spans.setdefault((*frame.path, k), span)


_KINDS = {"bool": "a boolean", "int": "a number", "float": "a number", "null": "null",
          "timestamp": "a date"}  # fmt: skip

# libyaml's messages, and what usually causes them in a flow.
_SYNTAX_HINTS = (
    ("cannot start any token", "\t", "YAML does not allow tabs for indentation; use spaces"),
    (
        "mapping values are not allowed",
        "",
        "a ': ' inside unquoted text starts a mapping; quote the text",
    ),
    ("did not find expected key", "", "check this line's indentation against the lines above"),
    ("did not find expected '-'", "", "check this line's indentation against the list above"),
    ("found unexpected end of stream", "", "a quote or bracket opened here is never closed"),
    ("found undefined alias", "", "define the anchor (&name) before using *name"),
)


def _syntax_hint(problem: str, text: str, span: Span) -> str:
    lines = text.splitlines()
    line = lines[span.line - 1] if 0 < span.line <= len(lines) else ""
    for needle, char, hint in _SYNTAX_HINTS:
        if needle in problem and (not char or char in line):
            return hint
    return ""


def _short(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!")
