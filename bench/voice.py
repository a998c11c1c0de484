"""Voice latencies of streamed conversations, through the runtime (`--only voice`).

Issue 9's bars, measured on the real runtime (:func:`~voicecall.runtime.app.start_runtime`
through the :class:`~voicecall.runtime.sim.simulate.Simulator`: provider mock, streaming on,
the real webhook server, :class:`StreamEndpoint`, ``CallStreams`` and ``StreamedConversation``),
with the mock carrier as the carrier: it opens the Twilio stream the compiled flow asks for,
sends a ``media`` frame every 20 ms, plays our audio out at a phone's speed, echoes marks,
and records each ``clear`` with the time it arrived. The caller barges into every reply.

The services answer at once, so that what is measured is the runtime's own time: the TTS
streams from memory (the offline tone voice's audio, made beforehand; 100 ms chunks), the
transcriber emits its final transcript when its end-of-turn detector hears 300 ms of silence
after the caller's words (the words come from the carrier's captions), the responder returns
its reply at once.

- **first frame**: first TTS byte (the service yields its first chunk) -> our first media
  frame of that utterance received by the carrier (target < 5 ms). The greeting is synthesized
  ahead, before the stream opens, so only replies count here; the runtime's own
  ``Metrics.first_frame`` (first chunk in hand -> frame sent, greeting included) is shown too.
- **onset -> clear**: the first frame of the caller's speech above the VAD's threshold arrives
  at the endpoint (the run of frames that started the VAD's onset) -> the ``clear`` received by
  the carrier (target < 100 ms), in wall time and in audio time: the caller's frames that had
  arrived meanwhile, from that first one on (the VAD needs 3 frames, 60 ms, to call it speech).
- **turn**: what the runtime adds to a caller's turn: the final transcript emitted -> the
  responder asked; the responder's answer -> the TTS service asked; first TTS byte -> first
  frame at the carrier. The issue's pair (final -> request, first byte -> first frame) and
  the sum of all three per turn (target p99 < 20 ms together).

Calls run on a few runtimes at once in one process (a few concurrent calls on a server). The
runtime is instrumented only from outside: the services above time themselves, and the sink
the endpoint is given for each stream is wrapped to note when caller frames arrive and when the
conversation's VAD turned to speech (its public ``vad.speaking``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

FLOW = """version: 1
name: bench-voice
description: A streamed conversation with the response model, for the voice bench.
direction: inbound
start: talk
nodes:
  talk:
    - converse:
        driver: model
        message: {greeting}
        system_prompt: You answer for the Harbour Hotel.
        max_turns: 100
"""
GREETING = "Hello, this is the front desk of the Harbour Hotel. How can I help you today?"
REPLY = "Of course, let me check that for you. One moment, please."
INTERRUPTION = "Yes, a double room"
TURNS_PER_CALL = 8
RUNTIMES = 6  # concurrent calls, one runtime each
SILENCE_MS = 300  # the transcriber's end of turn
BUDGET_S = 25.0  # no call starts past this
QUICK_BUDGET_S = 15.0
TARGET_FIRST_FRAME_MS = 5.0
TARGET_CLEAR_MS = 100.0
TARGET_TURN_P99_MS = 20.0
FRAME_S = 0.02
CHUNK = 800  # bytes of μ-law: 100 ms, as a streaming service sends


def log(message: str) -> None:
    print(f"  [voice] {message}", file=sys.stderr, flush=True)


def now() -> float:
    """The event loop's clock (``time.monotonic``): the mock carrier stamps with it too."""
    return time.monotonic()


# --- the services, timing themselves ------------------------------------------------------------


@dataclass(slots=True)
class Synthesis:
    text: str
    called: float
    first: float | None = None


class TimedTts:
    """A TTS service streaming from memory (the offline tone voice's audio for each text,
    made once beforehand) in 100 ms chunks, noting when it is asked and when its first chunk
    is handed over."""

    name = "bench voice (audio from memory)"

    def __init__(self, texts: tuple[str, ...], log_: list[Synthesis]):
        from voicecall.runtime.sim.voice import tone_speech

        self.tone = tone_speech
        self.audio = {text: tone_speech(text) for text in texts}
        self.log = log_

    async def synthesize(self, text: str, *, voice_settings: Any) -> AsyncIterator[bytes]:
        entry = Synthesis(text=text, called=now())
        self.log.append(entry)
        audio = self.audio.get(text) or self.audio.setdefault(text, self.tone(text))
        for at in range(0, len(audio), CHUNK):
            if entry.first is None:
                entry.first = now()
            yield audio[at : at + CHUNK]

    async def aclose(self) -> None:
        return None


class CueTranscriber:
    """Emits the caller's words as a final transcript once its end-of-turn detector (the
    runtime's :class:`EndOfTurn`) hears the turn end; notes when. Nothing else."""

    def __init__(self, captions: Any, key: str, finals: list[float]):
        from voicecall.runtime.voice.stt import EndOfTurn

        self.captions = captions
        self.key = key
        self.finals = finals
        self.turn = EndOfTurn(silence_ms=SILENCE_MS)
        self.events_: asyncio.Queue[Any] = asyncio.Queue()

    async def start(self) -> None:
        return None

    def feed(self, ulaw: bytes) -> None:
        from voicecall.runtime.voice.stt import Final

        # No SpeechStarted: a service reports it a few hundred ms late, and the barge-in
        # measured here is the local VAD's (the service's, when first, clears the same way).
        if self.turn.feed(ulaw) == "end":
            text = self.captions.next(self.key)
            if text:
                self.finals.append(now())
                self.events_.put_nowait(Final(text))

    async def events(self) -> AsyncIterator[Any]:
        while (event := await self.events_.get()) is not None:
            yield event

    async def close(self) -> None:
        self.events_.put_nowait(None)


def _responder(asked: list[float], answered: list[float]) -> Any:
    from voicecall.runtime.app import ScriptedResponder

    class TimedResponder(ScriptedResponder):
        """Answers at once (the script's replies), noting when it is asked and answers."""

        async def reply(self, call: Any, heard: str, options: Mapping[str, Any]) -> Any:
            asked.append(now())
            answer = await super().reply(call, heard, options)
            answered.append(now())
            return answer

    return TimedResponder([])


@dataclass(slots=True)
class Onset:
    first_above: float  # arrival of the first frame of the run that made the VAD call speech
    arrivals: list[float]  # of the caller's frames from that one on (filled as they come)


class WatchedSink:
    """The sink the endpoint gets: the conversation, plus the caller's frame arrivals and the
    moments its VAD turned to speech."""

    def __init__(self, conversation: Any, onsets: list[Onset]):
        self.conversation = conversation
        self.onsets = onsets
        self.recent: deque[float] = deque(maxlen=conversation.vad.settings.onset_frames)
        self.current: Onset | None = None

    def on_audio(self, ulaw: bytes) -> None:
        at = now()
        vad = self.conversation.vad
        was = vad.speaking
        self.recent.append(at)
        self.conversation.on_audio(ulaw)
        if self.current is not None and len(self.current.arrivals) < 50:
            self.current.arrivals.append(at)
        if vad.speaking and not was:
            self.current = Onset(first_above=self.recent[0], arrivals=list(self.recent))
            self.onsets.append(self.current)

    def on_mark(self, outcome: Any) -> None:
        self.conversation.on_mark(outcome)

    def on_dtmf(self, digit: str) -> None:
        self.conversation.on_dtmf(digit)

    def on_stop(self, reason: str) -> None:
        self.conversation.on_stop(reason)


@dataclass(slots=True)
class Probe:
    """One runtime's measurements."""

    syntheses: list[Synthesis] = field(default_factory=list)
    finals: list[float] = field(default_factory=list)
    asked: list[float] = field(default_factory=list)
    answered: list[float] = field(default_factory=list)
    onsets: list[Onset] = field(default_factory=list)
    streams: list[Any] = field(default_factory=list)  # the carrier's StreamRecords
    calls: int = 0
    errors: list[str] = field(default_factory=list)


def _instrument(sim: Any, probe: Probe) -> None:
    """The runtime's services swapped for the timed ones; every stream's sink watched."""
    runtime = sim.runtime
    streams = runtime.conversations
    carrier = runtime.carrier
    from voicecall.runtime.media.streams import stream_key

    def transcriber(call_id: str, language: str | None) -> CueTranscriber:
        return CueTranscriber(carrier.captions, stream_key(call_id), probe.finals)

    tts = TimedTts((GREETING, REPLY), probe.syntheses)
    streams.services = replace(streams.services, tts=tts, transcriber=transcriber)
    endpoint = streams.endpoint
    expect = endpoint.expect

    def watched_expect(call_id: str, open_sink: Callable[[Any], Any]) -> str:
        return str(expect(call_id, lambda s: WatchedSink(open_sink(s), probe.onsets)))

    endpoint.expect = watched_expect


# --- the calls --------------------------------------------------------------------------------


async def _runtime(folder: Path, probe: Probe, deadline: float) -> Any:
    """One runtime taking calls one after the other until the deadline; its runtime metrics."""
    from voicecall.dsl.catalog import Catalog
    from voicecall.runtime.sim.script import Script, Step
    from voicecall.runtime.sim.simulate import Simulator

    interruptions = [Step(action="interrupt", value=INTERRUPTION)] * TURNS_PER_CALL
    caller = (Step(action="answer"), *interruptions, Step(action="hangup"))
    script = Script(caller=caller, model=(REPLY,) * (TURNS_PER_CALL + 1))
    sim = Simulator("twilio", catalog=Catalog([folder]),
                    config={"streaming": {"enabled": True}})  # fmt: skip
    sim.responder = _responder(probe.asked, probe.answered)
    async with sim:
        runtime = sim.runtime
        assert runtime is not None and runtime.conversations is not None
        _instrument(sim, probe)
        carrier = runtime.carrier
        while now() < deadline:
            result = await sim.call("bench-voice", script=script)
            probe.calls += 1
            if result.error:
                probe.errors.append(result.error)
            probe.streams += [s for c in carrier.calls.values() for s in c.streams
                              if s not in probe.streams]  # fmt: skip
        metrics = runtime.conversations.metrics
        return {"first_frame": list(metrics.first_frame), "clear": list(metrics.clear),
                "turn": list(metrics.turn)}  # fmt: skip


async def _run(budget: float) -> tuple[list[Probe], dict[str, list[float]]]:
    probes = [Probe() for _ in range(RUNTIMES)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "bench-voice.yaml").write_text(FLOW.format(greeting=GREETING), "utf-8")
        deadline = now() + budget
        inside = await asyncio.gather(*(_runtime(folder, p, deadline) for p in probes))
    merged: dict[str, list[float]] = {"first_frame": [], "clear": [], "turn": []}
    for m in inside:
        for k, v in m.items():
            merged[k] += v
    return probes, merged


# --- the measures -------------------------------------------------------------------------------


def _first_arrival(streams: list[Any], after: float) -> float | None:
    found = [a for s in streams for a in s.arrivals if a >= after]
    return min(found) if found else None


def _first_frames(p: Probe) -> list[tuple[float, float]]:
    """(TTS call time, first byte -> first frame at the carrier) of each reply."""
    out = []
    for s in p.syntheses:
        if s.text != REPLY or s.first is None:
            continue
        arrival = _first_arrival(p.streams, s.first)
        if arrival is not None:
            out.append((s.called, arrival - s.first))
    return out


def _clears(p: Probe) -> list[tuple[float, int]]:
    """(onset -> clear at the carrier in seconds, caller frames arrived meanwhile) per clear."""
    out = []
    clears = sorted(c.at for s in p.streams for c in s.clears)
    for at in clears:
        onset = max((o for o in p.onsets if o.first_above <= at), default=None,
                    key=lambda o: o.first_above)  # fmt: skip
        if onset is None or at - onset.first_above > 1.0:
            continue  # a clear without a caller onset before it (none expected)
        frames = sum(1 for a in onset.arrivals if a <= at)
        out.append((at - onset.first_above, frames))
    return out


def _turns(p: Probe) -> list[dict[str, float]]:
    """Per caller turn: final -> request, answer -> TTS asked, first byte -> first frame."""
    first = _first_frames(p)
    out = []
    for asked, answered in zip(p.asked, p.answered, strict=False):
        final = max((f for f in p.finals if f <= asked), default=None)
        tts = next(((c, d) for c, d in first if c >= answered), None)
        if final is None or tts is None or asked - final > 1.0:
            continue
        out.append({"final_to_request": asked - final, "answer_to_tts": tts[0] - answered,
                    "first_frame": tts[1]})  # fmt: skip
    return out


def _ms(values: list[float]) -> dict[str, float]:
    ms = sorted(v * 1000 for v in values)
    if not ms:
        return {"n": 0, "p50": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {"n": len(ms), "p50": statistics.median(ms), "p99": ms[min(len(ms) - 1,
            int(0.99 * len(ms)))], "max": ms[-1]}  # fmt: skip


def run(repeat: int) -> dict[str, Any]:
    """``repeat`` under 10 is the quick mode (a shorter run)."""
    budget = QUICK_BUDGET_S if repeat < 10 else BUDGET_S
    for name in ("voicecall", "aiohttp"):  # barge-ins and stream ends log at INFO; keep quiet
        logging.getLogger(name).setLevel(logging.WARNING)
    began = time.monotonic()
    probes, inside = asyncio.run(_run(budget))
    first = [d for p in probes for _, d in _first_frames(p)]
    clears = [c for p in probes for c in _clears(p)]
    turns = [t for p in probes for t in _turns(p)]
    pair = [t["final_to_request"] + t["first_frame"] for t in turns]
    total = [sum(t.values()) for t in turns]
    return {
        "calls": sum(p.calls for p in probes),
        "errors": [e for p in probes for e in p.errors][:5],
        "concurrent_calls": RUNTIMES,
        "seconds": time.monotonic() - began,
        "first_frame_ms": _ms(first),
        "onset_to_clear_ms": _ms([c for c, _ in clears]),
        "onset_to_clear_frames": _ms([f * FRAME_S for _, f in clears]),  # as audio ms
        "final_to_request_ms": _ms([t["final_to_request"] for t in turns]),
        "answer_to_tts_ms": _ms([t["answer_to_tts"] for t in turns]),
        "turn_pair_ms": _ms(pair),
        "turn_total_ms": _ms(total),
        "runtime_metrics_ms": {k: _ms(v) for k, v in inside.items()},
        "targets": {
            "first_frame_ms": TARGET_FIRST_FRAME_MS,
            "clear_ms": TARGET_CLEAR_MS,
            "turn_p99_ms": TARGET_TURN_P99_MS,
        },
    }


def _mark(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def report(r: dict[str, Any]) -> None:
    t = r["targets"]
    print(f"voice latencies: streamed conversations on the real runtime, mock carrier on Twilio"
          f" media streams ({r['calls']} calls, {r['concurrent_calls']} at a time,"
          f" {r['seconds']:.0f} s)")  # fmt: skip
    if r["errors"]:
        print(f"  calls that went wrong: {r['errors']}")
    print(f"  {'':<52} {'n':>4} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  target")
    rows = [
        ("first TTS byte -> first frame at the carrier", r["first_frame_ms"],
         f"< {t['first_frame_ms']:g} ms", r["first_frame_ms"]["p99"] < t["first_frame_ms"]),
        ("speech onset arrives -> clear at the carrier", r["onset_to_clear_ms"],
         f"< {t['clear_ms']:g} ms", r["onset_to_clear_ms"]["p99"] < t["clear_ms"]),
        ("  the same in audio time (caller frames x 20 ms)", r["onset_to_clear_frames"],
         f"< {t['clear_ms']:g} ms", r["onset_to_clear_frames"]["p99"] < t["clear_ms"]),
        ("turn: final transcript -> responder asked", r["final_to_request_ms"], "", None),
        ("turn: responder's answer -> TTS asked", r["answer_to_tts_ms"], "", None),
        ("turn: final->request + first byte->first frame", r["turn_pair_ms"],
         f"p99 < {t['turn_p99_ms']:g} ms", r["turn_pair_ms"]["p99"] < t["turn_p99_ms"]),
        ("turn: all three (the runtime's whole share)", r["turn_total_ms"],
         f"p99 < {t['turn_p99_ms']:g} ms", r["turn_total_ms"]["p99"] < t["turn_p99_ms"]),
    ]  # fmt: skip
    for name, s, target, ok in rows:
        mark = "" if ok is None else f"  {_mark(ok)}"
        print(f"  {name:<52} {s['n']:4d} {s['p50']:8.2f} {s['p99']:8.2f} {s['max']:8.2f}"
              f"  {target}{mark}")  # fmt: skip
    print("  the runtime's own Metrics (conversation.py), inside the process:")
    names = {"first_frame": "first chunk in hand -> frame sent (greeting too)",
             "clear": "VAD onset detected -> clear sent",
             "turn": "final handled -> responder request"}  # fmt: skip
    for key, s in r["runtime_metrics_ms"].items():
        print(f"    {names.get(key, key):<50} {s['n']:4d} {s['p50']:8.2f} {s['p99']:8.2f}"
              f" {s['max']:8.2f}")  # fmt: skip


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        report(run(5 if "--quick" in sys.argv else 50))
