"""Run the runtime in a process of its own: `python -m voicecall.runtime.serve --config F`.

The config file is the host's JSON5 file, or the plugin's config section alone; it is
validated first, and any problem stops the process with one line per problem naming the key
path and its line:col. ``--call FLOW TO [--param K=V ...]`` places a call once the webhook
server is up (used by tests and for trying a carrier account); each ``--param`` belongs to the
``--call`` before it. Every call is checked before serving starts: TO must be an E.164 number
and FLOW a valid flow that may run outbound. Stops cleanly on SIGTERM or SIGINT; a ``kill -9``
loses nothing committed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voicecall.dsl.catalog import Catalog
from voicecall.dsl.errors import FlowError
from voicecall.dsl.validate import load_valid_flow
from voicecall.plugin.config import ConfigError, flow_dirs, load_plugin_config
from voicecall.plugin.params import ParamError, missing_required, parse_params
from voicecall.runtime.app import RuntimeConfig, start_runtime
from voicecall.runtime.manager import CallError
from voicecall.runtime.manager.outbound import outbound_problem

EXIT_USAGE = 2


class ServeError(Exception):
    """The process cannot start as asked; the message says why (one line per problem)."""


@dataclass(slots=True, kw_only=True)
class CallRequest:
    """One ``--call FLOW TO`` and the ``--param K=V`` that follow it."""

    flow: str
    to: str
    pairs: list[str] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)


def check_calls(requests: Sequence[CallRequest], catalog: Catalog) -> None:
    """Resolves and checks every requested call before anything starts.

    Raises:
        ServeError: an unknown or invalid flow, a bad number or param, an inbound-only flow.
    """
    problems: list[str] = []
    for request in requests:
        where = f"--call {request.flow} {request.to}"
        try:
            flow = load_valid_flow(catalog.resolve(request.flow), catalog.infos())
            request.params = parse_params(flow, request.pairs)
        except LookupError as exc:
            problems.append(f"{where}: {exc.args[0] if exc.args else exc}")
            continue
        except FlowError as exc:
            first = exc.diagnostics[0] if exc.diagnostics else None
            detail = (f" (first: {first.file}:{first.span.line}:{first.span.col}: "
                      f"{first.message})" if first else "")  # fmt: skip
            problems.append(f"{where}: the flow has errors{detail}")
            continue
        except ParamError as exc:
            problems.append(f"{where}: --param {exc}")
            continue
        problem = outbound_problem(flow, request.to) or missing_required(flow, request.params)
        if problem:
            problems.append(f"{where}: {problem}")
    if problems:
        raise ServeError("\n".join(problems))


def check_inbound_flow(name: str, catalog: Catalog) -> None:
    """The flow that answers inbound calls (`inboundFlow`) must exist, be valid and not be
    outbound-only.

    Raises:
        ServeError: naming the config key.
    """
    where = f"inboundFlow: flow {name}"
    try:
        flow = load_valid_flow(catalog.resolve(name), catalog.infos())
    except LookupError as exc:
        raise ServeError(f"inboundFlow: {exc.args[0] if exc.args else exc}") from None
    except FlowError:
        raise ServeError(f"{where} has errors; `voicecall validate` lists them") from None
    if flow.direction == "outbound":
        raise ServeError(f"{where} only places calls (direction: outbound); it cannot answer "
                         "inbound calls")  # fmt: skip


async def serve(config_path: Path, requests: Sequence[CallRequest]) -> int:
    try:
        raw = load_plugin_config(config_path, must_exist=True, section_file=True, to_run=True)
    except ConfigError as exc:
        raise ServeError(str(exc)) from exc
    config = RuntimeConfig(raw=raw, base_dir=config_path.parent)
    catalog = Catalog(flow_dirs(raw, config.base_dir))
    check_inbound_flow(str(raw.get("inboundFlow") or "inbound"), catalog)
    check_calls(requests, catalog)
    try:
        runtime = await start_runtime(config, catalog=catalog)
    except (OSError, ValueError) as exc:  # a port in use, a non-loopback apiBaseUrl, ...
        raise ServeError(f"cannot start: {exc}") from exc
    print(json.dumps({"ready": True, "webhook": runtime.webhook_url}), flush=True)
    for request in requests:
        try:
            record = await runtime.manager.initiate(to=request.to, flow=request.flow,
                                                    params=request.params)  # fmt: skip
            print(json.dumps({"call": record.call_id, "flow": request.flow, "to": request.to}),
                  flush=True)  # fmt: skip
        except CallError as exc:
            print(json.dumps({"error": str(exc), "flow": request.flow}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runtime.stop()
    return 0


class _CallAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option: str | None = None) -> None:  # fmt: skip
        flow, to = values
        setattr(namespace, self.dest, [*(namespace.calls or []), CallRequest(flow=flow, to=to)])


class _ParamAction(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option: str | None = None) -> None:  # fmt: skip
        if not namespace.calls:
            parser.error("--param belongs to a --call: write --call FLOW TO --param K=V")
        namespace.calls[-1].pairs.append(str(values))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="the config file (JSON5)")
    parser.add_argument(
        "--call",
        nargs=2,
        action=_CallAction,
        dest="calls",
        default=None,
        metavar=("FLOW", "TO"),
        help="place a call once serving; repeatable",
    )
    parser.add_argument("--param", action=_ParamAction, metavar="K=V",
                        help="a param of the --call before it; repeatable")  # fmt: skip
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        return asyncio.run(serve(args.config, args.calls or []))
    except ServeError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
