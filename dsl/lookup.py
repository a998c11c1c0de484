"""Named things imported on first use (compiler backends, carrier adapters), with a
did-you-mean error for a misspelt name."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from voicecall.dsl.errors import did_you_mean


def load_named(table: Mapping[str, str], name: str, attribute: str, noun: str = "provider") -> Any:
    """``attribute`` of the module ``table[name]``, imported now (SDKs are slow to import).

    Raises:
        KeyError: "unknown provider 'twilo'; did you mean 'twilio'?"
    """
    if name not in table:
        hint = did_you_mean(name, table) or f"{noun}s: {', '.join(table)}"
        raise KeyError(f"unknown {noun} '{name}'; {hint}")
    return getattr(importlib.import_module(table[name]), attribute)
