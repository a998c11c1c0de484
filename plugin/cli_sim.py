"""`voicecall simulate` and `voicecall test`: flows run on the mock carrier."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from voicecall.dsl.errors import FlowError, render_text
from voicecall.dsl.values import is_e164
from voicecall.plugin.cli_errors import InvalidInput
from voicecall.plugin.output import json_option
from voicecall.plugin.params import missing_required
from voicecall.runtime.sim.flowtest import (
    Case,
    Outcome,
    case_catalog,
    find_tests,
    load_cases,
    run_case,
)
from voicecall.runtime.sim.script import DEFAULT, Script, load_script
from voicecall.runtime.sim.simulate import Simulation, SimulationError, simulate

EXIT_FAILED = 1


def _provider(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    from voicecall.plugin.cli import _one_provider

    if isinstance(value, tuple):
        return tuple(_one_provider(ctx, param, v) for v in value)
    return _one_provider(ctx, param, value)


# Config keys a simulation takes from the host config: what the flow and its admission read.
# Flow tests take none of them, so that they pass or fail the same on every machine.
SIM_CONFIG_KEYS = ("timezone", "inboundPolicy", "allowFrom", "inboundGreeting")


def _sim_config(config: dict[str, Any], stream: bool = False) -> dict[str, Any]:
    chosen = {key: config[key] for key in SIM_CONFIG_KEYS if key in config}
    return {**chosen, **STREAMED} if stream else chosen


STREAMED = {"streaming": {"enabled": True}}  # --stream: the mock carrier's media streams


def _number(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not is_e164(value):
        raise click.BadParameter(f"{value!r} is not an E.164 number such as +15550001111")
    return value


@click.command("simulate")
@click.argument("flow_ref", metavar="FLOW")
@click.option(
    "--provider",
    default="twilio",
    show_default=True,
    callback=_provider,
    help="Which carrier's protocol the mock carrier speaks.",
)
@click.option(
    "--caller",
    "caller_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A caller script (YAML). Default: answer, say yes.",
)
@click.option("--param", "params", multiple=True, metavar="K=V", help="A flow param.")
@click.option(
    "--from",
    "from_",
    callback=_number,
    metavar="NUMBER",
    help="call.from: the caller (inbound flows), or our number (outbound).",
)
@click.option(
    "--to",
    callback=_number,
    metavar="NUMBER",
    help="call.to: our number (inbound flows), or the number called (outbound).",
)
@click.option(
    "--direction",
    type=click.Choice(["inbound", "outbound"]),
    help="Inbound (they call) or outbound (we call). Default: inbound for an inbound flow.",
)
@click.option(
    "--now",
    metavar="TIME",
    help="The simulated time the call starts at, ISO 8601 "
    "(2026-01-05T19:30:00; without an offset, in the flow's time zone).",
)
@click.option(
    "--stream",
    is_flag=True,
    help="Serve conversations over a media stream (streaming.enabled), with offline "
    "stand-ins: a tone for the voice, the caller script's words for speech recognition.",
)
@json_option()
@click.pass_obj
def simulate_cmd(  # noqa: PLR0917 - click passes every option
    state: Any, flow_ref: str, provider: str, caller_file: Path | None,
    params: tuple[str, ...], from_: str | None, to: str | None, direction: str | None,
    now: str | None, stream: bool, as_json: bool,
) -> None:  # fmt: skip
    """Run one call of FLOW (a name, or a flow file's path) on the mock carrier and print what
    happened.

    No keys and no network: the real runtime (webhook server on loopback, signatures, SQLite)
    talks to an in-process carrier that follows the caller script. Virtual time: pauses and
    timeouts take no time. Exits 0 when the call ends normally or the caller is rejected as
    the flow's policy says, 1 otherwise.
    """
    from voicecall.plugin.cli import _param_values, _valid_flow

    catalog = state.catalog()
    try:
        path = catalog.resolve(flow_ref)
    except LookupError as exc:
        raise click.UsageError(str(exc.args[0])) from None
    if flow_ref not in catalog.entries:
        catalog = catalog.with_flow_file(path)
    flow = _valid_flow(catalog, str(path))
    values = {k: v for k, v in _param_values(flow, params).items() if any(
        p.startswith(f"{k}=") for p in params)}  # fmt: skip
    missing = missing_required(flow, values)
    if missing:
        raise click.UsageError(missing)
    script = _script(caller_file)
    try:
        run = simulate(str(path), provider=provider, script=script, params=values,
                       catalog=catalog, config=_sim_config(state.config, stream),
                       from_=from_, to=to,
                       now=now, direction=direction)  # fmt: skip
        result = asyncio.run(run)
    except SimulationError as exc:
        raise click.UsageError(str(exc)) from None
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, ensure_ascii=False))
    else:
        _print_simulation(result)
    sys.exit(0 if result.ok else EXIT_FAILED)


def _script(path: Path | None) -> Script:
    if path is None:
        return DEFAULT
    try:
        return load_script(path)
    except FlowError as exc:
        lines = path.read_text("utf-8", errors="replace").splitlines()
        for diag in exc.diagnostics:
            click.echo(render_text(diag, lines), err=True)
        raise InvalidInput(f"{path}: not a valid caller script", exc.diagnostics) from None


def _print_simulation(sim: Simulation) -> None:
    data = sim.to_json()
    click.secho(f"{data['flow']} on {data['provider']} (mock carrier)", bold=True)
    click.echo(f"  call:      from {data['from']} to {data['to']}, {data['started']}")
    for error in (sim.error, sim.call_error):
        if error:
            click.secho(f"  error:     {error}", fg="red")
    for line in data["transcript"]:
        who = "bot   " if line["speaker"] == "bot" else "caller"
        where = f"   ({line['source']})" if line["source"] else ""
        click.echo(f"  {who} {line['text']}{where}")
    if sim.rejection is not None:
        click.secho(f"  rejected:  {sim.rejection} (before the flow started)", fg="yellow")
    else:
        click.echo(f"  nodes:     {' -> '.join(data['visited']) or '(none)'}")
    for transfer in data["transfers"]:
        outcome = transfer["outcome"] or "no answer before the call ended"
        click.echo(f"  transfer:  to {', '.join(transfer['to'])} at {transfer['at_s']}s: {outcome}")
    if data["variables"]:
        click.echo(f"  variables: {json.dumps(data['variables'], ensure_ascii=False)}")
    for step in sim.unused:
        click.secho(f"  warning:   a script step was never used: {step}", fg="yellow")
    duration = f", {data['duration_s']}s of call time" if data["duration_s"] is not None else ""
    colour = "green" if sim.ok else "red"
    ended = data["end_reason"] or f"no call ({data['outcome']})"
    click.secho(f"  ended:     {ended}{duration}", fg=colour)


@click.command("test")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option(
    "--provider",
    "providers",
    multiple=True,
    callback=_provider,
    metavar="P",
    help="Only these providers (default: each test's own list, else all three).",
)
@click.option(
    "--stream",
    is_flag=True,
    help="Serve conversations over a media stream (streaming.enabled), with offline "
    "stand-ins: a tone for the voice, the caller script's words for speech recognition.",
)
@json_option()
@click.pass_obj
def test_cmd(state: Any, paths: tuple[Path, ...], providers: tuple[str, ...], stream: bool,
             as_json: bool) -> None:  # fmt: skip
    """Run flow tests (*.test.yaml) on the mock carrier, for each provider.

    PATHS (files or folders) default to the configured flow folders, else ./flows. A test
    file names its flow by a path relative to itself, or by name (looked up in its own folder
    first). A test file with errors is reported with file:line:col and fails the run.
    """
    targets = list(paths) or state.flow_dirs() or [Path("flows")]
    files = find_tests([p for p in targets if p.exists()])
    if not files:
        raise click.UsageError("no flow tests (*.test.yaml) found")
    cases, invalid = _load_all(files, as_json)
    config = STREAMED if stream else None
    outcomes = asyncio.run(_run_all(cases, providers, state.catalog(), config))
    if as_json:
        click.echo(json.dumps([*invalid, *(_outcome_json(o) for o in outcomes)], indent=2))
    else:
        for o in outcomes:
            mark = click.style("PASS", fg="green") if o.ok else click.style("FAIL", fg="red")
            click.echo(f"{mark} {o.case.where} {o.case.name} [{o.provider}]")
            for failure in o.failures:
                click.echo(f"     {failure}")
        failed = sum(not o.ok for o in outcomes)
        broken = f", {len(invalid)} invalid test file{'s' * (len(invalid) > 1)}" if invalid else ""
        click.echo(f"{len(outcomes) - failed} passed, {failed} failed{broken}")
    sys.exit(EXIT_FAILED if invalid or any(not o.ok for o in outcomes) else 0)


def _load_all(files: list[Path], as_json: bool) -> tuple[list[Case], list[dict[str, Any]]]:
    """Every case of every file, and a JSON entry per file with errors (printed unless JSON)."""
    cases: list[Case] = []
    invalid: list[dict[str, Any]] = []
    for path in files:
        try:
            cases += load_cases(path)
        except FlowError as exc:
            invalid.append({"file": str(path), "ok": False,
                            "errors": [d.to_json() for d in exc.diagnostics]})  # fmt: skip
            if not as_json:
                lines = path.read_text("utf-8", errors="replace").splitlines()
                for diag in exc.diagnostics:
                    click.echo(render_text(diag, lines), err=True)
    return cases, invalid


async def _run_all(
    cases: list[Case], only: tuple[str, ...], catalog: Any, config: dict[str, Any] | None
) -> list[Outcome]:
    outcomes = []
    folders: dict[Path, Any] = {}  # each test folder's flows, loaded once
    for case in cases:
        if case.file.parent not in folders:
            folders[case.file.parent] = case_catalog(case, catalog)
        for provider in only or case.providers:
            folder = folders[case.file.parent]
            outcomes.append(await run_case(case, provider, folder, config=config))
    return outcomes


def _outcome_json(o: Outcome) -> dict[str, Any]:
    return {"file": str(o.case.file), "case": o.case.name, "provider": o.provider, "ok": o.ok,
            "failures": o.failures,
            "simulation": o.simulation.to_json() if o.simulation else None}  # fmt: skip
