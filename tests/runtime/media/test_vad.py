"""The barge-in detector on synthetic speech, silence, line noise and the echo of our own audio."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from voicecall.runtime.media import codec
from voicecall.runtime.media.vad import Vad, VadEvent, VadSettings, level_dbfs

RATE = 8000
FRAME = 160
Signal = npt.NDArray[np.float64]


def scaled(x: Signal, dbfs: float) -> Signal:
    rms = float(np.sqrt(np.mean(x**2)))
    return x * (32768 * 10 ** (dbfs / 20) / rms)


def speech_like(seconds: float, dbfs: float, seed: int = 1) -> Signal:
    """Voiced speech stand-in: a gliding 100–140 Hz pitch, formant-shaped harmonics, a 4 Hz
    syllable rhythm with gaps between syllables, and a little breath noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t + seed)
    phase = 2 * np.pi * np.cumsum(f0) / RATE
    voiced = np.zeros_like(t)
    for k in range(1, 30):
        f = 120 * k
        weight = sum(a * np.exp(-(((f - c) / w) ** 2)) for a, c, w in
                     ((1.0, 700, 300), (0.6, 1200, 400), (0.3, 2500, 500)))  # fmt: skip
        voiced += weight * np.sin(k * phase)
    syllables = np.clip(np.sin(2 * np.pi * 4 * t + seed) * 1.3, 0, 1) ** 2
    return scaled(syllables * (voiced + 0.05 * rng.standard_normal(t.size)), dbfs)


def noise(seconds: float, dbfs: float, seed: int = 2) -> Signal:
    return scaled(np.random.default_rng(seed).standard_normal(int(seconds * RATE)), dbfs)


def pcm(x: Signal) -> npt.NDArray[np.int16]:
    return np.clip(np.round(x), -32768, 32767).astype(np.int16)


def frames(x: Signal) -> list[npt.NDArray[np.int16]]:
    samples = pcm(x)
    return [samples[i : i + FRAME] for i in range(0, len(samples) - FRAME + 1, FRAME)]


def run(vad: Vad, inbound: Signal, ours: Signal | None = None) -> list[tuple[int, VadEvent]]:
    """Feed inbound frame by frame, reporting our frame sent at the same tick; events by frame."""
    played = frames(ours) if ours is not None else []
    events = []
    for n, frame in enumerate(frames(inbound)):
        if n < len(played):
            vad.played(played[n])
        if (event := vad.feed(frame)) is not None:
            events.append((n, event))
    return events


def echo_of(ours: Signal, loss_db: float, delay_s: float) -> Signal:
    delayed = np.concatenate([np.zeros(int(delay_s * RATE)), ours])[: len(ours)]
    return delayed * 10 ** (-loss_db / 20)


LINE_NOISE = noise(6.0, -65)


def test_silence_is_never_speech() -> None:
    assert run(Vad(), LINE_NOISE) == []


def test_speech_starts_within_100ms_and_ends_after_the_hangover() -> None:
    inbound = LINE_NOISE.copy()
    inbound[RATE : 3 * RATE] += speech_like(2.0, -24)
    events = run(Vad(), inbound)
    assert [e for _, e in events] == [VadEvent.SPEECH_START, VadEvent.SPEECH_END]
    onset = 50  # speech begins at frame 50 (1 s)
    assert onset <= events[0][0] < onset + 5  # within 100 ms
    assert 150 <= events[1][0] <= 150 + 15 + 10  # after the 300 ms hangover, not mid-sentence


def test_a_click_shorter_than_the_onset_is_not_speech() -> None:
    inbound = LINE_NOISE.copy()
    inbound[RATE : RATE + 2 * FRAME] += noise(2 * FRAME / RATE, -10, seed=4)  # 40 ms
    assert run(Vad(), inbound) == []
    inbound[3 * RATE : 3 * RATE + 3 * FRAME] += noise(3 * FRAME / RATE, -10, seed=4)  # 60 ms
    assert [e for _, e in run(Vad(), inbound)] == [VadEvent.SPEECH_START, VadEvent.SPEECH_END]


def test_quiet_speech_below_the_absolute_floor_is_ignored() -> None:
    inbound = LINE_NOISE.copy()
    inbound[RATE : 3 * RATE] += speech_like(2.0, -55)
    assert run(Vad(), inbound) == []


@pytest.mark.parametrize(("loss_db", "delay_s"), [(12, 0.02), (18, 0.12), (30, 0.4)])
def test_the_echo_of_our_own_speech_does_not_interrupt_us(loss_db: float, delay_s: float) -> None:
    ours = speech_like(6.0, -12, seed=5)
    inbound = LINE_NOISE + echo_of(ours, loss_db=loss_db, delay_s=delay_s)
    assert run(Vad(), inbound, ours) == []


def test_the_same_echo_would_interrupt_a_detector_that_ignores_our_audio() -> None:
    ours = speech_like(6.0, -12, seed=5)
    inbound = LINE_NOISE + echo_of(ours, loss_db=18, delay_s=0.12)
    assert VadEvent.SPEECH_START in [e for _, e in run(Vad(), inbound)]


def test_the_caller_talking_over_our_audio_is_detected() -> None:
    ours = speech_like(6.0, -12, seed=5)
    inbound = LINE_NOISE + echo_of(ours, loss_db=18, delay_s=0.12)
    inbound[2 * RATE : 4 * RATE] += speech_like(2.0, -16, seed=7)
    events = run(Vad(), inbound, ours)
    assert events[0][1] is VadEvent.SPEECH_START
    assert 100 <= events[0][0] < 105


def test_echo_gating_ends_with_the_echo_tail() -> None:
    # Once we stop playing, the threshold falls back after the tail, so the caller is heard.
    ours = np.concatenate([speech_like(2.0, -12, seed=5), np.zeros(4 * RATE)])
    inbound = LINE_NOISE + echo_of(ours, loss_db=18, delay_s=0.12)
    inbound[3 * RATE : 5 * RATE] += speech_like(2.0, -30, seed=7)
    events = run(Vad(), inbound, ours)
    assert events and events[0][1] is VadEvent.SPEECH_START
    assert 150 <= events[0][0] < 155


def test_steady_line_noise_is_learnt_and_speech_still_heard_over_it() -> None:
    hum = noise(12.0, -38, seed=3)
    inbound = hum.copy()
    inbound[8 * RATE : 10 * RATE] += speech_like(2.0, -20)
    events = run(Vad(), inbound)
    # Loud noise from the first frame may count as speech until the floor has learnt it (a few
    # seconds), then never again on its own; the speech at 8 s (frame 400) is heard over it.
    before = [(n, e) for n, e in events if n < 400]
    assert [e for _, e in before] in ([], [VadEvent.SPEECH_START, VadEvent.SPEECH_END])
    assert all(n < 200 for n, _ in before)
    after = [(n, e) for n, e in events if n >= 400]
    assert after[0][1] is VadEvent.SPEECH_START
    assert after[0][0] < 405


def test_ulaw_frames_are_detected_the_same() -> None:
    inbound = LINE_NOISE.copy()
    inbound[RATE : 3 * RATE] += speech_like(2.0, -24)
    vad = Vad()
    events = []
    for n, frame in enumerate(frames(inbound)):
        vad.played_ulaw(bytes([codec.SILENCE_BYTE]) * FRAME)
        if (event := vad.feed_ulaw(codec.encode_array(frame).tobytes())) is not None:
            events.append((n, event))
    assert events == run(Vad(), inbound)


def test_levels() -> None:
    full_scale_sine = pcm(32767 * np.sin(2 * np.pi * 1000 * np.arange(FRAME) / RATE))
    assert level_dbfs(full_scale_sine) == pytest.approx(-3.01, abs=0.01)
    assert level_dbfs(np.zeros(FRAME, np.int16)) == -120.0
    assert level_dbfs(np.zeros(0, np.int16)) == -120.0


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="onset_frames must be at least 1, got 0"):
        VadSettings(onset_frames=0)
