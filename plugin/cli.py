"""The `voicecall` command line.

Commands stay thin: parse, call one function of the dsl or compiler, print. People get text and
tables; scripts get ``--json`` / ``--format json``. Exit codes: 0 fine, 1 the input has errors,
2 the command was used wrongly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from voicecall.dsl.catalog import Catalog
from voicecall.dsl.errors import Severity, did_you_mean, render_text
from voicecall.dsl.schema import flow_schema
from voicecall.dsl.validate import Report, validate_paths
from voicecall.plugin.config import ConfigError, config_path, flow_dirs, load_plugin_config

PROVIDERS = ("twilio", "plivo", "telnyx")
EXIT_INVALID = 1
EXIT_USAGE = 2


class State:
    """What every command may need: the config file and the flow folders it names."""

    def __init__(self, config_file: str | None):
        self.config_file = config_path(config_file)
        self._config: dict[str, Any] | None = None

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            try:
                self._config = load_plugin_config(self.config_file)
            except ConfigError as exc:
                raise click.UsageError(str(exc)) from exc
        return self._config

    def flow_dirs(self) -> list[Path]:
        return flow_dirs(self.config, self.config_file.parent)

    def catalog(self) -> Catalog:
        return Catalog(self.flow_dirs())


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    metavar="PATH",
    envvar="VOICECALL_CONFIG",
    help="Host config file (JSON5). Default: ~/.openclaw/openclaw.json.",
)
@click.version_option(package_name="voicecall")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """Phone calls for an AI assistant: YAML call flows for Twilio, Plivo and Telnyx."""
    ctx.obj = State(config_file)


def _provider(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> tuple[str, ...]:
    for name in value:
        if name not in PROVIDERS:
            hint = did_you_mean(name, PROVIDERS) or f"choose from {', '.join(PROVIDERS)}"
            raise click.BadParameter(f"unknown provider '{name}'; {hint}")
    return tuple(value)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--provider",
    "providers",
    multiple=True,
    callback=_provider,
    metavar="P",
    help="Also check what provider P can express (twilio, plivo, telnyx); repeatable.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="text for people, json for scripts.",
)
@click.option("--strict", is_flag=True, help="Fail on warnings too.")
@click.pass_obj
def validate(
    state: State, paths: tuple[Path, ...], providers: tuple[str, ...], fmt: str, strict: bool
) -> None:
    """Check flow files and folders; report every problem with file:line:col.

    PATHS default to the configured flow folders, else ./flows.
    """
    targets = (
        list(paths) or state.flow_dirs() or ([Path("flows")] if Path("flows").is_dir() else [])
    )
    if not targets:
        raise click.UsageError("no flows to check: pass files or folders, or configure `flows`")
    report = validate_paths(targets, state.catalog().infos())
    if fmt == "json":
        click.echo(json.dumps([d.to_json() for d in report.diagnostics], indent=2))
    else:
        _print_report(report)
    failed = report.count(Severity.ERROR) or (strict and report.count(Severity.WARNING))
    sys.exit(EXIT_INVALID if failed else 0)


def _print_report(report: Report) -> None:
    color = sys.stdout.isatty()
    for checked in report.files:
        lines = checked.doc.lines if checked.doc else []
        for diag in checked.diagnostics:
            click.echo(render_text(diag, lines, color=color))
    errors, warnings = report.count(Severity.ERROR), report.count(Severity.WARNING)
    files = len(report.files)
    summary = (
        f"{files} file{'s' * (files != 1)} checked: {errors} error{'s' * (errors != 1)}, "
        f"{warnings} warning{'s' * (warnings != 1)}"
    )
    click.echo(summary, err=bool(errors or warnings) and not report.diagnostics)


@cli.command()
@click.pass_obj
def schema(state: State) -> None:
    """Print the flow JSON Schema (for yaml-language-server's $schema)."""
    click.echo(json.dumps(flow_schema(), indent=2))


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_obj
def flows(state: State, as_json: bool) -> None:
    """List the named flows (bundled and configured) with their params."""
    catalog = state.catalog()
    if as_json:
        click.echo(json.dumps([_flow_json(e) for e in catalog], indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_lines=False)
    for col in ("flow", "direction", "description", "params", "source"):
        table.add_column(col, overflow="fold")
    for e in catalog:
        params = ", ".join(f"{p.name}{'*' if p.required else ''}:{p.type}" for p in e.flow.params)
        source = "bundled" if e.bundled else str(e.path)
        if not e.ok:
            source += " (has errors)"
        table.add_row(e.name, e.flow.direction, e.flow.description, params or "-", source)
    # Wide when piped, so that names and params are never folded mid-word.
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    click.echo("* required")


def _flow_json(entry: Any) -> dict[str, Any]:
    flow = entry.flow
    return {
        "name": flow.name,
        "description": flow.description,
        "direction": flow.direction,
        "params": [
            {
                "name": p.name,
                "type": p.type,
                "required": p.required,
                "description": p.description,
                **({"default": p.default} if p.has_default else {}),
                **({"enum": list(p.choices)} if p.choices else {}),
            }
            for p in flow.params
        ],
        "file": str(entry.path),
        "bundled": entry.bundled,
        "valid": entry.ok,
    }


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="voicecall")
