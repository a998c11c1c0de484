"""Operations endpoints on the webhook server: /metrics after real calls through the mock
carrier, rejected and replayed webhooks counted, /healthz and /readyz, loopback only."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import aiohttp
import pytest
from aiohttp.test_utils import make_mocked_request
from prometheus_client.parser import text_string_to_metric_families

from tests.runtime.hostile_support import Target, start_target
from voicecall.dsl.catalog import bundled_dir
from voicecall.runtime.ops import OPS, Ops, event_kind, ops_of, reason_label
from voicecall.runtime.providers.base import Event, EventKind
from voicecall.runtime.sim.flowtest import case_catalog, load_cases
from voicecall.runtime.sim.script import AgentStep, Script, Step
from voicecall.runtime.sim.simulate import Simulator

REMINDER = {"patient": "Ann", "when": "today"}


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


# --- health ---------------------------------------------------------------------------------------


async def test_health_and_readiness(target: Target) -> None:
    ops = target.runtime.runner.app[OPS]
    assert await get(target.port, "/healthz") == (200, "text/plain; charset=utf-8", "ok\n")
    status, _, text = await get(target.port, "/readyz")
    assert (status, text) == (503, "not ready: the runtime is starting\n")  # nobody said ready
    ops.ready()
    assert (await get(target.port, "/readyz"))[::2] == (200, "ready\n")
    ops.draining()
    assert (await get(target.port, "/readyz"))[::2] == (503, "not ready: the runtime is draining\n")


async def test_not_ready_with_the_store_closed(target: Target) -> None:
    ops = target.runtime.runner.app[OPS]
    ops.ready()
    target.runtime.store.db.close()
    status, _, text = await get(target.port, "/readyz")
    target.runtime.store.db = _reopened(target)
    assert status == 503
    assert text.startswith("not ready: the store is not open")


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
