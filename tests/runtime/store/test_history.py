"""The response model's conversation history in the SQLite store."""

from __future__ import annotations

from pathlib import Path

from voicecall.runtime.store import SQLiteStore


def test_history_survives_a_reopen_and_keeps_sessions_apart(tmp_path: Path) -> None:
    path = tmp_path / "calls.sqlite"
    store = SQLiteStore(path)
    store.add_history("agent:main:voice:15551234", [("user", "hi"), ("assistant", "hello")], 10)
    store.add_history("agent:main:voice:15559999", [("user", "other")], 10)
    store.close()
    again = SQLiteStore(path)
    again.add_history("agent:main:voice:15551234", [("user", "again")], 10)
    assert again.history("agent:main:voice:15551234", 10) == [
        ("user", "hi"), ("assistant", "hello"), ("user", "again")]  # fmt: skip
    assert again.history("agent:main:voice:15559999", 10) == [("user", "other")]
    assert again.history("agent:main:voice:0", 10) == []
    again.close()


def test_history_is_bounded_to_the_last_messages(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "calls.sqlite")
    for i in range(5):
        store.add_history("s", [("user", f"q{i}"), ("assistant", f"a{i}")], 4)
    assert store.history("s", 100) == [("user", "q3"), ("assistant", "a3"),
                                       ("user", "q4"), ("assistant", "a4")]  # fmt: skip
    assert store.history("s", 1) == [("assistant", "a4")]
    count = store.db.execute("SELECT count(*) FROM history").fetchone()[0]
    assert count == 4
    store.close()
