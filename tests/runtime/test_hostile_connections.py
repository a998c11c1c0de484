"""Hostile clients below the webhook handler: slow or silent request heads, idle keep-alive
connections, too many connections, resets mid-body, malformed HTTP. The server runs as
`start_runtime` runs it (AppRunner + GuardedSite), with small configured limits; the tests
wait generously for each outcome and assert the outcome, never a duration."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

from tests.runtime.support import Flows, StandIn
from voicecall.runtime.app import RuntimeConfig
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager import CallManager, ManagerSettings
from voicecall.runtime.server import GuardedSite, ServerSettings, make_app
from voicecall.runtime.store import SQLiteStore

GENEROUS_S = 20.0  # how long an outcome may take on a loaded machine (not a speed limit)
HEAD = b"POST /voice/webhook HTTP/1.1\r\nHost: t\r\nX-Test-Signature: good\r\n"
GET = b"GET /voice/webhook HTTP/1.1\r\nHost: t\r\n\r\n"  # a complete request (answered 405)


@dataclass
class Served:
    port: int
    site: GuardedSite

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def served(tmp_path: Any) -> AsyncIterator[Callable[..., Any]]:
    runners: list[web.AppRunner] = []

    async def serve(**limits: Any) -> Served:
        settings = ManagerSettings(provider="twilio", from_number="+15550000000",
                                   webhook_base="http://t/voice/webhook")  # fmt: skip
        store = SQLiteStore(tmp_path / f"c{len(runners)}.sqlite")
        manager = CallManager(settings, store, StandIn(), Flows(), VirtualClock())
        server = ServerSettings(**limits)
        runner = web.AppRunner(make_app(manager, server), access_log=None)
        await runner.setup()
        runners.append(runner)
        site = GuardedSite(runner, "127.0.0.1", 0, server)
        await site.start()
        return Served(port=runner.addresses[0][1], site=site)

    yield serve
    for runner in runners:
        await runner.cleanup()


async def closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    return await asyncio.wait_for(reader.read(), GENEROUS_S)


async def test_a_head_trickled_line_by_line_is_cut_off(served: Any) -> None:
    site = await served(header_timeout_s=0.3, keepalive_timeout_s=600)
    reader, writer = await site.connect()
    writer.write(HEAD)

    async def trickle() -> None:
        for n in range(10_000):
            writer.write(f"X-Slow-{n}: 1\r\n".encode())
            await asyncio.sleep(0.05)

    dripping = asyncio.create_task(trickle())
    try:
        answer = await closed(reader)
    finally:
        dripping.cancel()
        writer.close()
    assert answer.startswith(b"HTTP/1.1 408 ")


async def test_a_silent_connection_is_closed(served: Any) -> None:
    site = await served(header_timeout_s=600, keepalive_timeout_s=0.3)
    reader, writer = await site.connect()
    assert await closed(reader) == b""
    writer.close()


async def test_a_half_sent_head_that_stops_is_cut_off(served: Any) -> None:
    site = await served(header_timeout_s=0.3, keepalive_timeout_s=600)
    reader, writer = await site.connect()
    writer.write(b"POST /voice/webhook HTTP/1.1\r\nHost:")
    assert (await closed(reader)).startswith(b"HTTP/1.1 408 ")
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not(served: Any) -> None:
    site = await served(header_timeout_s=600, keepalive_timeout_s=0.5)
    reader, writer = await site.connect()
    for _ in range(3):  # requests keep it open; each answer is read in full
        writer.write(GET)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        await reader.readuntil(b"\n")  # the reason text
    assert await closed(reader) == b""  # then idle: closed
    writer.close()


async def test_connections_beyond_the_cap_are_refused(served: Any) -> None:
    site = await served(max_connections=3, keepalive_timeout_s=600)
    held = [await site.connect() for _ in range(3)]
    for reader, writer in held:  # each is open and served
        writer.write(GET)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
        await reader.readuntil(b"\n")
    reader, writer = await site.connect()
    assert (await closed(reader)).startswith(b"HTTP/1.1 503 ")
    writer.close()
    held[0][1].close()
    assert await closed(held[0][0]) == b""
    for _ in range(200):  # the freed slot is taken again once the server saw the close
        if site.site.connections is not None and len(site.site.connections.open) < 3:
            break
        await asyncio.sleep(0.02)
    reader, writer = await site.connect()
    writer.write(GET)
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 405 ")
    for _, other in held[1:]:
        other.close()
    writer.close()


async def wait_for_records(
    caplog: pytest.LogCaptureFixture, text: str, count: int
) -> list[logging.LogRecord]:
    for _ in range(int(GENEROUS_S / 0.02)):
        found = [r for r in caplog.records if text in r.getMessage()]
        if len(found) >= count:
            return found
        await asyncio.sleep(0.02)
    return [r for r in caplog.records if text in r.getMessage()]


async def test_resets_mid_body_are_one_log_line_each(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    site = await served(read_timeout_s=600)
    for _ in range(5):
        _, writer = await site.connect()
        writer.write(HEAD + b'Content-Length: 1000\r\n\r\n{"kind"')
        await writer.drain()
        await asyncio.sleep(0.05)  # the handler is reading the body
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.close()  # with linger 0: a reset
    assert len(await wait_for_records(caplog, "body not received", 5)) == 5
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /voice/webhook HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"POST /voice/webhook HTTP/1.1\r\n\r\n",  # no Host
        b"POST /voice/webhook HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n"
        b"Content-Length: 2\r\n\r\n",
        b"POST /voice/webhook HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Length: 3\r\n\r\n0\r\n\r\n",
        b"POST /voice/webhook?x=\xc2\xb2 HTTP/1.1\r\nHost: t\r\n\r\n",
        b"POST /voice/webhook HTTP/1.1\r\nHost: t\r\nX-Bad\x00: 1\r\n\r\n",
    ],
    ids=["two-hosts", "no-host", "two-lengths", "chunked-and-length", "raw-utf8-query", "nul"],
)
async def test_malformed_http_is_400_and_one_log_line(
    served: Any, caplog: pytest.LogCaptureFixture, request_bytes: bytes
) -> None:
    caplog.set_level(logging.INFO)
    site = await served()
    reader, writer = await site.connect()
    writer.write(request_bytes)
    assert (await closed(reader)).startswith(b"HTTP/1.")
    writer.close()
    assert len(await wait_for_records(caplog, "malformed HTTP", 1)) == 1
    assert [r for r in caplog.records if r.exc_info] == []


async def test_bad_chunked_framing_is_answered_without_a_traceback(
    served: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    site = await served()
    reader, writer = await site.connect()
    writer.write(HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n")
    answer = await closed(reader)
    writer.close()
    assert answer.split(b"\r\n")[0].split()[1] == b"400"
    assert len(await wait_for_records(caplog, "malformed HTTP", 1)) == 1
    assert [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR] == []


def test_the_serve_limits_come_from_the_config() -> None:
    serve = {"maxConnections": 3, "headerTimeoutMs": 1500, "keepAliveTimeoutMs": 2500,
             "bodyTimeoutMs": 700, "maxBodyBytes": 1024, "port": 1}  # fmt: skip
    limits = RuntimeConfig(raw={"serve": serve}).webhook_limits()
    assert ServerSettings(**limits) == ServerSettings(
        max_connections=3, header_timeout_s=1.5, keepalive_timeout_s=2.5, read_timeout_s=0.7,
        max_body=1024)  # fmt: skip
    assert RuntimeConfig(raw={}).webhook_limits() == {}  # ServerSettings' defaults
    assert RuntimeConfig(raw={"plivo": {"allowV2Signatures": True}}).allow_plivo_v2()
    assert not RuntimeConfig(raw={}).allow_plivo_v2()
