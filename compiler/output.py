"""`voicecall compile` output: every block as JSON (for scripts and golden files) or as text."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any
from xml.dom import minidom

from voicecall.compiler import blocks as b
from voicecall.compiler.base import CompiledBlock, CompiledFlow
from voicecall.compiler.render import CommandTemplate


def describe_end(end: b.End) -> str:
    """What happens when a block's actions are done, in a few words."""
    describe: Callable[[Any], str] = _DESCRIBE[type(end)]
    return describe(end)


def _gather(end: b.Gather) -> str:
    exits = [f"answer: {end.on_input}"]
    exits += [f"{k}: {v}" for k, v in (("no input", end.on_no_input),
              ("no match", end.on_no_match), ("retry", end.retry_block)) if v]  # fmt: skip
    return "wait for the answer (" + ", ".join(exits) + ")"


def _converse(end: b.Converse) -> str:
    exits = [f"{what} go to {target}" for what, target in (
        ("when done", end.on_done), ("if the caller hangs up", end.on_hangup),
        ("when the turns are used up", end.on_timeout)) if target]  # fmt: skip
    until = "; ".join(exits) if exits else "until the call ends"
    return f"converse ({end.converse.driver}) {until}"


def _decide(end: b.Decide) -> str:
    cases = "; ".join(f"if {expr.source} go to {target}" for expr, target in end.cases)
    return f"{cases}; else go to {end.otherwise}"


_DESCRIBE: dict[type[b.End], Callable[[Any], str]] = {
    b.Continue: lambda e: f"go to {e.next}",
    b.Assign: lambda e: f"set {', '.join(a.name for a in e.assignments)}; go to {e.next}",
    b.Decide: _decide,
    b.EnterFlow: lambda e: f"call flow {e.flow}; go to {e.next}",
    b.ExitFlow: lambda e: (
        "return from the flow" + (f" as {e.save_as}" if e.save_as else "") + f"; go to {e.next}"
    ),
    b.Gather: _gather,
    b.Dial: lambda e: (
        f"transfer; if it fails go to {e.on_fail}" if e.on_fail else "transfer; hang up"
    ),
    b.Converse: _converse,
    b.Hangup: lambda e: "hang up (end of the flow)" if e.implicit else "hang up",
}


def block_json(block: CompiledBlock, values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": block.id,
        "source": block.source.short,
        "kind": block.kind,
        "then": describe_end(block.end),
    }
    if block.scope:
        out["scope"] = block.scope
    if block.kind == "xml":
        assert block.xml is not None
        out["body"] = block.xml.show(values)
    else:
        out["commands"] = [command_json(c, values) for c in block.commands]
        if block.after_input:
            out["after_input"] = [command_json(c, values) for c in block.after_input]
    return out


def command_json(command: CommandTemplate, values: Mapping[str, Any]) -> dict[str, Any]:
    """One command; ``runtime`` marks the runtime's own timers, which are never sent."""
    return {"command": command.command, "body": command.show(values), "await": command.awaits,
            "runtime": command.runtime}  # fmt: skip


def compiled_json(compiled: CompiledFlow, values: Mapping[str, Any]) -> dict[str, Any]:
    """The compile output as a JSON-ready dict: stable order, for scripts and golden files."""
    out: dict[str, Any] = {
        "flow": compiled.flow.name,
        "provider": compiled.provider,
        "start": compiled.answer or compiled.start,
        "handlers": dict(compiled.handlers),
        "blocks": [block_json(blk, values) for blk in compiled.blocks.values()],
    }
    return out


def dumps(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def compiled_text(compiled: CompiledFlow, values: Mapping[str, Any]) -> str:
    """Every block with where it comes from, its pretty-printed body, and what follows."""
    lines = [f"flow {compiled.flow.name} for {compiled.provider}: "
             f"starts at {compiled.answer or compiled.start}"]  # fmt: skip
    for event, target in compiled.handlers:
        lines.append(f"  on {event}: {target}")
    for block in compiled.blocks.values():
        data = block_json(block, values)
        lines += ["", f"block {block.id}  ({data['source']})"]
        if block.kind == "xml":
            lines += _pretty_xml(data["body"])
        else:
            for cmd in data["commands"] + data.get("after_input", []):
                wait = f"  -> await {cmd['await']}" if cmd["await"] else ""
                where = "  (runtime timer, not sent to the carrier)" if cmd["runtime"] else ""
                lines.append(f"  {cmd['command']}{wait}{where}")
                lines.append("    " + json.dumps(cmd["body"], sort_keys=True, ensure_ascii=False))
        lines.append(f"  then: {data['then']}")
    return "\n".join(lines) + "\n"


def _pretty_xml(fragment: str) -> list[str]:
    if not fragment:
        return ["  (nothing to send: the server goes on at once)"]
    doc = minidom.parseString(f"<Response>{fragment}</Response>")
    root = doc.documentElement
    assert root is not None
    pretty = root.toprettyxml(indent="  ")
    inner = pretty.splitlines()[1:-1]
    return [line for line in inner if line.strip()]
