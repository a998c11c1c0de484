"""What the caller actually heard: marks sent after our audio, echoed once it has played.

Every carrier echoes a mark when the audio queued before it has finished playing, and also when
that audio was dropped by a clear (Twilio and Telnyx echo the pending marks at once; Plivo says
``clearedAudio``). So an echo alone does not mean "heard": a mark sent before a clear and echoed
after it was cut off.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkOutcome:
    name: str
    heard: bool  # False: cut off by a clear (barge-in) before it finished playing


class MarkTracker:
    """The marks of one stream, in the order sent."""

    def __init__(self) -> None:
        self._pending: list[str] = []
        self._cut: set[str] = set()

    def sent(self, name: str) -> None:
        self._pending.append(name)

    def cleared(self) -> tuple[str, ...]:
        """A clear was sent: every pending mark is cut off. Returns their names."""
        cut = tuple(self._pending)
        self._cut.update(cut)
        self._pending.clear()
        return cut

    def echoed(self, name: str) -> tuple[MarkOutcome, ...]:
        """The carrier echoed ``name``; marks sent before it that were not echoed are done too
        (a carrier may coalesce). Unknown names give nothing (a forged or stale echo)."""
        if name in self._cut:
            self._cut.discard(name)
            return (MarkOutcome(name=name, heard=False),)
        if name not in self._pending:
            return ()
        index = self._pending.index(name)
        done = self._pending[: index + 1]
        del self._pending[: index + 1]
        return tuple(MarkOutcome(name=n, heard=True) for n in done)

    def forget_cut(self) -> None:
        """The carrier confirmed the clear (Plivo ``clearedAudio``) and echoes none of the cut
        marks: nothing more to wait for."""
        self._cut.clear()

    @property
    def pending(self) -> tuple[str, ...]:
        return tuple(self._pending)
