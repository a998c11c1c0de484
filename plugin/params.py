"""Flow params from the command line: ``--param K=V``, the same on every command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from voicecall.dsl import model as m


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
            known = ", ".join(p.name for p in flow.params) or "none"
            raise ParamError(f"{pair!r}: expected K=V with K one of: {known}")
        values[key] = coerce(param.type, raw)
    return values


def coerce(kind: str, raw: str) -> Any:
    """``raw`` as a value of the param type ``kind`` (string, integer, number, boolean)."""
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError as exc:
        raise ParamError(f"{raw!r} is not a {kind}") from exc
    if kind == "boolean":
        return raw.lower() in ("1", "true", "yes", "on")
    return raw


def missing_required(flow: m.Flow, given: Mapping[str, Any]) -> str | None:
    """What to say when required params were not given, else None."""
    missing = [p.name for p in flow.params if p.required and p.name not in given]
    if not missing:
        return None
    adds = " ".join(f"--param {name}=VALUE" for name in missing)
    return f"required param{'s' * (len(missing) > 1)} not given: {', '.join(missing)} (add {adds})"
