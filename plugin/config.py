"""The plugin's configuration: the `voice-call` section of the host's JSON5 file, checked.

The section is validated against the ``configSchema`` of the plugin manifest
(``openclaw.plugin.json``, the file the host reads too). Every problem is reported with the
file, line and column, and the full key path (``plugins.entries.voice-call.config.serve.port``);
nothing wrong is ever silently ignored.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, available_timezones

import json5
from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError

from voicecall.dsl.errors import did_you_mean
from voicecall.plugin.config_effective import REDACTED, effective, redacted
from voicecall.plugin.config_flows import flow_problems
from voicecall.plugin.config_problems import KeyPath, Problem, dotted
from voicecall.plugin.config_rules import (
    GatewaySettings,
    gateway_settings,
    mode_problems,
    provider_problems,
    section_problems,
)
from voicecall.plugin.json5pos import Positions, find_positions

SECTION = ("plugins", "entries", "voice-call", "config")
DEFAULT_PATH = Path("~/.openclaw/openclaw.json")
MAX_PROBLEMS = 20  # a file that is wrong everywhere still gets a readable answer


class ConfigError(Exception):
    """The config cannot be used; the message says why and where (one line per problem)."""


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


def find_config(
    explicit: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> tuple[Path, bool]:
    """The config file as OpenClaw finds it, and whether the user named it (``--config``).

    ``explicit``, else $OPENCLAW_CONFIG_PATH (or our older $VOICECALL_CONFIG), else
    $OPENCLAW_STATE_DIR/openclaw.json, else ~/.openclaw/openclaw.json. A file found this way
    that does not exist means the built-in defaults; a named one must exist.
    """
    env = os.environ if env is None else env
    if explicit:
        return Path(explicit).expanduser(), True
    for var in ("OPENCLAW_CONFIG_PATH", "VOICECALL_CONFIG"):
        if env.get(var):
            return Path(env[var]).expanduser(), False
    if env.get("OPENCLAW_STATE_DIR"):
        return Path(env["OPENCLAW_STATE_DIR"]).expanduser() / "openclaw.json", False
    return DEFAULT_PATH.expanduser(), False


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file (see :func:`find_config`)."""
    return find_config(explicit)[0]


@dataclass(frozen=True, slots=True, kw_only=True)
class HostConfig:
    """A loaded, valid host config: what the Gateway and the plugin run with."""

    path: Path  # the file read, or the one that would have been (defaults)
    found: bool  # False: no file, built-in defaults
    # Both hold secrets: kept out of repr, so that logging a HostConfig shows none.
    data: dict[str, Any] = field(repr=False)  # the whole host config as written
    plugin: dict[str, Any] = field(repr=False)  # effective: defaults, env, tts merged
    gateway: GatewaySettings
    from_env: dict[KeyPath, str] = field(default_factory=dict)  # section key -> env var

    @property
    def base_dir(self) -> Path:
        """What relative paths in the config are relative to: the config file's folder."""
        return self.path.parent if self.found else Path.cwd()


def load_config(
    explicit: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    to_run: bool = False,
) -> HostConfig:
    """Finds, reads and validates the host config; the plugin section made effective.

    Args:
        explicit: the file the user named (``--config``), if any.
        env: the environment (default ``os.environ``): discovery, credentials, Gateway auth.
        to_run: the Gateway will run with it: the original's provider rules (caller ID,
            credentials) and the Gateway's auth secret must hold too.

    Raises:
        ConfigError: one line per problem, ``file:line:col: key.path: message``.
    """
    env = os.environ if env is None else env
    path, named = find_config(explicit, env)
    text = _read(path, must_exist=named)
    data = _parse(path, text)
    where = find_positions(text) if text else Positions(values={}, keys={})
    if not isinstance(data, dict):
        problem = Problem(path=(), message=f"expected an object, got {_kind(data)}")
        raise ConfigError(format_problems([problem], path, where))
    section, problems = _section(data, SECTION)
    problems += check_section(section)
    entry_enabled = _entry_enabled(data, problems)
    problems += _messages_tts(data)
    plugin: dict[str, Any] = {}
    from_env: dict[KeyPath, str] = {}
    if not problems:
        plugin, from_env = effective(config_schema(), section, host=data, env=env,
                                     entry_enabled=entry_enabled)  # fmt: skip
        problems += _env_problems(plugin, from_env)
        problems += (provider_problems if to_run else mode_problems)(plugin, SECTION)
    # Checked apart from the plugin's section, so that a missing Gateway secret hides none
    # of the section's problems (all are listed at once).
    gateway, more = gateway_settings(data, env, to_run=to_run)
    problems = more + problems
    if to_run and not problems:
        base = path.parent if text is not None else Path.cwd()
        problems += flow_problems(plugin, base, SECTION)
    if problems:
        raise ConfigError(format_problems(problems, path, where))
    return HostConfig(path=path, found=text is not None, data=data, plugin=plugin,
                      gateway=gateway, from_env=from_env)  # fmt: skip


def _read(path: Path, *, must_exist: bool) -> str | None:
    try:
        return path.read_text("utf-8")
    except FileNotFoundError as exc:
        if must_exist:
            raise ConfigError(f"{path}: no such config file") from exc
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {getattr(exc, 'strerror', None) or exc}") from exc


def _parse(path: Path, text: str | None) -> Any:
    if text is None:
        return {}
    try:
        return json5.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ConfigError(_syntax_error(path, str(exc))) from exc


# json5's own wording: "<string>:LINE Unexpected WHAT at column COL".
_JSON5_ERROR = re.compile(r"<string>:(\d+) Unexpected (.*) at column (\d+)$", re.DOTALL)


def _syntax_error(path: Path, message: str) -> str:
    """The parser's message, placed at file:line:col like every other config problem."""
    found = _JSON5_ERROR.match(message)
    if found is None:
        return f"{path}: not valid JSON5: {message}"
    line, what, col = found.groups()
    return f"{path}:{line}:{col}: not valid JSON5: unexpected {what}"


def _entry_enabled(data: Any, problems: list[Problem]) -> bool:
    """``plugins.entries.voice-call.enabled``: OpenClaw's switch for the whole plugin."""
    entry, _ = _section(data, SECTION[:-1])
    value = entry.get("enabled", True)
    if not isinstance(value, bool):
        path = (*SECTION[:-1], "enabled")
        problems.append(Problem(path=path, message=f"expected true or false, got {_kind(value)}"))
        return True
    return value


def _messages_tts(data: Any) -> list[Problem]:
    messages = data.get("messages") if isinstance(data, dict) else None
    tts = messages.get("tts") if isinstance(messages, dict) else None
    if tts is None or isinstance(tts, dict):
        return []
    return [Problem(path=("messages", "tts"), message=f"expected an object, got {_kind(tts)}")]


def _env_problems(plugin: dict[str, Any], from_env: Mapping[KeyPath, str]) -> list[Problem]:
    """A value taken from the environment must be as valid as one written in the file."""
    problems = []
    for problem in check_section(plugin, ()):
        var = from_env.get(tuple(str(p) for p in problem.path))
        if var:
            problems.append(replace(problem, path=(), where=f"${var}"))
    return problems


def load_plugin_config(
    path: Path, *, must_exist: bool = False, section_file: bool = False, to_run: bool = False
) -> dict[str, Any]:
    """Reads and validates the plugin's section of a config file, as written.

    Args:
        path: the host config (JSON5), whose section is ``plugins.entries.voice-call.config``.
        must_exist: the user named this file, so a missing file is an error (else ``{}``).
        section_file: the file may also be the section alone (``runtime.serve``), recognised
            by having no ``plugins`` key.
        to_run: the runtime will run with it: the original's provider rules (credentials
            from the config or the environment, ``fromNumber``) must hold too.

    Returns:
        The section, valid against the config schema; {} when there is none.

    Raises:
        ConfigError: the file cannot be read, is not JSON5, or the section is not valid.
    """
    text = _read(path, must_exist=must_exist)
    if text is None:
        return {}
    data = _parse(path, text)
    prefix: KeyPath = () if section_file and _is_section(data) else SECTION
    section, problems = _section(data, prefix)
    problems += check_section(section, prefix)
    if not problems:
        plugin, _ = effective(config_schema(), section, host=data if prefix else {},
                              env=os.environ)  # fmt: skip
        problems += (provider_problems if to_run else mode_problems)(plugin, prefix)
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
    # Schema messages quote values: at a secret's path they must not (ours never quote one).
    problems = [_legacy_hint(_hide_secret(p, len(prefix)), len(prefix), section) for p in problems]
    problems += section_problems(section, prefix)
    zone = section.get("timezone")
    if isinstance(zone, str) and zone and not _is_zone(zone):
        hint = did_you_mean(zone, sorted(available_timezones()))
        msg = f"{zone!r} is not an IANA time zone"
        problems.append(Problem(path=(*prefix, "timezone"), message=msg, hint=hint))
    return list({(p.path, p.message): p for p in problems}.values())


# Keys and values of older configs that the original's `openclaw doctor --fix` migrates (its
# load-time shim is gone since 2026.6.0): say where each one went.
_LEGACY_KEYS: dict[KeyPath, str] = {
    ("twilio", "from"): "moved to fromNumber",
    ("streaming", "sttProvider"): "moved to streaming.provider",
    ("streaming", "openaiApiKey"): "moved to streaming.providers.openai.apiKey",
    ("streaming", "sttModel"): "moved to streaming.providers.openai.model",
    ("streaming", "silenceDurationMs"): "moved to streaming.providers.openai.silenceDurationMs",
    ("streaming", "vadThreshold"): "moved to streaming.providers.openai.vadThreshold",
    ("realtime", "agentContext", "includeSystemPrompt"): "removed by the original",
}


def _legacy_hint(problem: Problem, depth: int, section: dict[str, Any]) -> Problem:
    where = tuple(problem.path[depth:])
    hint = _LEGACY_KEYS.get(where) if problem.key else None
    if where == ("provider",) and section.get("provider") == "log":
        hint = "the legacy provider log is now mock"
    if not hint:
        return problem
    return replace(problem, hint=f"{hint} (`openclaw doctor --fix` migrates old configs)")


def _hide_secret(problem: Problem, depth: int) -> Problem:
    """A problem at a secret's path must not quote the secret (it may be a mistyped one)."""
    if problem.key or not is_secret_path(problem.path[depth:]):
        return problem
    # "expected text, got the number 5" keeps what was expected, never what was written.
    said = problem.message.split(", got ")[0] if problem.message.startswith("expected ") else ""
    text = f"{said or 'not valid here'} (the value is a secret and not shown)"
    return replace(problem, message=text, hint="")


def sensitive_paths() -> tuple[str, ...]:
    """The manifest's ``sensitive`` uiHints: dotted paths in the section, ``*`` for one key."""
    hints = manifest().get("uiHints", {})
    return tuple(path for path, hint in hints.items() if hint.get("sensitive"))


def is_secret_path(path: KeyPath) -> bool:
    """Whether a section key path holds a secret (manifest hint, or a secret's key name)."""
    return bool(path) and redacted("x", sensitive_paths(), path) == REDACTED


def redacted_view(host: HostConfig) -> dict[str, Any]:
    """The effective config as ``voicecall config show`` prints it: no secret in it.

    Shaped like the host file (``gateway``, ``plugins.entries.voice-call.config``), with where
    it came from and which keys the environment filled.
    """
    auth = host.gateway.auth
    shown_auth: dict[str, Any] = {"mode": auth.mode}
    for key, value in (("token", auth.token), ("password", auth.password)):
        if value:
            shown_auth[key] = REDACTED
    return {
        "configPath": str(host.path),
        "found": host.found,
        "fromEnv": {dotted(path): f"${var}" for path, var in sorted(host.from_env.items())},
        "gateway": {"port": host.gateway.port, "auth": shown_auth},
        "plugins": {"entries": {"voice-call": {
            "config": redacted(host.plugin, sensitive_paths())}}},
    }  # fmt: skip


def _is_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True


def format_problems(problems: Iterable[Problem], file: Path, where: Positions) -> str:
    """One line per problem: ``file:line:col: key.path: message (hint)``."""
    located = [(None if p.where else where.of(p.path, key=p.key), p) for p in problems]
    located.sort(key=lambda item: (item[0].line, item[0].col) if item[0] else (0, 0))
    lines = []
    for pos, problem in located[:MAX_PROBLEMS]:
        at = f"{file}:{pos.line}:{pos.col}" if pos else str(file)
        hint = f"; {problem.hint}" if problem.hint else ""
        if problem.where:
            lines.append(f"{problem.where}: {problem.message}{hint}")
        elif problem.full:
            lines.append(f"{at}: {problem.message}{hint}")
        else:
            lines.append(f"{at}: {dotted(problem.path)}: {problem.message}{hint}")
    if len(located) > MAX_PROBLEMS:
        lines.append(f"{file}: … and {len(located) - MAX_PROBLEMS} more")
    return "\n".join(lines)


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


def flow_dirs(config: Mapping[str, Any], base: Path) -> list[Path]:
    """The configured flow folders (``flows``, or ``flows.paths``: a path or a list),
    relative to ``base``."""
    raw = config.get("flows")
    if isinstance(raw, dict):
        raw = raw.get("paths")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return [(base / Path(str(p)).expanduser()).resolve() for p in items]
