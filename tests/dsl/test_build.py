"""The model builder: what the compiler sees of a flow's values."""

from __future__ import annotations

from pathlib import Path

from voicecall.dsl import model as m
from voicecall.dsl.validate import load_valid_flow

VALID = Path(__file__).parent / "fixtures" / "valid"


def test_one_word_where_a_list_is_expected_becomes_a_tuple_of_one() -> None:
    flow = load_valid_flow(VALID / "one-word-for-a-list.yaml")
    main = flow.node("main")
    assert main is not None
    keypad, speech = (a for a in main.actions if isinstance(a, m.Ask))
    assert keypad.input == ("dtmf",)
    assert speech.input == ("speech",)
    assert speech.hints == ("yes please",)
    assert flow.admit is not None
    assert flow.admit.allow_from == ("+15550001234",)
