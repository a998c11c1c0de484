"""A conversation that collects values hands them to the next node, on every provider."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.runtime.sim.flowtest import PROVIDERS, load_cases, run_case

EXAMPLE = Path(__file__).parents[3] / "flows" / "examples" / "table-booking.test.yaml"
CASES = load_cases(EXAMPLE)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("index", range(len(CASES)), ids=[c.name for c in CASES])
async def test_table_booking(index: int, provider: str) -> None:
    outcome = await run_case(CASES[index], provider)
    assert outcome.ok, outcome.failures
