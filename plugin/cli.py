"""The `voicecall` command line.

Commands stay thin: parse, call one function of the dsl or compiler, print. People get text and
tables; scripts get ``--json`` / ``--format json``. Exit codes: 0 fine, 1 the input has errors,
2 the command was used wrongly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from voicecall.compiler.base import ErrorLevel, compile_flow, get_backend, provider_notes
from voicecall.compiler.output import compiled_json, compiled_text, dumps
from voicecall.dsl import model as m
from voicecall.dsl.catalog import Catalog
from voicecall.dsl.errors import Diagnostic, FlowError, Severity, render_text
from voicecall.dsl.graph import to_dot, to_mermaid
from voicecall.dsl.schema import flow_schema
from voicecall.dsl.validate import Report, load_valid_flow, validate_paths
from voicecall.plugin.cli_errors import InvalidInput, SafeGroup
from voicecall.plugin.config import (
    SECTION,
    ConfigError,
    config_path,
    flow_dirs,
    load_plugin_config,
)
from voicecall.plugin.output import format_option, json_option, no_color, use_color
from voicecall.plugin.params import ParamError, parse_params
from voicecall.runtime.sim.validate import with_scripts_and_tests

EXIT_INVALID = 1  # the input has errors; wrong usage exits 2 (click's UsageError)


class BadConfig(click.ClickException):
    """The config file cannot be used: exit 2, the problems without a usage text."""

    exit_code = 2


class State:
    """What every command may need: the config file and the flow folders it names."""

    def __init__(self, config_file: str | None, *, explicit: bool = False):
        self.config_file = config_path(config_file)
        self.explicit = explicit  # named with --config: it must exist
        self._config: dict[str, Any] | None = None

    @property
    def config(self) -> dict[str, Any]:
        if self._config is None:
            try:
                self._config = load_plugin_config(self.config_file, must_exist=self.explicit)
            except ConfigError as exc:
                raise BadConfig(str(exc)) from exc
        return self._config

    def flow_dirs(self) -> list[Path]:
        """The configured flow folders; one that does not exist is a config error."""
        dirs = flow_dirs(self.config, self.config_file.parent)
        raw = self.config.get("flows")
        key = "flows.paths" if isinstance(raw, dict) else "flows"
        many = isinstance(raw.get("paths") if isinstance(raw, dict) else raw, list)
        gone = [
            f"{self.config_file}: {'.'.join(SECTION)}.{key}{f'[{i}]' if many else ''}: "
            f"no such folder {folder}"
            for i, folder in enumerate(dirs)
            if not folder.is_dir()
        ]
        if gone:
            raise BadConfig("\n".join(gone))
        return dirs

    def catalog(self) -> Catalog:
        return Catalog(self.flow_dirs())


@click.group(cls=SafeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    metavar="PATH",
    envvar="VOICECALL_CONFIG",
    help="Host config file (JSON5). Default: $OPENCLAW_CONFIG_PATH, else "
    "$OPENCLAW_STATE_DIR/openclaw.json, else ~/.openclaw/openclaw.json.",
)
@click.version_option(package_name="voicecall")
@click.pass_context
def cli(ctx: click.Context, config_file: str | None) -> None:
    """Phone calls for an AI assistant: YAML call flows for Twilio, Plivo and Telnyx."""
    given = ctx.get_parameter_source("config_file") is click.core.ParameterSource.COMMANDLINE
    ctx.obj = State(config_file, explicit=given)
    if no_color():  # click then strips styles from everything it prints
        ctx.color = False


def _provider(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> tuple[str, ...]:
    for name in value:
        _one_provider(ctx, param, name)
    return tuple(value)


def _one_provider(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        get_backend(value)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0])) from exc
    return value


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
@format_option("text", "json")
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
    catalog = state.catalog()
    for path in paths:
        if path.is_file():  # a flow named by path finds the flows beside it, as in simulate
            catalog = catalog.with_flow_file(path)
    report = validate_paths(targets, catalog.infos())
    report = with_scripts_and_tests(report, targets)  # named on the command line: not flows
    if providers:
        report = with_provider_notes(report, providers, catalog)
    if fmt == "json":
        click.echo(json.dumps([d.to_json() for d in report.diagnostics], indent=2))
    else:
        _print_report(report)
    failed = report.count(Severity.ERROR) or (strict and report.count(Severity.WARNING))
    sys.exit(EXIT_INVALID if failed else 0)


def with_provider_notes(report: Report, providers: Sequence[str], catalog: Catalog) -> Report:
    """Adds, for each flow without errors, what each provider cannot express or emulates."""
    flows = {e.name: e.flow for e in catalog}
    flows.update({f.flow.name: f.flow for f in report.files if f.flow is not None and f.ok})
    files = []
    for checked in report.files:
        result = checked
        if checked.flow is not None and checked.ok:
            notes = provider_notes(checked.flow, providers, flows)
            merged = sorted({*checked.diagnostics, *notes}, key=lambda d: d.sort_key)
            result = replace(checked, diagnostics=tuple(merged))
        files.append(result)
    return Report(files=tuple(files))


def _print_report(report: Report) -> None:
    color = use_color()
    for checked in report.files:
        lines = checked.lines
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
@format_option("json", default="json")  # JSON only; accepted like on every other command
@click.option("--test", "which", flag_value="test", help="The flow-test (*.test.yaml) schema.")
@click.option("--caller", "which", flag_value="caller",
              help="The caller-script (*.caller.yaml) schema.")  # fmt: skip
@click.pass_obj
def schema(state: State, fmt: str, which: str | None) -> None:
    """Print the flow JSON Schema (for yaml-language-server's $schema), or with --test or
    --caller the schema of flow tests or caller scripts."""
    from voicecall.runtime.sim.schemas import caller_schema, flow_test_schema

    chosen = {"test": flow_test_schema, "caller": caller_schema}.get(which or "", flow_schema)
    click.echo(json.dumps(chosen(), indent=2))


@cli.command()
@json_option()
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
    # NO_COLOR: no styles at all (rich alone drops colours but keeps bold).
    console = Console(width=None if sys.stdout.isatty() else 200,
                      color_system=None if no_color() else "auto")  # fmt: skip
    console.print(table)
    click.echo("* required")


@cli.command("compile")
@click.argument("flow_ref", metavar="FLOW")
@click.option(
    "--provider",
    required=True,
    callback=_one_provider,
    metavar="P",
    help="twilio, plivo or telnyx.",
)
@click.option(
    "--param",
    "params",
    multiple=True,
    metavar="K=V",
    help="A param value shown in the output; repeatable.",
)
@format_option("text", "json")
@click.pass_obj
def compile_cmd(
    state: State, flow_ref: str, provider: str, params: tuple[str, ...], fmt: str
) -> None:
    """Compile FLOW (a name or a path) for a provider and print every block.

    Values known only during a call are shown as {{ templates }}.
    """
    catalog = _catalog_for(state, flow_ref)
    flow = _valid_flow(catalog, flow_ref)
    values = _param_values(flow, params)
    missing = [p.name for p in flow.params if p.required and p.name not in values]
    if missing:
        names = ", ".join(missing)
        click.echo(f"note: required param{'s' * (len(missing) > 1)} not given: {names}; "
                   "shown as {{ templates }} (add --param NAME=VALUE)", err=True)  # fmt: skip
    flows = {e.name: e.flow for e in catalog} | {flow.name: flow}
    compiled = compile_flow(flow, provider, flows, ErrorLevel.COLLECT)
    _print_diagnostics(compiled.diagnostics, err=True)
    if any(d.severity is Severity.ERROR for d in compiled.diagnostics):
        sys.exit(EXIT_INVALID)
    if fmt == "json":
        click.echo(dumps(compiled_json(compiled, values)), nl=False)
    else:
        click.echo(compiled_text(compiled, values), nl=False)


@cli.command()
@click.argument("flow_ref", metavar="FLOW")
@click.option(
    "--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True
)
@click.pass_obj
def graph(state: State, flow_ref: str, fmt: str) -> None:
    """Print the node graph of FLOW with its jumps (Mermaid or Graphviz dot)."""
    flow = _valid_flow(_catalog_for(state, flow_ref), flow_ref)
    click.echo(to_mermaid(flow) if fmt == "mermaid" else to_dot(flow), nl=False)


def _catalog_for(state: State, ref: str) -> Catalog:
    """The named flows, plus, for a flow given by path, the flows beside it (its subflows)."""
    catalog = state.catalog()
    if ref in catalog.entries or not Path(ref).is_file():
        return catalog
    return catalog.with_flow_file(Path(ref))


def _valid_flow(catalog: Catalog, ref: str) -> m.Flow:
    try:
        path = catalog.resolve(ref)
    except LookupError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        return load_valid_flow(path, catalog.infos())
    except FlowError as exc:
        _print_diagnostics(exc.diagnostics, err=True)
        raise InvalidInput(
            f"{path}: the flow has errors; `voicecall validate {path}` lists them", exc.diagnostics
        ) from None


def _print_diagnostics(diags: Sequence[Diagnostic], err: bool) -> None:
    cache: dict[str, list[str]] = {}
    for diag in diags:
        if diag.file not in cache:
            try:
                cache[diag.file] = Path(diag.file).read_text("utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                cache[diag.file] = []
        click.echo(render_text(diag, cache[diag.file]), err=err)


def _param_values(flow: m.Flow, pairs: Sequence[str]) -> dict[str, Any]:
    try:
        return parse_params(flow, pairs)
    except ParamError as exc:
        raise click.BadParameter(str(exc), param_hint="--param") from exc


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


def _register() -> None:
    from voicecall.plugin.cli_sim import simulate_cmd, test_cmd

    cli.add_command(simulate_cmd)
    cli.add_command(test_cmd)
    from voicecall.plugin.gateway.runner import gateway_cmd

    cli.add_command(gateway_cmd)
    from voicecall.plugin.cli_config import config_group

    cli.add_command(config_group)
    from voicecall.plugin.cli_calls import register_calls_cli

    register_calls_cli(cli)
    from voicecall.plugin.expose import register as register_expose

    register_expose(cli)
    from voicecall.plugin.mcp_server import register as register_mcp

    register_mcp(cli)


_register()
