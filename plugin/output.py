"""What every command shares about its output: the machine-output options, and colour.

Machine output is asked for as ``--format json`` or ``--json``, on every command that has it,
so that nobody has to remember which command spells it which way. Colour follows
https://no-color.org: any non-empty ``NO_COLOR`` turns it off everywhere.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def no_color() -> bool:
    """True when the user asked for no colour (NO_COLOR set and not empty)."""
    return bool(os.environ.get("NO_COLOR"))


def use_color(stream: TextIO | None = None) -> bool:
    """Whether to colour text written to ``stream`` (stdout by default): a terminal, no NO_COLOR."""
    stream = stream or sys.stdout
    return not no_color() and stream.isatty()


def format_option(*choices: str, default: str = "text") -> Callable[[F], F]:
    """``--format CHOICE`` and its shorthand ``--json``; the command receives ``fmt``."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, fmt: str, as_json: bool, **kwargs: Any) -> Any:
            return command(*args, fmt="json" if as_json else fmt, **kwargs)

        wrapper = click.option(
            "--json", "as_json", is_flag=True, help="Machine-readable output: --format json."
        )(wrapper)
        wrapper = click.option(
            "--format",
            "fmt",
            type=click.Choice(choices),
            default=default,
            show_default=True,
            help="text for people, json for scripts.",
        )(wrapper)
        return wrapper  # type: ignore[return-value]

    return decorate


def json_option() -> Callable[[F], F]:
    """``--json`` and its long form ``--format json|text``; the command receives ``as_json``."""

    def decorate(command: F) -> F:
        @functools.wraps(command)
        def wrapper(*args: Any, fmt: str, **kwargs: Any) -> Any:
            return command(*args, **kwargs, as_json=fmt == "json")

        return format_option("text", "json")(wrapper)  # type: ignore[return-value]

    return decorate
