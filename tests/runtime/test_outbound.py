"""Placing calls: what the manager refuses before it asks the carrier for anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.runtime.test_manager import manager
from voicecall.runtime.manager import CallError


@pytest.mark.parametrize("to", ["15551112222", "555 111 2222", "+0555", "+1555111222233334444"])
async def test_a_number_not_in_e164_is_refused(to: str, tmp_path: Path) -> None:
    mgr, _, _ = manager(tmp_path)
    with pytest.raises(CallError, match=r"is not an E\.164 number"):
        await mgr.initiate(to=to, flow="notify", params={"message": "hi"})
    assert mgr.calls.store.recent(5) == []


async def test_an_inbound_only_flow_places_no_call(tmp_path: Path) -> None:
    mgr, _, _ = manager(tmp_path)
    with pytest.raises(CallError, match=r"only answers calls \(direction: inbound\)"):
        await mgr.initiate(to="+15551112222", flow="ivr-menu")
    assert mgr.calls.store.recent(5) == []
