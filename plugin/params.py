"""Flow params from the command line: ``--param K=V``, the same on every command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from voicecall.dsl import model as m
from voicecall.dsl.errors import did_you_mean
from voicecall.dsl.values import is_e164, parse_duration


class ParamError(ValueError):
    """A ``--param`` that does not fit the flow; the message says why."""


def parse_params(flow: m.Flow, pairs: Sequence[str]) -> dict[str, Any]:
    """The flow's param values: defaults, then each ``K=V`` coerced to the param's type.

    Raises:
        ParamError: not ``K=V``, ``K`` is not a param of the flow, or ``V`` is not of its type.
    """
    values: dict[str, Any] = {p.name: p.default for p in flow.params if p.has_default}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        param = flow.param(key)
        if not sep or param is None:
            names = [p.name for p in flow.params]
            hint = did_you_mean(key, names) if sep else None
            known = ", ".join(names) or "none"
            raise ParamError(f"{pair!r}: expected K=V with K one of: {known}"
                             + (f"; {hint}" if hint else ""))  # fmt: skip
        value = coerce(param.type, raw)
        if param.choices and value not in param.choices:
            allowed = ", ".join(str(c) for c in param.choices)
            raise ParamError(f"{key}: {raw!r} is not one of {allowed}")
        values[key] = value
    return values


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def coerce(kind: str, raw: str) -> Any:
    """``raw`` as a value of the param type ``kind``; a phone must be E.164 and a duration
    read as one (both stay text), a boolean one of the usual words."""
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
        if kind == "duration":
            parse_duration(raw)
    except ValueError as exc:
        raise ParamError(f"{raw!r} is not {'an' if kind == 'integer' else 'a'} {kind}") from exc
    if kind == "boolean":
        if raw.lower() not in (*_TRUE, *_FALSE):
            raise ParamError(f"{raw!r} is not true or false")
        return raw.lower() in _TRUE
    if kind == "phone" and not is_e164(raw):
        raise ParamError(f"{raw!r} is not an E.164 phone number such as +15551234567")
    return raw


def missing_required(flow: m.Flow, given: Mapping[str, Any]) -> str | None:
    """What to say when required params were not given, else None."""
    missing = [p.name for p in flow.params if p.required and p.name not in given]
    if not missing:
        return None
    adds = " ".join(f"--param {name}=VALUE" for name in missing)
    return f"required param{'s' * (len(missing) > 1)} not given: {', '.join(missing)} (add {adds})"
