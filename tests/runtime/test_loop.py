"""The serving loop: uvloop where it is installed (the lock file installs it everywhere but
Windows), asyncio's own loop otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest
from aiohttp import web

from voicecall.runtime import loop
from voicecall.runtime.server import REFUSED, GuardedSite, ServerSettings


async def _loop_type() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


def test_the_serving_loop_is_uvloop_where_installed() -> None:
    import uvloop

    assert loop.run(_loop_type()) is uvloop.Loop


def test_without_uvloop_it_is_asyncios_own_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # import uvloop raises ImportError
    ran = loop.run(_loop_type())
    assert issubclass(ran, asyncio.BaseEventLoop)
    assert ran.__module__.startswith("asyncio")


async def _two_connections() -> list[bytes]:
    """A request over the webhook server's guarded site, and one connection over its cap."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = GuardedSite(runner, "127.0.0.1", 0, ServerSettings(max_connections=1))
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        answered = await reader.readuntil(b"hello")
        extra_reader, extra_writer = await asyncio.open_connection("127.0.0.1", port)
        refused = await extra_reader.read()
        for w in (writer, extra_writer):
            w.close()
        return [answered, refused]
    finally:
        await runner.cleanup()


def test_the_webhook_server_serves_and_refuses_on_uvloop() -> None:
    answered, refused = loop.run(_two_connections())
    assert answered.startswith(b"HTTP/1.1 200 OK\r\n")
    assert refused == REFUSED
