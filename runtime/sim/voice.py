"""The offline stand-in voice: what simulations and `make demo` speak with on a media stream.

It is not speech. It stands in for a TTS service where no key and no network may be used (the
mock carrier): a voiced tone whose length follows the text, streamed in small chunks the way a
real service streams, so every part of the audio path (framing, pacing, marks, barge-in, echo
gating) runs for real. Its name says what it is in every log line.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np

from voicecall.runtime.media.codec import encode
from voicecall.runtime.voice.tts import VoiceSettings

RATE = 8000
MS_PER_CHAR = 30  # brisk: a 60-character sentence lasts 1.8 s
MAX_MS = 3000
CHUNK = 800  # 100 ms a chunk, like a streaming service


def tone_speech(text: str) -> bytes:
    """μ-law audio standing in for ``text`` spoken: a 140 Hz voiced tone with harmonics and a
    syllable envelope, about ``MS_PER_CHAR`` per character (at most ``MAX_MS``)."""
    ms = min(MAX_MS, max(200, MS_PER_CHAR * len(text)))
    t = np.arange(RATE * ms // 1000) / RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in (1, 2, 3, 4))
    syllables = 0.55 + 0.45 * np.abs(np.sin(np.pi * 4 * t))
    pcm = (voice * syllables * 6000).astype(np.int16)
    return encode(pcm.tobytes())


class ToneVoice:
    """A :class:`~voicecall.runtime.voice.tts.TtsService` that needs no key and no network."""

    name = "offline stand-in voice"

    async def synthesize(self, text: str, *, voice_settings: VoiceSettings) -> AsyncIterator[bytes]:
        audio = tone_speech(text)
        for i in range(0, len(audio), CHUNK):
            yield audio[i : i + CHUNK]

    async def aclose(self) -> None:
        return None
