"""Call states (the original's rules) and the SQLite store's exactly-once commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.runtime.state import CallRecord, TranscriptLine, Waiting, can_move
from voicecall.runtime.store import SQLiteStore, StoredReply


@pytest.mark.parametrize(
    ("current", "target", "ok"),
    [
        ("initiated", "ringing", True), ("ringing", "answered", True),
        ("answered", "ringing", False),  # late progress events never move a call back
        ("speaking", "listening", True), ("listening", "speaking", True),
        ("active", "completed", True), ("completed", "error", False),  # terminal is sticky
        ("busy", "busy", False), ("initiated", "no-answer", True),
    ],
)  # fmt: skip
def test_transitions(current: str, target: str, ok: bool) -> None:
    assert can_move(current, target) is ok


def record(**extra: object) -> CallRecord:
    call = CallRecord.new(provider="twilio", direction="outbound", from_number="+1555",
                          to_number="+1666", flow="notify", flow_digest="d",
                          params={"message": "hi"}, started_at=1.0)  # fmt: skip
    for key, value in extra.items():
        setattr(call, key, value)
    return call


def test_records_round_trip_through_a_reopened_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    store = SQLiteStore(path)
    call = record(provider_call_id="CA1", waiting=Waiting(block="greet", kind="input", step=1))
    call.transcript.append(TranscriptLine(at=2.0, speaker="bot", text="Hello", source="f:1"))
    call.metadata["previous_provider_ids"] = ["req-1"]
    store.save(call)
    store.close()
    again = SQLiteStore(path)
    loaded = again.get(call.call_id)
    assert loaded == call
    assert again.find("twilio", "CA1") == call
    assert again.find("twilio", "req-1") == call  # found by an earlier carrier id too
    assert [c.call_id for c in again.live()] == [call.call_id]


def test_an_event_commits_once_with_its_reply_even_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    store = SQLiteStore(path)
    call = record()
    reply = StoredReply(b"<Response/>", "text/xml")
    assert store.commit_event("k1", call, reply) is True
    call.state = "answered"
    assert store.commit_event("k1", call, reply) is False  # a duplicate changes nothing
    assert store.get(call.call_id).state == "initiated"  # type: ignore[union-attr]
    store.close()
    assert SQLiteStore(path).seen("k1") == reply


def test_terminal_calls_are_not_live(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.sqlite")
    store.save(record(state="completed"))
    live = record()
    store.save(live)
    assert [c.call_id for c in store.live()] == [live.call_id]
    assert len(store.recent(10)) == 2
