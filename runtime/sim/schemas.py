"""The JSON Schemas of caller scripts (``caller.schema.json``) and flow tests
(``test.schema.json``), and their errors as positioned diagnostics.

The test schema refers to the caller schema's step definitions (``caller.schema.json#/$defs/…``)
so that editors resolve them beside it; :func:`flow_test_schema` returns it bundled into one
standalone document, as `voicecall schema --test` prints it.
"""

from __future__ import annotations

import datetime
import json
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.protocols import Validator

from voicecall.dsl.errors import Diagnostic
from voicecall.dsl.loader import Document
from voicecall.dsl.schema import check_schema

_CALLER_REF = "caller.schema.json#/$defs/"


def _read(name: str) -> dict[str, Any]:
    text = resources.files("voicecall.runtime.sim").joinpath(name).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


@cache
def caller_schema() -> dict[str, Any]:
    """The caller-script JSON Schema as a dict."""
    return _read("caller.schema.json")


@cache
def flow_test_schema() -> dict[str, Any]:
    """The flow-test JSON Schema as a dict, with the caller schema's definitions bundled in."""
    bundled: dict[str, Any] = _rebase(_read("test.schema.json"))
    # The two files name their definitions apart (a test checks it), so they merge as they are.
    bundled["$defs"] = {**bundled["$defs"], **caller_schema()["$defs"]}
    return bundled


def _rebase(node: Any) -> Any:
    """Turns references into the caller schema into references inside this one."""
    if isinstance(node, list):
        return [_rebase(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _rebase(value) for key, value in node.items()}
    ref = out.get("$ref")
    if isinstance(ref, str) and ref.startswith(_CALLER_REF):
        out["$ref"] = "#/$defs/" + ref.removeprefix(_CALLER_REF)
    return out


# YAML reads an unquoted 2026-01-05T19:30:00 (or 2026-01-05) as a timestamp: it is the
# date-time text the schema asks for, so `now:` need not be quoted.
_TYPES = Draft202012Validator.TYPE_CHECKER.redefine(
    "string", lambda _checker, value: isinstance(value, str | datetime.date)
)
_YamlValidator = validators.extend(Draft202012Validator, type_checker=_TYPES)  # type: ignore[no-untyped-call]


@cache
def _caller_validator() -> Validator:
    validator: Validator = _YamlValidator(caller_schema())
    return validator


@cache
def _test_validator() -> Validator:
    validator: Validator = _YamlValidator(flow_test_schema())
    return validator


def check_caller(doc: Document) -> list[Diagnostic]:
    """Validates a caller script; one positioned diagnostic per problem."""
    return check_schema(doc, _caller_validator(), "the caller script")


def check_test(doc: Document) -> list[Diagnostic]:
    """Validates a flow test file; one positioned diagnostic per problem."""
    return check_schema(doc, _test_validator(), "the flow test")
