"""Any JSON at any place of the host config: a valid config or a ConfigError, never a crash.

Values are drawn at the schema's own key paths (and a few others), so the checks, the
effective config, the rules and the Gateway section all see wrong types in every place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicecall.plugin.config import (
    ConfigError,
    config_schema,
    load_config,
    load_plugin_config,
    redacted_view,
)


def _paths(schema: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, sub in schema.get("properties", {}).items():
        found.append((*prefix, key))
        found += _paths(sub, (*prefix, key))
    return found


SECTION = ("plugins", "entries", "voice-call", "config")
PATHS = [(*SECTION, *p) for p in _paths(config_schema())] + [
    ("gateway",), ("gateway", "port"), ("gateway", "auth"), ("gateway", "auth", "mode"),
    ("gateway", "auth", "token"), ("messages", "tts"), ("messages", "tts", "providers"),
    (*SECTION[:-1], "enabled"), SECTION, (*SECTION, "numbers", "+15550001234"),
    (*SECTION, "numbers", "+15550001234", "tts"), (*SECTION, "twilio", "authToken", "id"),
]  # fmt: skip

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False)
    | st.text(max_size=12) | st.sampled_from(["mock", "twilio", "funnel", "redis://x", "+1555"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip


def _put(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        child = target.get(key)
        if not isinstance(child, dict):
            child = target[key] = {}
        target = child
    target[path[-1]] = value


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
          HealthCheck.function_scoped_fixture])  # fmt: skip
@given(
    st.lists(st.tuples(st.sampled_from(PATHS), JSON), min_size=1, max_size=6),
    st.booleans(),
    st.sampled_from(
        [
            {},
            {"OPENCLAW_GATEWAY_PORT": "x"},
            {"TWILIO_FROM_NUMBER": "1", "OPENCLAW_GATEWAY_TOKEN": "t"},
        ]
    ),
)
def test_any_value_anywhere_is_valid_or_a_config_error(
    tmp_path: Path, edits: list[tuple[tuple[str, ...], Any]], to_run: bool, env: dict[str, str]
) -> None:
    host: dict[str, Any] = {}
    for path, value in edits:
        _put(host, path, value)
    file = tmp_path / "openclaw.json"
    file.write_text(json.dumps(host, indent=1))
    try:
        load_plugin_config(file, to_run=to_run)  # what the flow commands read
    except ConfigError as exc:
        assert str(exc).startswith(str(file))
    try:
        loaded = load_config(file, env=env, to_run=to_run)
    except ConfigError as exc:
        assert str(exc).startswith(("$", str(file)))  # every line says where
        return
    json.dumps(redacted_view(loaded))
