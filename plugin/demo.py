"""`make demo`: what voicecall does today, on the embedded defaults (no keys, no network).

Validates the bundled flows with every check, then lists them with their params and shows
each flow's node graph.
"""

from __future__ import annotations

import sys

import click

from voicecall.dsl.catalog import Catalog, bundled_dir
from voicecall.dsl.errors import Severity, render_text
from voicecall.dsl.graph import build_graph
from voicecall.dsl.validate import validate_paths


def main() -> int:
    """Runs the demo; returns the process exit code."""
    click.secho("voicecall demo: the bundled flows, checked and listed\n", bold=True)
    catalog = Catalog()
    report = validate_paths([bundled_dir()], catalog.infos())
    for checked in report.files:
        for diag in checked.diagnostics:
            click.echo(render_text(diag, checked.lines))
    errors = report.count(Severity.ERROR) + report.count(Severity.WARNING)
    click.echo(
        f"validate --strict: {len(report.files)} flows, "
        f"{'no problems' if not errors else f'{errors} problems'}\n"
    )
    for entry in catalog:
        flow = entry.flow
        click.secho(f"{flow.name}", bold=True, nl=False)
        click.echo(f"  ({flow.direction}) {flow.description}")
        for p in flow.params:
            req = "required" if p.required else f"default {p.default!r}"
            click.echo(f"    param {p.name}: {p.type}, {req}. {p.description}")
        graph = build_graph(flow)
        for node in flow.nodes:
            kinds = " -> ".join(a.kind for a in node.actions)
            jumps = ", ".join(f"{e.label}: {e.dst}" for e in graph.successors(node.name))
            click.echo(f"    {node.name}: {kinds}" + (f"  [{jumps}]" if jumps else ""))
        click.echo()
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
