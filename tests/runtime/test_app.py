"""RuntimeConfig: how the plugin config section becomes runtime settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from voicecall.runtime.app import RuntimeConfig


@pytest.mark.parametrize("store", [None, "~/calls", "~"])
def test_a_store_path_with_a_tilde_is_the_home_folder(
    store: str | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    raw = {} if store is None else {"store": store}
    config = RuntimeConfig(raw=raw, base_dir=tmp_path / "config-folder")
    expected = {None: home / ".openclaw" / "voice-calls", "~/calls": home / "calls", "~": home}
    assert config.store_dir() == expected[store]


def test_a_relative_store_path_is_relative_to_the_config_folder(tmp_path: Path) -> None:
    config = RuntimeConfig(raw={"store": "calls"}, base_dir=tmp_path)
    assert config.store_dir() == tmp_path / "calls"
