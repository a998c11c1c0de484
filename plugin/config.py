"""The plugin's configuration: the `voice-call` section of the host's JSON5 file.

This module reads the file and the keys the flow tools need (`flows`); the full schema and its
validation come with the Gateway host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import json5

SECTION = ("plugins", "entries", "voice-call", "config")
DEFAULT_PATH = Path("~/.openclaw/openclaw.json")


class ConfigError(Exception):
    """The config file exists but cannot be used; the message says why and where."""


def config_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file: ``explicit``, else $VOICECALL_CONFIG, else ~/.openclaw/openclaw.json."""
    chosen = explicit or os.environ.get("VOICECALL_CONFIG") or DEFAULT_PATH
    return Path(chosen).expanduser()


def load_plugin_config(path: Path) -> dict[str, Any]:
    """Reads the plugin's section of the host config; {} when the file does not exist.

    Raises:
        ConfigError: the file is not valid JSON5, or the section is not an object.
    """
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data: Any = json5.loads(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: not valid JSON5: {exc}") from exc
    for key in SECTION:
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: {'.'.join(SECTION)} is not an object")
        data = data.get(key, {})
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: {'.'.join(SECTION)} is not an object")
    return data


def flow_dirs(config: dict[str, Any], base: Path) -> list[Path]:
    """The configured flow folders (key ``flows``: a path or a list), relative to ``base``."""
    raw = config.get("flows")
    items = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    return [(base / Path(str(p)).expanduser()).resolve() for p in items]
