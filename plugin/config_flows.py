"""The flows a config names must exist: checked when the Gateway is to run, not at the call.

``flows`` folders, and the flow of each mode and number (``inboundFlow``, ``flows.notify``,
``flows.conversation``, ``flows.inbound``, ``numbers["+1…"].flow``) are looked up in the
catalog the service will use (bundled flows and the configured folders).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from voicecall.dsl.catalog import Catalog
from voicecall.dsl.errors import did_you_mean
from voicecall.plugin.config_problems import KeyPath, Problem


def flow_problems(config: Mapping[str, Any], base: Path, prefix: KeyPath) -> list[Problem]:
    """Missing flow folders and unknown or invalid named flows in an effective config."""
    from voicecall.plugin.config import flow_dirs

    problems = []
    dirs = flow_dirs(config, base)
    for index, folder in enumerate(dirs):
        if not folder.is_dir():
            where = _folder_path(config, index)
            problems.append(Problem(path=(*prefix, *where), message=f"no such folder: {folder}"))
    if problems:
        return problems
    catalog = Catalog(dirs)
    entries = {entry.name: entry for entry in catalog}
    for path, name in named_flows(config):
        entry = entries.get(name)
        if entry is None:
            hint = did_you_mean(name, sorted(entries))
            problems.append(Problem(path=(*prefix, *path), message=f"no flow named {name!r}",
                                    hint=hint))  # fmt: skip
        elif not entry.ok:
            text = f"the flow {name!r} has errors; `voicecall validate {entry.path}` lists them"
            problems.append(Problem(path=(*prefix, *path), message=text))
        elif entry.flow.direction == _WRONG_DIRECTION[_side(path)]:
            text = (f"the flow {name!r} only {_DOES[entry.flow.direction]} "
                    f"(direction: {entry.flow.direction})")  # fmt: skip
            problems.append(Problem(path=(*prefix, *path), message=text))
    return problems


# A flow answering calls must not be outbound-only, and the reverse.
_WRONG_DIRECTION = {"inbound": "outbound", "outbound": "inbound"}
_DOES = {"outbound": "places calls", "inbound": "answers calls"}


def _side(path: KeyPath) -> str:
    return "outbound" if path in (("flows", "notify"), ("flows", "conversation")) else "inbound"


def named_flows(config: Mapping[str, Any]) -> Iterator[tuple[KeyPath, str]]:
    """Every flow name the config gives, with its key path in the section."""
    if config.get("inboundFlow"):
        yield ("inboundFlow",), str(config["inboundFlow"])
    flows = config.get("flows")
    if isinstance(flows, dict):
        for mode in ("notify", "conversation", "inbound"):
            if flows.get(mode):
                yield ("flows", mode), str(flows[mode])
    for number, route in (config.get("numbers") or {}).items():
        if isinstance(route, dict) and route.get("flow"):
            yield ("numbers", str(number), "flow"), str(route["flow"])


def _folder_path(config: Mapping[str, Any], index: int) -> KeyPath:
    raw = config.get("flows")
    if isinstance(raw, dict):
        paths = raw.get("paths")
        return ("flows", "paths", index) if isinstance(paths, list) else ("flows", "paths")
    return ("flows", index) if isinstance(raw, list) else ("flows",)
