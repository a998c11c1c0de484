"""`make demo`: the doors, then complete calls end to end (no keys, no network).

Part 1 (``demo_doors``) starts `voicecall gateway` on the mock carrier and drives a call with
the CLI as a user would. Part 2: one runtime (webhook server on loopback, SQLite in a
temporary folder) talks to the mock carrier speaking Twilio's protocol: a notify call, a
conversation driven by a scripted agent, an inbound call from an allowlisted number answered
by a scripted model, and an inbound call from a number that is not on the list. Each call's
timeline (what the carrier did and heard) and transcript (what the flow said, with its source
line) are printed. Part 3 (``demo_voice``): a conversation over a media stream, with the
offline stand-ins for the voice, speech recognition and the model (barge-in included).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from voicecall.plugin.output import no_color
from voicecall.runtime.sim.script import AgentStep, Script, Step
from voicecall.runtime.sim.simulate import Simulation, Simulator

ALLOWED, STRANGER, CALLEE = "+15550001111", "+15559990000", "+15550002222"

CALLS: list[tuple[str, str, dict[str, Any], Script, str]] = [
    ("a notify call", "notify", {"message": "Your table for two is ready. See you soon!"},
     Script(caller=(Step(action="answer"),)), CALLEE),
    ("a conversation, the agent driving it", "conversation",
     {"message": "Hello, this is the dental clinic's assistant."},
     Script(caller=(Step(action="answer"), Step(action="say", value="Hi, who is this?"),
                    Step(action="say", value="Yes, Thursday at ten works for me.")),
            agent=(AgentStep(action="continue", text="Your check-up is due. Can you come on "
                             "Thursday at ten?"), AgentStep(action="end"))), CALLEE),
    ("an inbound call from an allowlisted number", "inbound", {},
     Script(caller=(Step(action="answer"), Step(action="say", value="When are you open?"),
                    Step(action="hangup")),
            model=("We are open Monday to Friday, nine to five.",)), ALLOWED),
    ("an inbound call from a number not on the list", "inbound", {},
     Script(caller=(Step(action="answer"), Step(action="say", value="Hello?"))), STRANGER),
]  # fmt: skip


async def run(folder: Path) -> list[Simulation]:
    config = {"inboundPolicy": "allowlist", "allowFrom": [ALLOWED], "store": str(folder)}
    results = []
    async with Simulator("twilio", config=config, store_dir=folder) as sim:
        for title, flow, params, script, number in CALLS:
            click.secho(f"\n== {title} ({flow}, {number})", bold=True)
            result = await sim.call(flow, script=script, params=params, caller=number)
            show(result)
            results.append(result)
    return results


def show(result: Simulation) -> None:
    click.echo("  timeline (the carrier's side):")
    for entry in result.timeline:
        text = entry.detail.get("text") or entry.detail.get("digits") or entry.detail.get(
            "status") or ""  # fmt: skip
        click.echo(f"    {entry.t:6.1f}s  {entry.who:<7} {entry.what:<8} {text}")
    record = result.record
    if record is None:
        click.secho("  no call was created: the caller was rejected before any flow ran",
                    fg="yellow")  # fmt: skip
        return
    click.echo("  transcript (the runtime's record):")
    for line in record.transcript:
        where = f"   [{line.source}]" if line.source else ""
        click.echo(f"    {line.speaker:<5} {line.text}{where}")
    colour = "green" if result.ok else "red"
    click.secho(f"  nodes {' -> '.join(record.visited)}; ended: {record.end_reason}", fg=colour)


def main(*, doors: bool = True, voice: bool = True) -> int:
    """Runs the demo (with ``doors``: part 1 too; with ``voice``: part 3, the streamed
    conversation); returns the process exit code."""
    # click colours a terminal unless a context says otherwise: NO_COLOR says otherwise.
    with click.Context(click.Command("demo"), color=False if no_color() else None):
        return _demo(doors, voice)


def _demo(doors: bool, voice: bool) -> int:
    started = time.perf_counter()
    parts = doors or voice  # more than one part: numbered, then a summary
    doors_ok, doors_summary = True, ""
    if doors:
        from voicecall.plugin.demo_doors import run_doors

        click.secho("voicecall demo, part 1: the doors (`voicecall gateway` and the call "
                    "commands, mock carrier, no keys)\n", bold=True)  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            doors_ok, doors_summary = run_doors(Path(tmp))
    if parts:
        click.secho(f"\nvoicecall demo, part {2 if doors else 1}: ", bold=True, nl=False)
    calls_ok = _calls("four flows on the runtime" if parts else "voicecall demo")
    voice_ok, voice_summary = True, ""
    if voice:
        from voicecall.plugin.demo_voice import run_voice

        click.secho(f"\nvoicecall demo, part {3 if doors else 2}: ", bold=True, nl=False)
        voice_ok, voice_summary = run_voice()
    if parts:
        click.secho(f"\nsummary ({time.perf_counter() - started:.1f}s)", bold=True)
        if doors:
            click.secho(f"  doors: {doors_summary}", fg="green" if doors_ok else "red")
        click.secho("  flows: 4 calls on the runtime, " +
                    ("all as expected" if calls_ok else "something went wrong"),
                    fg="green" if calls_ok else "red")  # fmt: skip
        if voice:
            click.secho(f"  voice: {voice_summary}", fg="green" if voice_ok else "red")
    return 0 if doors_ok and calls_ok and voice_ok else 1


def _calls(title: str) -> bool:
    click.secho(f"{title}: the mock carrier (Twilio protocol), SQLite, no keys", bold=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        results = asyncio.run(run(Path(tmp)))
        db = Path(tmp) / "calls.sqlite"
        click.echo(f"\nstore: {db.name}, {db.stat().st_size} bytes, in a temporary folder")
    rejected_ok = results[-1].record is None and not results[-1].error
    ok = all(r.ok for r in results[:-1]) and rejected_ok
    click.secho(f"{len(results)} calls in {time.perf_counter() - started:.1f}s: "
                f"{'all as expected' if ok else 'something went wrong'}",
                fg="green" if ok else "red", bold=True)  # fmt: skip
    return ok


if __name__ == "__main__":
    sys.exit(main())
