"""`voicecall config show`: the config the plugin and the Gateway run with, secrets redacted."""

from __future__ import annotations

import json

import click

from voicecall.plugin.cli import BadConfig, State
from voicecall.plugin.config import ConfigError, HostConfig, load_config, redacted_view
from voicecall.plugin.output import json_option
from voicecall.runtime.app import RuntimeConfig, voice_problems

PREFIX = "plugins.entries.voice-call.config"


@click.group("config")
def config_group() -> None:
    """The host config file: where it is and what it says."""


@config_group.command("show")
@json_option()
@click.pass_obj
def show_cmd(state: State, as_json: bool) -> None:
    """Print the effective config (defaults, environment, tts merged); secrets redacted."""
    view = redacted_view(load_host_config(state))
    if as_json:
        click.echo(json.dumps(view, indent=2))
        return
    status = "" if view["found"] else " (not found: built-in defaults)"
    click.echo(f"# config file: {view['configPath']}{status}")
    for key, var in view["fromEnv"].items():
        click.echo(f"# {key} from {var}")
    shown = {"gateway": view["gateway"], "plugins": view["plugins"]}
    click.echo(json.dumps(shown, indent=2, ensure_ascii=False))


@config_group.command("check")
@json_option()
@click.pass_obj
def check_cmd(state: State, as_json: bool) -> None:
    """Check the config as `voicecall gateway` would before starting (nothing is started)."""
    host = load_host_config(state, to_run=True)
    problems = voice_problems(RuntimeConfig(raw=host.plugin, base_dir=host.base_dir))
    if problems:  # what the voice services would refuse at start, by key path
        raise BadConfig("\n".join(f"{host.path}: {PREFIX}.{p}" for p in problems))
    where = str(host.path) if host.found else f"{host.path} (not found: built-in defaults)"
    if as_json:
        click.echo(json.dumps({"ok": True, "configPath": str(host.path), "found": host.found}))
    else:
        click.echo(f"config OK: {where}")


def load_host_config(state: State, *, to_run: bool = False) -> HostConfig:
    """The host config for a command: the file named with --config, else as OpenClaw finds it.

    Raises:
        BadConfig: the config cannot be used (exit 2, one line per problem).
    """
    try:
        return load_config(state.config_file if state.explicit else None, to_run=to_run)
    except ConfigError as exc:
        raise BadConfig(str(exc)) from exc
