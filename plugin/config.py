"""The plugin's configuration: the `voice-call` section of the host's JSON5 file, checked.

The section is validated against the ``configSchema`` of the plugin manifest
(``openclaw.plugin.json``, the file the host reads too). Every problem is reported with the
file, line and column, and the full key path (``plugins.entries.voice-call.config.serve.port``);
nothing wrong is ever silently ignored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import json5
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from voicecall.dsl.errors import did_you_mean
from voicecall.plugin.json5pos import Positions, find_positions

SECTION = ("plugins", "entries", "voice-call", "config")
DEFAULT_PATH = Path("~/.openclaw/openclaw.json")
MAX_PROBLEMS = 20  # a file that is wrong everywhere still gets a readable answer

KeyPath = tuple[str | int, ...]


class ConfigError(Exception):
    """The config cannot be used; the message says why and where (one line per problem)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong in the config, at a key path of the file."""

    path: KeyPath  # from the top of the file
    message: str
    hint: str = ""
    key: bool = False  # the problem is the key itself (unknown), not its value


@cache
def manifest() -> dict[str, Any]:
    """The plugin manifest (`openclaw.plugin.json`): id, uiHints and configSchema."""
    text = resources.files("voicecall.plugin").joinpath("openclaw.plugin.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def config_schema() -> dict[str, Any]:
    """The JSON Schema of the plugin config section."""
    schema: dict[str, Any] = manifest()["configSchema"]
    return schema


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(config_schema())


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file: ``explicit``, else $VOICECALL_CONFIG, else ~/.openclaw/openclaw.json."""
    chosen = explicit or os.environ.get("VOICECALL_CONFIG") or DEFAULT_PATH
    return Path(chosen).expanduser()


def load_plugin_config(
    path: Path, *, must_exist: bool = False, section_file: bool = False, to_run: bool = False
) -> dict[str, Any]:
    """Reads and validates the plugin's section of a config file.

    Args:
        path: the host config (JSON5), whose section is ``plugins.entries.voice-call.config``.
        must_exist: the user named this file, so a missing file is an error (else ``{}``).
        section_file: the file may also be the section alone (``runtime.serve``), recognised
            by having no ``plugins`` key.
        to_run: the runtime will run with it: the provider's credentials (from the config or
            the environment) and ``fromNumber`` must be there too.

    Returns:
        The section, valid against the config schema; {} when there is none.

    Raises:
        ConfigError: the file cannot be read, is not JSON5, or the section is not valid.
    """
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError as exc:
        if must_exist:
            raise ConfigError(f"{path}: no such config file") from exc
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        data: Any = json5.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(f"{path}: not valid JSON5: {exc}") from exc
    prefix: KeyPath = () if section_file and _is_section(data) else SECTION
    section, problems = _section(data, prefix)
    problems += check_section(section, prefix)
    if to_run and not problems:
        problems += runtime_problems(section, prefix)
    if problems:
        raise ConfigError(format_problems(problems, path, find_positions(text)))
    return section


def _is_section(data: Any) -> bool:
    return isinstance(data, dict) and "plugins" not in data


def _section(data: Any, prefix: KeyPath) -> tuple[dict[str, Any], list[Problem]]:
    for depth, key in enumerate(prefix):
        if not isinstance(data, dict):
            return {}, [Problem(path=prefix[:depth], message="expected an object")]
        data = data.get(key, {})
    if not isinstance(data, dict):
        return {}, [Problem(path=prefix, message=f"expected an object, got {_kind(data)}")]
    return data, []


def check_section(section: dict[str, Any], prefix: KeyPath = SECTION) -> list[Problem]:
    """Every problem of a plugin config section, with paths starting at ``prefix``."""
    problems: list[Problem] = []
    for error in _validator().iter_errors(section):
        problems += _problems(error, prefix)
    zone = section.get("timezone")
    if isinstance(zone, str) and zone and not _is_zone(zone):
        hint = did_you_mean(zone, sorted(available_timezones()))
        msg = f"{zone!r} is not an IANA time zone"
        problems.append(Problem(path=(*prefix, "timezone"), message=msg, hint=hint))
    return list({(p.path, p.message): p for p in problems}.values())


def runtime_problems(
    section: dict[str, Any], prefix: KeyPath = SECTION, env: Mapping[str, str] | None = None
) -> list[Problem]:
    """What a real carrier needs that a schema cannot say: credentials and a caller ID.

    Each credential may come from the config or from its environment variable; the webhook
    public key may be left out only with skipSignatureVerification.
    """
    from voicecall.runtime.app import ENV_CREDENTIALS

    provider = str(section.get("provider", "mock"))
    if provider == "mock":
        return []
    env = os.environ if env is None else env
    problems = []
    if not section.get("fromNumber"):
        msg = f"required with provider {provider}: the caller ID of outbound calls (E.164)"
        problems.append(Problem(path=(*prefix, "fromNumber"), message=msg))
    given = section.get(provider) or {}
    skip = bool(section.get("skipSignatureVerification"))
    for key, var in ENV_CREDENTIALS.get(provider, {}).items():
        if given.get(key) or env.get(var) or (key == "publicKey" and skip):
            continue
        msg = f"required with provider {provider} (or set ${var})"
        problems.append(Problem(path=(*prefix, provider, key), message=msg))
    return problems


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def format_problems(problems: Iterable[Problem], file: Path, where: Positions) -> str:
    """One line per problem: ``file:line:col: key.path: message (hint)``."""
    located = [(where.of(p.path, key=p.key), p) for p in problems]
    located.sort(key=lambda item: (item[0].line, item[0].col) if item[0] else (0, 0))
    lines = []
    for pos, problem in located[:MAX_PROBLEMS]:
        at = f"{file}:{pos.line}:{pos.col}" if pos else str(file)
        hint = f"; {problem.hint}" if problem.hint else ""
        lines.append(f"{at}: {dotted(problem.path)}: {problem.message}{hint}")
    if len(located) > MAX_PROBLEMS:
        lines.append(f"{file}: … and {len(located) - MAX_PROBLEMS} more")
    return "\n".join(lines)


def dotted(path: KeyPath) -> str:
    """A key path as written in docs: ``plugins.entries.voice-call.config.allowFrom[1]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(the file)"


# --- jsonschema errors as problems -----------------------------------------------------------


def _problems(error: ValidationError, prefix: KeyPath) -> Iterator[Problem]:
    path: KeyPath = (*prefix, *error.absolute_path)
    schema = error.schema if isinstance(error.schema, dict) else {}
    kind, value = error.validator, error.instance
    if kind in ("anyOf", "oneOf"):
        yield from _alternatives(error, prefix)
    elif kind == "additionalProperties":
        allowed = sorted(schema.get("properties", {}))
        for key in value if isinstance(value, dict) else ():
            if key not in allowed:
                hint = did_you_mean(str(key), allowed) or _known(allowed)
                yield Problem(path=(*path, key), message="unknown key", hint=hint, key=True)
    elif "propertyNames" in error.absolute_schema_path:  # a key of `numbers`
        msg = f"the key {_show(value)} is not an E.164 number (+ then digits)"
        yield Problem(path=(*path, str(value)), message=msg, key=True)
    else:
        yield _simple(kind, value, schema, path)


def _simple(kind: Any, value: Any, schema: dict[str, Any], path: KeyPath) -> Problem:
    if kind == "type":
        return Problem(path=path, message=f"expected {_expected(schema)}, got {_kind(value)}")
    if kind in ("minimum", "exclusiveMinimum", "maximum", "minLength", "minProperties"):
        return _limit(kind, value, schema, path)
    if kind == "enum":
        choices = [str(c) for c in schema["enum"]]
        hint = did_you_mean(str(value), choices) if isinstance(value, str) else ""
        msg = f"{_show(value)} is not one of {', '.join(choices)}"
        return Problem(path=path, message=msg, hint=hint)
    if kind == "pattern":
        return _pattern(value, schema, path)
    if kind == "required" and isinstance(value, dict):
        missing = ", ".join(k for k in schema["required"] if k not in value)
        return Problem(path=path, message=f"missing the required key {missing}")
    return Problem(path=path, message=f"{_show(value)} is not allowed here")


def _pattern(value: Any, schema: dict[str, Any], path: KeyPath) -> Problem:
    if "+" in str(schema.get("pattern")):
        msg = f"{_show(value)} is not an E.164 number (+ then digits)"
        return Problem(path=path, message=msg, hint="for example +15550001234")
    return Problem(path=path, message=f"{_show(value)} must start with {schema['pattern'][1:]}")


def _limit(kind: str, value: Any, schema: dict[str, Any], path: KeyPath) -> Problem:
    if kind in ("minLength", "minProperties"):
        return Problem(path=path, message="must not be empty")
    words = {"minimum": "at least", "exclusiveMinimum": "more than", "maximum": "at most"}
    return Problem(path=path, message=f"{value} must be {words[kind]} {schema[kind]}")


def _alternatives(error: ValidationError, prefix: KeyPath) -> Iterator[Problem]:
    """`text or list` keys: the errors of the branch of the right type, else what was expected."""
    branches: dict[int, list[ValidationError]] = {}
    for sub in error.context or ():
        branches.setdefault(int(sub.relative_schema_path[0]), []).append(sub)
    for subs in branches.values():
        if not any(s.validator == "type" and not s.relative_path for s in subs):
            for sub in subs:
                yield from _problems(sub, prefix)
            return
    schema = error.schema if isinstance(error.schema, dict) else {}
    expected = " or ".join(_expected(b) for b in schema.get("anyOf", []))
    path: KeyPath = (*prefix, *error.absolute_path)
    yield Problem(path=path, message=f"expected {expected}, got {_kind(error.instance)}")


_TYPES = {"string": "text", "integer": "an integer", "number": "a number",
          "boolean": "true or false", "object": "an object", "array": "a list"}  # fmt: skip


def _expected(schema: dict[str, Any]) -> str:
    types = schema.get("type", [])
    names = [types] if isinstance(types, str) else list(types)
    return " or ".join(_TYPES.get(t, t) for t in names) or "another value"


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return f"text {_show(value)}"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, dict):
        return "an object"
    return "a list" if isinstance(value, list) else "null"


def _show(value: Any) -> str:
    return repr(value) if isinstance(value, str) else json.dumps(value, default=str)


def _known(allowed: list[str]) -> str:
    return "known keys: " + ", ".join(allowed) if len(allowed) <= 12 else ""


def flow_dirs(config: dict[str, Any], base: Path) -> list[Path]:
    """The configured flow folders (key ``flows``: a path or a list), relative to ``base``."""
    raw = config.get("flows")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return [(base / Path(str(p)).expanduser()).resolve() for p in items]
