"""Caller scripts: read against caller.schema.json, every problem with file:line:col."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.dsl.errors import FlowError
from voicecall.runtime.sim.script import DEFAULT, AgentStep, Step, load_script


def problems(tmp_path: Path, text: str) -> list[tuple[str, int, int, str]]:
    path = tmp_path / "x.caller.yaml"
    path.write_text(text)
    with pytest.raises(FlowError) as caught:
        load_script(path)
    return [(d.code, d.span.line, d.span.col, d.message) for d in caught.value.diagnostics]


def test_a_script_reads_every_kind_of_step(tmp_path: Path) -> None:
    path = tmp_path / "x.caller.yaml"
    path.write_text(
        "caller:\n"
        "  - {answer: {after: 3s}}\n"
        "  - say: yes please\n"
        "  - press: 1\n"
        "  - {press: {digits: '0#', after: 500ms}}\n"
        "  - silence\n"
        "  - dial: busy\n"
        "  - hangup\n"
        "agent: [{continue: Hi}, {speak: One moment.}, {end: Bye.}]\n"
        "model: [Sure.]\n"
    )
    script = load_script(path)
    assert script.opener == Step(action="answer", after_s=3.0, where=f"{path}:2:5")
    assert [(s.action, s.value, s.after_s) for s in script.turns] == [
        ("say", "yes please", 0.0), ("press", "1", 0.0), ("press", "0#", 0.5),
        ("silence", "", 0.0), ("dial", "busy", 0.0), ("hangup", "", 0.0),
    ]  # fmt: skip
    assert script.turns[0].where == f"{path}:3:5"
    assert script.agent[-1] == AgentStep(action="end", text="Bye.", where=f"{path}:9:47")
    assert script.model == ("Sure.",) and script.model_at == (f"{path}:10:9",)


def test_an_empty_script_keeps_the_default_caller(tmp_path: Path) -> None:
    path = tmp_path / "x.caller.yaml"
    path.write_text("model: [Hello.]\n")
    assert load_script(path).caller == DEFAULT.caller


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("callers: [answer]\n",
         ("E-SCHEMA-UNKNOWN-KEY", 1, 1, "unknown key 'callers' at the top of the caller script")),
        ("caller:\n  - answer\n  - sya: hello\n",
         ("E-SCHEMA-UNKNOWN-KEY", 3, 5, "unknown key 'sya' in caller[1]")),
        ("caller:\n  - hangpu\n",
         ("E-SCHEMA-VALUE", 2, 5, "caller[0]: 'hangpu' is not one of answer, no-answer, busy, "
                                  "voicemail, silence, hangup")),
        ("caller:\n  - say: {text: hi, aftr: 2s}\n",
         ("E-SCHEMA-UNKNOWN-KEY", 2, 21, "unknown key 'aftr' in caller[0].say")),
        ("caller:\n  - say: {text: hi, after: 2}\n",
         ("E-DURATION-INVALID", 2, 28,
          "caller[0].say.after: 2 has no unit, so it is not a duration")),
        ("caller:\n  - dial: bussy\n",
         ("E-SCHEMA-VALUE", 2, 11, "caller[0].dial: 'bussy' is not one of answered, busy, "
                                   "no-answer, failed")),
        ("caller:\n  - press: 12a\n",
         ("E-SCHEMA-VALUE", 2, 12, "keypad digits are 0-9, * and #: '12a'")),
        ("caller:\n  - {say: hi, press: '1'}\n",
         ("E-SCHEMA-VALUE", 2, 5, "caller[0]: a step is one `action: value`")),
        ("caller:\n  - say: hi\n  - busy\n",
         ("E-SCHEMA-VALUE", 3, 5, "busy can only be the first step")),
        ("agent:\n  - {continue: hi, extra: 1}\n",
         ("E-SCHEMA-VALUE", 2, 5, "agent[0]: an agent step is one `action: words`")),
        ("model: [fine, {text: no}]\n",
         ("E-SCHEMA-UNKNOWN-KEY", 1, 16, "unknown key 'text' in model[1]")),
        ("model: [{done: 2026-01-05}]\n",
         ("E-SCHEMA-TYPE", 1, 16, "model[0].done: expected a mapping, got date 2026-01-05")),
    ],
)  # fmt: skip
def test_every_mistake_is_positioned(
    tmp_path: Path, text: str, expected: tuple[str, int, int, str]
) -> None:
    assert expected in problems(tmp_path, text)


def test_a_yaml_boolean_where_words_are_expected_gets_the_quoting_hint(tmp_path: Path) -> None:
    path = tmp_path / "x.caller.yaml"
    path.write_text("caller:\n  - say: yes\n")
    with pytest.raises(FlowError) as caught:
        load_script(path)
    (diag,) = caught.value.diagnostics
    assert (diag.code, diag.span.line, diag.span.col) == ("E-SCHEMA-TYPE", 2, 10)
    assert diag.hint == "YAML reads yes as boolean true; to mean the text, quote it: 'yes'"
