"""Golden files: every bundled and example flow compiled for every provider.

`make golden` (pytest --update-golden) rewrites them; review the diff like code.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.compiler.conftest import PROVIDERS, bundled
from tests.conftest import Golden
from voicecall.compiler.base import ErrorLevel, compile_flow
from voicecall.compiler.output import compiled_json, compiled_text, dumps

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
CASES = [(name, p) for name in sorted(bundled()) for p in PROVIDERS]


@pytest.mark.parametrize(("name", "provider"), CASES, ids=[f"{n}-{p}" for n, p in CASES])
def test_golden(name: str, provider: str, golden: Golden) -> None:
    flows = bundled()
    compiled = compile_flow(flows[name], provider, flows, ErrorLevel.RAISE)
    golden.check(GOLDEN / f"{name}.{provider}.json", dumps(compiled_json(compiled, {})))
    golden.check(GOLDEN / f"{name}.{provider}.txt", compiled_text(compiled, {}))


def test_every_flow_has_goldens_for_every_provider() -> None:
    expected = {f"{n}.{p}.{ext}" for n, p in CASES for ext in ("json", "txt")}
    assert expected <= {p.name for p in GOLDEN.iterdir()}
