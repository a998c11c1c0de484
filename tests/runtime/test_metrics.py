"""Operations endpoints on the webhook server: /metrics after real calls through the mock
carrier, rejected and replayed webhooks counted, connections and media streams refused below
HTTP counted by a bounded reason, /healthz and /readyz, loopback only unless
serve.metrics.allowFrom says more."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
import redis
import redis.asyncio
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.hostile_support import LIMITS, PATH, Target, exchange, http, start_target
from voicecall.dsl.catalog import bundled_dir
from voicecall.runtime.app import RuntimeConfig, start_runtime
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.ops import (
    CONNECTION_REASONS,
    OPS,
    STREAM_REASONS,
    Ops,
    event_kind,
    networks,
    ops_of,
    reason_label,
)
from voicecall.runtime.providers.base import Event, EventKind
from voicecall.runtime.sim.flowtest import case_catalog, load_cases
from voicecall.runtime.sim.script import AgentStep, Script, Step
from voicecall.runtime.sim.simulate import Simulator
from voicecall.runtime.store.redis import RedisStore

REMINDER = {"patient": "Ann", "when": "today"}
REDIS_URL = "redis://127.0.0.1:6379/0"
GENEROUS_S = 20.0  # how long an outcome may take on a loaded machine (not a speed limit)


def reminder_script() -> Script:
    caller = (Step(action="answer"), Step(action="press", value="1"))
    return Script(caller=caller, agent=(AgentStep(action="end"),), model=())


def port_of(sim: Simulator) -> int:
    assert sim.runtime is not None
    return int(sim.runtime.runner.addresses[0][1])


async def get(port: int, path: str, **headers: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}{path}", headers=headers) as response,
    ):
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition, by name and sorted labels."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(found: dict[tuple[str, Any], float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    return sum(v for (n, ls), v in found.items()
               if n == name and set(labels.items()) <= set(ls))  # fmt: skip


async def scrape(port: int) -> dict[tuple[str, Any], float]:
    status, content_type, text = await get(port, "/metrics")
    assert status == 200, text
    assert content_type.startswith("text/plain")
    return samples(text)


# --- metrics after calls --------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["twilio", "telnyx"])
async def test_a_simulated_call_moves_the_counters(provider: str) -> None:
    async with Simulator(provider) as sim:
        port = port_of(sim)
        before = await scrape(port)
        assert total(before, "voicecall_calls_started_total") == 0
        result = await sim.call("appointment-reminder", script=reminder_script(),
                                params=REMINDER)  # fmt: skip
        assert result.ok, result.error
        assert result.record is not None
        after = await scrape(port)
    backend = result.record.provider
    assert total(after, "voicecall_calls_started_total", provider=backend,
                 direction="outbound") == 1  # fmt: skip
    assert total(after, "voicecall_calls_ended_total", provider=backend,
                 reason=str(result.record.end_reason)) == 1  # fmt: skip
    answered = total(after, "voicecall_webhook_duration_seconds_count")
    assert answered >= 2  # the call's webhooks, each timed once
    assert total(after, "voicecall_webhook_duration_seconds_count", kind="rejected") == 0
    assert total(after, "voicecall_calls") == 0  # nothing live once it ended
    assert total(after, "voicecall_webhooks_rejected_total") == 0


async def test_live_calls_by_state_and_provider_are_read_at_scrape() -> None:
    async with Simulator("twilio") as sim:
        assert sim.runtime is not None
        record = await sim.runtime.manager.initiate(to="+15550001111", flow="notify",
                                                    params={"message": "hi"})  # fmt: skip
        found = await scrape(port_of(sim))
        live = {(c.state, c.provider) for c in sim.runtime.store.live()}
    assert record.call_id
    ((state, provider),) = live
    assert total(found, "voicecall_calls", provider=provider, state=state) == 1
    assert total(found, "voicecall_calls") == 1
    assert total(found, "voicecall_calls_started_total") == 1


async def test_replayed_webhooks_are_counted() -> None:
    async with Simulator("twilio") as sim:
        assert sim.runtime is not None
        sim.runtime.carrier.duplicate_rate = 1.0  # every webhook sent twice
        result = await sim.call("appointment-reminder", script=reminder_script(),
                                params=REMINDER)  # fmt: skip
        found = await scrape(port_of(sim))
    assert result.ok, result.error
    replays = total(found, "voicecall_webhook_replays_total")
    assert replays >= 2
    assert total(found, "voicecall_webhook_duration_seconds_count", kind="replay") == replays
    assert total(found, "voicecall_calls_ended_total") == 1  # a replayed end is no second end


async def test_the_response_model_is_timed() -> None:
    path = bundled_dir() / "examples" / "table-booking.test.yaml"
    case = load_cases(path)[0]  # two model replies, the second one finishing
    async with Simulator("twilio", catalog=case_catalog(case, None)) as sim:
        result = await sim.call("table-booking", script=case.script)
        found = await scrape(port_of(sim))
    assert result.ok, result.error
    assert total(found, "voicecall_responder_seconds_count", outcome="ok") == 2
    assert total(found, "voicecall_responder_seconds_count", outcome="error") == 0


async def test_conversation_latencies_are_moved_into_histograms() -> None:
    async with Simulator("twilio") as sim:
        assert sim.runtime is not None
        app = sim.runtime.runner.app
        ops = ops_of(app)
        assert ops is not None

        metrics = SimpleNamespace(first_frame=[0.01, 0.02], clear=[0.03], turn=[],
                                  frame_delay=[0.001, 0.002, 0.004])  # fmt: skip
        streams = SimpleNamespace(metrics=metrics, conversations={"a": 1},
                                  endpoint=SimpleNamespace(sessions={"a": 1, "b": 2}))  # fmt: skip
        sim.runtime.manager.calls.streams = cast(Any, streams)  # what CallStreams offers
        first = await scrape(port_of(sim))
        metrics.first_frame.append(0.5)
        assert metrics.frame_delay == []  # taken by the scrape: the lists stay small
        second = await scrape(port_of(sim))
    assert total(first, "voicecall_stream_first_frame_seconds_count") == 2
    assert total(first, "voicecall_stream_clear_seconds_count") == 1
    assert total(first, "voicecall_stream_frame_delay_seconds_count") == 3
    assert total(first, "voicecall_media_streams_open") == 2
    assert total(first, "voicecall_stream_conversations") == 1
    assert total(second, "voicecall_stream_first_frame_seconds_count") == 3  # each once
    assert total(second, "voicecall_stream_first_frame_seconds_sum") == pytest.approx(0.53)


# --- rejected webhooks ----------------------------------------------------------------------------


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[Target]:
    t = await start_target("twilio", tmp_path)
    try:
        yield t
    finally:
        await t.runtime.stop()


async def test_a_rejected_webhook_counts_its_reason(target: Target) -> None:
    url = target.url("/voice/webhook")
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"CallSid": "CA1"}) as response:
            assert response.status == 401  # no signature header
        headers = {"X-Twilio-Signature": "forged"}
        async with http.post(url, data={"CallSid": "CA1"}, headers=headers) as response:
            assert response.status == 401
        async with http.post(url, data={"CallSid": "CA1"}, headers=headers) as response:
            assert response.status == 401
    found = await scrape(target.port)
    assert total(found, "voicecall_webhooks_rejected_total", reason="missing_signature",
                 status="401") == 1  # fmt: skip
    assert total(found, "voicecall_webhooks_rejected_total", reason="bad_signature",
                 status="401") == 2  # fmt: skip
    assert total(found, "voicecall_webhook_duration_seconds_count", kind="rejected") == 3


def test_rejection_reasons_are_bounded_labels() -> None:
    assert reason_label("more than 8 verified requests in flight from 10.1.2.3") == "in_flight"
    assert reason_label("body of 99999 bytes is over 16384") == "too_large"
    assert reason_label("malformed twilio webhook: no CallSid") == "malformed"
    assert reason_label("anything else") == "other"


def test_webhook_kinds() -> None:
    def ev(kind: EventKind) -> Event:
        return Event(kind=kind, provider="twilio")

    assert event_kind([ev(EventKind.ANSWERED)]) == "status"
    assert event_kind([ev(EventKind.INPUT)]) == "input"
    assert event_kind([ev(EventKind.FETCH)]) == "fetch"
    assert event_kind([]) == "empty"


# --- refused below HTTP ---------------------------------------------------------------------------

HEAD = b"POST /voice/webhook HTTP/1.1\r\nHost: t\r\n"
BELOW_HTTP = {  # reason: (bytes sent, how the answer starts; b"": closed without one)
    "head_too_large": (b"GET /healthz HTTP/1.1\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n",
                       b"HTTP/1.0 400"),
    "not_http": (bytes.fromhex("16030100a5010000a10303") + bytes(32), b"HTTP/1.0 400"),  # TLS
    "malformed_http": (HEAD + b"Content-Length: abc\r\n\r\n", b"HTTP/1.0 400"),
    "header_timeout": (HEAD, b"HTTP/1.1 408"),  # the head never ends (headerTimeoutMs 300)
    "silent": (b"", b""),  # nothing at all (keepAliveTimeoutMs 600)
}  # fmt: skip


def counted(ops: Ops, name: str, reasons: frozenset[str]) -> dict[str, float]:
    """The reasons ``name`` has counted, with their counts (every reason's series exists)."""
    found = {r: ops.registry.get_sample_value(f"{name}_total", {"reason": r}) for r in reasons}
    assert None not in found.values(), found
    return {r: v for r, v in found.items() if v}


async def settled(ops: Ops, name: str, reasons: frozenset[str]) -> dict[str, float]:
    """``counted`` once something is (the server may count after the client sees the close)."""
    for _ in range(int(GENEROUS_S / 0.01)):
        found = counted(ops, name, reasons)
        if found:
            return found
        await asyncio.sleep(0.01)
    return {}


@pytest.mark.parametrize("reason", sorted(BELOW_HTTP))
async def test_a_connection_refused_below_http_counts_its_reason(
    target: Target, reason: str
) -> None:
    data, answer = BELOW_HTTP[reason]
    reader, writer = await asyncio.open_connection("127.0.0.1", target.port)
    try:
        writer.write(data)
        await writer.drain()
        assert (await asyncio.wait_for(reader.read(), GENEROUS_S)).startswith(answer)
    finally:
        writer.close()
    ops = target.runtime.runner.app[OPS]
    assert counted(ops, "voicecall_connections_refused", CONNECTION_REASONS) == {reason: 1}
    found = await scrape(target.port)
    assert total(found, "voicecall_connections_refused_total", reason=reason) == 1
    assert total(found, "voicecall_connections_refused_total") == 1
    assert total(found, "voicecall_webhooks_rejected_total") == 0  # no webhook was read


async def test_a_connection_over_the_cap_is_counted(tmp_path: Path) -> None:
    t = await start_target("twilio", tmp_path, serve={**LIMITS, "maxConnections": 1,
                                                      "keepAliveTimeoutMs": 60_000})  # fmt: skip
    try:
        _, held = await asyncio.open_connection("127.0.0.1", t.port)  # the one allowed
        reader, writer = await asyncio.open_connection("127.0.0.1", t.port)
        assert (await asyncio.wait_for(reader.read(), GENEROUS_S)).startswith(b"HTTP/1.1 503")
        writer.close()
        held.close()
        ops = t.runtime.runner.app[OPS]
        assert counted(ops, "voicecall_connections_refused", CONNECTION_REASONS) == {
            "max_connections": 1}  # fmt: skip
    finally:
        await t.runtime.stop()


@dataclass
class Sink:
    """What a started stream's frames go to (the conversation's place)."""

    stopped: list[str] = field(default_factory=list)

    def on_audio(self, ulaw: bytes) -> None: ...
    def on_mark(self, outcome: Any) -> None: ...
    def on_dtmf(self, digit: str) -> None: ...
    def on_stop(self, reason: str) -> None:
        self.stopped.append(reason)


def twilio_start(call_id: str, token: str, encoding: str = "audio/x-mulaw") -> str:
    return json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
                       "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1",
                                 "tracks": ["inbound"],
                                 "customParameters": {"callId": call_id, "token": token},
                                 "mediaFormat": {"encoding": encoding, "sampleRate": 8000,
                                                 "channels": 1}}})  # fmt: skip


@pytest.fixture
async def streamed(tmp_path: Path) -> AsyncIterator[Target]:
    streaming = {"enabled": True, "preStartTimeoutMs": 300, "maxPendingConnectionsPerIp": 1}
    t = await start_target("twilio", tmp_path, streaming=streaming)
    try:
        yield t
    finally:
        await t.runtime.stop()


async def _stream_refusal(
    t: Target, reason: str, http: aiohttp.ClientSession
) -> list[aiohttp.ClientWebSocketResponse]:
    """Does what is refused for ``reason``; returns the sockets to close once it is counted."""
    endpoint = t.runtime.streams
    assert endpoint is not None
    url = t.url("/voice/stream")
    if reason == "not_websocket":
        async with http.get(url) as response:
            assert response.status == 400
        return []
    if reason == "max_pending_per_ip":
        pending = await http.ws_connect(url)  # not started: the one this address may have
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await http.ws_connect(url)
        assert refused.value.status == 429
        return [pending]
    token = endpoint.expect("call-1", lambda session: Sink())
    frames: dict[str, str | bytes] = {
        "no_token": twilio_start("call-2", token), "wrong_token": twilio_start("call-1", "x"),
        "audio_format": twilio_start("call-1", token, encoding="audio/L16"),
        "before_start": json.dumps({"event": "mark", "streamSid": "MZ1", "sequenceNumber": "2",
                                   "mark": {"name": "x"}}),
        "malformed_frame": "{not json", "binary_frame": b"\x00\x01",
        "frame_too_large": "x" * (endpoint.settings.max_frame + 1),
    }  # fmt: skip
    ws = await http.ws_connect(url, max_msg_size=0)
    if reason in frames:
        frame = frames[reason]
        await (ws.send_bytes(frame) if isinstance(frame, bytes) else ws.send_str(frame))
    if reason == "closed_before_start":
        await ws.close()
    else:  # start_timeout: nothing sent (preStartTimeoutMs 300)
        message = await asyncio.wait_for(ws.receive(), GENEROUS_S)
        assert message.type == aiohttp.WSMsgType.CLOSE, message
        assert ws.close_code != 1000  # refused, not closed normally
    return []


STREAM_CASES = ("not_websocket", "max_pending_per_ip", "no_token", "wrong_token", "audio_format",
                "before_start", "malformed_frame", "binary_frame", "frame_too_large",
                "start_timeout", "closed_before_start")  # fmt: skip


@pytest.mark.parametrize("reason", STREAM_CASES)
async def test_a_refused_media_stream_counts_its_reason(streamed: Target, reason: str) -> None:
    ops = streamed.runtime.runner.app[OPS]
    async with aiohttp.ClientSession() as http:
        held = await _stream_refusal(streamed, reason, http)
        refused = await settled(ops, "voicecall_media_streams_refused", STREAM_REASONS)
        for ws in held:
            await ws.close()
    assert refused == {reason: 1}
    found = await scrape(streamed.port)
    assert total(found, "voicecall_media_streams_refused_total", reason=reason) == 1
    assert total(found, "voicecall_connections_refused_total") == 0


async def test_a_started_stream_closed_by_a_limit_is_counted(streamed: Target) -> None:
    endpoint = streamed.runtime.streams
    assert endpoint is not None
    endpoint.settings = replace(endpoint.settings, inactivity_timeout_s=0.3)
    sink = Sink()
    token = endpoint.expect("call-1", lambda session: sink)
    ops = streamed.runtime.runner.app[OPS]
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(streamed.url("/voice/stream"))
        await ws.send_str(twilio_start("call-1", token))
        message = await asyncio.wait_for(ws.receive(), GENEROUS_S)  # then nothing: a zombie
        assert (message.type, ws.close_code) == (aiohttp.WSMsgType.CLOSE, 1011)
    assert await settled(ops, "voicecall_media_streams_refused", STREAM_REASONS) == {
        "inactive": 1}  # fmt: skip
    assert sink.stopped and sink.stopped[0].startswith("inactive")


def test_refusal_labels_outside_the_sets_are_other() -> None:
    ops = Ops(SimpleNamespace(responder=None, store=SimpleNamespace(live=list),
                              watch=lambda fn: None))  # fmt: skip
    ops.refused_connection("198.51.100.7 sent junk")
    ops.refused_stream("call 'abc': anything")
    assert counted(ops, "voicecall_connections_refused", CONNECTION_REASONS) == {"other": 1}
    assert counted(ops, "voicecall_media_streams_refused", STREAM_REASONS) == {"other": 1}


# --- hostile requests and label cardinality ------------------------------------------------------


def hostile(t: Target, tag: str, method: str) -> list[tuple[bytes, int]]:
    """Requests whose method, path, headers and body carry ``tag`` or ``method`` (so each round
    is new), with the status each must get."""
    host = t.host
    form = [("Content-Type", "application/x-www-form-urlencoded")]
    return [
        (http(PATH, form, b"CallSid=CA1", host=host, method=method), 405),
        (http(PATH, form, b"CallSid=CA1", host=host, method=f"PURGE{tag}"), 400),  # unknown
        (http(f"/voice/{tag}", form, b"x=1", host=host), 404),
        (http(f"{PATH}?provider={tag}", [*form, ("X-Twilio-Signature", tag)],
              f"CallSid={tag}&AccountSid={tag}".encode(), host=host), 401),  # forged
        (http(PATH, [("Content-Type", f"text/{tag}")], b"{}", host=host), 401),  # unsigned
        (http(PATH, [*form, ("X-Twilio-Signature", tag)], b"x" * 70_000, host=host), 413),
        (http(f"/metrics?{tag}=" + "q" * 4000, [], host=host, method="GET"), 200),
        (http("/metrics", [("X-Forwarded-For", tag)], host=host, method="GET"), 403),
        (http(f"/readyz/{tag}", [], host=host, method="GET"), 404),
        (http("/metrics", [], b"body" * 1000, host=host, method="POST"), 405),
        (f"{tag} /metrics HTTP/1.1\r\n\r\n".encode(), 400),  # not HTTP
        (http("/metrics", [(f"X-{tag}", "v" * 9000)], host=host, method="GET"), 400),
    ]  # fmt: skip


def series(found: dict[tuple[str, Any], float]) -> set[tuple[str, Any]]:
    return {key for key in found if not key[0].endswith("_created")}


async def test_hostile_requests_add_no_series_and_no_label_of_theirs(target: Target) -> None:
    rounds = []
    for tag, method in (("zzalpha", "PROPFIND"), ("zzbeta", "MKCOL")):
        for data, status in hostile(target, tag, method):
            assert (tag, await exchange(target.port, data)) == (tag, status), data[:80]
        rounds.append(await scrape(target.port))
    first, second = rounds
    assert series(second) == series(first)  # new methods, paths, headers: no new series
    values = {v for _, labels in series(second) for _, v in labels}
    assert not [v for v in values if "zz" in v]
    assert total(second, "voicecall_webhooks_rejected_total") == 2 * 4
    assert total(second, "voicecall_connections_refused_total") == 2 * 3
    assert total(second, "voicecall_ops_refused_total") == 2


# --- health ---------------------------------------------------------------------------------------


async def test_health_and_readiness(target: Target) -> None:
    ops = target.runtime.runner.app[OPS]
    assert await get(target.port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    # start_runtime has returned: its server serves, its calls are restored, its store is open.
    assert (await get(target.port, "/readyz"))[::2] == (200, "ready\n")
    ops.draining()
    assert (await get(target.port, "/readyz"))[::2] == (503, "not ready: the runtime is draining\n")


async def test_a_runtime_started_not_ready_is_ready_when_told(tmp_path: Path) -> None:
    raw = {"provider": "mock", "store": str(tmp_path)}
    runtime = await start_runtime(RuntimeConfig(raw=raw), clock=VirtualClock(), port=0,
                                  restore=False, ready=False)  # fmt: skip
    try:
        port = runtime.runner.addresses[0][1]
        status, _, text = await get(port, "/readyz")
        assert (status, text) == (503, "not ready: the runtime is starting\n")
        runtime.ready()
        assert (await get(port, "/readyz"))[::2] == (200, "ready\n")
    finally:
        await runtime.stop()
    ops = ops_of(runtime.runner.app)
    assert ops is not None
    assert ops.not_ready() == "not ready: the runtime is draining"  # from the start of stop()


async def test_a_simulation_is_ready() -> None:
    async with Simulator("telnyx") as sim:
        assert (await get(port_of(sim), "/readyz"))[::2] == (200, "ready\n")


async def test_not_ready_with_the_store_closed(target: Target) -> None:
    target.runtime.sqlite.db.close()
    status, _, text = await get(target.port, "/readyz")
    target.runtime.sqlite.db = _reopened(target)
    assert status == 503
    assert text.startswith("not ready: the store is not open")


async def test_readiness_asks_a_redis_store_through_its_asyncio_client(tmp_path: Path) -> None:
    """A Redis store's blocking client is never used by /readyz: an unreachable server would
    hold the event loop (every call's media) at each probe."""
    prefix = f"vctest:{uuid.uuid4().hex[:10]}:"
    raw = {"provider": "mock", "store": REDIS_URL, "redis": {"keyPrefix": prefix}}
    runtime = await start_runtime(RuntimeConfig(raw=raw), clock=VirtualClock(), port=0,
                                  restore=False)  # fmt: skip
    port = runtime.runner.addresses[0][1]
    store: Any = runtime.store
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        nowhere = f"redis://127.0.0.1:{probe.getsockname()[1]}/0"
    sync, aio = store.sync, store.aio
    try:
        assert (await get(port, "/readyz"))[::2] == (200, "ready\n")
        store.sync = redis.Redis.from_url(nowhere)
        assert (await get(port, "/readyz"))[::2] == (200, "ready\n")  # not asked
        store.sync, store.aio = sync, redis.asyncio.Redis.from_url(nowhere)
        status, _, text = await get(port, "/readyz")
        await store.aio.aclose()
        store.aio = aio
        assert (status, text) == (503, "not ready: the store is not open (ConnectionError)\n")
    finally:
        store.sync, store.aio = sync, aio
        await runtime.stop()
        cleaner = RedisStore(REDIS_URL, prefix=prefix)
        await cleaner.delete_all()
        await cleaner.aclose()


def _reopened(target: Target) -> Any:
    import sqlite3

    return sqlite3.connect(":memory:")  # what stop() closes; the runtime's file is untouched


# --- who may ask ----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/healthz", "/readyz"])
async def test_through_a_proxy_or_tunnel_is_refused(
    target: Target, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "voicecall.ops")
    status, _, text = await get(target.port, path, **{"X-Forwarded-For": "198.51.100.7"})
    assert status == 403
    assert "loopback only" in text
    refusals = [r for r in caplog.records if "refused with 403" in r.getMessage()]
    assert len(refusals) == 1
    assert "X-Forwarded-For" in refusals[0].getMessage()
    status, _, _ = await get(target.port, path, **{"Ngrok-Forwarded-Host": "x.ngrok.app"})
    assert status == 403
    status, _, _ = await get(target.port, path, Via="1.1 proxy.example")  # any HTTP proxy
    assert status == 403


class Peer:
    """A transport whose peer is ``address`` (what ``request.remote`` reads)."""

    def __init__(self, address: str):
        self.address = address

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.address, 5555) if name == "peername" else default


@pytest.mark.parametrize("peer", ["203.0.113.5", "10.0.0.2", "::ffff:8.8.8.8"])
async def test_a_remote_address_is_refused(target: Target, peer: str) -> None:
    app = target.runtime.runner.app
    ops: Ops = app[OPS]
    for path, handler in (("/metrics", ops.metrics), ("/healthz", ops.healthz),
                          ("/readyz", ops.readyz)):  # fmt: skip
        request = make_mocked_request("GET", path, app=app, transport=Peer(peer))
        assert request.remote == peer
        assert (await handler(request)).status == 403
    here = make_mocked_request("GET", "/metrics", app=app, transport=Peer("127.0.0.1"))
    assert (await ops.metrics(here)).status == 200


async def test_allow_from_opens_them_to_those_networks_only(tmp_path: Path) -> None:
    metrics = {"allowFrom": ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7"]}
    t = await start_target("twilio", tmp_path, serve={**LIMITS, "metrics": metrics})
    try:
        app = t.runtime.runner.app
        ops: Ops = app[OPS]
        for peer, status in (("10.1.2.3", 200), ("::ffff:10.9.9.9", 200), ("2001:db8::5", 200),
                             ("192.0.2.7", 200), ("192.0.2.8", 403), ("11.0.0.1", 403),
                             ("127.0.0.1", 403), ("not an address", 403)):  # fmt: skip
            for path, handler in (("/metrics", ops.metrics), ("/healthz", ops.healthz),
                                  ("/readyz", ops.readyz)):  # fmt: skip
                request = make_mocked_request("GET", path, app=app, transport=Peer(peer))
                assert (peer, (await handler(request)).status) == (peer, status)
        proxied = make_mocked_request("GET", "/metrics", app=app, transport=Peer("10.1.2.3"),
                                      headers={"X-Forwarded-For": "10.1.2.4"})  # fmt: skip
        assert (await ops.metrics(proxied)).status == 403  # a proxy in between: never
        # Loopback is not in the list: this host's own scrape is refused, and says why.
        status, _, text = await get(t.port, "/metrics")
        assert (status, text) == (403, "operations endpoints answer serve.metrics.allowFrom only\n")
    finally:
        await t.runtime.stop()


def test_allow_from_is_read_from_the_config() -> None:
    assert RuntimeConfig(raw={}).ops_allow_from() == networks(["127.0.0.0/8", "::1/128"])
    raw = {"serve": {"metrics": {"allowFrom": ["10.0.0.0/8", " fd00::1 "]}}}
    assert [str(n) for n in RuntimeConfig(raw=raw).ops_allow_from()] == ["10.0.0.0/8",
                                                                        "fd00::1/128"]  # fmt: skip
    bad = {"serve": {"metrics": {"allowFrom": ["10.0.0.0/8", "10.0.0.0/33"]}}}
    with pytest.raises(ValueError, match=r"^serve\.metrics\.allowFrom\[1\]: '10\.0\.0\.0/33' is"):
        RuntimeConfig(raw=bad).ops_allow_from()
