"""The serving processes' event loop: uvloop where it is installed, asyncio's own elsewhere.

Only processes that serve carriers and clients use it (the Gateway host, the benchmark servers);
tests and simulations keep asyncio's loop, which the virtual clock is written against.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None (asyncio's default) where uvloop is not installed."""
    try:
        import uvloop
    except ImportError:  # Windows, or installed without it
        return None
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the faster loop when there is one."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
