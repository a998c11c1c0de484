"""Where calls live: the interface every store implements."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from voicecall.runtime.state import CallRecord


@dataclass(frozen=True, slots=True)
class StoredReply:
    """The reply a processed webhook got, replayed as it was for a duplicate."""

    body: bytes
    content_type: str


class Store(Protocol):
    # Called with each call record once its change is committed (Gateway events).
    watchers: list[Callable[[CallRecord], None]]

    def get(self, call_id: str) -> CallRecord | None: ...

    def find(self, provider: str, provider_call_id: str) -> CallRecord | None: ...

    async def save(self, record: CallRecord) -> None:
        """Commits ``record`` (outside a webhook: an agent command, a timer, a stream turn)."""
        ...

    async def seen(self, key: str) -> StoredReply | None:
        """The reply stored for an already processed event key, or None if it is new."""
        ...

    async def commit_event(
        self, key: str, record: CallRecord | None, reply: StoredReply | None,
        rejected: tuple[str, str] | None = None,
    ) -> bool:  # fmt: skip
        """Marks ``key`` processed and saves ``record`` (and a rejected ``(provider, carrier
        call id)``), durably, before returning; False (and nothing saved) if ``key`` was
        processed before."""
        ...

    async def was_rejected(self, provider: str, provider_call_id: str) -> bool:
        """Whether an inbound call was rejected (committed with :meth:`commit_event`)."""
        ...

    def forget(self, call_id: str) -> None:
        """Drops a cached record changed by work that was not committed."""
        ...

    def unchanged(self, record: CallRecord) -> bool:
        """Whether ``record`` is exactly as last committed."""
        ...

    def prune(self, before: float, limit: int) -> tuple[int, bool]:
        """Examines the next ``limit`` processed-event keys of a sweep through all of them and
        deletes those received before ``before`` (seconds since the epoch, on the manager's
        clock); returns how many were deleted and whether the sweep is complete."""
        ...

    async def history(self, session: str, limit: int) -> list[tuple[str, str]]:
        """The last ``limit`` messages of a responder session (its ``sessionScope`` key),
        oldest first, as (role, content)."""
        ...

    async def add_history(
        self, session: str, messages: Sequence[tuple[str, str]], keep: int
    ) -> None:
        """Appends messages to a responder session, durably, keeping only its last ``keep``."""
        ...

    def live(self) -> list[CallRecord]:
        """The unfinished calls this process owns (all of them, but with a shared store)."""
        ...

    def all_live(self) -> list[CallRecord]:
        """Every unfinished call, whichever process owns it."""
        ...

    async def count_live(self) -> int:
        """Unfinished calls, whichever process owns them (maxConcurrentCalls counts them all)."""
        ...

    def peek(self, call_id: str) -> CallRecord | None:
        """:meth:`get` if it needs no network round trip, else None (log lines use it)."""
        ...

    def peek_by(self, provider: str, provider_call_id: str) -> CallRecord | None:
        """:meth:`find` if it needs no network round trip, else None."""
        ...

    async def read(self, call_id: str) -> CallRecord | None:
        """:meth:`get` without blocking the event loop on a networked store."""
        ...

    async def read_by(self, provider: str, provider_call_id: str) -> CallRecord | None:
        """:meth:`find` without blocking the event loop on a networked store."""
        ...

    def recent(self, limit: int) -> list[CallRecord]: ...

    def close(self) -> None: ...

    async def aclose(self) -> None: ...
