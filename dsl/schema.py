"""The flow JSON Schema, and its errors turned into positioned diagnostics.

``flow.schema.json`` is the single description of the language's shape: editors use it through
yaml-language-server, `voicecall schema` prints it, and :func:`check_schema` validates a loaded
document against it. Schemas carrying ``x-code`` / ``x-message`` choose the diagnostic code and
wording for their failures (durations, phone numbers, names, actions).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable, Iterable, Iterator
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator

from voicecall.dsl.errors import Diagnostic, Span, did_you_mean
from voicecall.dsl.loader import Document, Path

ACTIONS = (
    "say", "play", "pause", "ask", "converse", "set", "branch",
    "goto", "transfer", "send_digits", "call_flow", "hangup",
)  # fmt: skip


@cache
def flow_schema() -> dict[str, Any]:
    """Returns the flow JSON Schema (DSL version 1) as a dict."""
    text = resources.files("voicecall.dsl").joinpath("flow.schema.json").read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def _validator() -> Draft202012Validator:
    # The schema has no recursive references, so they are inlined once: resolving `$ref` on
    # every value was a quarter of validation time.
    schema = flow_schema()
    return Draft202012Validator(_inline_refs(schema, schema["$defs"]))


def _inline_refs(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_inline_refs(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _inline_refs(v, defs) for k, v in node.items() if k not in ("$ref", "$defs")}
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target = _inline_refs(defs[ref.removeprefix("#/$defs/")], defs)
        return {**target, **out}
    return out


def check_schema(
    doc: Document, validator: Validator | None = None, subject: str = "the flow"
) -> list[Diagnostic]:
    """Validates a document against the flow schema, or another format's (caller scripts and
    flow tests) given as ``validator``, with ``subject`` naming the document in messages.

    Returns:
        One diagnostic per problem, located at the offending key or value.
    """
    mapper = _Mapper(doc, subject)
    for error in (validator or _validator()).iter_errors(doc.data):
        mapper.add(error)
    return mapper.result()


def type_name(value: Any) -> str:
    """The name a flow author knows a YAML value's type by."""
    for kind, show in _TYPE_NAMES:
        if isinstance(value, kind):
            return show(value)
    return type(value).__name__


_TYPE_NAMES: tuple[tuple[type | tuple[type, ...], Callable[[Any], str]], ...] = (
    (type(None), lambda v: "empty (null)"),
    (bool, lambda v: f"boolean {str(v).lower()}"),
    ((int, float), lambda v: f"number {v}"),
    (str, lambda v: "text"),
    (dict, lambda v: "mapping"),
    (list, lambda v: "list"),
    (datetime.date, lambda v: f"date {v.isoformat()}"),
)


_EXPECTED = {
    "string": "text", "object": "a mapping", "array": "a list", "integer": "a whole number",
    "number": "a number", "boolean": "true or false", "null": "nothing",
}  # fmt: skip


class _Mapper:
    def __init__(self, doc: Document, subject: str = "the flow"):
        self.doc = doc
        self.subject = subject
        self.out: dict[tuple[str, int, int, str], Diagnostic] = {}
        self.action_paths: set[Path] = set()

    def result(self) -> list[Diagnostic]:
        return sorted(self.out.values(), key=lambda d: d.sort_key)

    def emit(self, code: str, message: str, span: Span, hint: str | None = None) -> None:
        diag = Diagnostic.make(code, message, self.doc.file, span, hint)
        self.out.setdefault((code, span.line, span.col, message), diag)

    def add(self, error: ValidationError) -> None:
        kind = error.validator
        if kind in ("anyOf", "oneOf"):
            for sub in self._branch(error):
                self.add(sub)
            return
        path: Path = tuple(error.absolute_path)
        schema = error.schema if isinstance(error.schema, dict) else {}
        if path in self.doc.damaged and kind != "additionalProperties":
            return  # the loader already reported what is wrong here
        if "propertyNames" in error.absolute_schema_path:
            if (*path, str(error.instance)) in self.doc.damaged:
                return
            # jsonschema reports the object's path with the offending name as the instance.
            msg = f"{schema.get('x-message', 'not a valid name')}: {_show(error.instance)}"
            span = self.doc.span((*path, str(error.instance)), key=True)
            self.emit(schema.get("x-code", "E-NAME-INVALID"), msg, span)
            return
        if schema.get("x-code") == "E-SCHEMA-ACTION" and kind != "enum":
            self._action(path, error.instance)
            return
        handler = getattr(self, f"_on_{kind}", None)
        if handler is not None:
            handler(error, path, schema)
        else:
            self.emit("E-SCHEMA-VALUE", error.message, self.doc.span(path))

    def _branch(self, error: ValidationError) -> Iterable[ValidationError]:
        """For `text or mapping` alternatives, keeps the errors of the branch of the right type."""
        by_branch: dict[int, list[ValidationError]] = {}
        for sub in error.context or ():
            by_branch.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
        for subs in by_branch.values():
            if not any(s.validator == "type" and not s.relative_path for s in subs):
                return subs
        path: Path = tuple(error.absolute_path)
        if path in self.doc.damaged:
            return ()
        schema = error.schema if isinstance(error.schema, dict) else {}
        branches = schema.get("anyOf") or schema.get("oneOf") or []
        kinds = [_branch_kind(b) for b in branches]
        expected = " or ".join(k for k in kinds if k) or "another value"
        msg = f"{_describe(path)}: expected {expected}, got {type_name(error.instance)}"
        hint = self._quote_hint(path, error.instance, "text" in kinds)
        self.emit("E-SCHEMA-TYPE", msg, self.doc.span(path), hint)
        return ()

    # --- one handler per JSON Schema keyword --------------------------------------------------

    def _on_additionalProperties(self, error: ValidationError, path: Path, schema: Any) -> None:
        allowed = list(schema.get("properties", {}))
        for key in _extra_keys(error.instance, schema):
            if (*path, key) in self.doc.damaged:
                continue
            where = f" at the top of {self.subject}" if not path else f" in {_describe(path)}"
            hint = did_you_mean(key, allowed) or (
                f"allowed keys: {', '.join(allowed)}" if allowed else None
            )
            if " " in key:
                hint = "a comma inside {…} separates entries: quote text that contains one"
            self.emit(
                "E-SCHEMA-UNKNOWN-KEY",
                f"unknown key '{key}'{where}",
                self.doc.span((*path, key), key=True),
                hint,
            )

    def _on_required(self, error: ValidationError, path: Path, schema: Any) -> None:
        missing = str(error.message).split("'")[1] if "'" in error.message else "?"
        msg = f"{_describe(path)} is missing the required key '{missing}'"
        span = self.doc.span(path, key=True)
        if not path:
            msg = f"{self.subject} is missing the required key '{missing}'"
            root = self.doc.span(())
            span = Span.point(root.line, root.col)
        self.emit("E-SCHEMA-MISSING-KEY", msg, span, _required_hint(missing, schema))

    def _on_type(self, error: ValidationError, path: Path, schema: Any) -> None:
        types = schema.get("type")
        names = [types] if isinstance(types, str) else list(types or [])
        expected = " or ".join(_EXPECTED.get(t, t) for t in names)
        value = error.instance
        msg = f"expected {expected}, got {type_name(value)}"
        if path:
            msg = f"{_describe(path)}: {msg}"
        code = schema.get("x-code", "E-SCHEMA-TYPE")
        hint = self._quote_hint(path, value, "string" in names)
        raw = _source_text(self.doc, path) or ""
        if code == "E-PHONE-INVALID" and hint and not raw.startswith("+"):
            # Quoting the digits alone would still not be E.164.
            hint = (f"YAML reads {raw} as {type_name(value)}; write the number as quoted text, "
                    "+ then the country code and number: '+15551234567'")  # fmt: skip
        elif code == "E-DURATION-INVALID" and isinstance(value, int | float):
            msg = f"{_describe(path)}: {value} has no unit, so it is not a duration"
            hint = f"add a unit: {value}s, or {value}ms"
        elif value is None and path and path[0] == "nodes" and len(path) == 2:
            hint = "a node is a list of actions: `- say: …`"
        self.emit(code, msg, self.doc.span(path), hint)

    def _on_enum(self, error: ValidationError, path: Path, schema: Any) -> None:
        if schema.get("x-code") == "E-SCHEMA-ACTION":
            word = str(error.instance)
            hint = did_you_mean(word, ACTIONS) or schema.get("x-message")
            msg = f"'{word}' is not an action"
            if word in ACTIONS:
                msg = f"{word} needs an argument"
                hint = f"write `- {word}: …`, for example `- {_EXAMPLES.get(word, word + ': …')}`"
            self.emit("E-SCHEMA-ACTION", msg, self.doc.span(path), hint)
            return
        choices = [str(c) for c in schema["enum"]]
        msg = f"{_describe(path)}: {_show(error.instance)} is not one of {', '.join(choices)}"
        hint = did_you_mean(str(error.instance), choices) or None
        self.emit("E-SCHEMA-VALUE", msg, self.doc.span(path), hint)

    def _on_const(self, error: ValidationError, path: Path, schema: Any) -> None:
        code = schema.get("x-code", "E-SCHEMA-VALUE")
        msg = f"{schema.get('x-message', 'value not allowed')}, not {_show(error.instance)}"
        self.emit(code, msg, self.doc.span(path))

    def _on_pattern(self, error: ValidationError, path: Path, schema: Any) -> None:
        code = schema.get("x-code", "E-SCHEMA-VALUE")
        msg = f"{schema.get('x-message', 'value not allowed')}: {_show(error.instance)}"
        self.emit(code, msg, self.doc.span(path))

    def _on_minItems(self, error: ValidationError, path: Path, schema: Any) -> None:
        self.emit("E-SCHEMA-VALUE", f"{_describe(path)} is an empty list", self.doc.span(path))

    def _on_minProperties(self, error: ValidationError, path: Path, schema: Any) -> None:
        self.emit("E-SCHEMA-VALUE", f"{_describe(path)} is empty", self.doc.span(path))

    def _on_minLength(self, error: ValidationError, path: Path, schema: Any) -> None:
        self.emit("E-SCHEMA-VALUE", f"{_describe(path)} is empty text", self.doc.span(path))

    def _on_uniqueItems(self, error: ValidationError, path: Path, schema: Any) -> None:
        self.emit("E-SCHEMA-VALUE", f"{_describe(path)} lists a value twice", self.doc.span(path))

    def _on_maxProperties(self, error: ValidationError, path: Path, schema: Any) -> None:
        msg = schema.get("x-message", f"at most {schema['maxProperties']} keys")
        self.emit("E-SCHEMA-VALUE", f"{_describe(path)}: {msg}", self.doc.span(path))

    def _on_minimum(self, error: ValidationError, path: Path, schema: Any) -> None:
        msg = f"{_describe(path)}: {error.instance} is less than the minimum {schema['minimum']}"
        self.emit("E-SCHEMA-VALUE", msg, self.doc.span(path))

    def _on_maximum(self, error: ValidationError, path: Path, schema: Any) -> None:
        msg = f"{_describe(path)}: {error.instance} is more than the maximum {schema['maximum']}"
        self.emit("E-SCHEMA-VALUE", msg, self.doc.span(path))

    # --- actions --------------------------------------------------------------------------------

    def _action(self, path: Path, instance: Any) -> None:
        if path in self.action_paths:
            return
        self.action_paths.add(path)
        if not isinstance(instance, dict):
            msg = f"expected an action, got {type_name(instance)}"
            self.emit(
                "E-SCHEMA-ACTION", msg, self.doc.span(path), "write `- say: text`, `- goto: node`…"
            )
            return
        if not instance:
            self.emit("E-SCHEMA-ACTION", "an empty mapping is not an action", self.doc.span(path))
            return
        known = [k for k in instance if k in ACTIONS]
        for key in instance:
            if key in ACTIONS:
                continue
            span = self.doc.span((*path, key), key=True)
            if known and " " in key:
                msg = f"'{key}' is read as a key: a comma inside {{…}} separates entries"
                hint = f'quote the text: `{known[0]}: "…, {key}"`'
            elif known:
                msg = f"'{key}' is not an action; it looks like an option of '{known[0]}'"
                hint = f"put options under the action: `{known[0]}: {{…, {key}: …}}`"
            else:
                msg, hint = f"unknown action '{key}'", did_you_mean(key, ACTIONS)
                hint = hint or f"actions: {', '.join(ACTIONS)}"
            self.emit("E-SCHEMA-ACTION", msg, span, hint)
        if len(known) > 1:
            span = self.doc.span((*path, known[1]), key=True)
            msg = f"one action per list item, found {' and '.join(repr(k) for k in known)}"
            self.emit("E-SCHEMA-ACTION", msg, span, "start each action with its own '- '")

    def _quote_hint(self, path: Path, value: Any, text_ok: bool = True) -> str | None:
        if value is None:
            return "nothing is written after the colon; write a value"
        if not text_ok or isinstance(value, str | dict | list) or not self.doc.is_plain(path):
            return None
        raw = _source_text(self.doc, path)
        if raw is None:
            return None
        return f"YAML reads {raw} as {type_name(value)}; to mean the text, quote it: '{raw}'"


def _branch_kind(schema: dict[str, Any]) -> str:
    if "$ref" in schema or schema.get("type") == "string":
        return "text"
    if schema.get("type") == "object":
        return "a mapping"
    if schema.get("type") == "array":
        return "a list"
    if "const" in schema:
        return repr(schema["const"])
    return ""


def _extra_keys(instance: Any, schema: dict[str, Any]) -> Iterator[str]:
    if not isinstance(instance, dict):
        return
    props = schema.get("properties", {})
    for key in instance:
        if key not in props:
            yield str(key)


def _describe(path: Path) -> str:
    """Names a path the way an author would: `nodes.greet[1].ask.retries`."""
    if not path:
        return "the flow"
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def _source_text(doc: Document, path: Path) -> str | None:
    span = doc.spans.get(path)
    if span is None or span.line != span.end_line or span.line > len(doc.lines):
        return None
    return doc.lines[span.line - 1][span.col - 1 : span.end_col - 1]


_EXAMPLES = {
    "say": "say: Hello", "play": "play: https://example.com/a.mp3", "pause": "pause: 1s",
    "ask": "ask: {prompt: …, save_as: answer}", "converse": "converse: {driver: agent}",
    "set": "set: {count: 0}", "branch": "branch: […]", "goto": "goto: node",
    "transfer": "transfer: '+15551234567'", "send_digits": "send_digits: '1234#'",
    "call_flow": "call_flow: name",
}  # fmt: skip

_REQUIRED_HINTS = {
    "version": "add `version: 1` at the top",
    "name": "add `name: my-flow`",
    "start": "add `start:` naming the first node",
    "nodes": "add `nodes:` with at least one node",
}


def _required_hint(key: str, schema: Any) -> str | None:
    """How to add the missing key: its values, when the schema lists them."""
    props = schema.get("properties") if isinstance(schema, dict) else None
    choices = (props or {}).get(key, {}).get("enum")
    if key not in _REQUIRED_HINTS and choices:
        return f"add `{key}:` with one of {', '.join(str(c) for c in choices)}"
    return _REQUIRED_HINTS.get(key)
