"""Small value types of the flow language: durations and phone numbers."""

from __future__ import annotations

import datetime
import re
import zoneinfo
from functools import lru_cache

_DURATION_PART = re.compile(r"([0-9]+)(ms|s|m|h)")
_DURATION = re.compile(r"^(?:[0-9]+(?:ms|s|m|h))+$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}
E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")


def parse_duration(text: str) -> int:
    """Parses ``500ms``, ``6s``, ``2m``, ``1h`` or a sum such as ``1m30s``.

    Returns:
        The duration in milliseconds.
    Raises:
        ValueError: when the text is not a duration.
    """
    if not _DURATION.match(text):
        raise ValueError(f"not a duration: {text!r}")
    return sum(int(n) * _UNIT_MS[unit] for n, unit in _DURATION_PART.findall(text))


def format_duration(ms: int) -> str:
    """The shortest text :func:`parse_duration` reads back as ``ms``."""
    if ms % 1000:
        return f"{ms}ms"
    secs = ms // 1000
    if secs % 60 or secs < 60:
        return f"{secs}s"
    if secs % 3600 or secs < 3600:
        return f"{secs // 60}m"
    return f"{secs // 3600}h"


@lru_cache(maxsize=64)
def zone(name: str) -> datetime.tzinfo:
    """The IANA time zone called ``name`` (``Europe/Paris``, ``UTC``).

    Raises:
        ValueError: when there is no such zone.
    """
    if name == "UTC":  # the default needs no time zone database (Windows has none)
        return datetime.UTC
    if not name or name.startswith(("/", ".")) or ".." in name:
        raise ValueError(f"not a time zone: {name!r}")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        missing = "" if zoneinfo.available_timezones() else (
            " (this system has no time zone database: pip install tzdata)")  # fmt: skip
        raise ValueError(f"unknown time zone {name!r}{missing}") from exc


def is_e164(text: str) -> bool:
    """Whether ``text`` is an E.164 number: + then 2 to 15 digits, no leading zero."""
    return bool(E164.match(text))
