"""simulate(): flows by path, rejections reported as such, the simulated time."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from voicecall.dsl.catalog import bundled_dir
from voicecall.runtime.sim.flowtest import find_tests
from voicecall.runtime.sim.schemas import caller_schema, check_test, flow_test_schema
from voicecall.runtime.sim.simulate import SimulationError, parse_now, simulate

MAIN = """\
version: 1
name: main-line
description: Calls a sibling flow.
start: a
nodes:
  a:
    - call_flow: {flow: sibling, save_as: out}
    - say: "Done at {{ now.isoformat() }}."
    - hangup
"""
SIBLING = """\
version: 1
name: sibling
description: Says hello.
start: a
nodes:
  a: [{say: Hello from the sibling.}]
"""


async def test_a_flow_by_path_finds_the_flows_beside_it(tmp_path: Path) -> None:
    (tmp_path / "main.yaml").write_text(MAIN)
    (tmp_path / "sibling.yaml").write_text(SIBLING)
    sim = await simulate(str(tmp_path / "main.yaml"), now="2026-03-01T08:00:00+01:00")
    assert sim.ok, sim.error
    assert sim.said == ["Hello from the sibling.", "Done at 2026-03-01T07:00:00+00:00."]
    assert sim.started == "2026-03-01T07:00:00+00:00"


async def test_a_missing_or_broken_flow_is_a_simulation_error(tmp_path: Path) -> None:
    with pytest.raises(SimulationError, match=r"no flow file nowhere\.yaml"):
        await simulate("nowhere.yaml")
    (tmp_path / "bad.yaml").write_text(MAIN.replace("start: a", "start: b"))
    with pytest.raises(SimulationError, match=r"bad.yaml:4:8: start node 'b' is not a node"):
        await simulate(str(tmp_path / "bad.yaml"))


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
async def test_a_rejection_is_reported_as_such(provider: str) -> None:
    sim = await simulate("after-hours", provider=provider, from_="+15559990000")
    assert (sim.ok, sim.outcome, sim.rejection, sim.end_reason) == (
        True, "rejected", "caller not in allow_from", "rejected")  # fmt: skip
    data = sim.to_json()
    expected: dict[str, object] = {
        "outcome": "rejected", "rejection": "caller not in allow_from", "end_reason": "rejected",
        "direction": "inbound", "from": "+15559990000", "to": "+15550000000", "visited": [],
        "call_id": None,
    }  # fmt: skip
    assert {k: data[k] for k in expected} == expected
    json.dumps(data)


def test_now_without_an_offset_is_read_in_the_given_zone() -> None:
    assert parse_now("2026-01-05T19:30:00", "America/New_York").utcoffset() == timedelta(hours=-5)
    assert parse_now("2026-01-05T19:30:00Z", "America/New_York") == datetime(
        2026, 1, 5, 19, 30, tzinfo=UTC)  # fmt: skip
    assert parse_now("2026-07-01", "Europe/Paris").isoformat() == "2026-07-01T00:00:00+02:00"
    for bad in ("tomorrow", "2026-13-01", "0001-01-01T00:00:00"):
        with pytest.raises(ValueError, match=repr(bad)):
            parse_now(bad, "UTC")


async def test_now_is_checked_before_the_call() -> None:
    with pytest.raises(SimulationError, match="'soon' is not an ISO 8601 time"):
        await simulate("notify", params={"message": "hi"}, now="soon")


def test_the_published_schemas_are_valid_and_standalone() -> None:
    for schema in (caller_schema(), flow_test_schema()):
        Draft202012Validator.check_schema(schema)
    assert "caller.schema.json" not in json.dumps(flow_test_schema())
    on_disk = resources.files("voicecall.runtime.sim").joinpath("test.schema.json").read_text()
    test_defs = json.loads(on_disk)
    assert not set(test_defs["$defs"]) & set(caller_schema()["$defs"])


@pytest.mark.parametrize("path", find_tests([bundled_dir()]), ids=lambda p: p.name)
def test_every_bundled_flow_test_matches_the_schema(path: Path) -> None:
    from voicecall.dsl.loader import load_bytes

    doc = load_bytes(path.read_bytes(), str(path)).document
    assert doc is not None
    assert check_test(doc) == []


ENDS_BY_ITSELF = """\
version: 1
name: ends-by-itself
description: A transfer without on_fail, or a runtime error, ends the call on every provider.
params:
  n: {type: integer, default: 1}
start: a
nodes:
  a:
    - ask: {prompt: Press 1 or 2., input: dtmf, save_as: choice}
    - branch:
        - when: "choice.digits == '1'"
          goto: human
        - else: broken
  human: [{transfer: {to: "+15551230000"}}]
  broken: [{say: "Result {{ 10 // n }}"}, hangup]
"""


@pytest.mark.parametrize("provider", ["twilio", "plivo", "telnyx"])
@pytest.mark.parametrize(
    ("press", "dial", "ended"),
    [("1", "busy", ("completed", "hangup-bot")), ("2", "answered", ("error",))],
)
async def test_a_call_the_flow_ends_is_hung_up_at_once(
    tmp_path: Path, provider: str, press: str, dial: str, ended: tuple[str, ...]
) -> None:
    """A busy transfer without on_fail, or a template error, hangs up at once: on Telnyx the
    call used to stay up until the maximum duration (300 s of call time, reason timeout)."""
    path = tmp_path / "ends.yaml"
    path.write_text(ENDS_BY_ITSELF)
    script = tmp_path / "c.caller.yaml"
    script.write_text(f'caller: [answer, {{press: "{press}"}}, {{dial: {dial}}}]\n')
    from voicecall.runtime.sim.script import load_script

    sim = await simulate(str(path), provider=provider, script=load_script(script),
                         params={"n": 0})  # fmt: skip
    data = sim.to_json()
    assert data["duration_s"] == 0.0, data
    assert data["end_reason"] in ended, data
