"""Diagnostics: stable codes, source spans, and the text and JSON renderings.

Every problem the loader or a check finds is a :class:`Diagnostic` naming a code from
:data:`CODES`, a severity, and a :class:`Span` in the file. Rendering follows the compiler
convention (``file:line:col: severity[CODE]: message``, the source line, a caret, a hint).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class Span:
    """A range in a source file: 1-based line and column, end exclusive, in characters."""

    line: int
    col: int
    end_line: int
    end_col: int

    @classmethod
    def point(cls, line: int, col: int, width: int = 1) -> Span:
        return cls(line=line, col=col, end_line=line, end_col=col + max(width, 1))


@dataclass(frozen=True, slots=True)
class Code:
    """A diagnostic code: its id, default severity, and the hint shown when none is given."""

    id: str
    severity: Severity
    summary: str
    hint: str = ""


def _e(id_: str, summary: str, hint: str = "") -> Code:
    return Code(id_, Severity.ERROR, summary, hint)


def _w(id_: str, summary: str, hint: str = "") -> Code:
    return Code(id_, Severity.WARNING, summary, hint)


def _i(id_: str, summary: str, hint: str = "") -> Code:
    return Code(id_, Severity.INFO, summary, hint)


# The stable codes. Renaming one is a breaking change for users who filter on them.
CODES: dict[str, Code] = {
    c.id: c
    for c in (
        # Files and YAML
        _e("E-FILE-READ", "the file cannot be read"),
        _e(
            "E-FILE-TOO-LARGE",
            "the file is larger than the 1 MiB limit",
            "a call flow is a few kilobytes; split it with call_flow",
        ),
        _e("E-FILE-BINARY", "the file is binary, not YAML text"),
        _e("E-FILE-ENCODING", "the file is not valid UTF-8", "save the file as UTF-8"),
        _e("E-YAML-SYNTAX", "YAML syntax error"),
        _e(
            "E-YAML-EMPTY",
            "the file holds no flow",
            "start from `voicecall flows` or a bundled flow",
        ),
        _e("E-YAML-MULTI-DOC", "more than one YAML document", "one flow per file"),
        _e("E-YAML-DUPLICATE-KEY", "duplicate key", "remove or rename one of them"),
        _e(
            "E-YAML-KEY-TYPE",
            "a key that is not a string",
            "quote the key; YAML 1.1 reads on/off/yes/no as booleans and 1 as a number",
        ),
        _e("E-YAML-TAG", "unsupported YAML tag", "remove the tag; flows use plain YAML values"),
        _e(
            "E-YAML-ALIAS",
            "alias problem (undefined, recursive or expanding too far)",
            "anchors and aliases may share small pieces, not build large or cyclic trees",
        ),
        _e("E-YAML-TOO-DEEP", "nesting deeper than the limit"),
        _e("E-YAML-MERGE", "a merge key (<<) whose value is not a mapping"),
        _e("E-YAML-TEMPLATE-QUOTES", "an unquoted value that starts with {{"),
        # Schema
        _e("E-SCHEMA-UNKNOWN-KEY", "unknown key"),
        _e("E-SCHEMA-MISSING-KEY", "a required key is missing"),
        _e("E-SCHEMA-TYPE", "a value of the wrong type"),
        _e("E-SCHEMA-VALUE", "a value that is not allowed"),
        _e("E-SCHEMA-ACTION", "not an action"),
        _e("E-SCHEMA-VERSION", "unsupported flow version", "write `version: 1`"),
        _e("E-NAME-INVALID", "not a valid name"),
        _e(
            "E-DURATION-INVALID",
            "not a duration",
            "write a number with a unit: 500ms, 6s, 2m, 1h, or 1m30s",
        ),
        _e("E-DURATION-RANGE", "a duration out of range"),
        _e(
            "E-PHONE-INVALID",
            "not an E.164 phone number",
            "write + then the country code and number, digits only: +15551234567",
        ),
        _e("E-DIGITS-INVALID", "not a DTMF digit string"),
        # Graph
        _e("E-START-UNKNOWN", "the start node does not exist"),
        _e("E-GOTO-UNKNOWN", "a jump to a node that does not exist"),
        _w(
            "W-NODE-UNREACHABLE",
            "a node no path reaches",
            "remove it, or jump to it from another node",
        ),
        _w(
            "W-ACTION-UNREACHABLE",
            "actions after one that never continues",
            "nothing after goto, branch, hangup, transfer or converse runs; move or remove them",
        ),
        _e(
            "E-CALLER-TRAP",
            "a loop callers can never leave",
            "give the loop an exit: a branch case that goes on, a hangup, a transfer or a converse",
        ),
        _e(
            "E-LOOP-TIGHT",
            "a loop that never waits for the caller",
            "put an ask, pause or converse in the loop, or bound it with a counter and a branch",
        ),
        _w(
            "W-LOOP-NO-INPUT",
            "a loop that speaks but never listens",
            "add an ask or pause, or bound the loop with a counter",
        ),
        _e("E-HANDLER-UNKNOWN", "a handler names a node that does not exist"),
        _w(
            "W-HANDLER-HANGUP-SPEAKS",
            "a hangup handler that speaks or listens",
            "the caller is gone when it runs: keep to set and call_flow",
        ),
        _e(
            "E-BRANCH-ELSE",
            "a branch whose else case is missing or not last",
            "end every branch with `- else: node`",
        ),
        # Templates and variables
        _e("E-TEMPLATE-SYNTAX", "template syntax error"),
        _e(
            "E-EXPR-SYNTAX",
            "expression syntax error",
            "a `when:` or `set:` value is a bare expression, without {{ }}",
        ),
        _e("E-EXPR-FILTER", "unknown filter or test"),
        _e("E-VAR-UNDEFINED", "a variable no param, ask, set or call_flow defines"),
        _e("E-VAR-ATTRIBUTE", "an attribute the value does not have"),
        _e(
            "E-VAR-SECRET",
            "a template reads a secret from config",
            "credentials never go into call audio or logs; read only non-secret config keys",
        ),
        _w(
            "W-VAR-MAYBE-UNSET",
            "a variable that some paths reach before it is set",
            "set it before every path that reads it, or give the param a default",
        ),
        _e(
            "E-VAR-RESERVED",
            "a variable name that is reserved",
            "call, settings, config and now are built in; choose another name",
        ),
        # Params
        _e("E-PARAM-DEFAULT", "a param default that does not match its type or choices"),
        _e(
            "E-PARAM-INBOUND-REQUIRED",
            "an inbound flow with a required param",
            "nobody passes params to an inbound call; give it a default",
        ),
        _w("W-PARAM-UNUSED", "a param the flow never reads"),
        _w(
            "W-PARAM-REQUIRED-DEFAULT",
            "a required param with a default",
            "a param with a default is never missing; drop `required` or the default",
        ),
        # Flow level
        _w(
            "W-FLOW-DESCRIPTION",
            "a flow without a description",
            "the agent picks flows by their description; say what the flow does",
        ),
        _w("W-ADMIT-OUTBOUND", "`admit` on an outbound flow has no effect"),
        _e("E-TIMEZONE-UNKNOWN", "a `timezone:` that is not an IANA time zone"),
        _e(
            "E-ADMIT-ALLOWLIST",
            "an allowlist with no numbers",
            "list the callers in `allow_from`, or use policy open or disabled",
        ),
        _w("W-ASK-OPTION-UNUSED", "an ask option that has no effect with its input kinds"),
        _e("E-ASK-MATCH-UNSAVED", "an ask whose match cannot read the answer"),
        _e(
            "E-ASK-EXIT-MATCH",
            "on_no_match without a way to not match",
            "add `match:` or `valid_digits:` so that an answer can be rejected",
        ),
        _e(
            "E-CONVERSE-DONE",
            "a conversation that collects values with nowhere to go when it finishes",
            "add `on_done: node`; the collected names are set from there on",
        ),
        _e(
            "E-CONVERSE-EXIT-TURNS",
            "on_timeout on a conversation without max_turns",
            "add `max_turns:` (the caller turns before on_timeout), or remove on_timeout",
        ),
        # Subflows
        _e("E-FLOW-UNKNOWN", "call_flow names a flow that does not exist"),
        _e("E-FLOW-CYCLE", "flows that call each other in a cycle"),
        _e("E-FLOW-PARAM", "call_flow params that do not match the called flow"),
        _e("E-FLOW-DUPLICATE", "two flows with the same name"),
        # Providers
        _e("E-PROVIDER-UNKNOWN", "unknown provider"),
        _e("E-PROVIDER-UNSUPPORTED", "something the provider cannot express"),
        _w("W-PROVIDER-IGNORED", "an option the provider ignores"),
        _w("W-PROVIDER-ADJUSTED", "a value changed to one the provider accepts"),
        _i("I-PROVIDER-EMULATED", "something the provider does not have, built from what it has"),
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Diagnostic:
    """One finding, located in a file.

    Args:
        code: an id from :data:`CODES`.
        message: what is wrong here, naming the offending value.
        file: the path as shown to the user.
        span: where in the file.
        hint: how to fix it; the code's default hint when empty.
        severity: defaults to the code's severity.
    """

    code: str
    message: str
    file: str
    span: Span
    hint: str = ""
    severity: Severity = field(default=Severity.ERROR)

    @classmethod
    def make(
        cls, code: str, message: str, file: str, span: Span, hint: str | None = None
    ) -> Diagnostic:
        spec = CODES[code]
        return cls(
            code=code,
            message=message,
            file=file,
            span=span,
            hint=spec.hint if hint is None else hint,
            severity=spec.severity,
        )

    @property
    def sort_key(self) -> tuple[str, int, int, str]:
        return (self.file, self.span.line, self.span.col, self.code)

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "line": self.span.line,
            "col": self.span.col,
            "end_line": self.span.end_line,
            "end_col": self.span.end_col,
            "code": self.code,
            "severity": self.severity.value,
            "message": self.message,
            "hint": self.hint,
        }


class FlowError(Exception):
    """Raised where a caller needs a valid flow and the checks found errors."""

    def __init__(self, diagnostics: Sequence[Diagnostic]):
        self.diagnostics = tuple(diagnostics)
        first = self.diagnostics[0] if self.diagnostics else None
        where = f"{first.file}:{first.span.line}:{first.span.col}: " if first else ""
        more = f" (and {len(self.diagnostics) - 1} more)" if len(self.diagnostics) > 1 else ""
        super().__init__(f"{where}{first.message if first else 'invalid flow'}{more}")


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Returns a "did you mean 'x'?" hint for the closest choice, or "" if none is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{match[0]}'?" if match else ""


def render_text(diag: Diagnostic, source_lines: Sequence[str], color: bool = False) -> str:
    """Renders one diagnostic with its source line and a caret under the span."""
    sev = diag.severity.value
    head = f"{diag.file}:{diag.span.line}:{diag.span.col}: {sev}[{diag.code}]: {diag.message}"
    if color:
        tint = {"error": "\x1b[1;31m", "warning": "\x1b[1;33m", "info": "\x1b[1;36m"}[sev]
        head = head.replace(f"{sev}[", f"{tint}{sev}\x1b[0m[", 1)
    out = [head]
    if 1 <= diag.span.line <= len(source_lines):
        text = source_lines[diag.span.line - 1].rstrip("\r\n").expandtabs(1)
        out.append(f"    {text}")
        width = (
            diag.span.end_col - diag.span.col
            if diag.span.end_line == diag.span.line
            else len(text) - diag.span.col + 1
        )
        width = max(1, min(width, max(1, len(text) - diag.span.col + 1)))
        out.append("    " + " " * (diag.span.col - 1) + "^" + "~" * (width - 1))
    if diag.hint:
        out.append(f"  hint: {diag.hint}")
    return "\n".join(out)
