"""`make demo`, part 3: a conversation over a media stream, with the offline stand-ins.

With ``streaming.enabled`` a flow's ``converse`` node answers the carrier with a stream opening
(Twilio ``<Connect><Stream>``) instead of ``<Gather>``s; the mock carrier opens the WebSocket,
plays the scripted caller as audio, and plays out what the runtime sends, 20 ms a frame, in
real time. No keys and no network, so the runtime uses its offline stand-ins, and the demo says
so: a tone for the voice, the mock caller's script for speech recognition, and the caller
script's model replies. The caller interrupts the greeting (barge-in), books a table in two
turns, and the model's values go back to the flow, which confirms them in the carrier's voice.

What is shown comes from the mock carrier's record of the stream (``call.streams``: the bot's
frames as they arrived, the clears, the caller's utterances, the marks echoed) and the
runtime's record of the call (transcript, variables), on a real-time axis: a stream runs in
real time, whatever the simulation's virtual clock does.
"""

from __future__ import annotations

import asyncio
import html
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from voicecall.runtime.manager.core import ModelReply
from voicecall.runtime.sim.carrier.model import StreamRecord
from voicecall.runtime.sim.script import Script, Step
from voicecall.runtime.sim.simulate import CALLER, Simulation, Simulator
from voicecall.runtime.sim.voice import tone_speech
from voicecall.runtime.state import TranscriptLine

FLOW = Path(__file__).resolve().parent.parent / "flows" / "examples" / "table-booking.yaml"
PROVIDER = "twilio"
CONFIG: dict[str, Any] = {"streaming": {"enabled": True}}  # no tts, no keys: the stand-ins
DONE = {"date": "2026-01-05", "party": 4}
SCRIPT = Script(
    caller=(Step(action="answer"), Step(action="interrupt", value="A table on Monday please"),
            Step(action="say", value="Four of us")),
    model=("How many guests?", ModelReply(text="", done=DONE)),
)  # fmt: skip
STAND_INS = ("offline stand-ins (no keys, no network): a tone for the voice, the mock caller's "
             "script for speech recognition, scripted model replies")  # fmt: skip
GAP_S = 0.4  # a pause this long in the bot's frames separates two utterances (the caller's
# turn ends after 0.8 s of silence; within an utterance frames come every 20 ms)
FRAME_MS = 20


@dataclass(slots=True)
class Seen:
    """What the demo checks of the streamed call."""

    result: Simulation
    stream: StreamRecord | None
    opening: str  # the TwiML the runtime answered the carrier's webhook with
    stand_ins: bool  # the runtime runs the offline stand-in voice


async def run() -> Seen:
    """One inbound call of the table-booking example over a Twilio media stream."""
    async with Simulator(PROVIDER, config=CONFIG) as sim:
        assert sim.runtime is not None and sim.runtime.conversations is not None
        tts = sim.runtime.conversations.services.tts
        result = await sim.call(str(FLOW), script=SCRIPT)
        carrier = sim.runtime.carrier
        streams = [s for c in carrier.calls.values() for s in c.streams]
        openings = [d.reply.decode("utf-8", "replace") for d in carrier.deliveries
                    if b"<Stream" in d.reply]  # fmt: skip
    return Seen(result=result, stream=streams[0] if streams else None,
                opening=openings[0] if openings else "",
                stand_ins=getattr(tts, "name", "") == "offline stand-in voice")  # fmt: skip


def run_voice() -> tuple[bool, str]:
    """Part 3 of the demo; returns whether the call went as expected, and a one-line summary."""
    click.secho("a streamed conversation on the mock carrier (Twilio Media Streams), config "
                "streaming.enabled, no keys", bold=True)  # fmt: skip
    click.secho(f"  {STAND_INS}", fg="yellow")
    click.secho(f"\n== the caller books a table (table-booking, inbound, {CALLER}), "
                "interrupting the greeting", bold=True)  # fmt: skip
    started = time.perf_counter()
    seen = asyncio.run(run())
    show_opening(seen.opening)
    if seen.stream is not None:
        show_stream(seen.stream, seen.result)
    show_after(seen.result)
    problems = check(seen)
    took = f"{time.perf_counter() - started:.1f}s"
    if problems:
        click.secho(f"streamed call in {took}: " + "; ".join(problems), fg="red", bold=True)
        return False, "failed: " + "; ".join(problems)
    click.secho(f"streamed call in {took}: as expected", fg="green", bold=True)
    return True, ("a streamed call on Twilio Media Streams: greeting cut by barge-in, "
                  "2 caller turns transcribed, date and party handed back to the flow")  # fmt: skip


# --- what is shown -------------------------------------------------------------------------------


def show_opening(twiml: str) -> None:
    """The runtime's answer to the carrier: the stream opening, its one-use token hidden."""
    click.echo("  the runtime answers the call's webhook with a stream opening (TwiML):")
    if not twiml:
        click.secho("    (none: the call was not streamed)", fg="red")
        return
    connect = re.search(r"<Connect[^>]*>", twiml)
    stream = re.search(r"<Stream[^>]*>", twiml)
    for tag, indent in ((connect, 4), (stream, 6)):
        if tag is not None:
            click.echo(" " * indent + _short_call(html.unescape(tag.group(0))))
    for name, value in re.findall(r'<Parameter name="([^"]+)" value="([^"]*)" />', twiml):
        shown = "(one-use, hidden)" if name == "token" else value
        click.echo(f'        <Parameter name="{name}" value="{shown}" />')
    click.echo("  the carrier opens that WebSocket and speaks Twilio Media Streams on it: "
               "connected, start (customParameters: callId, token), then a 20 ms media frame "
               "(μ-law 8 kHz) each way; the runtime sends media, mark and clear")  # fmt: skip


def _short_call(tag: str) -> str:
    return re.sub(r"call=([0-9a-f]{8})[0-9a-f-]+", r"call=\1…", tag)


def show_stream(stream: StreamRecord, result: Simulation) -> None:
    """The stream on a real-time axis: the bot's utterances (frames sent, heard or cut), the
    caller's words, the clear, the recognized words, the end."""
    t0 = stream.opened_at or 0.0
    click.echo("  the stream (real seconds since it opened; the stand-in voice's frames, the "
               "caller's speech-like audio):")  # fmt: skip
    record = result.record
    bot = [line for line in (record.transcript if record else []) if line.speaker == "bot"]
    heard = [line for line in (record.transcript if record else []) if line.speaker == "user"]
    events = _bot_events(stream, bot) + _caller_events(stream, heard)
    events += [(c.at, "bot", "clear", f"barge-in (inbound greetings are interruptible): the "
                f"carrier drops the {c.dropped_bytes // 8} ms still queued")
               for c in stream.clears]  # fmt: skip
    for at, who, what, text in sorted(events, key=lambda e: e[0]):
        click.echo(f"    {at - t0:6.2f}s  {who:<7} {what:<10} {text}")
    end = (stream.closed_at or t0) - t0
    if stream.ended == "redirect":  # the runtime left the stream for the flow's next node
        click.echo(f"    {'':>7}  {'model':<7} {'done':<10} {json.dumps(DONE)} (scripted): "
                   "the stream is stopped and the flow goes on at on_done")  # fmt: skip
    click.echo(f"    {end:6.2f}s  {'carrier':<7} {'stream-end':<10} {stream.ended}")
    click.echo(f"  {stream.media_frames} frames of the bot's audio, {stream.frames_sent} of the "
               f"caller's; marks echoed: {', '.join(stream.marks) or 'none'}")  # fmt: skip


def _bot_events(
    stream: StreamRecord, said: list[TranscriptLine]
) -> list[tuple[float, str, str, str]]:
    """The bot's audio as utterances: runs of frames split by a pause or a clear, matched in
    order with the bot's transcript lines."""
    cuts = sorted(c.at for c in stream.clears)
    runs: list[list[float]] = []
    for at in stream.arrivals:
        new = not runs or at - runs[-1][-1] > GAP_S or any(runs[-1][-1] < c <= at for c in cuts)
        if new:
            runs.append([at])
        else:
            runs[-1].append(at)
    out = []
    marks = iter(stream.marks)  # echoed in order, one per utterance heard to the end
    for i, run in enumerate(runs):
        line = said[i] if i < len(said) else None
        what = "greeting" if i == 0 else "reply"
        text = f'"{line.text}"' if line else ""
        text += " (the model's, scripted)" if i and line else ""
        seconds = len(run) * FRAME_MS / 1000
        if line is not None and "cut off" in line.source:
            whole = len(tone_speech(line.text)) / 8000  # the stand-in voice's length for it
            how = f"({seconds:.2f} s of {whole:.2f} s) sent, cut off"
        else:
            mark = next(marks, None)
            how = f"({seconds:.2f} s) sent, heard to the end" + (
                f" (mark {mark} echoed)" if mark else "")  # fmt: skip
        out.append((run[0], "bot", what, f"{text}: {len(run)} frames {how}"))
    return out


def _caller_events(
    stream: StreamRecord, heard: list[TranscriptLine]
) -> list[tuple[float, str, str, str]]:
    out = []
    for i, utterance in enumerate(stream.utterances):
        what = "interrupt" if utterance.over_bot else "say"
        over = ", over the bot's audio" if utterance.over_bot else ""
        seconds = utterance.frames * FRAME_MS / 1000
        out.append((utterance.started, "caller", what,
                    f'"{utterance.text}" ({seconds:.2f} s of speech{over})'))  # fmt: skip
        if i < len(heard) and utterance.ended is not None:
            out.append((utterance.ended, "caller", "stops", f'speech recognition (the stand-in) '
                        f'hands over "{heard[i].text}"'))  # fmt: skip
    return out


def show_after(result: Simulation) -> None:
    """After the stream: the flow's own nodes, in the carrier's voice; then the record."""
    after = False
    for entry in result.timeline:
        if entry.what == "stream-end":
            after = True
            click.echo("  then the flow goes on in the carrier's voice:")
            continue
        if after and entry.who == "bot":
            text = entry.detail.get("text", "")
            click.echo(f"    {'bot':<7} {entry.what:<10} {text}".rstrip())
    record = result.record
    if record is None:
        click.secho("  no call was created", fg="red")
        return
    click.echo("  transcript (the runtime's record):")
    for line in record.transcript:
        where = f"   [{line.source}]" if line.source else ""
        click.echo(f"    {line.speaker:<5} {line.text}{where}")
    values = result.to_json()["variables"]
    click.echo(f"  handed back to the flow (collect, then on_done): "
               f"{json.dumps(values, ensure_ascii=False)}")  # fmt: skip
    colour = "green" if result.ok else "red"
    click.secho(f"  nodes {' -> '.join(record.visited)}; ended: {record.end_reason}", fg=colour)


# --- what is checked -----------------------------------------------------------------------------


def check(seen: Seen) -> list[str]:
    """What went otherwise than the demo says it goes: empty when all is as expected."""
    result, stream = seen.result, seen.stream
    problems = []
    if not seen.stand_ins:
        problems.append("the offline stand-in voice was not used")
    if not result.ok:
        problems.append(f"the call ended {result.end_reason}: {result.error or result.call_error}")
    if stream is None or not stream.media_frames:
        problems.append("no audio on a media stream")
        return problems
    if len(stream.clears) != 1 or not any(u.over_bot for u in stream.utterances):
        problems.append("no barge-in")
    record = result.record
    if record is None or record.visited != ["book", "confirm"]:
        problems.append("the flow did not go on at on_done")
    elif [t.text for t in record.transcript if t.speaker == "user"] != [
        "A table on Monday please", "Four of us"]:  # fmt: skip
        problems.append("the caller's words were not all transcribed")
    values = result.to_json()["variables"]
    if {k: values.get(k) for k in DONE} != DONE:
        problems.append(f"the collected values are {values}")
    return problems
