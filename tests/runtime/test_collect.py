"""What a conversation hands back to the flow: values checked against their declared types."""

from __future__ import annotations

from typing import Any

import pytest

from voicecall.dsl import model as m
from voicecall.dsl.errors import Span
from voicecall.runtime.collect import CollectError, check_values, tool_parameters

AT = Span.point(1, 1)
FIELDS = (
    m.Field(name="date", span=AT, type="date", description="the day"),
    m.Field(name="party", span=AT, type="integer", description="guests"),
    m.Field(name="phone", span=AT, type="phone", description="call-back number", required=False),
    m.Field(name="ok", span=AT, type="boolean", description="confirmed", required=False),
    m.Field(name="budget", span=AT, type="number", description="budget", required=False),
)


def test_fitting_values_are_kept_and_optional_ones_left_out_are_null() -> None:
    got = check_values(FIELDS, {"date": " 2026-01-05 ", "party": 4.0, "budget": 12.5})
    assert got == {"date": "2026-01-05", "party": 4, "phone": None, "ok": None, "budget": 12.5}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"party": 4}, "'date' is missing (the day)"),
        ({"date": "next Monday", "party": 4}, "as YYYY-MM-DD, not 'next Monday'"),
        ({"date": "2026-02-30", "party": 4}, "'date' must be a date as YYYY-MM-DD"),
        ({"date": "2026-01-05", "party": "four"}, "'party' must be a whole number, not 'four'"),
        ({"date": "2026-01-05", "party": True}, "'party' must be a whole number, not True"),
        ({"date": "2026-01-05", "party": 4.5}, "'party' must be a whole number, not 4.5"),
        ({"date": "2026-01-05", "party": 4, "phone": "555-1234"}, "'phone' must be an E.164"),
        ({"date": "2026-01-05", "party": 4, "ok": "yes"}, "'ok' must be true or false"),
        ({"date": "2026-01-05", "party": 4, "budget": float("nan")}, "'budget' must be a number"),
        ({"date": "2026-01-05", "party": 4, "dat": "x"}, "'dat' is not collected here"),
    ],
)  # fmt: skip
def test_values_that_do_not_fit_are_rejected_saying_what_to_fix(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(CollectError) as caught:
        check_values(FIELDS, values)
    assert message in str(caught.value)
    assert "expected: date (date), party (integer)" in str(caught.value)


def test_text_is_bounded() -> None:
    text = m.Field(name="note", span=AT, type="string", description="a note")
    assert check_values((text,), {"note": "x" * 1000}) == {"note": "x" * 1000}
    with pytest.raises(CollectError, match="1 to 1000 characters"):
        check_values((text,), {"note": "x" * 1001})


def test_the_finishing_tool_asks_for_the_declared_fields() -> None:
    schema = tool_parameters(FIELDS)
    assert schema["required"] == ["date", "party"]
    assert schema["properties"]["party"] == {"type": "integer", "description": "guests"}
    assert schema["additionalProperties"] is False
