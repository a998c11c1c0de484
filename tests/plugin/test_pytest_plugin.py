"""The pytest plugin collects *.test.yaml flow tests and runs them on the mock carrier."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

TEST = """\
flow: notify
providers: [twilio, telnyx]
cases:
  - name: says it
    params: {message: Hello there.}
    expect: {said: [Hello there.], end: hangup-bot}
  - name: expects the wrong words
    params: {message: Hello there.}
    expect: {said: [Goodbye]}
"""


@pytest.fixture(autouse=True)
def _ini(pytester: pytest.Pytester) -> None:
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")


def test_flow_tests_become_items(pytester: pytest.Pytester) -> None:
    pytester.makefile(".test.yaml", notify=TEST)
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*notify.test.yaml:7: expects the wrong words on twilio:*",
                                 "*never said 'Goodbye'*"])  # fmt: skip


def test_a_broken_test_file_is_a_collection_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(".test.yaml", broken="cases: []\n")
    result = pytester.runpytest()
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([
        "*broken.test.yaml:1:1: error[[]E-SCHEMA-MISSING-KEY[]]: the flow test is missing the "
        "required key 'flow'",
        "*broken.test.yaml:1:8: error[[]E-SCHEMA-VALUE[]]: cases is an empty list",
    ])  # fmt: skip


FLOW = """\
version: 1
name: hello-there
description: Says hello.
start: a
nodes:
  a: [{say: Hello there.}, hangup]
"""


def test_a_flow_beside_its_test_needs_no_option(pytester: pytest.Pytester) -> None:
    # Not plivo: its SDK's cookie jar does not survive pytester's in-process module reset.
    folder = pytester.mkdir("myflows")
    (folder / "hello.yaml").write_text(FLOW)
    (folder / "hello.caller.yaml").write_text("caller: [answer]\n")  # not a flow, not a test
    (folder / "hello.test.yaml").write_text(
        "flow: hello-there\nproviders: [twilio]\ncases:\n"
        "  - {name: by name, expect: {said: [Hello there]}}\n"
    )
    (folder / "path.test.yaml").write_text(
        "flow: hello.yaml\nproviders: [telnyx]\nexpect: {said: [Hello there]}\n"
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)
