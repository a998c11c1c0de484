"""`python -m voicecall.runtime.serve [--config F] [--port N]`: the old name of `voicecall gateway`.

The runtime no longer runs with a config shape of its own: this starts the Gateway host on the
same OpenClaw config file (the plugin's service, its webhook server and the Gateway WebSocket),
and calls are placed through the Gateway (`voicecall call`, `voicecall start --flow NAME`, or
the ``voicecall.start`` method), not on this command line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from voicecall.plugin.gateway.runner import configure_logging, run


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1-65535)")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--config", help="the OpenClaw config file (JSON5)")
    parser.add_argument("--port", type=_port, help="the Gateway port (default: gateway.port)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        return run(args.config, port=args.port)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
