"""A local voice-activity detector for barge-in: caller energy with hysteresis, echo-aware.

Why an energy detector and not webrtcvad or silero-vad: barge-in has to answer "is the caller
talking over us?" within a frame or two, and on a phone line the loudest thing that is not the
caller is the echo of our own TTS. Echo is speech, so any speech classifier (webrtcvad's GMM,
silero's network) says "speech" to it and the call interrupts itself. What tells the two apart is
level: echo comes back at least the line's echo return loss below what we sent (G.168 plans for
6 dB or more; hybrids and handsets give 12–30 dB). This detector knows what we are playing (the
sender reports every frame through :meth:`Vad.played`) and raises its threshold to that level
minus the assumed loss for as long as the echo tail lasts. Around that it does the usual: a noise
floor that follows the line's steady noise, an absolute floor, hysteresis between the start and
end thresholds, an onset of 60 ms (3 frames) so clicks do not count, and a hangover of 300 ms so
pauses between words do not end the turn. It costs one RMS per 20 ms frame (no model, no native
code), so detection to ``clear`` stays far under the 100 ms target. End of turn is still the STT
service's server VAD; this only decides when to stop our audio.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from voicecall.runtime.media.codec import decode_array

_SILENT_DBFS = -120.0


class VadEvent(enum.Enum):
    SPEECH_START = "speech_start"
    SPEECH_END = "speech_end"


@dataclass(frozen=True, slots=True, kw_only=True)
class VadSettings:
    """Levels are dBFS of the frame's RMS (a full-scale sine is -3 dBFS)."""

    min_speech_dbfs: float = -45.0  # never speech below this, whatever the noise floor
    noise_margin_db: float = 10.0  # speech is at least this far above the line's noise floor
    noise_rise_db: float = 0.1  # per frame: the floor follows steady noise up slowly, down fast
    echo_return_loss_db: float = 12.0  # least loss assumed between what we send and its echo
    echo_margin_db: float = 6.0  # the caller must be this far above the loudest possible echo
    echo_tail_frames: int = 25  # 500 ms: how long what we sent can keep coming back
    hysteresis_db: float = 6.0  # speech ends below the start threshold minus this
    onset_frames: int = 3
    hangover_frames: int = 15

    def __post_init__(self) -> None:
        for name in ("echo_tail_frames", "onset_frames", "hangover_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def level_dbfs(pcm: npt.NDArray[np.int16]) -> float:
    """RMS level of 16-bit samples in dB relative to full scale."""
    if pcm.size == 0:
        return _SILENT_DBFS
    samples = pcm.astype(np.float64)
    rms = math.sqrt(float(samples.dot(samples)) / samples.size)
    return 20 * math.log10(rms / 32768) if rms > 0 else _SILENT_DBFS


class Vad:
    """One call's caller-side detector; feed it every inbound frame in order."""

    __slots__ = ("_above", "_below", "_echo", "_played_now", "floor_dbfs", "settings", "speaking")

    def __init__(self, settings: VadSettings | None = None) -> None:
        self.settings = settings or VadSettings()
        s = self.settings
        self.floor_dbfs = s.min_speech_dbfs - s.noise_margin_db
        self.speaking = False
        self._echo: deque[float] = deque(maxlen=s.echo_tail_frames)
        self._played_now = _SILENT_DBFS
        self._above = 0
        self._below = 0

    def played(self, pcm: npt.NDArray[np.int16]) -> None:
        """Report a frame we sent to the caller (its echo may come back for a while)."""
        self._played_now = max(self._played_now, level_dbfs(pcm))

    def played_ulaw(self, frame: bytes) -> None:
        self.played(decode_array(np.frombuffer(frame, dtype=np.uint8)))

    def threshold_dbfs(self) -> float:
        """The level an inbound frame needs to count towards speech right now."""
        s = self.settings
        echo = max(self._echo, default=_SILENT_DBFS) - s.echo_return_loss_db + s.echo_margin_db
        return max(s.min_speech_dbfs, self.floor_dbfs + s.noise_margin_db, echo)

    def feed(self, pcm: npt.NDArray[np.int16]) -> VadEvent | None:
        """Take the next inbound frame; returns the transition it causes, if any."""
        self._echo.append(self._played_now)
        self._played_now = _SILENT_DBFS
        level = level_dbfs(pcm)
        on = self.threshold_dbfs()
        self._track_floor(level)
        if not self.speaking:
            self._above = self._above + 1 if level >= on else 0
            if self._above >= self.settings.onset_frames:
                self.speaking, self._below = True, 0
                return VadEvent.SPEECH_START
            return None
        self._below = self._below + 1 if level < on - self.settings.hysteresis_db else 0
        if self._below >= self.settings.hangover_frames:
            self.speaking, self._above = False, 0
            return VadEvent.SPEECH_END
        return None

    def feed_ulaw(self, frame: bytes) -> VadEvent | None:
        return self.feed(decode_array(np.frombuffer(frame, dtype=np.uint8)))

    def _track_floor(self, level: float) -> None:
        # Down at once to a quieter frame, up slowly: speech's syllable gaps keep the floor low
        # while steady noise (a fan, a car) lifts it within seconds.
        if level < self.floor_dbfs:
            self.floor_dbfs = max(level, _SILENT_DBFS)
        else:
            self.floor_dbfs = min(level, self.floor_dbfs + self.settings.noise_rise_db)
