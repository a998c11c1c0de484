"""Property-based: whatever bytes or YAML reach the loader and checks, only diagnostics come out.

Random YAML documents, random text, and random mutations of the bundled flows go through the
whole pipeline (load, schema, build, every check); any exception is a bug, and every diagnostic
must point inside the file.
"""

from __future__ import annotations

import re

import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from voicecall.dsl.catalog import bundled_dir
from voicecall.dsl.validate import find_flow_files, validate_text

LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
BUNDLED = sorted(p.read_text("utf-8") for p in find_flow_files([bundled_dir()]))
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

WORDS = [
    "say", "ask", "goto", "branch", "when", "else", "nodes", "start", "version", "name",
    "hangup", "{{ x }}", "{{", "}}", "on", "yes", "&a", "*a", "<<", "- ", ": ", "\n  ",
    "prompt", "save_as", "call_flow", "set", "1", "2s", "+1555", "'", '"', "[", "]", "{",
]  # fmt: skip

scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=20), st.sampled_from(WORDS))  # fmt: skip
documents = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.one_of(st.sampled_from(WORDS), st.text(max_size=8)), inner, max_size=4)
    ),
    max_leaves=30,
)


def assert_only_diagnostics(text: str | bytes) -> None:
    checked = validate_text(text, "f.yaml")
    decoded = text if isinstance(text, str) else text.decode("utf-8", "replace")
    # YAML's line breaks: \r\n, \r, \n, and (YAML 1.1, as PyYAML reads) NEL, LS and PS.
    lines = len(LINE_BREAK.split(decoded)) + 1
    for diag in checked.diagnostics:
        assert 1 <= diag.span.line <= lines, diag
        assert diag.span.col >= 1, diag
        assert diag.message


@SETTINGS
@given(documents)
def test_random_yaml_documents(data: object) -> None:
    assert_only_diagnostics(yaml.safe_dump(data, allow_unicode=True))


@SETTINGS
@example(parts=["\r", "\r0"])  # \r alone is a YAML line break too
@given(st.lists(st.sampled_from(WORDS) | st.text(max_size=6), max_size=40))
def test_random_token_soup(parts: list[str]) -> None:
    assert_only_diagnostics("".join(parts))


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes(raw: bytes) -> None:
    assert_only_diagnostics(raw)


@st.composite
def mutated_flows(draw: st.DrawFn) -> str:
    text = draw(st.sampled_from(BUNDLED))
    for _ in range(draw(st.integers(1, 4))):
        lines = text.splitlines(keepends=True)
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "replace", "chars"]))
        if op == "delete" and lines:
            del lines[i]
        elif op == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(WORDS)) + draw(st.text(max_size=10)) + "\n")
        elif op == "replace" and lines:
            word = draw(st.sampled_from(WORDS))
            lines[i] = lines[i].replace(draw(st.sampled_from(WORDS)), word)
        else:
            pos = draw(st.integers(0, len(text)))
            text = text[:pos] + draw(st.text(max_size=5)) + text[pos + draw(st.integers(0, 5)) :]
            continue
        text = "".join(lines)
    return text


@SETTINGS
@given(mutated_flows())
def test_mutated_bundled_flows(text: str) -> None:
    assert_only_diagnostics(text)


def test_the_bundled_flows_are_the_seeds() -> None:
    assert len(BUNDLED) >= 6
    assert not any(text.startswith("flow:") for text in BUNDLED)  # flow tests are not seeds
