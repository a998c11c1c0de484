"""The resampler measured: aliases rejected, images rejected, passband kept, chunks join cleanly."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from voicecall.runtime.media.resample import Resampler, resample

AMPLITUDE = 0.5  # -6 dBFS


def tone(freq: float, rate: int, seconds: float = 2.0) -> npt.NDArray[np.float64]:
    t = np.arange(int(rate * seconds)) / rate
    return AMPLITUDE * np.sin(2 * np.pi * freq * t + 0.3)


def as_type(x: npt.NDArray[np.float64], dtype: str) -> npt.NDArray[np.generic]:
    if dtype == "int16":
        return np.round(x * 32767).astype(np.int16)
    return x.astype(np.float32)


def streamed(x: npt.NDArray[np.generic], in_rate: int, out_rate: int, dtype: str) -> np.ndarray:
    """Through the streaming API in 20 ms chunks, as a call feeds it."""
    r = Resampler(in_rate, out_rate, dtype=dtype)  # type: ignore[arg-type]
    step = in_rate // 50
    chunks = [r.process(x[i : i + step]) for i in range(0, len(x), step)]
    out = np.concatenate([*chunks, r.flush()]).astype(np.float64)
    return out / 32767 if dtype == "int16" else out


def spectrum_db(y: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Level of each frequency relative to the input tone, over the steady middle second."""
    middle = y[rate // 2 : rate // 2 + rate]
    window = np.hanning(len(middle))
    magnitude = np.abs(np.fft.rfft(middle * window)) / (window.sum() / 2)
    freqs = np.fft.rfftfreq(len(middle), 1 / rate)
    return freqs, 20 * np.log10(np.maximum(magnitude, 1e-12) / AMPLITUDE)


@pytest.mark.parametrize("dtype", ["int16", "float32"])
@pytest.mark.parametrize(
    ("in_rate", "freq"),
    [(16000, 5000), (16000, 7000), (24000, 4500), (24000, 6000), (24000, 11000), (48000, 4500),
     (48000, 6000), (48000, 20000)],
)  # fmt: skip
def test_a_tone_above_4khz_is_60db_down_at_8khz(in_rate: int, freq: int, dtype: str) -> None:
    y = streamed(as_type(tone(freq, in_rate), dtype), in_rate, 8000, dtype)
    _, level = spectrum_db(y, 8000)
    assert level.max() < -60, f"{freq} Hz at {in_rate} Hz came out at {level.max():.1f} dBr"


def test_dropping_samples_would_fail_the_measurement() -> None:
    # The measurement itself can fail: decimation without a filter aliases 6 kHz to 2 kHz.
    _, level = spectrum_db(tone(6000, 24000)[::3], 8000)
    assert level.max() > -1


PAIRS = [(16000, 8000), (24000, 8000), (48000, 8000), (8000, 16000), (8000, 24000), (8000, 48000)]


@pytest.mark.parametrize("dtype", ["int16", "float32"])
@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
@pytest.mark.parametrize("freq", [300, 1000, 3000])
def test_a_passband_tone_keeps_its_level(
    in_rate: int, out_rate: int, freq: int, dtype: str
) -> None:
    y = streamed(as_type(tone(freq, in_rate), dtype), in_rate, out_rate, dtype)
    freqs, level = spectrum_db(y, out_rate)
    peak = int(level.argmax())
    assert freqs[peak] == pytest.approx(freq, abs=2)
    assert level[peak] == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("out_rate", [16000, 24000, 48000])
def test_upsampling_leaves_no_images_above_4khz(out_rate: int) -> None:
    y = streamed(as_type(tone(3000, 8000), "int16"), 8000, out_rate, "int16")
    freqs, level = spectrum_db(y, out_rate)
    # The image of 3 kHz at 5 kHz (8 kHz - 3 kHz) and every higher one.
    assert level[freqs >= 4500].max() < -60


def test_chunks_join_like_one_pass() -> None:
    x = as_type(tone(1000, 24000), "float32")
    whole = resample(x, 24000, 8000).astype(np.float64)
    pieces = streamed(x, 24000, 8000, "float32")
    assert len(pieces) == len(whole)
    assert np.abs(pieces - whole).max() < 1e-4


def test_reset_starts_a_fresh_stream() -> None:
    # After a barge-in the next utterance must not begin with the old one's filter tail.
    x = as_type(tone(1000, 24000, 0.2), "float32")
    fresh = Resampler(24000, 8000, dtype="float32")
    expected = np.concatenate([fresh.process(x), fresh.flush()])
    reused = Resampler(24000, 8000, dtype="float32")
    reused.process(as_type(tone(3000, 24000, 0.1), "float32"))
    reused.reset()
    assert np.array_equal(np.concatenate([reused.process(x), reused.flush()]), expected)


def test_the_same_rate_passes_audio_through() -> None:
    x = as_type(tone(1000, 8000, 0.1), "int16")
    same = Resampler(8000, 8000)
    out = np.concatenate([same.process(x), same.flush()]).astype(np.int32)
    assert len(out) == len(x)
    assert np.abs(out - x.astype(np.int32)).max() <= 1


def test_bytes_api_round_trips_pcm() -> None:
    r = Resampler(8000, 16000)
    pcm = as_type(tone(1000, 8000, 0.02), "int16").astype("<i2").tobytes()
    out = r.process_bytes(pcm) + r.flush().astype("<i2").tobytes()
    assert len(out) == 2 * len(pcm)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Resampler(44100, 8000), "in_rate 44100 Hz is not one of"),
        (lambda: Resampler(8000, 11025), "out_rate 11025 Hz is not one of"),
        (lambda: Resampler(8000, 16000).process(np.zeros(4, np.float32)), "int16 chunk"),
        (lambda: Resampler(8000, 16000).process_bytes(b"\x00"), "even number of bytes"),
    ],
)
def test_bad_input_is_a_clear_error(make: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()  # type: ignore[operator]
