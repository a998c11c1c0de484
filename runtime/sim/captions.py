"""What a simulated caller says on a media stream, for the offline speech stand-ins.

The mock carrier plays a caller's words as audio (fixture files, no real speech). A speech
recognizer cannot hear text in a fixture tone, so the carrier also writes the words here when it
starts playing them, and the offline stand-ins (the scripted transcriber, the local fake OpenAI
realtime server) read them back when their voice-activity detector hears that utterance end.
Nothing outside simulations and tests uses this: a real call's words come from a real STT.
"""

from __future__ import annotations

import threading
from collections import deque

ANY = "*"


class Captions:
    """Per-stream FIFO of the words being played, keyed by the stream's call key
    (:func:`voicecall.runtime.media.streams.stream_key`). Thread-safe: a fake server may run
    on another loop."""

    def __init__(self) -> None:
        self._lines: dict[str, deque[str]] = {}
        self._order: deque[str] = deque()  # keys in the order words were said (for ANY)
        self._lock = threading.Lock()

    def say(self, key: str, text: str) -> None:
        """The caller on stream ``key`` starts saying ``text``."""
        with self._lock:
            self._lines.setdefault(key, deque()).append(text)
            self._order.append(key)

    def next(self, key: str = ANY) -> str:
        """The oldest words not yet read for ``key`` (``ANY``: of any stream), else ""."""
        with self._lock:
            if key == ANY:
                while self._order:
                    k = self._order.popleft()
                    lines = self._lines.get(k)
                    if lines:
                        return lines.popleft()
                return ""
            lines = self._lines.get(key)
            if not lines:
                return ""
            if key in self._order:
                self._order.remove(key)
            return lines.popleft()

    def pending(self, key: str = ANY) -> int:
        with self._lock:
            if key == ANY:
                return sum(len(v) for v in self._lines.values())
            return len(self._lines.get(key, ()))
