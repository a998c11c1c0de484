"""Run the runtime in a process of its own: `python -m voicecall.runtime.serve --config F`.

The config file is the plugin's config section as JSON5. ``--call FLOW TO [PARAMS-JSON]``
places calls once the webhook server is up (used by tests and for trying a carrier account).
Stops cleanly on SIGTERM or SIGINT; a ``kill -9`` loses nothing committed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from pathlib import Path

import json5

from voicecall.dsl.catalog import Catalog
from voicecall.runtime.app import RuntimeConfig, start_runtime
from voicecall.runtime.manager import CallError


async def serve(config_path: Path, calls: list[list[str]]) -> int:
    raw = json5.loads(config_path.read_text("utf-8"))
    config = RuntimeConfig(raw=raw, base_dir=config_path.parent)
    dirs = [config.base_dir / d for d in (raw.get("flows") or [])]
    runtime = await start_runtime(config, catalog=Catalog(dirs))
    print(json.dumps({"ready": True, "webhook": runtime.webhook_url}), flush=True)
    for flow, to, *rest in calls:
        params = json.loads(rest[0]) if rest else {}
        try:
            record = await runtime.manager.initiate(to=to, flow=flow, params=params)
            print(json.dumps({"call": record.call_id, "flow": flow, "to": to}), flush=True)
        except CallError as exc:
            print(json.dumps({"error": str(exc), "flow": flow}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runtime.stop()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--call", nargs="+", action="append", default=[],
                        metavar="FLOW TO [PARAMS]", help="place a call once serving")  # fmt: skip
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return asyncio.run(serve(args.config, args.call))


if __name__ == "__main__":
    sys.exit(main())
