"""The loader: positions, limits, and YAML pitfalls turned into diagnostics."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from voicecall.dsl import loader
from voicecall.dsl.loader import MAX_BYTES, MAX_DEPTH, load_bytes, load_text


def codes(text: str | bytes) -> list[tuple[str, int, int]]:
    result = load_bytes(text.encode() if isinstance(text, str) else text, "f.yaml")
    return [(d.code, d.span.line, d.span.col) for d in result.diagnostics]


def test_every_key_and_value_keeps_its_position() -> None:
    doc = load_text("a: 1\nb:\n  - x\n  - {c: 'y'}\n", "f.yaml").document
    assert doc is not None
    assert doc.data == {"a": 1, "b": ["x", {"c": "y"}]}
    where = {path: (s.line, s.col) for path, s in doc.spans.items()}
    assert where[("a",)] == (1, 4)
    assert where[("b", 0)] == (3, 5)
    assert where[("b", 1, "c")] == (4, 9)
    assert doc.span(("b", 1, "c"), key=True).col == 6
    assert doc.span(("b", 1, "missing")) == doc.spans[("b", 1)]  # nearest ancestor


def test_columns_count_characters_not_bytes() -> None:
    doc = load_text("é: 'ü'\nb: x\n", "f.yaml").document
    assert doc is not None
    assert (doc.spans[("é",)].line, doc.spans[("é",)].col) == (1, 4)


def test_scalars_are_typed_by_yaml_and_styles_are_kept() -> None:
    doc = load_text("a: yes\nb: '1'\nc: 1.5\nd: ~\ne: !!str 12\n", "f.yaml").document
    assert doc is not None
    assert doc.data == {"a": True, "b": "1", "c": 1.5, "d": None, "e": "12"}
    assert doc.is_plain(("a",)) and not doc.is_plain(("b",))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a: 1\na: 2\n", [("E-YAML-DUPLICATE-KEY", 2, 1)]),
        ("on: 1\n", [("E-YAML-KEY-TYPE", 1, 1)]),
        ("x:\n  yes: 1\n  2: b\n", [("E-YAML-KEY-TYPE", 2, 3), ("E-YAML-KEY-TYPE", 3, 3)]),
        ("? [a]\n: 1\nb: 2\n", [("E-YAML-KEY-TYPE", 1, 3)]),
        ("a: !!python/object:os.system x\n", [("E-YAML-TAG", 1, 4)]),
        ("a: !!binary aGk=\n", [("E-YAML-TAG", 1, 4)]),
        ("a: *nope\n", [("E-YAML-ALIAS", 1, 4)]),
        ("a: &r [1, *r]\n", [("E-YAML-ALIAS", 1, 11)]),
        ("a: 1\n---\nb: 2\n", [("E-YAML-MULTI-DOC", 2, 1)]),
        ("", [("E-YAML-EMPTY", 1, 1)]),
        ("# only a comment\n", [("E-YAML-EMPTY", 1, 1)]),
        ("a: [1, 2\n", [("E-YAML-SYNTAX", 1, 4)]),  # where the bracket was opened
        ("a:\n\tb: 1\n", [("E-YAML-SYNTAX", 2, 1)]),
        ("a: \x07\n", [("E-YAML-SYNTAX", 1, 4)]),
        ("x: &m [1]\ny:\n  <<: *m\n", [("E-YAML-MERGE", 3, 7)]),
    ],
)
def test_yaml_pitfalls_become_diagnostics(text: str, expected: list[tuple[str, int, int]]) -> None:
    assert codes(text) == expected


def test_file_limits() -> None:
    assert codes(b"a: 1\n" + b"#" * MAX_BYTES) == [("E-FILE-TOO-LARGE", 1, 1)]
    assert codes(b"a: 1\nb: \x00\n") == [("E-FILE-BINARY", 2, 4)]
    assert codes("a: 1\nbé: \xff\n".encode("latin-1")) == [("E-FILE-ENCODING", 2, 2)]
    assert codes("\ufeffa: 1\n".encode()) == []  # a UTF-8 byte order mark is fine


def test_deep_nesting_is_refused_before_the_parser_recurses() -> None:
    # libyaml's own composer crashes the interpreter on this input.
    assert codes("[" * 100_000 + "]" * 100_000) == [("E-YAML-TOO-DEEP", 1, MAX_DEPTH + 1)]


class _RefusesFlow(yaml.SafeLoader):
    """A parser whose own limit fires before it emits the first flow collection's event."""

    def check_event(self, *choices: Any) -> bool:
        event: yaml.Event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.CollectionStartEvent) and event.flow_style:
            mark: Any = event.start_mark
            raise yaml.MarkedYAMLError(problem="exceeded max depth", problem_mark=mark)
        return super().check_event(*choices)


@pytest.mark.parametrize("parser", [yaml.SafeLoader, _RefusesFlow], ids=["pure", "own-limit"])
def test_deep_nesting_is_reported_whatever_limit_the_parser_has(
    parser: type[yaml.SafeLoader], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loader, "_Loader", parser)
    assert codes("[" * 100_000 + "]" * 100_000) == [("E-YAML-TOO-DEEP", 1, MAX_DEPTH + 1)]
    # Indented levels count too: two mappings, then brackets.
    nested = "a:\n  b: " + "[" * 2000 + "]" * 2000 + "\n"
    assert codes(nested) == [("E-YAML-TOO-DEEP", 2, 6 + MAX_DEPTH - 2)]


def test_brackets_in_text_are_not_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    # When the parser fails for another reason, brackets in quotes, comments and block
    # scalars are not mistaken for deep nesting: the parser's own error is reported.
    deep = "[" * 80
    text = f"a: '{deep}'\nb: \"{deep}\"\nc: x # {deep}\nd: |\n  {deep}\ne: [unclosed\n"
    assert [c for c, _, _ in codes(text)] == ["E-YAML-SYNTAX"]


def test_alias_bombs_are_refused_without_expanding() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 12):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 10) + "]")
    # 10**12 values if expanded: refused by counting while reading, never by expanding.
    found = codes("\n".join(lines) + "\n")
    assert [c for c, _, _ in found] == ["E-YAML-ALIAS"]


def test_merge_keys_fill_in_what_the_mapping_does_not_set() -> None:
    doc = load_text("base: &b {x: 1, y: 2}\nd:\n  <<: *b\n  y: 3\n", "f.yaml").document
    assert doc is not None
    assert doc.data["d"] == {"x": 1, "y": 3}
    assert doc.spans[("d", "x")].line == 3  # merged values point at the merge key
