"""`voicecall simulate` and `voicecall test`: flows run on the mock carrier."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from voicecall.dsl.errors import FlowError, render_text
from voicecall.plugin.output import json_option
from voicecall.runtime.sim.flowtest import Outcome, find_tests, load_cases, run_case
from voicecall.runtime.sim.script import DEFAULT, Script, load_script
from voicecall.runtime.sim.simulate import Simulation, simulate

EXIT_FAILED = 1


def _provider(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    from voicecall.plugin.cli import _one_provider

    if isinstance(value, tuple):
        return tuple(_one_provider(ctx, param, v) for v in value)
    return _one_provider(ctx, param, value)


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
@json_option()
@click.pass_obj
def simulate_cmd(  # noqa: PLR0917 - click passes every option
    state: Any, flow_ref: str, provider: str, caller_file: Path | None,
    params: tuple[str, ...], as_json: bool,
) -> None:  # fmt: skip
    """Run one call of FLOW on the mock carrier and print what happened.

    No keys and no network: the real runtime (webhook server on loopback, signatures, SQLite)
    talks to an in-process carrier that follows the caller script. Virtual time: pauses and
    timeouts take no time. Exits 0 when the call ends normally.
    """
    from voicecall.plugin.cli import _param_values, _valid_flow

    catalog = state.catalog()
    flow = _valid_flow(catalog, flow_ref)
    values = {k: v for k, v in _param_values(flow, params).items() if any(
        p.startswith(f"{k}=") for p in params)}  # fmt: skip
    script = _script(caller_file)
    result = asyncio.run(simulate(flow_ref, provider=provider, script=script, params=values,
                                  catalog=catalog))  # fmt: skip
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
        lines = path.read_text("utf-8").splitlines()
        for diag in exc.diagnostics:
            click.echo(render_text(diag, lines), err=True)
        raise click.UsageError(f"{path}: not a valid caller script") from exc


def _print_simulation(sim: Simulation) -> None:
    data = sim.to_json()
    click.secho(f"{data['flow']} on {data['provider']} (mock carrier)", bold=True)
    if sim.error:
        click.secho(f"  error: {sim.error}", fg="red")
    for line in data["transcript"]:
        who = "bot   " if line["speaker"] == "bot" else "caller"
        where = f"   ({line['source']})" if line["source"] else ""
        click.echo(f"  {who} {line['text']}{where}")
    click.echo(f"  nodes:     {' -> '.join(data['visited']) or '(none)'}")
    if data["variables"]:
        click.echo(f"  variables: {json.dumps(data['variables'], ensure_ascii=False)}")
    duration = f", {data['duration_s']}s of call time" if data["duration_s"] is not None else ""
    colour = "green" if sim.ok else "red"
    click.secho(f"  ended:     {data['end_reason']}{duration}", fg=colour)


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
@json_option()
@click.pass_obj
def test_cmd(state: Any, paths: tuple[Path, ...], providers: tuple[str, ...],
             as_json: bool) -> None:  # fmt: skip
    """Run flow tests (*.test.yaml) on the mock carrier, for each provider.

    PATHS default to the configured flow folders, else ./flows.
    """
    targets = list(paths) or state.flow_dirs() or [Path("flows")]
    files = find_tests([p for p in targets if p.exists()])
    if not files:
        raise click.UsageError("no flow tests (*.test.yaml) found")
    catalog = state.catalog()
    outcomes = asyncio.run(_run_all(files, providers, catalog))
    if as_json:
        click.echo(json.dumps([_outcome_json(o) for o in outcomes], indent=2))
    else:
        for o in outcomes:
            mark = click.style("PASS", fg="green") if o.ok else click.style("FAIL", fg="red")
            click.echo(f"{mark} {o.case.where} {o.case.name} [{o.provider}]")
            for failure in o.failures:
                click.echo(f"     {failure}")
        failed = sum(not o.ok for o in outcomes)
        click.echo(f"{len(outcomes) - failed} passed, {failed} failed")
    sys.exit(EXIT_FAILED if any(not o.ok for o in outcomes) else 0)


async def _run_all(files: list[Path], only: tuple[str, ...], catalog: Any) -> list[Outcome]:
    outcomes = []
    for path in files:
        try:
            cases = load_cases(path)
        except FlowError as exc:
            lines = path.read_text("utf-8").splitlines()
            for diag in exc.diagnostics:
                click.echo(render_text(diag, lines), err=True)
            raise click.UsageError(f"{path}: not a valid flow test") from exc
        for case in cases:
            for provider in only or case.providers:
                outcomes.append(await run_case(case, provider, catalog))
    return outcomes


def _outcome_json(o: Outcome) -> dict[str, Any]:
    return {"file": str(o.case.file), "case": o.case.name, "provider": o.provider, "ok": o.ok,
            "failures": o.failures,
            "simulation": o.simulation.to_json() if o.simulation else None}  # fmt: skip
