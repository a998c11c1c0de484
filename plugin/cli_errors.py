"""No command shows a Python traceback: errors are one line (or ``{"error": …}`` for scripts).

Expected errors are click exceptions with their exit codes (1: the input has errors, 2: the
command was used wrongly). Anything else is a bug: it is reported as one line naming the
exception, with exit code 2, never as a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

EXIT_UNEXPECTED = 2
_ARGV = "voicecall.argv"


class InvalidInput(click.ClickException):
    """A file the command needs has errors (exit 1); their diagnostics, already printed to
    stderr for people, go into the ``{"error": …, "diagnostics": […]}`` of ``--json``."""

    exit_code = 1

    def __init__(self, message: str, diagnostics: Sequence[Any] = ()):
        super().__init__(message)
        self.diagnostics = [d.to_json() for d in diagnostics]


class SafeGroup(click.Group):
    """The `voicecall` group: its commands' unexpected exceptions become one clear line."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[_ARGV] = list(args)  # to know, if a command fails, whether it wanted JSON
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort, KeyboardInterrupt, SystemExit):
            raise
        except BrokenPipeError:  # `voicecall … | head`: the reader has all it wanted
            _silence_stdout()
            ctx.exit(1)
        except click.ClickException as exc:
            if not wants_json(ctx.meta.get(_ARGV, ())):
                raise
            _echo_json(exc.format_message(), getattr(exc, "diagnostics", None))
            ctx.exit(exc.exit_code)
        except Exception as exc:  # the one place every bug is caught
            message = f"unexpected {type(exc).__name__}: {exc}".rstrip(": ")
            if wants_json(ctx.meta.get(_ARGV, ())):
                _echo_json(message)
            else:
                click.echo(f"Error: {message} (a bug in voicecall; please report it)", err=True)
            ctx.exit(EXIT_UNEXPECTED)


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that flushing it at exit cannot fail again (the recipe
    of the Python docs for SIGPIPE)."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def wants_json(argv: Sequence[str]) -> bool:
    """Whether the command line asks for machine output (``--json`` or ``--format json``)."""
    args = list(argv)
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg in {"--json", "--format=json"}:
            return True
        if arg == "--format" and i + 1 < len(args) and args[i + 1] == "json":
            return True
    return False


def _echo_json(message: str, diagnostics: list[Any] | None = None) -> None:
    data: dict[str, Any] = {"error": " ".join(message.split())}
    if diagnostics:
        data["diagnostics"] = diagnostics
    click.echo(json.dumps(data, ensure_ascii=False))
