"""Media-stream capacity: the bidirectional Twilio streams one core carries (`--only streams`).

Issue 9's bar: the concurrent streams one core serves with the p99 added delay of our outbound
frames under 20 ms (target >= 200). Three processes per measurement, as bench.webhooks:

- the server, pinned to one core: a real aiohttp app mounting :class:`StreamEndpoint` with the
  Twilio protocol. Every stream's sink does what a streamed conversation does with a stream:
  the local VAD on each caller frame, and TTS-like μ-law audio played without pause, cut into
  20 ms frames (:class:`Framer`), sent by ``session.send_audio`` on the :class:`Pacer`'s
  absolute schedule, with a mark every 50 frames. ``GET /bench/schedule`` (the bench's own
  route) tells when each stream's schedule started;
- the load generator, pinned to the other core: N callers speaking Twilio's protocol
  (``connected``, ``start`` with the ``callId`` and one-use ``token`` parameters, a ``media``
  frame every 20 ms, marks echoed back). It is a plain asyncio protocol with hand-written
  WebSocket framing, not aiohttp's client: aiohttp costs about as much per frame on the client
  as on the server, so the loader would saturate its core with the server and be what is
  measured. Its streams start at random moments of a first second and send on staggered 1 ms
  slots (real calls are not in phase);
- this one, conducting.

Added delay of frame *k* of a stream = its arrival at the caller − (its schedule's start + k ×
20 ms): how late our audio comes against a perfect 20 ms clock (both processes read the same
``CLOCK_MONOTONIC``). It contains the pacer's wake-up lateness, the framing and the socket send,
and the kernel's delivery. A stall past the pacer's ``max_lag`` restarts its schedule; delays
still count against the first one (the caller heard the gap). Frames due in the window and not
received count as late as the end of collection.

N ramps up until p99 fails, then halves the gap while time allows. The server's CPU (of its
one core) and the loader's are reported so a reader can tell which side saturated; "other" is
what the rest of the machine used meanwhile. On a machine shared with other work the server and
the loader run at nice -10 (in sessions of their own, so that autogroups do not undo it) when
allowed, and a step whose server waited for its core more than 15% of the window (schedstat's
run delay) or was preempted more than 200 times a second is run again: otherwise the
neighbours are measured, not one core's capacity. The capacity is the largest N that passed
below the smallest that failed. The server also reports its full GC pauses and its own loop
lag (a 10 ms tick) in the window, to tell a collector pause or a CPU-bound loop from transport.
``--repeat`` under 10 (``bench.run --only streams --repeat 5``) is a quick mode.

A microbench times the send path per frame in the server process pinned to a core, to a reader
that drains its socket from another process: the Twilio media framing (base64 + JSON), aiohttp's
``send_str`` of a ready frame, the whole ``session.send_audio``; and the inbound steps for scale.

    python -m bench.streams serve --streams N --cpu C    # prints {"port", "calls"} on stdout
    python -m bench.streams load --cpu C                 # reads the plan on stdin
    python -m bench.streams micro --cpu C                # prints the microbench's results
    python -m bench.streams once --streams N [--gc freeze]   # one measurement, printed
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import random
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

PATH = "/voice/stream"
SCHEDULE_PATH = "/bench/schedule"
FRAME_S = 0.02
FRAME_BYTES = 160
MARK_EVERY = 50  # frames: a mark a second, as utterance marks come
SLOTS = 20  # the callers' send phases, 1 ms apart
TARGET_P99_MS = 20.0
TARGET_STREAMS = 200
STEPS = (50, 100, 200, 300, 400, 500, 600, 800, 1000)
QUICK_STEPS = (100, 200, 400, 600)
WARMUP_S = 2.0
WINDOW_S = 6.0
QUICK = {"warmup": 1.0, "window": 3.0, "budget": 40.0}
# A step is run again when, in its window, the server waited for its core more than NOISY of
# the time or was preempted more than PREEMPTED times a second (quiet runs: under 100/s).
NOISY = 0.15
PREEMPTED = 200.0
RETRIES = 2  # per step
PRIORITY = -10  # nice value of the server and the loader, when the user may raise it
BUDGET_S = 80.0  # the ramp stops starting measurements past this
OPEN_SPREAD_S = 1.0  # streams start at random moments of this first second
TAIL_S = 0.4  # after the window: frames due in it may still arrive
ROOT = Path(__file__).resolve().parent.parent
TIMED_SENDS = "sends that armed a timeout"


def log(message: str) -> None:
    print(f"  [streams] {message}", file=sys.stderr, flush=True)


def pin(cpu: int) -> int:
    """Pins this process to ``cpu`` (modulo the cores it may use); returns the core used."""
    cores = sorted(os.sched_getaffinity(0))
    chosen = cores[cpu % len(cores)]
    os.sched_setaffinity(0, {chosen})
    return chosen


def favour() -> bool:
    """Raises this process's priority (nice -10) when allowed: two cores shared with other
    work otherwise measure the neighbours, not one core's capacity. False when not allowed.

    With autogroups (``kernel.sched_autogroup_enabled``) a nice value only ranks the processes
    of one session: each bench process is started in a session of its own, and that session's
    group gets the same nice value.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, 0, PRIORITY)
    except OSError:
        return False
    with contextlib.suppress(OSError):  # no autogroups: the process's nice value is enough
        Path("/proc/self/autogroup").write_text(f"{PRIORITY}\n")
    return True


def _cpu_seconds(pid: int) -> tuple[float, float]:
    """utime and stime of a process, from /proc (0 when unreadable)."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    tick = os.sysconf("SC_CLK_TCK")
    return int(parts[11]) / tick, int(parts[12]) / tick


def _run_delay_s(pid: int) -> float:
    """Seconds the process's main thread spent runnable but waiting for a core (schedstat)."""
    try:
        return int(Path(f"/proc/{pid}/schedstat").read_text().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return 0.0


def _preempted(pid: int) -> int:
    """Involuntary context switches of the process's main thread so far."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("nonvoluntary_ctxt_switches:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _busy_cores_s() -> float:
    """CPU seconds every core spent busy since boot (all processes), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _speech_ulaw(seconds: float, rate: int = 8000) -> bytes:
    """Voiced, syllabic audio as μ-law 8 kHz: what a TTS service streams."""
    from voicecall.runtime.media import codec

    t = np.arange(int(rate * seconds)) / rate
    voiced = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 12))
    x = np.clip(np.sin(2 * np.pi * 3 * t) * 1.3, 0, 1) ** 2 * voiced
    x *= 0.2 * 32767 / max(1e-9, float(np.max(np.abs(x))))
    return codec.encode(np.round(x).astype("<i2").tobytes())


def _tts_chunks() -> list[bytes]:
    """Three seconds of audio in uneven chunks, as a TTS stream delivers it (the Framer cuts
    them into whole frames and holds the rest)."""
    audio = _speech_ulaw(3.0)
    sizes = (1200, 733, 960, 517, 1600)
    chunks, at, i = [], 0, 0
    while at < len(audio):
        chunks.append(audio[at : at + sizes[i % len(sizes)]])
        at += sizes[i % len(sizes)]
        i += 1
    return chunks


# --- the server -----------------------------------------------------------------------------------


class Player:
    """One stream's sink, doing per frame what a streamed conversation does: the caller's
    frames go through the barge-in VAD, and TTS audio is played paced, with marks."""

    def __init__(self, session: Any, chunks: list[bytes]):
        from voicecall.runtime.media.pacing import Framer, Pacer
        from voicecall.runtime.media.vad import Vad

        self.session = session
        self.vad = Vad()
        self.pacer = Pacer()
        self.framer = Framer()
        self.chunks = chunks
        self.start: float | None = None
        self.heard = 0
        self.speech_starts = 0
        self.marks = 0
        self.stopped = ""
        self.task = asyncio.get_running_loop().create_task(self.play())

    def on_audio(self, ulaw: bytes) -> None:
        from voicecall.runtime.media.vad import VadEvent

        self.heard += 1
        if self.vad.feed_ulaw(ulaw) is VadEvent.SPEECH_START:
            self.speech_starts += 1

    def on_mark(self, outcome: object) -> None:
        self.marks += 1

    def on_dtmf(self, digit: str) -> None:
        pass

    def on_stop(self, reason: str) -> None:
        self.stopped = reason
        self.task.cancel()

    async def play(self) -> None:
        from voicecall.runtime.media.streams import StreamClosed

        try:
            while True:
                for chunk in self.chunks:
                    for frame in self.framer.push(chunk):
                        due = await self.pacer.wait()
                        if self.start is None:
                            self.start = due
                        await self.session.send_audio(frame)
                        self.vad.played_ulaw(frame)
                        if self.pacer.sent % MARK_EVERY == 0:
                            await self.session.mark(f"utterance-{self.pacer.sent}")
        except StreamClosed:
            return

    def state(self) -> dict[str, Any]:
        return {"start": self.start, "sent": self.pacer.sent, "resyncs": self.pacer.resyncs,
                "heard": self.heard, "marks": self.marks,
                "speech_starts": self.speech_starts}  # fmt: skip


def _endpoint(streams: int) -> Any:
    from voicecall.runtime.media import twilio
    from voicecall.runtime.media.streams import StreamEndpoint, StreamSettings

    # Every caller comes from 127.0.0.1 and the loader connects many at once: the pending
    # limits are raised to let it (they bound unauthenticated sockets, not started streams).
    settings = StreamSettings(max_connections=streams + 8, max_pending=streams,
                              max_pending_per_ip=streams, pre_start_timeout_s=30.0,
                              token_ttl_s=120.0)  # fmt: skip
    return StreamEndpoint(twilio.PROTOCOL, settings)


class GcPauses:
    """The cyclic garbage collector's pauses, by generation: a full collection walks every
    object the process holds and stops every stream meanwhile."""

    def __init__(self) -> None:
        self.began = 0.0
        self.pauses: dict[int, list[tuple[float, float]]] = {0: [], 1: [], 2: []}

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.began = time.monotonic()
        else:
            pause = (self.began, time.monotonic() - self.began)
            self.pauses[info["generation"]].append(pause)

    def summary(self) -> dict[str, list[tuple[float, float]]]:
        """Every pause as (monotonic start, seconds), by generation."""
        return {f"gen{g}": p for g, p in self.pauses.items()}


def _gc_in(pauses: dict[str, list[list[float]]], window: tuple[float, float]) -> dict[str, Any]:
    """The collector's pauses that began inside the window: count and longest, by generation."""
    out: dict[str, Any] = {}
    for gen, items in pauses.items():
        inside = [d for t, d in items if window[0] <= t < window[1]]
        out[gen] = {"count": len(inside), "max_ms": max(inside, default=0.0) * 1000,
                    "total_ms": sum(inside) * 1000}  # fmt: skip
    return out


async def _watch_loop(lags: list[tuple[float, float]], period: float = 0.01) -> None:
    """The event loop's lateness as the server sees it: a wake-up every 10 ms, each one late by
    (monotonic time, seconds) when more than a millisecond."""
    due = time.monotonic()
    while True:
        due += period
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        late = time.monotonic() - due
        if late > 0.001:
            lags.append((due, late))
        if late > 0.1:
            due = time.monotonic()


def _lags_in(lags: list[list[float]], window: tuple[float, float]) -> dict[str, float]:
    inside = [late for t, late in lags if window[0] <= t < window[1]]
    return {"over_5ms": sum(1 for x in inside if x > 0.005),
            "over_20ms": sum(1 for x in inside if x > 0.02),
            "max_ms": max(inside, default=0.0) * 1000}  # fmt: skip


async def _start_app(endpoint: Any, players: dict[str, Player], gc_pauses: GcPauses | None = None,
                     lags: list[tuple[float, float]] | None = None) -> tuple[Any, int]:  # fmt: skip
    from aiohttp import web

    async def schedule(request: web.Request) -> web.Response:
        return web.json_response({"streams": {call: p.state() for call, p in players.items()},
                                  "gc": gc_pauses.summary() if gc_pauses else {},
                                  "lags": lags or []})  # fmt: skip

    app = web.Application()
    app.router.add_get(PATH, endpoint.handle)
    app.router.add_get(SCHEDULE_PATH, schedule)
    app.on_shutdown.append(endpoint.shutdown)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, backlog=4096).start()
    return runner, int(runner.addresses[0][1])


def _call_ids(count: int) -> list[str]:
    return [str(uuid.UUID(int=i + 1, version=4)) for i in range(count)]


async def serve(streams: int, gc_mode: str = "default") -> None:
    """Expects ``streams`` streams, prints the port and their tokens, serves until SIGTERM.

    ``gc_mode`` "freeze" (a diagnostic, not the runtime's behaviour) moves every object made
    at start-up out of the collector's reach, as ``gc.freeze()`` after start-up would.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    endpoint = _endpoint(streams)
    players: dict[str, Player] = {}
    chunks = _tts_chunks()

    def open_sink(call_id: str, session: Any) -> Player:
        players[call_id] = Player(session, chunks)
        return players[call_id]

    calls = [[c, endpoint.expect(c, partial(open_sink, c))] for c in _call_ids(streams)]
    gc_pauses = GcPauses()
    gc.callbacks.append(gc_pauses)
    if gc_mode == "freeze":
        gc.collect()
        gc.freeze()
    lags: list[tuple[float, float]] = []
    monitor = asyncio.create_task(_watch_loop(lags))
    runner, port = await _start_app(endpoint, players, gc_pauses, lags)
    print(json.dumps({"port": port, "calls": calls}), flush=True)
    await stop.wait()
    monitor.cancel()
    await runner.cleanup()


# --- the callers (load generator) -----------------------------------------------------------------


def _ws_frame(payload: bytes) -> bytes:
    """A client text frame. Masking is mandatory from a client; a zero key leaves the payload
    as it is, so no per-byte work is needed (the server unmasks as with any key)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def _handshake(port: int) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (f"GET {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n").encode()  # fmt: skip


def _twilio_opening(index: int, call_id: str, token: str) -> bytes:
    from voicecall.runtime.media.streams import stream_key

    sid = f"MZ{index:032x}"
    connected = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = {"event": "start", "sequenceNumber": "1", "streamSid": sid,
             "start": {"streamSid": sid, "accountSid": "AC" + "0" * 32,
                       "callSid": f"CA{index:032x}", "tracks": ["inbound", "outbound"],
                       "customParameters": {"callId": stream_key(call_id), "token": token},
                       "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                       "channels": 1}}}  # fmt: skip
    return b"".join(_ws_frame(json.dumps(m).encode()) for m in (connected, start))


def _inbound_payloads() -> list[str]:
    """The caller's audio: a second of speech, two of line noise, repeated (the VAD sees both)."""
    speech = _speech_ulaw(1.0)
    frames = [speech[i : i + FRAME_BYTES] for i in range(0, len(speech), FRAME_BYTES)]
    noise = bytes([0xFE, 0x7E, 0xFF, 0x7F]) * (FRAME_BYTES // 4)  # ±1-2 steps around zero
    return [base64.b64encode(f).decode() for f in frames + [noise] * 100]


class Caller(asyncio.Protocol):
    """One carrier-side stream: opens, sends a media frame when told, timestamps ours."""

    def __init__(self, index: int, call_id: str, token: str, port: int, payloads: list[str]):
        self.index = index
        self.call_id = call_id
        self.token = token
        self.port = port
        self.payloads = payloads
        self.sid = f"MZ{index:032x}"
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.started = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.arrivals: list[float] = []  # CLOCK_MONOTONIC of each of our media frames
        self.seq = 1
        self.sent = 0
        self.marks = 0
        self.closed = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(_handshake(self.port))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = self.closed or f"lost: {exc}"
        self.transport = None
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"stream {self.index}: {self.closed}"))

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end])
            del self.buffer[: end + 4]
            if not head.startswith(b"HTTP/1.1 101"):
                self.closed = head.split(b"\r\n", 1)[0].decode(errors="replace")
                assert self.transport is not None
                self.transport.abort()
                return
            self.upgraded = True
            self.ready.set_result(None)
        self._frames(now)

    def begin(self) -> None:
        """The carrier's ``connected`` and ``start``: the stream starts (and our pacer with it)."""
        if self.transport is not None and self.upgraded:
            self.transport.write(_twilio_opening(self.index, self.call_id, self.token))
            self.started = True

    def _frames(self, now: float) -> None:
        buf, pos, size = self.buffer, 0, len(self.buffer)
        while size - pos >= 2:
            n, head = buf[pos + 1] & 0x7F, 2
            if n == 126:
                if size - pos < 4:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif n == 127:
                if size - pos < 10:
                    break
                n, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            start, end = pos + head, pos + head + n
            if end > size:
                break
            opcode = buf[pos] & 0x0F
            if opcode == 1:
                kind = buf[start + 10 : start + 14]  # {"event":"media"… (compact JSON)
                if kind == b"medi":
                    self.arrivals.append(now)
                elif kind == b"mark":
                    self._echo_mark(bytes(buf[start:end]))
            elif opcode == 8:
                self.closed = f"closed by the server: {bytes(buf[start + 2 : end])!r}"
            pos = end
        del buf[:pos]

    def _echo_mark(self, frame: bytes) -> None:
        """Twilio echoes a mark once the audio before it has played: ours is sent in real time,
        so that is about now."""
        name = json.loads(frame)["mark"]["name"]
        self.marks += 1
        self.seq += 1
        echo = {"event": "mark", "sequenceNumber": str(self.seq), "streamSid": self.sid,
                "mark": {"name": name}}  # fmt: skip
        self._write(json.dumps(echo, separators=(",", ":")).encode())

    def send_media(self) -> None:
        if not self.started:
            return
        self.seq += 1
        self.sent += 1
        payload = self.payloads[(self.index * 7 + self.sent) % len(self.payloads)]
        self._write(
            b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
            b'"timestamp":"%d","payload":"%s"},"streamSid":"%s"}'
            % (self.seq, self.sent, self.sent * 20, payload.encode(), self.sid.encode())
        )

    def _write(self, payload: bytes) -> None:
        if self.transport is not None and self.started:
            self.transport.write(_ws_frame(payload))


async def _feed(callers: list[Caller], until: float) -> None:
    """Every caller sends a frame every 20 ms, each on its own 1 ms slot, on an absolute
    schedule (a late tick sends its slot at once, then catches up)."""
    slots: list[list[Caller]] = [[] for _ in range(SLOTS)]
    for caller in callers:
        slots[caller.index % SLOTS].append(caller)
    begin, tick = time.monotonic(), 0
    while True:
        due = begin + tick * FRAME_S / SLOTS
        if due >= until:
            return
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        for caller in slots[tick % SLOTS]:
            caller.send_media()
        tick += 1


async def _open(plan: dict[str, Any], payloads: list[str]) -> list[Caller]:
    loop = asyncio.get_running_loop()
    port = plan["port"]
    callers: list[Caller] = []
    batch = 50
    calls = plan["calls"]
    for at in range(0, len(calls), batch):
        chunk = [
            Caller(at + i, call_id, token, port, payloads)
            for i, (call_id, token) in enumerate(calls[at : at + batch])
        ]
        for caller in chunk:
            await loop.create_connection(lambda c=caller: c, "127.0.0.1", port)  # type: ignore[misc]
        await asyncio.gather(*(c.ready for c in chunk))
        callers += chunk
    return callers


def _delays(callers: list[Caller], schedule: dict[str, Any], window: tuple[float, float],
            collected: float) -> tuple[list[float], int]:  # fmt: skip
    """Added delay of every frame due in the window, and how many of them never came."""
    delays: list[float] = []
    missing = 0
    for caller in callers:
        start = (schedule.get(caller.call_id) or {}).get("start")
        if start is None:
            continue
        first = max(0, int(np.ceil((window[0] - start) / FRAME_S)))
        last = int((window[1] - start) / FRAME_S)
        arrivals = caller.arrivals
        for k in range(first, last + 1):
            due = start + k * FRAME_S
            if k < len(arrivals):
                delays.append(arrivals[k] - due)
            else:
                missing += 1
                delays.append(collected - due)
    return delays, missing


async def load(plan: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    payloads = _inbound_payloads()
    began = time.monotonic()
    callers = await _open(plan, payloads)
    open_s = time.monotonic() - began
    # Calls start at independent times, so their 20 ms phases are random: each stream starts
    # at a random moment of the next OPEN_SPREAD_S (seeded: the same phases every run).
    loop, rng = asyncio.get_running_loop(), random.Random(len(callers))
    for caller in callers:
        loop.call_later(rng.uniform(0, OPEN_SPREAD_S), caller.begin)
    warmup, duration = OPEN_SPREAD_S + plan["warmup"], plan["window"]
    window = (time.monotonic() + warmup, time.monotonic() + warmup + duration)
    feeding = asyncio.create_task(_feed(callers, window[1] + TAIL_S))
    samples = []
    for edge in window:
        await asyncio.sleep(edge - time.monotonic())
        samples.append((_cpu_seconds(plan["server_pid"]), _cpu_seconds(os.getpid()),
                        _busy_cores_s(), _run_delay_s(plan["server_pid"]),
                        _preempted(plan["server_pid"])))  # fmt: skip
    await feeding
    collected = time.monotonic()
    url = f"http://127.0.0.1:{plan['port']}{SCHEDULE_PATH}"
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        served: dict[str, Any] = await resp.json()
    schedule: dict[str, Any] = served["streams"]
    for caller in callers:
        if caller.transport is not None:
            caller.transport.abort()
    delays, missing = _delays(callers, schedule, window, collected)
    (s0, l0, m0, w0, p0), (s1, l1, m1, w1, p1) = samples
    server = (sum(s1) - sum(s0)) / duration
    loader = (sum(l1) - sum(l0)) / duration
    server_sys = (s1[1] - s0[1]) / duration
    ms = sorted(d * 1000 for d in delays)

    def pct(q: float) -> float:
        return ms[min(len(ms) - 1, int(q * len(ms)))] if ms else float("nan")

    states = list(schedule.values())
    return {
        "streams": len(callers),
        "started": sum(1 for s in states if s["start"] is not None),
        "frames": len(ms),
        "missing": missing,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": ms[-1] if ms else float("nan"),
        "resyncs": sum(s["resyncs"] for s in states),
        "server_cpu": server,
        "server_sys_cpu": server_sys,  # of server_cpu: in the kernel (socket reads and writes)
        "server_run_delay": (w1 - w0) / duration,  # runnable, waiting for its core
        "loader_cpu": loader,
        "other_cpu": max(0.0, (m1 - m0) / duration - server - loader),
        "inbound_sent": sum(c.sent for c in callers),
        "inbound_heard": sum(s["heard"] for s in states),
        "marks_echoed": sum(s["marks"] for s in states),
        "vad_speech_starts": sum(s["speech_starts"] for s in states),
        "closed_early": sum(1 for c in callers if c.closed),
        "open_s": open_s,
        "window_s": duration,
        "server_gc": _gc_in(served["gc"], window),
        "server_loop_lag": _lags_in(served["lags"], window),  # its 10 ms ticks, seen late
        "server_preempted": (p1 - p0) / duration,  # involuntary context switches per second
    }


# --- the send-path microbench ---------------------------------------------------------------------


def drain(port: int, call_id: str, token: str) -> None:
    """A caller that opens a stream and reads everything sent to it as fast as it comes."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_handshake(port))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"drain: {head[:80]!r}")
    sock.sendall(_twilio_opening(0, call_id, token))
    buffer = bytearray(1 << 20)
    while sock.recv_into(buffer):
        pass


def blast(port: int, call_id: str, token: str, number: int) -> None:
    """A caller that opens a stream and sends ``number`` media frames at once, then reads."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(_handshake(port))
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(4096)
    if not head.startswith(b"HTTP/1.1 101"):
        raise SystemExit(f"blast: {head[:80]!r}")
    sock.sendall(_twilio_opening(1, call_id, token))
    payloads = _inbound_payloads()
    frames = b"".join(
        _ws_frame(b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":'
                  b'"%d","timestamp":"%d","payload":"%s"},"streamSid":"MZ1"}'
                  % (n + 2, n + 1, n * 20, payloads[n % len(payloads)].encode()))
        for n in range(number)
    )  # fmt: skip
    sock.sendall(frames)
    while sock.recv(1 << 16):
        pass


async def _us_per_await(fn: Callable[[], Awaitable[object]], number: int,
                        rounds: int = 5) -> float:  # fmt: skip
    """Median over rounds of the mean time of one await. The loop runs every 100 awaits, as
    it would between frames: a cancelled timeout's timer stays in its heap until it does."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for i in range(number):
            await fn()
            if i % 100 == 99:
                await asyncio.sleep(0)
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def _us_per_call(fn: Callable[[], object], number: int, rounds: int = 5) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


async def _timeout_only() -> None:
    """What StreamSession._send wraps a send in when the socket's unsent bytes say it may wait
    (a live carrier's never do), with nothing inside."""
    async with asyncio.timeout(5.0):
        pass


class _Listener:
    """The receiving side of a streamed conversation for the receive-path microbench: each
    caller frame through the VAD; the CPU time between the first frame and the last."""

    def __init__(self, number: int) -> None:
        from voicecall.runtime.media.vad import Vad

        self.vad = Vad()
        self.number = number
        self.heard = 0
        self.first_cpu = 0.0
        self.done: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    def on_audio(self, ulaw: bytes) -> None:
        self.vad.feed_ulaw(ulaw)
        self.heard += 1
        if self.heard == 1:
            self.first_cpu = time.process_time()
        elif self.heard == self.number and not self.done.done():
            self.done.set_result(time.process_time() - self.first_cpu)

    def on_mark(self, outcome: object) -> None: ...
    def on_dtmf(self, digit: str) -> None: ...
    def on_stop(self, reason: str) -> None: ...


async def _receive_path(endpoint: Any, port: int, number: int) -> float:
    """Server CPU per caller frame, received through the endpoint (aiohttp's reader, the pump,
    the Twilio parse, the sink's VAD), from a caller that sends them all at once: reads come
    in large batches, so this is the path's floor; one frame per wake-up costs more."""
    (_, call_id) = _call_ids(2)
    listener = _Listener(number)
    token = endpoint.expect(call_id, lambda session: listener)
    sender = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.streams", "blast", "--port", str(port), "--call-id",
        call_id, "--token", token, "--number", str(number), "--cpu", "1", cwd=ROOT,
        start_new_session=True)  # fmt: skip
    try:
        async with asyncio.timeout(60):
            cpu = await listener.done
    finally:
        sender.kill()
        await sender.wait()
    return cpu / (number - 1) * 1e6


async def micro(number: int) -> dict[str, float]:
    """Per-frame cost of the send path to a connected caller (and the inbound steps)."""
    from voicecall.runtime.media import protocol as p
    from voicecall.runtime.media import twilio
    from voicecall.runtime.media.pacing import Framer
    from voicecall.runtime.media.vad import Vad

    endpoint = _endpoint(2)
    idle: dict[str, Any] = {}

    class Idle:
        def on_audio(self, ulaw: bytes) -> None: ...
        def on_mark(self, outcome: object) -> None: ...
        def on_dtmf(self, digit: str) -> None: ...
        def on_stop(self, reason: str) -> None: ...

    def open_sink(session: Any) -> Idle:
        idle["session"] = session
        return Idle()

    (call_id,) = _call_ids(1)
    token = endpoint.expect(call_id, open_sink)
    runner, port = await _start_app(endpoint, {})
    reader = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.streams", "drain", "--port", str(port), "--call-id",
        call_id, "--token", token, "--cpu", "1", cwd=ROOT, start_new_session=True)  # fmt: skip
    try:
        inbound_us = await _receive_path(endpoint, port, number * 2)
        for _ in range(1000):
            if "session" in idle:
                break
            await asyncio.sleep(0.01)
        session = idle["session"]
        frame = Framer().push(_speech_ulaw(0.02))[0]
        sid = session.start.stream_id
        text = twilio.media(sid, frame)
        ws = session._ws  # the socket under the session: aiohttp's send alone
        inbound = (b'{"event":"media","sequenceNumber":"5","media":{"track":"inbound",'
                   b'"chunk":"4","timestamp":"80","payload":"%s"},"streamSid":"%s"}'
                   % (base64.b64encode(frame), sid.encode())).decode()  # fmt: skip
        vad = Vad()
        await _us_per_await(lambda: session.send_audio(frame), number)  # warm the socket
        result = {
            "base64 (160 bytes)": _us_per_call(lambda: p.b64(frame), number),
            "twilio.media (base64 + JSON)": _us_per_call(lambda: twilio.media(sid, frame), number),
            "ws.send_str (ready frame)": await _us_per_await(lambda: ws.send_str(text), number),
            "session._send (ready frame)": await _us_per_await(lambda: session._send(text), number),
            "session.send_audio (all)": await _us_per_await(
                lambda: session.send_audio(frame), number
            ),
            "receive path (all, batched)": inbound_us,
            "twilio.parse (inbound media)": _us_per_call(lambda: twilio.parse(inbound), number),
            "vad.feed_ulaw": _us_per_call(lambda: vad.feed_ulaw(frame), number),
            "vad.played_ulaw": _us_per_call(lambda: vad.played_ulaw(frame), number),
            "asyncio.timeout (a send that may wait)": await _us_per_await(_timeout_only, number),
            "loop round trip (sleep 0)": await _us_per_await(lambda: asyncio.sleep(0), number),
        }
        # Not a time: of the session's sends above (to a caller that reads), those that armed
        # a timeout. A live carrier's socket never holds enough unsent bytes for one.
        result[TIMED_SENDS] = float(session.timed_sends)
    finally:
        reader.kill()
        await reader.wait()
        await runner.cleanup()
    return result


# --- conducting -----------------------------------------------------------------------------------


def _module(command: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "bench.streams", command, *args]


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(streams: int, warmup: float = WARMUP_S, window: float = WINDOW_S,
            gc_mode: str = "default") -> dict[str, Any]:  # fmt: skip
    """One server with ``streams`` expected streams, one load run, the server stopped."""
    with tempfile.TemporaryFile("w+") as server_log:
        command = _module("serve", "--streams", str(streams), "--cpu", "0", "--gc", gc_mode)
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=server_log, text=True,
                                cwd=ROOT, start_new_session=True)  # fmt: skip
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 60)
            line = proc.stdout.readline() if ready else ""
            if not line.startswith("{"):
                raise RuntimeError(f"the stream server did not start (got {line!r})")
            plan = json.loads(line)
            plan.update(server_pid=proc.pid, warmup=warmup, window=window)
            done = subprocess.run(_module("load", "--cpu", "1"), input=json.dumps(plan),
                                  capture_output=True, text=True, check=False, cwd=ROOT,
                                  timeout=120 + warmup + window,
                                  start_new_session=True)  # fmt: skip
        finally:
            _stop(proc)
        server_log.seek(0)
        log_text = server_log.read()
    if done.returncode != 0:
        raise RuntimeError(f"the load generator failed:\n{done.stderr[-2000:]}\n"
                           f"server log:\n{log_text[-2000:]}")  # fmt: skip
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["server_log_lines"] = len(log_text.splitlines())
    result["passed"] = _passed(result)
    return result


def _passed(r: dict[str, Any]) -> bool:
    return bool(
        r["p99_ms"] < TARGET_P99_MS and r["started"] == r["streams"] and r["closed_early"] == 0
    )


def _noise(r: dict[str, Any]) -> float:
    """How much other processes disturbed the server: 1 is the limit of a usable step."""
    return max(float(r["server_run_delay"]) / NOISY, float(r["server_preempted"]) / PREEMPTED)


def _noisy(r: dict[str, Any]) -> bool:
    return _noise(r) > 1


def _line(r: dict[str, Any]) -> str:
    return (f"{r['streams']:5d} streams  p50 {r['p50_ms']:6.2f}  p99 {r['p99_ms']:7.2f}  "
            f"max {r['max_ms']:8.2f} ms  server cpu {r['server_cpu']:4.0%}  waited "
            f"{r['server_run_delay']:4.0%}  preempted {r['server_preempted']:4.0f}/s  loader cpu "
            f"{r['loader_cpu']:4.0%}  other {r['other_cpu']:4.0%}  resyncs {r['resyncs']}"
            f"{'' if r['passed'] else '  FAIL'}")  # fmt: skip


def ramp(
    steps: tuple[int, ...], warmup: float, window: float, budget: float
) -> list[dict[str, Any]]:
    """Steps up until p99 fails, then narrows the gap while the time budget lasts."""
    began = time.monotonic()
    results: list[dict[str, Any]] = []

    def step(n: int) -> dict[str, Any]:
        # A step during which the server waited for its core more than NOISY of the time (other
        # processes ran on it) is run again, and the quieter run kept: the choice looks at the
        # machine's load only, never at the delays measured.
        r = measure(n, warmup, window)
        log(_line(r))
        r["retried"] = 0
        while _noisy(r) and r["retried"] < RETRIES:
            again = measure(n, warmup, window)
            log(_line(again) + "  (again: other processes took the server's core)")
            again["retried"] = r["retried"] + 1
            quieter = _noise(again) < _noise(r)
            r = again if quieter else r | {"retried": again["retried"]}
        results.append(r)
        return r

    passed, failed = 0, 0
    for n in steps:
        if step(n)["passed"]:
            passed = n
        else:
            failed = n
            break
        if time.monotonic() - began > budget:
            break
    while failed and failed - passed > 25 and time.monotonic() - began < budget:
        mid = (passed + failed) // 2 // 25 * 25
        if step(mid)["passed"]:
            passed = mid
        else:
            failed = mid
    return sorted(results, key=lambda r: r["streams"])


def run(repeat: int) -> dict[str, Any]:
    """``repeat`` below 10 is the quick mode (shorter windows, fewer steps): e.g.
    ``python -m bench.run --only streams --repeat 5``."""
    quick = repeat < 10
    warmup, window = (QUICK["warmup"], QUICK["window"]) if quick else (WARMUP_S, WINDOW_S)
    budget = QUICK["budget"] if quick else BUDGET_S
    micro_result = json.loads(
        subprocess.run(
            _module("micro", "--cpu", "0", "--number", "2000" if quick else "10000"),
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
            cwd=ROOT,
            start_new_session=True,
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    results = ramp(QUICK_STEPS if quick else STEPS, warmup, window, budget)
    # The capacity is the largest N that passed below the smallest that failed: near the knee
    # one run can pass where a smaller one failed, and the bar is what holds at every N.
    limit = min((r["streams"] for r in results if not r["passed"]), default=1 << 30)
    best = max((r["streams"] for r in results if r["passed"] and r["streams"] < limit), default=0)
    # The cost per stream falls as N grows (one loop iteration serves more sockets): it is
    # given at the capacity found, or at the smallest N when none passed.
    at = next((r for r in results if r["streams"] == best), results[0] if results else None)
    return {
        "steps": results,
        "streams_per_core": best,
        "server_cpu_us_per_stream_second": at["server_cpu"] / at["streams"] * 1e6 if at else None,
        "server_cpu_at_streams": at["streams"] if at else 0,
        "send_path_us": micro_result,
        "settings": {
            "warmup_s": warmup,
            "window_s": window,
            "quick": quick,
            "target_p99_ms": TARGET_P99_MS,
            "target_streams": TARGET_STREAMS,
            "mark_every_frames": MARK_EVERY,
            "favoured": all(x.get("favoured") for x in results),
        },
    }


def report(r: dict[str, Any]) -> None:
    s = r["settings"]
    print(f"media streams: Twilio protocol, bidirectional, server on one core "
          f"({s['window_s']:g} s window after {s['warmup_s']:g} s warm-up)")  # fmt: skip
    print(
        "  added delay of our 20 ms frames against their pacer's schedule, at the caller"
        f"{'' if s.get('favoured') else ' (priority not raised: neighbours may show)'}"
    )
    print(f"  {'N':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9} {'server':>7} {'(sys)':>6}"
          f" {'wait':>5} {'pre/s':>5} {'lag>20':>6} {'loader':>7} {'other':>6} {'resync':>6}"
          f" {'gc2 ms':>7}  in heard/sent")  # fmt: skip
    for x in r["steps"]:
        heard = x["inbound_heard"] / x["inbound_sent"] if x["inbound_sent"] else 0.0
        flags = ("" if x["passed"] else "  over") + ("  (noisy)" if _noisy(x) else "")
        print(f"  {x['streams']:5d} {x['p50_ms']:8.2f} {x['p99_ms']:8.2f} {x['max_ms']:9.2f}"
              f" {x['server_cpu']:7.0%} {x['server_sys_cpu']:6.0%}"
              f" {x['server_run_delay']:5.0%} {x['server_preempted']:5.0f}"
              f" {x['server_loop_lag']['over_20ms']:6d} {x['loader_cpu']:7.0%}"
              f" {x['other_cpu']:6.0%} {x['resyncs']:6d} {x['server_gc']['gen2']['max_ms']:7.1f}"
              f"  {heard:6.1%}{flags}")  # fmt: skip
    print("  server (sys: in the kernel), loader, other (the rest of the machine): share of one"
          " core in the window; wait: share of it the server was runnable but waiting for its"
          " core; pre/s: the server preempted, a second; lag>20: the server's 10 ms ticks more"
          " than 20 ms late; gc2: longest full collection in the window")  # fmt: skip
    cost = r["server_cpu_us_per_stream_second"]
    if cost:
        print(f"  server CPU per stream at {r['server_cpu_at_streams']} streams: {cost:,.0f} us per"
              f" second of call ({cost / 100:.1f} us per frame, 50 in + 50 out)")  # fmt: skip
    print("  send and receive paths per 20 ms frame (median, one core):")
    for name, us in r["send_path_us"].items():
        if name == TIMED_SENDS:
            print(f"    {name:<38} {us:7.0f}")
        else:
            print(f"    {name:<38} {us:7.2f} us")
    print(f"  streams per core at p99 < {s['target_p99_ms']:g} ms: {r['streams_per_core']}"
          f" (target >= {s['target_streams']})")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("command", choices=("serve", "load", "micro", "drain", "blast", "once"))
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--cpu", type=int, default=0)
    parser.add_argument("--number", type=int, default=10000)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--call-id", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--window", type=float, default=WINDOW_S)
    parser.add_argument("--gc", choices=("default", "freeze"), default="default")
    args = parser.parse_args()
    if args.command == "once":
        r = measure(args.streams, WARMUP_S, args.window, args.gc)
        print(json.dumps(r, indent=2))
        return 0
    pin(args.cpu)
    favoured = favour()
    if args.command == "serve":
        asyncio.run(serve(args.streams, args.gc))
    elif args.command == "load":
        print(json.dumps(asyncio.run(load(json.load(sys.stdin))) | {"favoured": favoured}),
              flush=True)  # fmt: skip
    elif args.command == "micro":
        print(json.dumps(asyncio.run(micro(args.number))), flush=True)
    elif args.command == "blast":
        blast(args.port, args.call_id, args.token, args.number)
    else:
        drain(args.port, args.call_id, args.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
