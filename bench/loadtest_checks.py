"""The load test's checks: what the carriers saw against what the store kept.

For every call a carrier carried: the store holds exactly one call for it; the call ended
(terminal state and an end time) and the carrier ended it once; its transcript is the lines
the call had (the bot's prompts as the caller heard them, the caller's answers as sent), none
missing and none twice; and no side effect of the bot happened twice (each prompt heard once,
at most one REST hang-up).
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicecall.runtime.sim.carrier import MockCall, RecordedRequest
from voicecall.runtime.state import TERMINAL

# What the load test's flow says, each exactly once per call (see loadtest.FLOW).
PROMPTS = ("Hello, this is the load test.", "What is your name?", "Press 1 to confirm.",
           "Goodbye.")  # fmt: skip


@dataclass(slots=True)
class StoredCall:
    call_id: str
    provider: str
    provider_call_id: str | None
    state: str
    ended_at: float | None
    lines: list[tuple[str, str]] = field(default_factory=list)  # (speaker, text) in order


def read_sqlite(path: Path) -> list[StoredCall]:
    """Every call of a SQLite store (read-only), with its transcript lines."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        calls = {
            call_id: StoredCall(call_id, provider, pid, state,
                                json.loads(record).get("ended_at"))
            for call_id, provider, pid, state, record in db.execute(
                "SELECT call_id, provider, provider_call_id, state, record FROM calls")
        }  # fmt: skip
        for call_id, speaker, text in db.execute(
            "SELECT call_id, speaker, text FROM lines ORDER BY call_id, seq"
        ):
            if call_id in calls:
                calls[call_id].lines.append((str(speaker), str(text)))
    return list(calls.values())


async def read_redis(url: str, prefix: str) -> list[StoredCall]:
    """Every call of a Redis store under ``prefix`` (its ``recent`` set, rows and lines)."""
    import redis.asyncio as aioredis

    client = aioredis.from_url(url)
    try:
        ids = [i.decode() for i in await client.zrange(f"{prefix}recent", 0, -1)]
        out = []
        for call_id in ids:
            raw = await client.get(f"{prefix}call:{call_id}")
            if raw is None:
                continue
            record = json.loads(raw)
            call = StoredCall(call_id, str(record.get("provider", "")),
                              record.get("provider_call_id"), str(record.get("state", "")),
                              record.get("ended_at"))  # fmt: skip
            items: list[bytes] = await client.lrange(f"{prefix}lines:{call_id}", 0, -1)  # type: ignore[misc]
            for item in items:
                line = json.loads(item)
                if isinstance(line, dict):
                    call.lines.append((str(line.get("speaker")), str(line.get("text"))))
                else:  # a compact array: at, speaker, text, …
                    call.lines.append((str(line[1]), str(line[2])))
            out.append(call)
        return out
    finally:
        await client.aclose()


def expected_lines(call: MockCall) -> list[tuple[str, str]]:
    """The call's transcript as the carrier saw it: what the bot said, what the caller said
    or pressed, in order."""
    out: list[tuple[str, str]] = []
    for entry in call.timeline:
        if entry.who == "bot" and entry.what == "say":
            out.append(("bot", str(entry.detail.get("text", ""))))
        elif entry.who == "caller" and entry.what == "say":
            out.append(("user", str(entry.detail.get("text", ""))))
        elif entry.who == "caller" and entry.what == "press":
            out.append(("user", str(entry.detail.get("digits", ""))))
    return out


def _hangups(provider: str, requests: Iterable[RecordedRequest], pid: str) -> int:
    """REST hang-ups the runtime sent for a call (distinct Telnyx command ids count once:
    the carrier runs a repeated command_id once)."""
    n = 0
    commands: set[str] = set()
    for r in requests:
        if pid not in r.path:
            continue
        if provider == "twilio" and r.method == "POST" and isinstance(r.body, dict):
            n += r.body.get("Status") in ("completed", "canceled")
        elif provider == "plivo" and r.method == "DELETE":
            n += 1
        elif provider == "telnyx" and r.path.endswith("/actions/hangup"):
            command = str(r.body.get("command_id", "")) if isinstance(r.body, dict) else ""
            if not command or command not in commands:
                n += 1
                commands.add(command)
    return n


@dataclass(slots=True)
class Findings:
    """Counts per provider; a problem list (a few examples each) for the report."""

    carrier_calls: Counter[str] = field(default_factory=Counter)
    stored_calls: Counter[str] = field(default_factory=Counter)
    not_stored: Counter[str] = field(default_factory=Counter)
    stored_twice: Counter[str] = field(default_factory=Counter)
    not_ended: Counter[str] = field(default_factory=Counter)
    ended_twice: Counter[str] = field(default_factory=Counter)
    end_reasons: Counter[str] = field(default_factory=Counter)
    lines_expected: Counter[str] = field(default_factory=Counter)
    lines_lost: Counter[str] = field(default_factory=Counter)
    lines_doubled: Counter[str] = field(default_factory=Counter)
    lines_other: Counter[str] = field(default_factory=Counter)  # order or text differs
    prompts_doubled: Counter[str] = field(default_factory=Counter)
    prompts_missing: Counter[str] = field(default_factory=Counter)
    hangups_doubled: Counter[str] = field(default_factory=Counter)
    orphans: Counter[str] = field(default_factory=Counter)  # stored calls no carrier carried
    examples: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        if len(self.examples) < 20:
            self.examples.append(text)

    @property
    def failures(self) -> dict[str, int]:
        names = ("not_stored", "stored_twice", "not_ended", "ended_twice", "lines_lost",
                 "lines_doubled", "lines_other", "prompts_doubled", "prompts_missing",
                 "hangups_doubled", "orphans")  # fmt: skip
        return {n: sum(getattr(self, n).values()) for n in names}

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name in self.__slots__:
            value = getattr(self, name)
            out[name] = dict(value) if isinstance(value, Counter) else value
        out["failures"] = self.failures
        return out


def check(
    provider: str,
    calls: Iterable[MockCall],
    requests: list[RecordedRequest],
    stored: list[StoredCall],
    findings: Findings,
) -> None:
    """Adds one provider's calls to ``findings``."""
    by_pid: dict[str, list[StoredCall]] = {}
    for s in stored:
        if s.provider_call_id:
            by_pid.setdefault(s.provider_call_id, []).append(s)
    matched: set[str] = set()
    for call in calls:
        findings.carrier_calls[provider] += 1
        pid = call.provider_call_id
        rows = by_pid.get(pid, [])
        matched.update(r.call_id for r in rows)
        _carrier_side(provider, call, requests, findings)
        if not rows:
            findings.not_stored[provider] += 1
            findings.note(f"{provider} {pid}: no call in the store")
            continue
        if len(rows) > 1:
            findings.stored_twice[provider] += 1
            findings.note(f"{provider} {pid}: {len(rows)} calls in the store")
        row = rows[0]
        findings.stored_calls[provider] += 1
        findings.end_reasons[f"{provider} {row.state}"] += 1
        if row.state not in TERMINAL or row.ended_at is None:
            findings.not_ended[provider] += 1
            findings.note(f"{provider} {row.call_id}: stored state {row.state}, not ended")
        want = expected_lines(call)
        findings.lines_expected[provider] += len(want)
        _compare_lines(provider, row, want, findings)
    for s in stored:
        if s.call_id not in matched:
            findings.orphans[provider] += 1
            findings.note(f"{provider} {s.call_id}: in the store, no carrier call "
                          f"({s.provider_call_id}, {s.state})")  # fmt: skip


def _carrier_side(
    provider: str, call: MockCall, requests: list[RecordedRequest], findings: Findings
) -> None:
    """The call as its carrier saw it: ended once, hung up at most once, each prompt once."""
    pid = call.provider_call_id
    finals = [e for e in call.timeline if e.what == "status" and "reason" in e.detail]
    if len(finals) != 1:
        findings.ended_twice[provider] += len(finals) > 1
        findings.not_ended[provider] += not finals
        findings.note(f"{provider} {pid}: the carrier ended it {len(finals)} times")
    if _hangups(provider, requests, pid) > 1:
        findings.hangups_doubled[provider] += 1
        findings.note(f"{provider} {pid}: more than one REST hang-up")
    said = Counter(str(e.detail.get("text", "")) for e in call.entries("bot", "say"))
    for prompt in PROMPTS:
        if said[prompt] > 1:
            findings.prompts_doubled[provider] += 1
            findings.note(f"{provider} {pid}: the caller heard {prompt!r} {said[prompt]} times")
        elif said[prompt] == 0:
            findings.prompts_missing[provider] += 1
            findings.note(f"{provider} {pid}: the caller never heard {prompt!r}")


def _compare_lines(
    provider: str, row: StoredCall, want: list[tuple[str, str]], findings: Findings
) -> None:
    got = row.lines
    if got == want:
        return
    have, need = Counter(got), Counter(want)
    lost = sum((need - have).values())
    doubled = sum((have - need).values())
    findings.lines_lost[provider] += lost
    findings.lines_doubled[provider] += doubled
    if not lost and not doubled:
        findings.lines_other[provider] += 1
    findings.note(f"{provider} {row.call_id}: lines {got} != {want}")
