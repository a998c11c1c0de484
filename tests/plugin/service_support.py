"""Driving a VoiceCallService in-process on the mock carrier and a virtual clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from voicecall.dsl.catalog import Catalog
from voicecall.plugin.service import VoiceCallService
from voicecall.runtime.clock import VirtualClock

FLOWS = Path(__file__).resolve().parents[2] / "flows" / "examples"
CALLEE = "+15550001111"


class Events(list[tuple[str, dict[str, Any]]]):
    def sink(self, event: str, payload: Mapping[str, Any]) -> None:
        self.append((event, dict(payload)))

    def of(self, name: str, call_id: str | None = None) -> list[dict[str, Any]]:
        return [p for e, p in self if e == name and (call_id is None or p["callId"] == call_id)]


async def settle(service: VoiceCallService) -> None:
    """Waits until no webhook, REST request or side effect is in flight."""
    runtime = service.runtime
    assert runtime is not None
    quiet = 0
    while quiet < 3:
        await asyncio.sleep(0)
        await runtime.manager.drain()
        busy = not runtime.carrier.idle
        quiet = 0 if busy else quiet + 1
        if busy:
            await asyncio.sleep(0.001)


async def until(service: VoiceCallService, done: Callable[[], bool], limit: int = 2000) -> None:
    """Lets virtual time run, one timer at a time, until ``done()`` (or ``limit`` timers)."""
    clock = service.clock
    assert isinstance(clock, VirtualClock)
    for _ in range(limit):
        await settle(service)
        if done():
            return
        if not clock.advance_to_next():
            await asyncio.sleep(0.005)
    raise AssertionError("the condition never came true")


async def run(service: VoiceCallService, coro: Any) -> Any:
    """Runs an operation that waits on the call (continue) while virtual time runs."""
    task = asyncio.ensure_future(coro)
    await until(service, task.done)
    return task.result()


def state(service: VoiceCallService, call_id: str) -> str:
    assert service.runtime is not None
    record = service.runtime.manager.get(call_id)
    assert record is not None
    return record.state


@asynccontextmanager
async def running(
    tmp_path: Path, provider: str = "twilio", **config: Any
) -> AsyncIterator[tuple[VoiceCallService, Events]]:
    events = Events()
    raw = {
        "provider": "mock",
        "store": str(tmp_path / "store"),
        "toNumber": CALLEE,
        "serve": {"port": 0, "bind": "127.0.0.1"},
        "maxConcurrentCalls": 4,
        **config,
    }
    service = VoiceCallService(raw, config_path=None, logger=logging.getLogger("test"),
                               emit=events.sink, clock=VirtualClock(),
                               catalog=Catalog([FLOWS]), mock_backend=provider)  # fmt: skip
    await service.start()
    try:
        yield service, events
    finally:
        await service.stop()
