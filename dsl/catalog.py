"""Named flows: the bundled set and the configured flow folders.

`flow: NAME` in the CLI, the agent tool and call_flow looks names up here. Flows in configured
folders win over bundled flows of the same name, so a deployment can replace `notify`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from voicecall.dsl import model as m
from voicecall.dsl.checks import FlowInfo
from voicecall.dsl.errors import did_you_mean
from voicecall.dsl.validate import check, display_name, find_flow_files, load


def bundled_dir() -> Path:
    """The folder of the bundled flows (installed as the package voicecall.flows)."""
    return Path(str(resources.files("voicecall.flows")))


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    name: str
    path: Path
    flow: m.Flow
    bundled: bool
    ok: bool


class Catalog:
    """The named flows found in the bundled set and in ``dirs`` (later folders win), then in
    ``files`` (flows given by path, which win over any folder)."""

    def __init__(self, dirs: Iterable[Path] = (), files: Iterable[Path] = ()):
        self.dirs = [bundled_dir(), *dirs]
        self.files = list(files)
        self.entries: dict[str, Entry] = {}
        loaded = []
        for i, folder in enumerate(self.dirs):
            for path in find_flow_files([folder]) if folder.is_dir() else []:
                item = load(path, display_name(path))
                if item.flow is not None and item.flow.name:
                    loaded.append((item, path, i == 0))
        for path in self.files:
            item = load(path, display_name(path))
            if item.flow is not None and item.flow.name:
                loaded.append((item, path, False))
        infos = {item.flow.name: FlowInfo.of(item.flow) for item, _, _ in loaded if item.flow}
        for item, path, bundled in loaded:
            assert item.flow is not None
            ok = check(item, infos).ok
            self.entries[item.flow.name] = Entry(
                name=item.flow.name, path=path, flow=item.flow, bundled=bundled, ok=ok
            )

    def __iter__(self) -> Iterator[Entry]:
        return iter(sorted(self.entries.values(), key=lambda e: e.name))

    def with_flow_file(self, path: Path) -> Catalog:
        """This catalog, plus the flows beside ``path`` (its subflows) and the flow in ``path``
        itself, which wins over any other of the same name."""
        if any(e.path.resolve() == path.resolve() for e in self.entries.values()):
            return self
        return Catalog([*self.dirs[1:], path.parent], [*self.files, path])

    def infos(self) -> dict[str, FlowInfo]:
        return {name: FlowInfo.of(e.flow) for name, e in self.entries.items()}

    def resolve(self, name_or_path: str) -> Path:
        """A flow file by name or by path.

        Raises:
            LookupError: with a did-you-mean message when there is no such flow.
        """
        if name_or_path in self.entries:
            return self.entries[name_or_path].path
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") or path.exists():
            if not path.is_file():
                raise LookupError(f"no flow file {name_or_path}")
            return path
        hint = did_you_mean(name_or_path, self.entries)
        known = ", ".join(sorted(self.entries))
        raise LookupError(f"no flow named '{name_or_path}'; {hint or 'known flows: ' + known}")
