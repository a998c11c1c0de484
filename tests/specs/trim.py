"""Cut the carriers' OpenAPI documents down to what the tests use, with everything it refers to.

The tests check every request the runtime sends (and every event the fakes send) against the
carriers' own specs. The full documents are megabytes and live outside the repository; this
keeps the operations and schemas named below plus every ``$ref`` they reach, so a plain clone
has what the tests read. Run it again when a test needs another operation or schema:

    python tests/specs/trim.py --telnyx telnyx_openapi.json --twilio twilio_api_v2010.json

It writes ``telnyx.json`` and ``twilio.json`` beside itself (or into ``--out``).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

# Telnyx: placing calls and every call-control action; webhook event schemas by name.
TELNYX_PATHS = re.compile(r"^/calls(/\{call_control_id\}/actions/[a-z_]+)?$")
TELNYX_SCHEMAS = re.compile(r"^(Call\w*Event|TranscriptionEvent|Streaming\w*Event)$")
# Twilio 2010-04-01: placing a call and updating a live one.
TWILIO_PATHS = re.compile(r"^/2010-04-01/Accounts/\{AccountSid\}/Calls(/\{Sid\})?\.json$")
# What a request validator needs of an operation; responses and examples are left out.
KEEP_IN_OPERATION = ("operationId", "summary", "parameters", "requestBody")


def trim(spec: dict[str, Any], paths: re.Pattern[str], schemas: re.Pattern[str] | None) -> Any:
    """The spec with only matching POST operations, named schemas and what they refer to."""
    out: dict[str, Any] = {k: spec[k] for k in ("openapi", "info") if k in spec}
    out["paths"] = {}
    for path, item in spec["paths"].items():
        if paths.match(path) and "post" in item:
            post = {k: v for k, v in item["post"].items() if k in KEEP_IN_OPERATION}
            out["paths"][path] = {"post": post}
    roots: list[Any] = [out["paths"]]
    components: dict[str, dict[str, Any]] = {}
    if schemas is not None:
        for name, schema in spec.get("components", {}).get("schemas", {}).items():
            if schemas.match(name):
                components.setdefault("schemas", {})[name] = schema
                roots.append(schema)
    pending = [ref for root in roots for ref in _refs(root)]
    while pending:
        ref = pending.pop()
        _, section, name = ref.removeprefix("#/").split("/", 2)
        if name in components.get(section, {}):
            continue
        target = spec["components"][section][name]
        components.setdefault(section, {})[name] = target
        pending.extend(_refs(target))
    out["components"] = {s: dict(sorted(v.items())) for s, v in sorted(components.items())}
    return out


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/"):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--telnyx", type=Path, required=True, help="Telnyx's full OpenAPI JSON")
    parser.add_argument("--twilio", type=Path, required=True, help="Twilio's api_v2010 JSON")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    for name, source, paths, schemas in (
        ("telnyx", args.telnyx, TELNYX_PATHS, TELNYX_SCHEMAS),
        ("twilio", args.twilio, TWILIO_PATHS, None),
    ):
        spec = json.loads(source.read_text("utf-8"))
        trimmed = trim(spec, paths, schemas)
        target = args.out / f"{name}.json"
        target.write_text(json.dumps(trimmed, indent=1, sort_keys=True) + "\n", "utf-8")
        print(f"{target}: {len(trimmed['paths'])} operations, "
              f"{sum(map(len, trimmed['components'].values()))} components")  # fmt: skip


if __name__ == "__main__":
    main()
