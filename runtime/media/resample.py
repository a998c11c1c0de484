"""Band-limited, streaming sample-rate conversion between telephony and service rates.

Carriers stream 8 kHz; STT wants 16 or 24 kHz and TTS produces 16, 24 or 48 kHz. Dropping or
interpolating samples (``x[::3]``, ``audioop.ratecv``) folds everything above 4 kHz back into
the call as audible aliasing (performance.md §3.3: a 6 kHz tone comes out at 0 dBr). soxr's
streaming resampler low-passes before decimating (HQ: about -83 dBr for that tone) and keeps its
filter state between chunks, so 20 ms chunks join without edge clicks; it costs about 4 µs per
chunk (§3.2).
"""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt
import soxr  # type: ignore[import-untyped]

RATES: Final = frozenset({8000, 16000, 24000, 48000})
SampleType = Literal["int16", "float32"]
# HQ and QQ cost the same per 20 ms chunk; HQ is the one that rejects aliases (§3.3).
_QUALITY: Final = "HQ"


class Resampler:
    """One direction of one call's audio: feed chunks in order, get resampled chunks back.

    Output lags input by the filter's delay (a few ms); ``flush`` returns the tail at the end.
    """

    __slots__ = ("_dtype", "_stream", "in_rate", "out_rate")

    def __init__(self, in_rate: int, out_rate: int, *, dtype: SampleType = "int16") -> None:
        """Args:
        in_rate: input sample rate in Hz, one of ``RATES``.
        out_rate: output sample rate in Hz, one of ``RATES``.
        dtype: sample type of chunks in and out (int16 PCM or float32 in [-1, 1]).
        """
        for name, rate in (("in_rate", in_rate), ("out_rate", out_rate)):
            if rate not in RATES:
                raise ValueError(f"{name} {rate} Hz is not one of {sorted(RATES)}")
        if dtype not in ("int16", "float32"):
            raise ValueError(f"dtype must be int16 or float32, got {dtype!r}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._dtype = np.dtype(dtype)
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype=dtype, quality=_QUALITY)

    def process(self, chunk: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Resample the next chunk (one-dimensional, of this resampler's dtype)."""
        if chunk.dtype != self._dtype or chunk.ndim != 1:
            raise ValueError(
                f"expected a one-dimensional {self._dtype} chunk, got {chunk.ndim}-d {chunk.dtype}"
            )
        out: npt.NDArray[Any] = self._stream.resample_chunk(chunk)
        return out

    def flush(self) -> npt.NDArray[Any]:
        """The samples still inside the filter; the stream is over afterwards until ``reset``."""
        out: npt.NDArray[Any] = self._stream.resample_chunk(np.zeros(0, self._dtype), last=True)
        return out

    def reset(self) -> None:
        """Forget the filter state, e.g. after a barge-in cleared what was queued."""
        self._stream.clear()

    def process_bytes(self, pcm: bytes) -> bytes:
        """``process`` for little-endian 16-bit PCM bytes (int16 resamplers only)."""
        if self._dtype != np.int16:
            raise ValueError("process_bytes needs an int16 resampler")
        if len(pcm) % 2:
            raise ValueError(f"16-bit PCM needs an even number of bytes, got {len(pcm)}")
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)
        return self.process(samples).astype("<i2", copy=False).tobytes()


def resample(samples: npt.NDArray[Any], in_rate: int, out_rate: int) -> npt.NDArray[Any]:
    """A whole clip at once (int16 or float32), e.g. a cached greeting."""
    resampler = Resampler(
        in_rate, out_rate, dtype="int16" if samples.dtype == np.int16 else "float32"
    )
    return np.concatenate([resampler.process(samples), resampler.flush()])
