"""Public exposure of the webhook: ``publicUrl``, an ngrok tunnel, or Tailscale serve / funnel.

Carriers need a public HTTPS URL; the runtime listens on ``serve.bind:serve.port``. In the
original's order (``runtime.ts``): ``publicUrl`` wins (nothing is opened), else
``tunnel.provider`` (``ngrok``, ``tailscale-serve``, ``tailscale-funnel``), else the legacy
``tailscale.mode``. The public URL found is what callbacks are given and what signatures are
checked against (:func:`voicecall.runtime.server.set_public_url`). Tunnels are closed on stop.

- **ngrok** runs the ``ngrok`` agent through pyngrok with a config file of ours (auth token
  inside, mode 0600: never on a command line), asks its local API for an HTTP tunnel (with
  ``tunnel.ngrokDomain`` when set) and reads the public URL back. The executable is
  ``$PYNGROK_NGROK_PATH`` or ``ngrok`` on ``PATH``; voicecall never downloads one (pyngrok's
  ``connect`` would: only its process and API functions are used).
- **Tailscale** runs ``tailscale serve|funnel --bg --yes --set-path <path> <local URL>`` for the
  webhook path and each stream path, and takes the host name from ``tailscale status --json``.

``voicecall expose`` is the original's command: it sets or removes the Tailscale routes by hand
and prints ``{ok, mode, path, streamPaths, localUrl, publicUrl, hint?}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import click

from voicecall.runtime.app import Runtime, RuntimeConfig
from voicecall.runtime.server import set_public_url

log = logging.getLogger("voicecall.expose")

TailscaleMode = Literal["serve", "funnel"]
TAILSCALE_TIMEOUT_S = 10.0  # one `tailscale` command (the original: 2.5 s)
NGROK_START_TIMEOUT_S = 30  # the original's ngrok start timeout
FUNNEL_PORTS = (443, 8443, 10000)
HINT_DISABLED = "Tailscale serve/funnel may be disabled on this tailnet (or require admin enable)."
HINT_MISSING = "The tailscale CLI was not found on PATH; install Tailscale and log in."


class ExposeError(Exception):
    """The webhook cannot be exposed as configured (one line, no secret)."""


# --- tailscale ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TailscaleSelf:
    dns_name: str | None
    node_id: str | None


async def run_tailscale(args: Sequence[str]) -> tuple[int, str]:
    """(exit code, stdout) of one ``tailscale`` command; -1 when it is missing or hangs."""
    try:
        proc = await asyncio.create_subprocess_exec(
            "tailscale", *args, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError:  # not installed (FileNotFoundError) or not executable
        return -1, ""
    try:
        async with asyncio.timeout(TAILSCALE_TIMEOUT_S):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("tailscale %s: no answer in %gs", " ".join(args[:2]), TAILSCALE_TIMEOUT_S)
        return -1, ""
    if proc.returncode != 0:
        first = err.decode("utf-8", "replace").strip().splitlines()[:1]
        log.warning("tailscale %s failed (%s): %s", " ".join(args[:2]), proc.returncode,
                    first[0][:200] if first else "no message")  # fmt: skip
    return proc.returncode if proc.returncode is not None else -1, out.decode("utf-8", "replace")


async def tailscale_self() -> TailscaleSelf | None:
    """This node's DNS name and id (``tailscale status --json``), or None."""
    code, out = await run_tailscale(["status", "--json"])
    if code != 0:
        return None
    try:
        me = json.loads(out).get("Self") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(me, dict):
        return None
    dns = str(me.get("DNSName") or "").rstrip(".") or None
    return TailscaleSelf(dns_name=dns, node_id=str(me.get("ID") or "") or None)


@dataclass(slots=True, kw_only=True)
class TailscaleRoutes:
    """Routes set with ``tailscale serve|funnel``: ``(mount path, local target URL)``."""

    mode: TailscaleMode
    routes: list[tuple[str, str]]
    https_port: int = 443
    public_base: str = ""  # https://<node>.<tailnet>.ts.net[:port]

    def _args(self, path: str, target: str) -> list[str]:
        port = [f"--https={self.https_port}"] if self.https_port != 443 else []
        return [self.mode, "--bg", "--yes", *port, "--set-path", path, target]

    async def open(self) -> bool:
        """Sets every route; on a failure undoes those set. Whether all are up."""
        me = await tailscale_self()
        if me is None or not me.dns_name:
            log.warning("[voice-call] could not get the Tailscale DNS name")
            return False
        done: list[str] = []
        for path, target in self.routes:
            code, _ = await run_tailscale(self._args(path, target))
            if code != 0:
                await self._off(done)
                log.warning("[voice-call] Tailscale %s failed for %s", self.mode, path)
                return False
            done.append(path)
        port = f":{self.https_port}" if self.https_port != 443 else ""
        self.public_base = f"https://{me.dns_name}{port}"
        return True

    async def _off(self, paths: Sequence[str]) -> None:
        for path in paths:
            port = [f"--https={self.https_port}"] if self.https_port != 443 else []
            await run_tailscale([self.mode, *port, "--set-path", path, "off"])

    async def close(self) -> None:
        await self._off([path for path, _ in self.routes])


def stream_paths(config: RuntimeConfig) -> list[str]:
    """The media-stream paths a carrier connects to besides the webhook (when enabled)."""
    paths: list[str] = []
    streaming = dict(config.get("streaming", {}) or {})
    if streaming.get("enabled"):
        paths.append(str(streaming.get("streamPath") or "/voice/stream"))
    realtime = dict(config.get("realtime", {}) or {})
    if realtime.get("enabled"):
        paths.append(str(realtime.get("streamPath") or realtime_stream_path(config)))
    return list(dict.fromkeys(paths))


def realtime_stream_path(config: RuntimeConfig) -> str:
    """The original's derivation: serve.path ``…/webhook`` -> ``…/stream/realtime``."""
    path = config.serve()["path"].rstrip("/")
    head, _, last = path.rpartition("/")
    return f"{head}/stream/realtime" if last == "webhook" else f"{path}/stream/realtime"


# --- ngrok ----------------------------------------------------------------------------------------


def find_ngrok() -> str | None:
    """The ngrok executable: ``$PYNGROK_NGROK_PATH`` (pyngrok's own setting) or ``PATH``."""
    named = os.environ.get("PYNGROK_NGROK_PATH")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("ngrok")


@dataclass(slots=True, kw_only=True)
class NgrokTunnel:
    """An ngrok agent process with one HTTP tunnel to the local port."""

    ngrok_path: str
    public_url: str = ""
    _api_url: str = ""
    _uri: str = ""
    _dir: tempfile.TemporaryDirectory[str] | None = field(default=None, repr=False)

    @classmethod
    async def open(
        cls, *, port: int, auth_token: str | None, domain: str | None,
        ngrok_path: str | None = None,
    ) -> NgrokTunnel:  # fmt: skip
        """Starts the agent and the tunnel. Raises ExposeError with ngrok's own reason."""
        path = ngrok_path or find_ngrok()
        if not path or not os.access(path, os.X_OK):
            raise ExposeError(
                "tunnel.provider is ngrok but no ngrok executable was found (PATH or "
                "PYNGROK_NGROK_PATH); install it from https://ngrok.com/download "
                "(voicecall never downloads it)"
            )
        tunnel = cls(ngrok_path=path)
        try:
            await asyncio.to_thread(tunnel._start, port, auth_token, domain)
        except BaseException as exc:
            await tunnel.close()  # no agent left running, no config file left behind
            if isinstance(exc, Exception) and not isinstance(exc, ExposeError):
                raise ExposeError(f"ngrok did not start: {exc}") from None
            raise
        return tunnel

    def _config(self, auth_token: str | None) -> Any:
        from pyngrok.conf import PyngrokConfig

        self._dir = tempfile.TemporaryDirectory(prefix="voicecall-ngrok-")
        config_file = Path(self._dir.name) / "ngrok.yml"
        lines = ['version: "2"']
        if auth_token:  # JSON strings are YAML strings: any character is quoted safely
            lines.append(f"authtoken: {json.dumps(auth_token)}")
        fd = os.open(config_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        config = PyngrokConfig(ngrok_path=self.ngrok_path, config_path=str(config_file),
                               startup_timeout=NGROK_START_TIMEOUT_S)  # fmt: skip
        # pyngrok would copy $NGROK_AUTHTOKEN / $NGROK_API_KEY onto the command line.
        config.auth_token = None
        config.api_key = None
        return config

    def _start(self, port: int, auth_token: str | None, domain: str | None) -> None:
        from pyngrok import ngrok, process
        from pyngrok.exception import PyngrokError

        config = self._config(auth_token)
        options: dict[str, Any] = {"name": f"voicecall-{port}", "addr": str(port),
                                   "proto": "http"}  # fmt: skip
        if domain:
            options["domain"] = domain
        try:
            # get_process starts the agent without pyngrok's installer (ngrok.connect would
            # download a binary when the path does not exist).
            agent = process.get_process(config)
            self._api_url = str(agent.api_url)
            data = ngrok.api_request(f"{self._api_url}/api/tunnels", method="POST",
                                     data=options, timeout=config.request_timeout)  # fmt: skip
        except PyngrokError as exc:
            raise ExposeError(f"ngrok did not start: {_ngrok_reason(exc)}") from None
        url = data.get("public_url") if isinstance(data, dict) else None
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ExposeError("ngrok started but reported no public URL")
        self.public_url = url.rstrip("/")
        self._uri = str(data.get("uri") or f"/api/tunnels/{options['name']}")

    async def close(self) -> None:
        """Removes the tunnel and stops the agent; twice is fine."""
        await asyncio.to_thread(self._stop)

    def _stop(self) -> None:
        from pyngrok import ngrok, process
        from pyngrok.exception import PyngrokError

        if self._api_url and self._uri:
            try:
                ngrok.api_request(f"{self._api_url}{self._uri}", method="DELETE", timeout=4)
            except PyngrokError as exc:  # the agent is stopped below anyway
                log.info("ngrok tunnel removal: %s", _ngrok_reason(exc))
            self._uri = ""
        process.kill_process(self.ngrok_path)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


def _ngrok_reason(exc: Exception) -> str:
    """pyngrok's message, on one line, without the agent's multi-line help text."""
    error = getattr(exc, "ngrok_error", None)
    text = str(error or exc)
    return " ".join(text.split())[:300]


# --- the runtime's exposure -----------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class Exposure:
    """What made the webhook public, and its public URL; :meth:`close` undoes it."""

    kind: str  # "ngrok" | "tailscale-serve" | "tailscale-funnel"
    webhook_url: str
    ngrok: NgrokTunnel | None = None
    tailscale: TailscaleRoutes | None = None

    async def close(self) -> None:
        ngrok, self.ngrok = self.ngrok, None
        tailscale, self.tailscale = self.tailscale, None
        if ngrok is not None:
            await ngrok.close()
        if tailscale is not None:
            await tailscale.close()
        log.info("[voice-call] %s exposure closed", self.kind)


@dataclass(frozen=True, slots=True, kw_only=True)
class Plan:
    """Which exposure the config asks for."""

    kind: str  # "none" | "public-url" | "ngrok" | "tailscale-serve" | "tailscale-funnel"
    mode: TailscaleMode | None = None
    legacy: bool = False  # from tailscale.mode (whose path and port apply), not tunnel.provider


def planned(config: RuntimeConfig) -> Plan:
    """publicUrl > tunnel.provider > the legacy tailscale.mode, as the original."""
    if config.get("publicUrl"):
        return Plan(kind="public-url")
    provider = str((config.get("tunnel", {}) or {}).get("provider") or "none")
    if provider == "ngrok":
        return Plan(kind="ngrok")
    if provider in ("tailscale-serve", "tailscale-funnel"):
        return Plan(kind=provider, mode="funnel" if provider.endswith("funnel") else "serve")
    legacy = str((config.get("tailscale", {}) or {}).get("mode") or "off")
    if legacy in ("serve", "funnel"):
        return Plan(kind=f"tailscale-{legacy}", mode="funnel" if legacy == "funnel" else "serve",
                    legacy=True)  # fmt: skip
    return Plan(kind="none")


async def open_exposure(
    config: RuntimeConfig, port: int, *, ngrok_path: str | None = None
) -> Exposure | None:
    """Opens what the config asks for toward the local ``port``; None for publicUrl or none.

    Raises:
        ExposeError: the tunnel could not be opened (the reason, no secret).
    """
    plan = planned(config)
    serve_path = config.serve()["path"]
    if plan.kind == "ngrok":
        tunnel_cfg = dict(config.get("tunnel", {}) or {})
        token = tunnel_cfg.get("ngrokAuthToken") or os.environ.get("NGROK_AUTHTOKEN")
        domain = tunnel_cfg.get("ngrokDomain") or os.environ.get("NGROK_DOMAIN")
        tunnel = await NgrokTunnel.open(port=port, auth_token=token or None,
                                        domain=domain or None,
                                        ngrok_path=ngrok_path)  # fmt: skip
        return Exposure(kind=plan.kind, webhook_url=tunnel.public_url + serve_path, ngrok=tunnel)
    if plan.mode is None:
        return None
    section = dict(config.get("tailscale", {}) or {}) if plan.legacy else {}
    mount = str(section.get("path") or serve_path)
    https_port = int(section.get("port") or 443)
    if plan.mode == "funnel" and https_port not in FUNNEL_PORTS:
        raise ExposeError(f"tailscale.port {https_port}: Funnel only serves 443, 8443 or 10000")
    local = f"http://127.0.0.1:{port}"
    routes = [(mount, local + serve_path)] + [(p, local + p) for p in stream_paths(config)]
    tailscale = TailscaleRoutes(mode=plan.mode, routes=routes, https_port=https_port)
    if not await tailscale.open():
        raise ExposeError(f"tailscale {plan.mode} could not expose {mount} ({HINT_DISABLED})")
    return Exposure(kind=plan.kind, webhook_url=tailscale.public_base + mount,
                    tailscale=tailscale)  # fmt: skip


async def expose_runtime(
    config: RuntimeConfig, runtime: Runtime, *, ngrok_path: str | None = None
) -> Exposure | None:
    """Opens the configured exposure for a started runtime and makes its URL the webhook's:
    callbacks of new calls and signature checks use it from now on."""
    port = _bound_port(runtime)
    exposure = await open_exposure(config, port, ngrok_path=ngrok_path)
    if exposure is None:
        return None
    runtime.webhook_url = exposure.webhook_url
    runtime.manager.settings = replace(runtime.manager.settings, webhook_base=exposure.webhook_url)
    set_public_url(runtime.runner.app, exposure.webhook_url)
    log.info("[voice-call] %s exposure: %s", exposure.kind, exposure.webhook_url)
    return exposure


def _bound_port(runtime: Runtime) -> int:
    addresses = runtime.runner.addresses
    if not addresses:
        raise ExposeError("the webhook server is not listening")
    return int(addresses[0][1])


# --- `voicecall expose` ---------------------------------------------------------------------------


async def expose_command(
    config: RuntimeConfig, *, mode: str, path: str | None, port: int | None,
    serve_path: str | None,
) -> dict[str, Any]:  # fmt: skip
    """The original's ``expose``: set (or remove, ``off``) the Tailscale routes of the webhook
    and stream paths; the payload it prints."""
    chosen = mode.strip().lower()
    resolved: Literal["off", "serve", "funnel"] = (
        "off" if chosen == "off" else "serve" if chosen == "serve" else "funnel"
    )
    serve = config.serve()
    local_port = port if port is not None else int(serve["port"])
    local_path = serve_path or str(serve["path"])
    mount = path or str((config.get("tailscale", {}) or {}).get("path") or local_path)
    streams = stream_paths(config)
    local = f"http://127.0.0.1:{local_port}"
    if resolved == "off":
        for which in ("serve", "funnel"):
            await TailscaleRoutes(mode=which, routes=[(p, "") for p in [mount, *streams]]).close()
        return {"ok": True, "mode": "off", "path": mount, "streamPaths": streams}
    routes = [(mount, local + local_path)] + [(p, local + p) for p in streams]
    tailscale = TailscaleRoutes(mode=resolved, routes=routes)
    up = await tailscale.open()
    out: dict[str, Any] = {"ok": up, "mode": resolved, "path": mount, "streamPaths": streams,
                           "localUrl": local,
                           "publicUrl": tailscale.public_base + mount if up else None}  # fmt: skip
    if not up:
        me = await tailscale_self()
        missing = shutil.which("tailscale") is None
        enable = (f"https://login.tailscale.com/f/{resolved}?node={me.node_id}"
                  if me and me.node_id else None)  # fmt: skip
        out["hint"] = {"note": HINT_MISSING if missing else HINT_DISABLED, "enableUrl": enable}
    return out


def register(group: click.Group) -> None:
    """Adds ``voicecall expose`` to the command line."""
    group.add_command(expose_cmd)


@click.command("expose")
@click.option(
    "--mode",
    default="funnel",
    show_default=True,
    metavar="off|serve|funnel",
    help="off, serve (tailnet only) or funnel (public).",
)
@click.option(
    "--path",
    "mount",
    metavar="PATH",
    help="Tailscale path to expose (default: tailscale.path, else serve.path).",
)
@click.option("--port", type=click.IntRange(1, 65535), help="Local webhook port (serve.port).")
@click.option("--serve-path", metavar="PATH", help="Local webhook path (serve.path).")
@click.pass_obj
def expose_cmd(
    state: Any, mode: str, mount: str | None, port: int | None, serve_path: str | None
) -> None:  # fmt: skip
    """Enable or disable Tailscale serve/funnel for the webhook and stream paths."""
    config = RuntimeConfig(raw=state.config, base_dir=state.config_file.parent)
    payload = asyncio.run(expose_command(config, mode=mode, path=mount, port=port,
                                         serve_path=serve_path))  # fmt: skip
    click.echo(json.dumps(payload, indent=2))
    if not payload["ok"]:
        raise SystemExit(1)
