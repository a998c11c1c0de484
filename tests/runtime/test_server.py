"""The webhook server's gatekeeping, with a stand-in carrier adapter: order of checks, status
codes, replays answered without side effects, and limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.runtime.support import Flows, StandIn
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.manager import CallManager, ManagerSettings
from voicecall.runtime.server import MANAGER, ServerSettings, make_app
from voicecall.runtime.store import SQLiteStore


@pytest.fixture
async def client(tmp_path: Any) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    adapter = StandIn()
    settings = ManagerSettings(provider="twilio", from_number="+15550000000",
                               webhook_base="http://t/voice/webhook", inbound_policy="open",
                               inbound_flow="ivr-menu", max_concurrent=5)  # fmt: skip
    manager = CallManager(settings, SQLiteStore(tmp_path / "c.sqlite"), adapter, Flows(),
                          VirtualClock())  # fmt: skip
    app = make_app(manager, ServerSettings(read_timeout_s=0.2, max_in_flight_per_ip=1))
    async with TestClient(TestServer(app)) as test_client:
        yield test_client


GOOD = {"X-Test-Signature": "good"}
INBOUND = json.dumps({"kind": "call.fetch", "id": "CA1", "from": "+15551112222"})


async def test_methods_and_paths(client: TestClient[Any, Any]) -> None:
    assert (await client.get("/voice/webhook")).status == 405
    assert (await client.post("/voice/webhook/x", data=INBOUND, headers=GOOD)).status == 404
    assert (await client.post("/voice", data=INBOUND, headers=GOOD)).status == 404


async def test_signatures_are_checked_before_parsing(client: TestClient[Any, Any]) -> None:
    adapter = client.app[MANAGER].adapter
    assert isinstance(adapter, StandIn)
    assert (await client.post("/voice/webhook", data=INBOUND)).status == 401
    bad = await client.post("/voice/webhook", data=INBOUND, headers={"X-Test-Signature": "x"})
    assert bad.status == 401 and "signature" in await bad.text()
    assert adapter.parsed == 0


async def test_malformed_bodies_are_400_and_big_ones_413(client: TestClient[Any, Any]) -> None:
    assert (await client.post("/voice/webhook", data="{nope", headers=GOOD)).status == 400
    big = await client.post("/voice/webhook", data="x" * (64 * 1024 + 1), headers=GOOD)
    assert big.status == 413

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for _ in range(70):
            yield b"x" * 1024

    assert (await client.post("/voice/webhook", data=chunks(), headers=GOOD)).status == 413


async def test_a_replay_gets_the_same_reply_and_does_nothing(client: TestClient[Any, Any]) -> None:
    manager = client.app[MANAGER]
    first = await client.post("/voice/webhook", data=INBOUND, headers=GOOD)
    body = await first.read()
    assert first.status == 200 and b"<GetInput" not in body and b"<Gather" in body
    again = await client.post("/voice/webhook", data=INBOUND, headers=GOOD)
    assert await again.read() == body
    assert len(manager.store.live()) == 1  # one call, not two
    assert isinstance(manager.adapter, StandIn) and manager.adapter.parsed == 1  # never parsed


async def test_a_slow_body_is_408(client: TestClient[Any, Any]) -> None:
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"POST /voice/webhook HTTP/1.1\r\nHost: t\r\nX-Test-Signature: good\r\n"
                 b"Content-Length: 100\r\n\r\n{\"kind\"")  # fmt: skip
    await writer.drain()
    status = (await reader.readline()).split()[1]
    writer.close()
    assert status == b"408"


async def test_in_flight_requests_per_ip_are_capped(client: TestClient[Any, Any]) -> None:
    manager = client.app[MANAGER]
    async with manager.lock("CA9"):  # hold the call: the first request waits inside
        first = asyncio.create_task(client.post(
            "/voice/webhook", headers=GOOD,
            data=json.dumps({"kind": "call.fetch", "id": "CA9", "from": "+1555"})))  # fmt: skip
        for _ in range(50):
            await asyncio.sleep(0)
        second = await client.post("/voice/webhook", data=INBOUND, headers=GOOD)
        assert second.status == 429
    assert (await first).status == 200


async def test_unverified_requests_do_not_count_against_the_cap(
    client: TestClient[Any, Any],
) -> None:
    # Behind a tunnel everyone shares one address: a request that has not shown a valid
    # signature yet (here, one trickling its body) must not crowd the carrier out.
    _reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(b"POST /voice/webhook HTTP/1.1\r\nHost: t\r\nX-Test-Signature: forged\r\n"
                 b"Content-Length: 100\r\n\r\n{")  # fmt: skip
    await writer.drain()
    for _ in range(50):
        await asyncio.sleep(0)
    reply = await client.post("/voice/webhook", data=INBOUND, headers=GOOD)
    assert reply.status == 200
    writer.close()


async def test_inbound_rejected_callers_hear_nothing_and_no_call_is_made(
    client: TestClient[Any, Any],
) -> None:
    manager = client.app[MANAGER]
    manager.settings = replace(
        manager.settings, inbound_policy="allowlist", inbound_flow="inbound", allow_from=("+1999",)
    )
    reply = await client.post("/voice/webhook", data=INBOUND, headers=GOOD)
    assert (await reply.read()).endswith(b"<Hangup /></Response>")
    assert manager.store.live() == []


@pytest.mark.parametrize(
    "body",
    ["a=1&b=2", "From=%2B15551234567&SpeechResult=yes+please&Empty=&x", "a=1&a=2&%41=b%20c",
     "k=%E2%9C%93&v=50%25", ""],
)  # fmt: skip
def test_parse_form_reads_like_parse_qsl(body: str) -> None:
    from urllib.parse import parse_qsl

    from voicecall.runtime.server import parse_form

    assert parse_form(body) == dict(parse_qsl(body, keep_blank_values=True))


FORM = {"Content-Type": "application/x-www-form-urlencoded"}


async def test_a_form_that_is_not_utf8_is_checked_for_its_signature_first(
    client: TestClient[Any, Any],
) -> None:
    body = b"CallSid=CA1&From=\xff\xfe"
    unsigned = await client.post("/voice/webhook", data=body,
                                 headers={**FORM, "X-Test-Signature": "x"})  # fmt: skip
    assert unsigned.status == 401
    signed = await client.post("/voice/webhook", data=body, headers={**FORM, **GOOD})
    assert signed.status == 400 and "not UTF-8" in await signed.text()


async def raw_exchange(client: TestClient[Any, Any], head: bytes) -> bytes:
    """Sends ``head`` on a fresh connection; returns the first line answered."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(head)
    await writer.drain()
    line = await reader.readline()
    writer.close()
    return line


@pytest.mark.parametrize(
    "headers, status",
    [
        (b"X-Test-Signature: good\r\nContent-Length: 999999\r\n", b"413"),
        (b"Content-Length: 10\r\n", b"401"),  # no signature header
        (b"X-Test-Signature: good\r\nContent-Length: 10\r\n", b"100"),
    ],
)
async def test_expect_100_continue_is_refused_before_the_body(
    client: TestClient[Any, Any], headers: bytes, status: bytes
) -> None:
    head = b"POST /voice/webhook HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n" + headers
    line = await raw_exchange(client, head + b"\r\n")
    assert line.split()[1] == status
