"""A named flow's params as the doors see them: checked values, a description, a JSON Schema.

The Gateway methods check ``params`` against the flow (each error names the param), the
``voicecall.flows`` method describes each flow, and the agent tool and MCP build their input
schemas from the same description, so an agent sees exactly what a call will accept.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from voicecall.dsl import model as m
from voicecall.plugin.params import ParamError, coerce

JSON_TYPES = {"string": "string", "integer": "integer", "number": "number", "boolean": "boolean"}
MAX_VALUE_CHARS = 2000


def _typed(param: m.Param, value: Any) -> Any:
    """``value`` as the param's type; strings (from a command line) are coerced."""
    kind = param.type
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
        "boolean": isinstance(value, bool),
    }.get(kind, isinstance(value, str | int | float | bool))
    if ok:
        return value
    if isinstance(value, str) and kind in ("integer", "number", "boolean"):
        if kind == "boolean" and value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"param {param.name}: expected a boolean, got {value!r}")
        try:
            return coerce(kind, value)
        except ParamError:
            raise ValueError(f"param {param.name}: expected {_a(kind)}, got {value!r}") from None
    raise ValueError(f"param {param.name}: expected {_a(kind)}, got {_kind(value)}")


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {dict: "an object", list: "a list", str: "a string", int: "an integer",
            float: "a number"}.get(type(value), type(value).__name__)  # fmt: skip


def check_params(flow: m.Flow, given: Mapping[str, Any]) -> dict[str, Any]:
    """The values a call of ``flow`` starts with.

    Raises:
        ValueError: an unknown param, a missing required one, a value of the wrong type or
            not among the param's choices; the message names the param and the flow.
    """
    values: dict[str, Any] = {}
    known = ", ".join(p.name for p in flow.params) or "none"
    for key, value in given.items():
        param = flow.param(str(key))
        if param is None:
            raise ValueError(f"flow {flow.name} has no param {key} (its params: {known})")
        typed = _typed(param, value)
        if isinstance(typed, str) and len(typed) > MAX_VALUE_CHARS:
            raise ValueError(f"param {key}: longer than {MAX_VALUE_CHARS} characters")
        if param.choices and typed not in param.choices:
            allowed = ", ".join(str(c) for c in param.choices)
            raise ValueError(f"param {key}: {typed!r} is not one of {allowed}")
        values[param.name] = typed
    missing = [p.name for p in flow.params
               if p.required and not p.has_default and p.name not in values]  # fmt: skip
    if missing:
        raise ValueError(f"flow {flow.name} needs param {', '.join(missing)}")
    return values


def param_schema(param: m.Param) -> dict[str, Any]:
    """One param as JSON Schema: its type, description, choices and default."""
    out: dict[str, Any] = {"type": JSON_TYPES.get(param.type, "string")}
    if param.description:
        out["description"] = param.description
    if param.choices:
        out["enum"] = list(param.choices)
    if param.has_default:
        out["default"] = param.default
    return out


def params_schema(flow: m.Flow) -> dict[str, Any]:
    """A flow's params as a JSON Schema object (required: those without a default)."""
    required = [p.name for p in flow.params if p.required and not p.has_default]
    out: dict[str, Any] = {
        "type": "object",
        "properties": {p.name: param_schema(p) for p in flow.params},
        "additionalProperties": False,
    }
    if required:
        out["required"] = required
    return out


def describe_flow(flow: m.Flow) -> dict[str, Any]:
    """A flow as ``voicecall.flows`` lists it."""
    params = []
    for p in flow.params:
        item: dict[str, Any] = {"name": p.name, "type": p.type,
                                "required": p.required and not p.has_default,
                                "description": p.description}  # fmt: skip
        if p.has_default:
            item["default"] = p.default
        if p.choices:
            item["choices"] = list(p.choices)
        params.append(item)
    return {"name": flow.name, "description": flow.description, "direction": flow.direction,
            "params": params}  # fmt: skip
