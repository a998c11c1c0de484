"""`make loadtest` on a dozen calls (so that it cannot rot), and its checks on made-up stores."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from bench.loadtest import Options, run_async
from bench.loadtest_checks import PROMPTS, Findings, StoredCall, check
from voicecall.runtime.sim.carrier import Entry, MockCall, RecordedRequest
from voicecall.runtime.sim.script import DEFAULT


@pytest.mark.e2e
async def test_a_dozen_calls_with_every_fault_lose_and_double_nothing() -> None:
    # Duplicates and reorders at 30 % so that a dozen calls surely meet some; the slow store
    # and the restart run as in a full load test; the callers answer quickly.
    opts = Options(calls=12, ramp_s=2.0, duplicate_rate=0.3, reorder_rate=0.3, think_s=0.3)
    result = await run_async(opts)
    checks = result["checks"]
    assert checks["failures"] == dict.fromkeys(checks["failures"], 0), checks["examples"]
    assert sum(checks["carrier_calls"].values()) == 12
    assert set(checks["end_reasons"]) == {f"{p} hangup-bot" for p in ("twilio", "plivo", "telnyx")}
    webhooks = result["webhooks"]
    assert webhooks["duplicated"] > 0 and webhooks["duplicate_other_reply"] == []
    assert webhooks["reordered"] > 0
    assert result["faults"]["restart"]["gateway"] == "twilio"
    assert result["faults"]["slow_store"]["holds"] >= 1
    assert all(code == 0 for code in result["faults"]["exit_codes"].values())
    kinds = {(e["provider"], e["kind"]) for e in result["endpoints"]}
    assert {("twilio", "answer"), ("plivo", "input"), ("telnyx", "call.hangup")} <= kinds
    # The gateways not restarted log each call's end once (the restarted one may log an end
    # twice when the kill lands between the line and its commit).
    assert result["ends_logged_not_once"]["plivo"] == {}
    assert result["ends_logged_not_once"]["telnyx"] == {}
    assert result["ok"] is True


def _call(pid: str, extra: Sequence[Entry] = ()) -> MockCall:
    call = MockCall(provider="twilio", provider_call_id=pid, direction="inbound",
                    from_="+15550001111", to="+15550002222", script=DEFAULT,
                    started_at=0.0)  # fmt: skip
    call.timeline += [Entry(0, "bot", "say", {"text": PROMPTS[0]}),
                      Entry(0, "bot", "say", {"text": PROMPTS[1]}),
                      Entry(1, "caller", "say", {"text": "Ann"}),
                      Entry(1, "bot", "say", {"text": PROMPTS[2]}),
                      Entry(2, "caller", "press", {"digits": "1"}),
                      Entry(2, "bot", "say", {"text": PROMPTS[3]}),
                      Entry(2, "carrier", "status", {"status": "completed",
                                                     "reason": "hangup-bot"}), *extra]  # fmt: skip
    return call


LINES = [("bot", PROMPTS[0]), ("bot", PROMPTS[1]), ("user", "Ann"), ("bot", PROMPTS[2]),
         ("user", "1"), ("bot", PROMPTS[3])]  # fmt: skip


def _stored(call_id: str, pid: str, lines: list[tuple[str, str]], state: str = "hangup-bot",
            ) -> StoredCall:  # fmt: skip
    return StoredCall(call_id, "twilio", pid, state, 1.0 if state == "hangup-bot" else None, lines)


def test_the_checks_see_a_call_lost_doubled_unended_or_with_a_line_lost_or_twice() -> None:
    calls = [_call("CA1"), _call("CA2"), _call("CA3"), _call("CA4"), _call("CA5"),
             _call("CA6", [Entry(3, "bot", "say", {"text": PROMPTS[3]})])]  # fmt: skip
    stored = [
        _stored("c1", "CA1", LINES),  # as it should be
        _stored("c3", "CA3", LINES), _stored("c3b", "CA3", LINES),  # stored twice
        _stored("c4", "CA4", LINES, state="listening"),  # not ended
        _stored("c5", "CA5", LINES[:2] + LINES[3:] + LINES[-1:]),  # a line lost, one twice
        _stored("c6", "CA6", [*LINES, ("bot", PROMPTS[3])]),
        _stored("c7", "CA7", LINES),  # no carrier call
    ]  # fmt: skip
    hangups = [
        RecordedRequest(
            provider="twilio",
            method="POST",
            path="/Calls/CA1.json",
            query={},
            headers={},
            body={"Status": "completed"},
        )
    ] * 2
    findings = Findings()
    check("twilio", calls, hangups, stored, findings)
    assert findings.failures == {
        "not_stored": 1, "stored_twice": 1, "not_ended": 1, "ended_twice": 0,
        "lines_lost": 1, "lines_doubled": 1, "lines_other": 0, "prompts_doubled": 1,
        "prompts_missing": 0, "hangups_doubled": 1, "orphans": 1,
    }  # fmt: skip
    assert findings.lines_expected["twilio"] == 6 * 4 + 7
