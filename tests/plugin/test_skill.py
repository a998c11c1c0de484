"""The agent skill document ships in the package and covers what an agent can do: every action
of the voice_call tool and every bundled flow that places calls."""

from __future__ import annotations

import fnmatch
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, cast

import yaml

from voicecall.dsl.catalog import Catalog
from voicecall.plugin.service import VoiceCallService
from voicecall.plugin.tool import parameters

SKILL = "skills/voice-call/SKILL.md"
ROOT = Path(__file__).resolve().parents[2]


def skill_text() -> str:
    return resources.files("voicecall.plugin").joinpath(SKILL).read_text("utf-8")


class _Flows:
    catalog = Catalog([])


def test_front_matter_names_the_skill() -> None:
    head, _, _ = skill_text().removeprefix("---\n").partition("\n---\n")
    meta = yaml.safe_load(head)
    assert meta["name"] == "voice-call"
    assert "voice_call" in meta["description"]
    assert meta["metadata"]["openclaw"]["requires"]["config"] == [
        "plugins.entries.voice-call.enabled"
    ]


def test_every_tool_action_is_explained() -> None:
    schema = parameters(cast(VoiceCallService, _Flows()))
    actions = [s["properties"]["action"]["const"] for s in schema["anyOf"]
               if "action" in s["properties"]]  # fmt: skip
    assert len(actions) == 6
    text = skill_text()
    for action in actions:
        assert f"`{action}`" in text, action


def test_every_bundled_outbound_flow_is_listed() -> None:
    text = skill_text()
    outbound = [e.flow.name for e in Catalog([]) if e.flow.direction != "inbound"]
    assert "appointment-reminder" in outbound
    for name in outbound:
        assert f"`{name}`" in text, name


def test_it_is_package_data() -> None:
    config: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["voicecall.plugin"]
    assert any(fnmatch.fnmatch(SKILL, p) for p in patterns)
    assert (ROOT / "plugin" / SKILL).is_file()
