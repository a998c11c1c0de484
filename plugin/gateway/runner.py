"""`voicecall gateway [--config F]`: a Gateway host for the voice-call plugin.

It reads the OpenClaw config file, builds a host (``GatewayHost``: the plugin API, whose
``emit`` pushes event frames to the connected clients), calls the plugin's ``register(api)``,
binds the Gateway WebSocket on ``127.0.0.1:gateway.port`` (first: a port in use stops it before
anything else starts), starts the plugin's services, then serves. SIGTERM or SIGINT drains:
no new connection or request is admitted, the requests in flight finish (up to a bound), the
services stop (their own drain: webhooks in flight, persisted state), the clients are told
goodbye, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import click
import json5
from aiohttp import web

from voicecall.plugin.config import (
    ConfigError,
    HostConfig,
    config_schema,
    find_config,
    load_config,
    sensitive_paths,
)
from voicecall.plugin.config_effective import REDACTED, redacted
from voicecall.plugin.gateway.auth import AuthSettings
from voicecall.plugin.gateway.server import GatewayServer, ServerSettings
from voicecall.plugin.host import READ, PluginApi, Registry, RequestContext
from voicecall.runtime import loop as event_loop
from voicecall.runtime.logs import FORMATS, Redactor, configure, masked_values

# The events voice-call emits (the host API has no way to declare them: listed in hello-ok).
PLUGIN_EVENTS = ("voicecall.call", "voicecall.transcript")
DRAIN_S = 15.0  # how long requests in flight may take to finish on SIGTERM
EXIT_FAILED = 1
# Test and tuning knobs (no OpenClaw config key exists for them).
ENV_TICK_MS = "VOICECALL_GATEWAY_TICK_MS"
ENV_HANDSHAKE_MS = "VOICECALL_GATEWAY_HANDSHAKE_MS"
ENV_DRAIN_MS = "VOICECALL_GATEWAY_DRAIN_MS"

log = logging.getLogger("voicecall.gateway")
Register = Callable[[PluginApi], None]


class GatewayStartError(Exception):
    """The gateway cannot start; the message is the one line to print."""


@dataclass(slots=True, kw_only=True)
class GatewayHost(Registry):
    """The plugin API of `voicecall gateway`: a Registry whose events reach the clients."""

    server: GatewayServer | None = field(default=None, repr=False)

    def emit(self, event: str, payload: Mapping[str, Any]) -> None:
        if self.server is not None:
            self.server.broadcast(event, payload)
        Registry.emit(self, event, payload)


def _env_int(name: str, default: int, *, minimum: int = 1) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise GatewayStartError(f"{name}={raw!r}: expected a whole number") from None
    if value < minimum:
        raise GatewayStartError(f"{name}={raw!r}: must be at least {minimum}")
    return value


def server_settings(host: HostConfig, port: int | None = None) -> ServerSettings:
    """The server's settings: ``gateway.*`` from the config (env winning), ``--port`` over it."""
    auth = host.gateway.auth
    try:
        release = version("voicecall")
    except PackageNotFoundError:
        release = "0"
    return ServerSettings(port=port or host.gateway.port,
                          auth=AuthSettings(mode=auth.mode, token=auth.token,
                                            password=auth.password),
                          tick_interval_ms=_env_int(ENV_TICK_MS, 30_000),
                          handshake_timeout_ms=_env_int(ENV_HANDSHAKE_MS, 10_000),
                          version=release)  # fmt: skip


class Gateway:
    """A running host: the Gateway server and the plugin's services."""

    def __init__(self, host: GatewayHost, settings: ServerSettings):
        self.host = host
        self.server = GatewayServer(host.methods, settings, events=PLUGIN_EVENTS,
                                    logger=log)  # fmt: skip
        host.server = self.server
        self.runner = web.AppRunner(self.server.app(), access_log=None, handle_signals=False)
        self.started: list[Any] = []
        self.port = settings.port

    async def start(self) -> None:
        """Binds the Gateway port, then starts the services.

        Raises:
            GatewayStartError: the port is taken, or a service cannot start.
        """
        s = self.server.settings
        await self.runner.setup()
        self.server.draining = True  # nothing admitted until the services run
        try:
            site = web.TCPSite(self.runner, s.host, s.port, reuse_address=True)
            await site.start()
        except OSError as exc:
            await self.runner.cleanup()
            raise GatewayStartError(_bind_problem(s.host, s.port, exc)) from None
        addresses = self.runner.addresses
        self.port = int(addresses[0][1]) if addresses else s.port
        for service in self.host.services:
            try:
                await service.start()
            except Exception as exc:  # one line naming the service, then stop what started
                await self.stop()
                raise GatewayStartError(f"cannot start service {service.id}: {_why(exc)}") from None
            self.started.append(service)
        self.server.draining = False

    async def stop(self, drain_s: float = DRAIN_S) -> None:
        """Drains and stops; safe to call twice."""
        cancelled = await self.server.drain(drain_s)
        if cancelled:
            log.warning("gateway: %d request(s) did not finish in %.0f s", cancelled, drain_s)
        while self.started:
            service = self.started.pop()
            try:
                await service.stop()
            except Exception as exc:  # keep stopping the others
                log.error("gateway: service %s did not stop cleanly: %s", service.id, _why(exc))
        await self.server.close()
        await self.runner.cleanup()


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE or "address already in use" in str(exc).lower():
        return (f"cannot listen on {host}:{port} (gateway.port): the port is already in use "
                "(another gateway running?)")  # fmt: skip
    return f"cannot listen on {host}:{port} (gateway.port): {exc.strerror or exc}"


def _why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def default_register() -> Register:
    from importlib import import_module

    # B's module; imported by name so the host does not depend on the plugin at import time.
    register: Register = import_module("voicecall.plugin.entry").register
    return register


async def serve(host: GatewayHost, settings: ServerSettings, *, ready: Callable[[int], None],
                stop: asyncio.Event | None = None) -> None:  # fmt: skip
    """Runs the gateway until SIGTERM/SIGINT (or ``stop``), then drains.

    Raises:
        GatewayStartError: it could not start (nothing is left running).
    """
    gateway = Gateway(host, settings)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await gateway.start()
    ready(gateway.port)
    await stop.wait()
    log.info("gateway: stopping (draining requests in flight)")
    await gateway.stop(_env_int(ENV_DRAIN_MS, int(DRAIN_S * 1000), minimum=0) / 1000)
    log.info("gateway: stopped")


_REDACTOR: Redactor | None = None  # the handler's, once configure_logging has run


def configure_logging(log_format: str = "text") -> None:
    """Our own lines at INFO on stderr; libraries (carrier SDKs log every HTTP header at
    INFO) only from WARNING; ``json``: one object a line. Secrets are hidden from every line
    once the config is read (:func:`hide_secrets`)."""
    global _REDACTOR  # noqa: PLW0603 - one logging setup per process
    _REDACTOR = configure(log_format, stream=sys.stderr)


def hide_secrets(host_config: HostConfig) -> None:
    """The config's secret values (the manifest's ``sensitive`` keys, and keys named like a
    secret anywhere in the host config) masked in every log line from now on."""
    if _REDACTOR is None:
        return
    plugin = host_config.plugin
    values = masked_values(plugin, redacted(plugin, sensitive_paths()), REDACTED)
    values += masked_values(host_config.data, redacted(host_config.data, ()), REDACTED)
    auth = host_config.gateway.auth
    values += [v for v in (auth.token, auth.password) if v]
    _REDACTOR.update(values)


def register_host_methods(host: GatewayHost) -> None:
    """The Gateway's own methods a client may expect of any host: ``health`` (what
    `openclaw health` asks), answered with what this host knows: the plugins it loaded."""
    loaded = ["voice-call"] if host.services or host.methods else []
    started = time.time()

    async def health(params: Mapping[str, Any], context: RequestContext) -> dict[str, Any]:
        now = time.time()
        plugins = {"loaded": loaded, "errors": []}
        return {"ok": True, "ts": int(now * 1000), "durationMs": 0,
                "uptimeMs": int((now - started) * 1000),
                "plugins": plugins, "channels": {}, "agents": []}  # fmt: skip

    if "health" not in host.methods:
        host.register_gateway_method("health", health, scope=READ)


def build_host(config_file: str | None) -> tuple[GatewayHost, HostConfig]:
    """Finds, loads and checks the config; an unusable one is a GatewayStartError."""
    try:
        _not_a_section_alone(find_config(config_file)[0])
        host_config = load_config(config_file, to_run=True)
    except ConfigError as exc:
        raise GatewayStartError(str(exc)) from None
    host = GatewayHost(plugin_config=host_config.plugin, config=host_config.data,
                       config_path=str(host_config.path) if host_config.found else None,
                       logger=logging.getLogger("voicecall"))  # fmt: skip
    return host, host_config


def _not_a_section_alone(path: Path) -> None:
    """The old `runtime.serve` file held the plugin section alone; the Gateway would read it
    as an OpenClaw config without the plugin (mock, defaults), which would surprise."""
    try:
        data = json5.loads(path.read_text("utf-8"))
    except (OSError, ValueError, RecursionError):
        return  # load_config reports it
    if not isinstance(data, dict) or "plugins" in data or "gateway" in data:
        return
    ours = sorted(set(data) & set(config_schema().get("properties", {})))
    if ours:
        keys = ", ".join(ours[:3])
        raise GatewayStartError(f"{path}: holds the voice-call config alone ({keys}); the "
                                "Gateway reads the OpenClaw config: move it under "
                                "plugins.entries.voice-call.config")  # fmt: skip


def run(config_file: str | None, *, port: int | None = None,
        register: Register | None = None) -> int:  # fmt: skip
    """The `voicecall gateway` command: returns the exit code."""
    try:
        host, host_config = build_host(config_file)
        hide_secrets(host_config)
        settings = server_settings(host_config, port)
        (register or default_register())(host)
        register_host_methods(host)
    except GatewayStartError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_FAILED
    except (ValueError, OSError, LookupError) as exc:  # the plugin refused its config
        click.echo(f"error: the plugin cannot load: {_why(exc)}", err=True)
        return EXIT_FAILED

    def ready(bound: int) -> None:
        line = {"ready": True, "gateway": f"ws://{settings.host}:{bound}"}
        click.echo(json.dumps(line))
        sys.stdout.flush()

    try:
        event_loop.run(serve(host, settings, ready=ready))
    except GatewayStartError as exc:
        click.echo(f"error: {exc}", err=True)
        return EXIT_FAILED
    return 0


def _node_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("https://", "http://")):
        raise click.BadParameter(f"{value!r} is not an http(s):// URL")
    return value


@click.command("gateway")
@click.option("--config", "config_file", metavar="PATH",
              help="The OpenClaw config file (JSON5); default: as OpenClaw finds it.")  # fmt: skip
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Gateway port (default: $OPENCLAW_GATEWAY_PORT, gateway.port, 18789).",
)
@click.option("--log-format", type=click.Choice(FORMATS), default="text", show_default=True,
              help="Log lines as text, or as one JSON object a line (call_id, provider, "
                   "flow file:line when known).")  # fmt: skip
@click.option("--node-url", metavar="URL", callback=lambda _c, _p, v: _node_url(v),
              help="With a redis:// store: this gateway's own public base URL, where media "
                   "streams of its calls must come (default: $VOICECALL_NODE_URL, "
                   "redis.nodeUrl, else the webhook URL).")  # fmt: skip
@click.pass_context
def gateway_cmd(
    ctx: click.Context, config_file: str | None, port: int | None, log_format: str,
    node_url: str | None,
) -> None:  # fmt: skip
    """Run the Gateway: the voice-call service and the OpenClaw WebSocket protocol."""
    state = ctx.find_object(object)  # the group's --config, if given there
    if config_file is None and getattr(state, "explicit", False):
        config_file = str(getattr(state, "config_file", ""))
    if node_url:  # read where the runtime starts, like the other per-process settings
        os.environ["VOICECALL_NODE_URL"] = node_url
    configure_logging(log_format)
    with contextlib.suppress(KeyboardInterrupt):
        ctx.exit(run(config_file, port=port))
