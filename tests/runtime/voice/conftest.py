"""Services opened by a test are closed after it (their SDK clients hold connections)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, TypeVar

import pytest

from voicecall.runtime.voice.tts import TtsService

S = TypeVar("S", bound=TtsService)


class Closing(Protocol):
    def __call__(self, service: S, /) -> S: ...


@pytest.fixture
async def closing() -> AsyncIterator[Closing]:
    opened: list[TtsService] = []

    def track(service: S) -> S:
        opened.append(service)
        return service

    yield track
    for service in opened:
        await service.aclose()
