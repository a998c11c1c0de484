"""What every store does, on SQLite and on Redis alike (the `backend` fixture runs each test on
both): exactly-once commits with their replies, records and carrier ids that survive a restart,
append-only transcripts that never lose or double a line, rejected calls, responder history."""

from __future__ import annotations

import asyncio

from tests.runtime.store.conftest import Backend
from voicecall.runtime.state import CallRecord, TranscriptLine, Waiting
from voicecall.runtime.store import StoredReply

REPLY = StoredReply(b"<Response><Say>hi</Say></Response>", "text/xml")


def record(**extra: object) -> CallRecord:
    call = CallRecord.new(provider="twilio", direction="outbound", from_number="+1555",
                          to_number="+1666", flow="notify", flow_digest="d",
                          params={"message": "hi"}, started_at=1.0)  # fmt: skip
    for key, value in extra.items():
        setattr(call, key, value)
    return call


def line(text: str, at: float = 2.0) -> TranscriptLine:
    return TranscriptLine(at=at, speaker="bot", text=text, source="f.yaml:3:5", block="greet")


async def test_a_record_round_trips_through_a_restart(backend: Backend) -> None:
    store = backend.open()
    call = record(provider_call_id="CA1", waiting=Waiting(block="greet", kind="input", step=1))
    call.transcript.append(line("Hello"))
    call.visited.append("greet")
    call.metadata["previous_provider_ids"] = ["req-1"]
    await store.save(call)
    again = backend.open()
    assert again.get(call.call_id) == call
    assert again.find("twilio", "CA1") == call
    assert again.find("twilio", "req-1") == call  # found by an earlier carrier id too
    assert again.find("plivo", "CA1") is None and again.get("nope") is None
    assert [c.call_id for c in again.all_live()] == [call.call_id]


async def test_an_event_commits_once_with_its_reply_even_after_a_restart(
    backend: Backend,
) -> None:
    store = backend.open()
    call = record()
    assert await store.seen("k1") is None
    assert await store.commit_event("k1", call, REPLY) is True
    call.state = "answered"
    assert await store.commit_event("k1", call, REPLY) is False  # a duplicate changes nothing
    assert store.get(call.call_id).state == "initiated"  # type: ignore[union-attr]
    again = backend.open()
    assert await again.seen("k1") == REPLY
    assert await again.commit_event("k1", None, None) is False
    assert again.get(call.call_id).state == "initiated"  # type: ignore[union-attr]


async def test_concurrent_duplicates_commit_exactly_one(backend: Backend) -> None:
    store = backend.open()
    calls = [record() for _ in range(12)]
    results = await asyncio.gather(*(store.commit_event("same", c, REPLY) for c in calls))
    assert sorted(results) == [False] * 11 + [True]
    winner = calls[results.index(True)]
    assert [c.call_id for c in backend.open().all_live()] == [winner.call_id]


async def test_a_transcript_is_appended_without_losing_or_doubling_a_line(
    backend: Backend,
) -> None:
    store = backend.open()
    call = record()
    for i in range(6):
        call.transcript.append(line(f"line {i}", at=float(i)))
        call.visited.append(f"n{i}")
        assert await store.commit_event(f"e{i}", call, REPLY)
        if i == 2:  # work not committed is dropped; the store reads the call again
            store.forget(call.call_id)
            call = store.get(call.call_id)  # type: ignore[assignment]
    duplicate = store.get(call.call_id)
    assert duplicate is not None
    duplicate.transcript.append(line("never committed"))
    assert not await store.commit_event("e5", duplicate, REPLY)
    loaded = backend.open().get(call.call_id)
    assert loaded is not None
    assert [x.text for x in loaded.transcript] == [f"line {i}" for i in range(6)]
    assert loaded.visited == [f"n{i}" for i in range(6)]


async def test_ended_calls_leave_the_live_set_and_stay_readable(backend: Backend) -> None:
    store = backend.open()
    ended, live = record(), record(started_at=2.0)
    await store.save(ended)
    await store.save(live)
    assert await store.count_live() == 2
    ended.state, ended.end_reason = "completed", "completed"
    assert await store.commit_event("end", ended, None)
    assert [c.call_id for c in store.all_live()] == [live.call_id]
    assert await store.count_live() == 1
    assert [c.call_id for c in store.recent(10)] == [live.call_id, ended.call_id]
    assert store.get(ended.call_id).state == "completed"  # type: ignore[union-attr]


async def test_unchanged_compares_with_what_was_committed(backend: Backend) -> None:
    store = backend.open()
    call = record()
    await store.save(call)
    assert store.unchanged(call)
    call.metadata["x"] = 1
    assert not store.unchanged(call)
    assert not store.unchanged(record())  # never stored


async def test_a_rejected_inbound_call_is_remembered(backend: Backend) -> None:
    store = backend.open()
    assert await store.commit_event("rej", None, REPLY, rejected=("telnyx", "v3:abc"))
    again = backend.open()
    assert await again.was_rejected("telnyx", "v3:abc")
    assert not await again.was_rejected("telnyx", "v3:other")


async def test_history_survives_a_restart_and_keeps_sessions_apart(backend: Backend) -> None:
    store = backend.open()
    await store.add_history("agent:main:voice:1555", [("user", "hi"), ("assistant", "hello")], 10)
    await store.add_history("agent:main:voice:9999", [("user", "other")], 10)
    again = backend.open()
    await again.add_history("agent:main:voice:1555", [("user", "again")], 10)
    assert await again.history("agent:main:voice:1555", 10) == [
        ("user", "hi"), ("assistant", "hello"), ("user", "again")]  # fmt: skip
    assert await again.history("agent:main:voice:9999", 10) == [("user", "other")]
    assert await again.history("agent:main:voice:0", 10) == []


async def test_history_is_bounded_to_the_last_messages(backend: Backend) -> None:
    store = backend.open()
    for i in range(5):
        await store.add_history("s", [("user", f"q{i}"), ("assistant", f"a{i}")], 4)
    assert await store.history("s", 100) == [("user", "q3"), ("assistant", "a3"),
                                             ("user", "q4"), ("assistant", "a4")]  # fmt: skip
    assert await store.history("s", 1) == [("assistant", "a4")]
