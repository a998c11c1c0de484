"""One thing wrong in a config file, and how a key path is written."""

from __future__ import annotations

from dataclasses import dataclass

KeyPath = tuple[str | int, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One thing wrong in the config, at a key path of the file."""

    path: KeyPath  # from the top of the file
    message: str
    hint: str = ""
    key: bool = False  # the problem is the key itself (unknown), not its value
    full: bool = False  # the message names its key path itself (the original's texts)
    where: str = ""  # not in the file (an environment variable): said instead of file:line:col


def dotted(path: KeyPath) -> str:
    """A key path as written in docs: ``plugins.entries.voice-call.config.allowFrom[1]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(the file)"
