"""The audio path per 20 ms frame on one core (`make bench --only audio`).

Times the μ-law codec (bytes in, bytes out, as a stream handler calls it), the streaming
resampler for each rate pair a call uses, the barge-in VAD, and the two per-call paths:
inbound (decode, 8k→16k for STT, VAD) and outbound (24k TTS → 8k, encode, cut into frames).
Frames/s is one core's throughput for that step alone; "calls" divides a path by the 50 frames
each direction of a call carries per second. performance.md §3 has the reference numbers
(audioop, numpy tables, soxr) and shows that transport, not transcoding, bounds streams per core.
"""

from __future__ import annotations

import importlib
import importlib.util
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from voicecall.runtime.media import codec
from voicecall.runtime.media.pacing import Framer
from voicecall.runtime.media.resample import Resampler
from voicecall.runtime.media.vad import Vad

FRAMES_PER_S = 50


def _us_per_call(fn: Callable[[], object], number: int, rounds: int = 7) -> float:
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


def _speechy(rate: int, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 1800 * t)
    return np.round(x * 32767).astype(np.int16)


def _resampler_step(in_rate: int, out_rate: int) -> Callable[[], object]:
    resampler = Resampler(in_rate, out_rate)
    chunk = _speechy(in_rate, 0.02)
    return lambda: resampler.process(chunk)


def _inbound_step() -> Callable[[], object]:
    up, vad = Resampler(8000, 16000), Vad()
    frame = codec.encode(_speechy(8000, 0.02).astype("<i2").tobytes())

    def step() -> None:
        pcm = codec.decode_array(np.frombuffer(frame, np.uint8))
        up.process(pcm)
        vad.feed(pcm)

    return step


def _outbound_step() -> Callable[[], object]:
    down, framer = Resampler(24000, 8000), Framer()
    chunk = _speechy(24000, 0.02)

    def step() -> None:
        framer.push(codec.encode_array(down.process(chunk)).tobytes())

    return step


def _audioop_baseline(frame_pcm: bytes, frame_ulaw: bytes, number: int) -> dict[str, float]:
    if importlib.util.find_spec("audioop") is None:
        return {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = importlib.import_module("audioop")
    return {
        "encode": _us_per_call(lambda: audioop.lin2ulaw(frame_pcm, 2), number),
        "decode": _us_per_call(lambda: audioop.ulaw2lin(frame_ulaw, 2), number),
    }


def _onset_frames(dbfs: float, seed: int) -> int:
    """Frames of audio from the start of a syllabic speech stand-in to the end of the frame
    that makes the VAD report speech (the earliest a clear could be sent)."""
    rng = np.random.default_rng(seed)
    t = np.arange(8000) / 8000
    voiced = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 25))
    speech = np.clip(np.sin(2 * np.pi * 4 * t) * 1.3, 0, 1) ** 2 * voiced
    speech *= 32768 * 10 ** (dbfs / 20) / np.sqrt(np.mean(speech**2))
    line = rng.standard_normal(16000) * 32768 * 10 ** (-65 / 20)
    line[8000:] += speech
    samples = np.round(line).astype(np.int16)
    vad = Vad()
    for n in range(100):
        if vad.feed(samples[n * 160 : (n + 1) * 160]) is not None:
            return n + 1 - 50
    raise RuntimeError("the VAD missed the speech")


def run(repeat: int) -> dict[str, Any]:
    number = max(2000, repeat * 100)
    frame_pcm = _speechy(8000, 0.02).astype("<i2").tobytes()
    frame_ulaw = codec.encode(frame_pcm)
    second_pcm = _speechy(8000).astype("<i2").tobytes()
    second_ulaw = codec.encode(second_pcm)
    inbound = np.frombuffer(frame_ulaw, np.uint8)
    vad = Vad()
    steps: dict[str, Callable[[], object]] = {
        "encode": lambda: codec.encode(frame_pcm),
        "decode": lambda: codec.decode(frame_ulaw),
        "resample 8k->16k": _resampler_step(8000, 16000),
        "resample 8k->24k": _resampler_step(8000, 24000),
        "resample 16k->8k": _resampler_step(16000, 8000),
        "resample 24k->8k": _resampler_step(24000, 8000),
        "resample 48k->8k": _resampler_step(48000, 8000),
        "vad": lambda: vad.feed(codec.decode_array(inbound)),
        "inbound path": _inbound_step(),
        "outbound path": _outbound_step(),
    }
    per_frame = {name: _us_per_call(fn, number) for name, fn in steps.items()}
    both = per_frame["inbound path"] + per_frame["outbound path"]
    return {
        "us_per_frame": per_frame,
        "frames_per_s_per_core": {name: 1e6 / us for name, us in per_frame.items()},
        "us_per_audio_second": {
            "encode": _us_per_call(lambda: codec.encode(second_pcm), number // 20),
            "decode": _us_per_call(lambda: codec.decode(second_ulaw), number // 20),
        },
        "calls_per_core_audio_only": 1e6 / (both * FRAMES_PER_S),
        "audioop_us_per_frame": _audioop_baseline(frame_pcm, frame_ulaw, number),
        # Audio time from speech onset to detection, by caller level (dBFS); compute is above.
        "vad_onset_ms": {
            db: 20 * _onset_frames(db, seed) for seed, db in enumerate((-35, -25, -15))
        },
    }


def report(r: dict[str, Any]) -> None:
    print("audio path, one 20 ms frame on one core (median)")
    baseline = r["audioop_us_per_frame"]
    for name, us in r["us_per_frame"].items():
        fps = r["frames_per_s_per_core"][name]
        ref = f"   (audioop {baseline[name]:5.2f} us)" if name in baseline else ""
        print(f"  {name:<18} {us:7.2f} us   {fps:>10,.0f} frames/s{ref}")
    for name, us in r["us_per_audio_second"].items():
        print(f"  {name} 1 s of audio  {us:7.1f} us   (real time x {1e6 / us:,.0f})")
    onsets = ", ".join(f"{db} dBFS {ms} ms" for db, ms in r["vad_onset_ms"].items())
    print(f"  barge-in VAD, speech onset to detection in audio time: {onsets} (target < 100 ms)")
    print(f"  calls one core carries for the audio work alone (in + out paths, 50 frames/s each):"
          f" {r['calls_per_core_audio_only']:,.0f}")  # fmt: skip
