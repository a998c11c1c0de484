"""The call commands: `voicecall setup`, `smoke`, `call`, `start`, `continue`, `speak`, `dtmf`,
`end`, `status`, `tail` and `latency`.

They talk to the running Gateway (`voicecall gateway`) over protocol 4 with the client in
``plugin/gateway/client.py``, one connection per RPC as the original CLI does, with the
original's options, defaults and payloads (reference: openclaw-gateway.md §8). People get short
lines, tables and a live view (``call --follow``); scripts get ``--json``, the original's
payloads. With no Gateway listening, a command says in one line how to start it and exits 1;
``status``, ``tail`` and ``latency`` then read the call store instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from voicecall.plugin.call_log import (
    CallLog,
    StoreError,
    is_jsonl,
    jsonl_latency,
    latency_report,
)
from voicecall.plugin.config import ConfigError, HostConfig, load_config
from voicecall.plugin.config_rules import profile_port
from voicecall.plugin.gateway import client as gw
from voicecall.plugin.host import GatewayError
from voicecall.plugin.output import json_option

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
MODES = click.Choice(["notify", "conversation"])
SMOKE_MESSAGE = "OpenClaw voice call smoke test."
POLL_S = 1.0  # the original polls continue.result every second
GRACE_MS = 10_000


# --- configuration and the Gateway's address -----------------------------------------------------


class BadConfig(click.ClickException):
    """The config file cannot be used: exit 2, its problems without a usage text."""

    exit_code = 2


def host(state: Any) -> HostConfig:
    """The host config (read once per command): the whole file, the plugin's effective
    section with its defaults, and what relative paths are relative to."""
    loaded: HostConfig | None = getattr(state, "_host_config", None)
    if loaded is None:
        try:
            loaded = load_config(state.config_file if state.explicit else None)
        except ConfigError as exc:
            raise BadConfig(str(exc)) from None
        state._host_config = loaded
    return loaded


def plugin_section(state: Any) -> dict[str, Any]:
    return host(state).plugin


def gateway_options(command: F) -> F:
    """``--url``, ``--token``, ``--password``: which Gateway, and its secret."""
    command = click.option("--password", metavar="PW",
                           help="Gateway password (else OPENCLAW_GATEWAY_PASSWORD, "
                                "else gateway.auth.password).")(command)  # fmt: skip
    command = click.option("--token", metavar="TOKEN",
                           help="Gateway token (else OPENCLAW_GATEWAY_TOKEN, "
                                "else gateway.auth.token).")(command)  # fmt: skip
    command = click.option("--url", metavar="WS_URL",
                           help="Gateway URL (else OPENCLAW_GATEWAY_URL, "
                                "else ws://127.0.0.1:<gateway.port>).")(command)  # fmt: skip
    return command


def target(state: Any, opts: Mapping[str, Any]) -> gw.Target:
    return gw.resolve_target(
        host(state).data, url=opts.get("url"), token=opts.get("token"),
        password=opts.get("password"),
        fallback_port=profile_port(os.environ.get("OPENCLAW_PROFILE")),
    )  # fmt: skip


def ms(section: Mapping[str, Any], key: str, default: int) -> float:
    value = section.get(key)
    return float(value if isinstance(value, int | float) else default)


def operation_timeout_s(section: Mapping[str, Any]) -> float:
    """`call`, `start`, `smoke`: max(30 s, ringTimeoutMs + grace), as the original."""
    return max(30_000, ms(section, "ringTimeoutMs", 30_000) + GRACE_MS) / 1000


def continue_timeout_s(section: Mapping[str, Any]) -> float:
    """The blocking continue: transcriptTimeoutMs + 30 s + 10 s, as the original."""
    return (ms(section, "transcriptTimeoutMs", 180_000) + 40_000) / 1000


# --- running a request and reporting its failure ------------------------------------------------


def fail(message: str, *, as_json: bool, code: str | None = None, kind: str = "") -> NoReturn:
    """One line on stderr (people) or the error object of `openclaw gateway call --json`."""
    if as_json:
        error = {"type": kind or "gateway_request_error", "code": code or "UNAVAILABLE",
                 "message": message, "retryable": False}  # fmt: skip
        click.echo(json.dumps({"ok": False, "error": error}, indent=2))
    else:
        from voicecall.plugin.cli_follow import printable

        click.echo(f"Error: {printable(message)}", err=True)  # one line, whatever it quotes
    sys.exit(1)


def run(coro: Coroutine[Any, Any, T], *, as_json: bool) -> T:
    """Runs one exchange with the Gateway; its failures end the command (exit 1)."""
    try:
        return asyncio.run(coro)
    except GatewayError as exc:
        fail(exc.message, as_json=as_json, code=exc.code)
    except gw.GatewayUnreachable as exc:
        fail(str(exc), as_json=as_json, kind="gateway_unavailable")
    except gw.GatewayTransportError as exc:
        fail(str(exc), as_json=as_json, kind="gateway_transport_error")


def rpc(
    state: Any, opts: Mapping[str, Any], method: str, params: Mapping[str, Any] | None,
    *, timeout_s: float = gw.CALL_TIMEOUT_S,
) -> Any:  # fmt: skip
    return run(gw.call(target(state, opts), method, params, timeout_s=timeout_s),
               as_json=bool(opts.get("as_json")))  # fmt: skip


def emit(payload: Any) -> None:
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False))


def with_opts(command: Callable[..., None]) -> Callable[..., None]:
    """Hands the command its options as one mapping (``opts``) beside the State."""

    @functools.wraps(command)
    def wrapper(state: Any, **opts: Any) -> None:
        command(state, opts)

    return wrapper


# --- setup and smoke ------------------------------------------------------------------------------


def setup_status(state: Any) -> dict[str, Any]:
    from voicecall.plugin.setup_checks import run_setup_checks

    status: dict[str, Any] = run_setup_checks(plugin_section(state))
    return status


def print_setup(status: Mapping[str, Any]) -> None:
    ok = bool(status.get("ok"))
    click.secho(f"Voice Call setup: {'OK' if ok else 'needs attention'}", bold=True,
                fg="green" if ok else "red")  # fmt: skip
    for check in status.get("checks", []):
        mark = click.style("OK  ", fg="green") if check.get("ok") else click.style("FAIL", fg="red")
        click.echo(f"{mark} {check.get('id')}: {check.get('message')}")


@click.command("setup")
@json_option()
@click.pass_obj
def setup_cmd(state: Any, as_json: bool) -> None:
    """Show the provider and webhook setup checks (no call, no Gateway needed)."""
    status = setup_status(state)
    if as_json:
        emit(status)
    else:
        print_setup(status)
    sys.exit(0 if status.get("ok") else 1)


@click.command("smoke")
@click.option("-t", "--to", metavar="PHONE", help="Phone number to call for a live smoke.")
@click.option("--message", default=SMOKE_MESSAGE, show_default=True,
              help="Message to speak during the smoke call.")  # fmt: skip
@click.option("--mode", type=MODES, default="notify", show_default=True, help="Call mode.")
@click.option("--yes", is_flag=True, help="Actually place the live outbound call.")
@gateway_options
@json_option()
@click.pass_obj
@with_opts
def smoke_cmd(state: Any, opts: dict[str, Any]) -> None:
    """Run the setup checks; with --to and --yes, also place a short outbound test call."""
    as_json, to = opts["as_json"], opts["to"]
    setup = setup_status(state)
    out: dict[str, Any] = {"ok": bool(setup.get("ok")), "setup": setup}
    if not setup.get("ok"):
        emit(out) if as_json else print_setup(setup)
        sys.exit(1)
    if not to or not opts["yes"]:
        out["liveCall"] = False
        if to:
            out["wouldCall"] = to
        note = (f"live-call: dry run for {to} (add --yes to place it)" if to else
                "live-call: skipped (pass --to and --yes to place one)")  # fmt: skip
    else:
        params = {"to": to, "message": opts["message"], "mode": opts["mode"]}
        timeout = operation_timeout_s(plugin_section(state))
        payload = rpc(state, opts, "voicecall.start", params, timeout_s=timeout)
        out.update(liveCall=True, callId=payload.get("callId"))
        note = f"live-call: started {out['callId']}"
    if as_json:
        emit(out)
        return
    print_setup(setup)
    click.echo(note)


# --- placing calls --------------------------------------------------------------------------------


def flow_options(command: F) -> F:
    command = click.option("--param", "params", multiple=True, metavar="K=V",
                           help="A param of the flow; repeatable.")(command)  # fmt: skip
    return click.option("--flow", metavar="NAME",
                        help="The named flow to run (see `voicecall flows`).")(command)  # fmt: skip


def call_params(opts: Mapping[str, Any], *, keys: tuple[str, ...]) -> dict[str, Any]:
    """The initiate/start params: `to` and `message` only when given, `mode` always."""
    params: dict[str, Any] = {k: opts[k] for k in keys if opts.get(k)}
    params["mode"] = opts["mode"]
    if opts.get("flow"):
        params["flow"] = opts["flow"]
    values: dict[str, str] = {}
    for pair in opts.get("params") or ():
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected K=V", param_hint="--param")
        values[key] = value  # typed by the Gateway against the flow's params
    if values:
        if not opts.get("flow"):
            raise click.BadParameter("needs --flow NAME", param_hint="--param")
        params["params"] = values
    return params


def place(state: Any, opts: Mapping[str, Any], method: str, params: dict[str, Any]) -> None:
    timeout = operation_timeout_s(plugin_section(state))
    if opts.get("follow"):
        from voicecall.plugin.cli_follow import place_and_follow

        where = target(state, opts)
        shown = {"to": plugin_section(state).get("toNumber"), **params}
        try:
            code = run(place_and_follow(where, method, params, timeout_s=timeout, shown=shown,
                                        as_json=bool(opts["as_json"])),
                       as_json=bool(opts["as_json"]))  # fmt: skip
        except KeyboardInterrupt:  # Ctrl-C stops the view, not the call
            click.echo("stopped following; the call goes on (`voicecall status` shows it, "
                       "`voicecall end --call-id …` hangs up)", err=True)  # fmt: skip
            code = 130
        sys.exit(code)
    payload = rpc(state, opts, method, params, timeout_s=timeout)
    call_id = payload.get("callId") if isinstance(payload, dict) else None
    if opts["as_json"]:
        emit({"callId": call_id})
        return
    to = params.get("to") or "the configured toNumber"
    click.echo(f"Calling {to} ({params.get('flow') or params['mode']}): call {call_id}")
    if params["mode"] == "conversation":
        click.echo(f'  next: voicecall continue --call-id {call_id} --message "…"')


@click.command("call")
@click.option("-m", "--message", help="Message to speak when the call connects (required "
              "unless --flow names a flow that needs none).")  # fmt: skip
@click.option("-t", "--to", metavar="PHONE",
              help="Phone number to call (E.164; default: config toNumber).")  # fmt: skip
@click.option("--mode", type=MODES, default="conversation", show_default=True,
              help="notify (hang up after the message) or conversation (stay open).")  # fmt: skip
@flow_options
@click.option("--follow", is_flag=True, help="Show the call live until it ends.")
@gateway_options
@json_option()
@click.pass_obj
@with_opts
def call_cmd(state: Any, opts: dict[str, Any]) -> None:
    """Place an outbound call (voicecall.initiate)."""
    if not opts["message"] and not opts["flow"]:
        raise click.MissingParameter(param_hint="'-m' / '--message'", param_type="option")
    place(state, opts, "voicecall.initiate", call_params(opts, keys=("message", "to")))


@click.command("start")
@click.option("--to", required=True, metavar="PHONE", help="Phone number to call.")
@click.option("--message", help="Message to speak when the call connects.")
@click.option("--mode", type=MODES, default="conversation", show_default=True,
              help="notify (hang up after the message) or conversation (stay open).")  # fmt: skip
@flow_options
@click.option("--follow", is_flag=True, help="Show the call live until it ends.")
@gateway_options
@json_option()
@click.pass_obj
@with_opts
def start_cmd(state: Any, opts: dict[str, Any]) -> None:
    """Place an outbound call to --to (voicecall.start)."""
    place(state, opts, "voicecall.start", call_params(opts, keys=("to", "message")))


# --- a call in progress ---------------------------------------------------------------------------


async def continue_call(
    where: gw.Target, params: Mapping[str, Any], *, fallback_s: float
) -> dict[str, Any]:
    """continue.start, then continue.result every second until pollTimeoutMs; a Gateway
    without the operation methods gets the blocking ``voicecall.continue``."""
    try:
        started = await gw.call(where, "voicecall.continue.start", params)
    except GatewayError as exc:
        if not gw.is_unknown_method(exc, "voicecall.continue.start"):
            raise
        result: dict[str, Any] = await gw.call(where, "voicecall.continue", params,
                                               timeout_s=fallback_s)  # fmt: skip
        return result
    return await poll_continue(where, started, fallback_s=fallback_s)


async def poll_continue(
    where: gw.Target, started: Mapping[str, Any], *, fallback_s: float
) -> dict[str, Any]:
    operation = started.get("operationId")
    if not isinstance(operation, str) or not operation:
        return dict(started)  # a Gateway that answered the turn at once
    poll_ms = started.get("pollTimeoutMs")
    budget = float(poll_ms) / 1000 if isinstance(poll_ms, int | float) else fallback_s
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    while loop.time() < deadline:
        await asyncio.sleep(POLL_S)
        payload = await gw.call(where, "voicecall.continue.result", {"operationId": operation})
        status = payload.get("status") if isinstance(payload, dict) else None
        if status == "completed":
            result: dict[str, Any] = payload.get("result") or {}
            return result
        if status == "failed":
            raise GatewayError("UNAVAILABLE", str(payload.get("error") or "continue failed"))
    raise GatewayError("UNAVAILABLE", f"continue timed out after {budget:g} s")


@click.command("continue")
@click.option("--call-id", "call_id", required=True, help="Call ID.")
@click.option("--message", required=True, help="Message to speak.")
@gateway_options
@json_option()
@click.pass_obj
@with_opts
def continue_cmd(state: Any, opts: dict[str, Any]) -> None:
    """Speak a message and wait for the caller's answer."""
    params = {"callId": opts["call_id"], "message": opts["message"]}
    fallback = continue_timeout_s(plugin_section(state))
    waiting: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if not opts["as_json"]:
        from voicecall.plugin.cli_follow import console

        waiting = console().status("waiting for the caller's answer…", spinner="dots")
    with waiting:
        result = run(continue_call(target(state, opts), params, fallback_s=fallback),
                     as_json=opts["as_json"])  # fmt: skip
    if opts["as_json"]:
        emit(result)
        return
    from voicecall.plugin.cli_follow import printable

    click.echo(f"{click.style('bot ', fg='cyan')}  {printable(opts['message'])}")
    click.echo(f"{click.style('user', fg='green')}  {printable(result.get('transcript', ''))}")


def simple(
    name: str, method: str, doc: str, *, options: list[Callable[[F], F]], done: str,
    params: Callable[[Mapping[str, Any]], dict[str, Any]],
) -> click.Command:  # fmt: skip
    """A command that sends one request and prints ``{"success": true}`` or a line."""

    def command(state: Any, opts: dict[str, Any]) -> None:
        payload = rpc(state, opts, method, params(opts))
        if opts["as_json"]:
            emit(payload)
        else:
            click.echo(done.format(**opts))

    command.__doc__ = doc
    func: Any = with_opts(command)
    decorators: list[Any] = [click.pass_obj, *options, gateway_options, json_option()]
    for decorate in decorators:
        func = decorate(func)
    return click.command(name)(func)


CALL_ID = click.option("--call-id", "call_id", required=True, help="Call ID.")
speak_cmd = simple(
    "speak",
    "voicecall.speak",
    "Speak a message without waiting for an answer.",
    options=[CALL_ID, click.option("--message", required=True, help="Message to speak.")],
    done="spoken on call {call_id}",
    params=lambda o: {"callId": o["call_id"], "message": o["message"]},
)
dtmf_cmd = simple(
    "dtmf",
    "voicecall.dtmf",
    "Send DTMF digits to an active call (w = wait).",
    options=[CALL_ID, click.option("--digits", required=True, help="DTMF digits.")],
    done="digits {digits} sent to call {call_id}",
    params=lambda o: {"callId": o["call_id"], "digits": o["digits"]},
)
end_cmd = simple(
    "end",
    "voicecall.end",
    "Hang up an active call.",
    options=[CALL_ID],
    done="call {call_id} ended",
    params=lambda o: {"callId": o["call_id"]},
)


# --- reading calls: status, tail, latency ---------------------------------------------------------


def call_log(state: Any, file: str | None) -> CallLog:
    from voicecall.runtime.app import RuntimeConfig

    if file:
        return CallLog(Path(file).expanduser())
    config = RuntimeConfig(raw=plugin_section(state), base_dir=host(state).base_dir)
    return CallLog(config.store_dir())


def provider(state: Any) -> str:
    return str(plugin_section(state).get("provider", "mock"))


def status_from_store(state: Any, call_id: str | None) -> dict[str, Any]:
    from voicecall.plugin.service import status_view

    log = call_log(state, None)
    if call_id:
        record = log.get(call_id)
        if record is None:
            return {"found": False}
        return {"found": True, "call": status_view(record, provider(state))}
    return {"found": True, "calls": [status_view(r, provider(state)) for r in log.live()]}


async def _status(where: gw.Target, call_id: str | None) -> dict[str, Any] | str:
    """The Gateway's answer, or why there is none (then the store is read)."""
    try:
        payload = await gw.call(where, "voicecall.status",
                                {"callId": call_id} if call_id else None)  # fmt: skip
    except (gw.GatewayUnreachable, gw.CredentialsMissing) as exc:
        return str(exc)
    return payload if isinstance(payload, dict) else {"found": False}


@click.command("status")
@click.option("--call-id", "call_id", help="Call ID (default: every active call).")
@gateway_options
@json_option()
@click.pass_obj
@with_opts
def status_cmd(state: Any, opts: dict[str, Any]) -> None:
    """Show the active calls, or one call (from the store when no Gateway runs)."""
    call_id, as_json = opts["call_id"], opts["as_json"]
    answer = run(_status(target(state, opts), call_id), as_json=as_json)
    if isinstance(answer, str):
        click.echo(f"note: {answer}; reading the call store", err=True)
        try:
            answer = status_from_store(state, call_id)
        except StoreError as exc:
            fail(str(exc), as_json=as_json, kind="store_error")
    if as_json:
        if call_id:  # the original prints the call itself, or {"found": false}
            emit(answer["call"] if answer.get("found") and "call" in answer else {"found": False})
        else:
            emit(answer)
        return
    from voicecall.plugin.cli_follow import status_table

    calls = [answer["call"]] if "call" in answer else answer.get("calls", [])
    if not answer.get("found") or not calls:
        click.echo(f"call {call_id} not found" if call_id else "no active calls")
        return
    status_table(calls)


@click.command("tail")
@click.option(
    "--file",
    metavar="PATH",
    help="The call store (default: the configured one), or an original calls.jsonl.",
)
@click.option("--since", type=click.IntRange(min=0), default=25, show_default=True,
              help="Show this many recent calls first.")  # fmt: skip
@click.option("--poll", "poll_ms", type=click.IntRange(min=50), default=250, show_default=True,
              help="Store polling interval in ms, when no Gateway runs.")  # fmt: skip
@gateway_options
@json_option()
@click.pass_obj
@with_opts
def tail_cmd(state: Any, opts: dict[str, Any]) -> None:
    """Follow calls as they change: live Gateway events, else the store."""
    from voicecall.plugin.cli_follow import tail, tail_jsonl

    file = Path(opts["file"]).expanduser() if opts["file"] else None
    try:
        if file is not None and is_jsonl(file):  # the original's log: its lines, as they come
            asyncio.run(tail_jsonl(file, since=opts["since"], poll_s=opts["poll_ms"] / 1000))
            return
        log = call_log(state, opts["file"])
        run(tail(target(state, opts), log, provider(state), since=opts["since"],
                 poll_s=opts["poll_ms"] / 1000, as_json=opts["as_json"]),
            as_json=opts["as_json"])  # fmt: skip
    except KeyboardInterrupt:
        pass
    except StoreError as exc:
        fail(str(exc), as_json=opts["as_json"], kind="store_error")


@click.command("latency")
@click.option(
    "--file",
    metavar="PATH",
    help="The call store (default: the configured one), or an original calls.jsonl.",
)
@click.option("--last", type=click.IntRange(min=1), default=200, show_default=True,
              help="How many recent calls to scan.")  # fmt: skip
@json_option()
@click.pass_obj
def latency_cmd(state: Any, file: str | None, last: int, as_json: bool) -> None:
    """Turn latency and listen wait (p50/p95) of recent calls, from the store."""
    try:
        if file and is_jsonl(Path(file)):  # the original's log of call snapshots
            report = jsonl_latency(Path(file).expanduser(), last)
        else:
            report = latency_report(call_log(state, file).recent(last))
    except StoreError as exc:
        fail(str(exc), as_json=as_json, kind="store_error")
    if as_json:
        emit(report)
        return
    from voicecall.plugin.cli_follow import latency_table

    latency_table(report)


COMMANDS = (setup_cmd, smoke_cmd, call_cmd, start_cmd, continue_cmd, speak_cmd, dtmf_cmd,
            end_cmd, status_cmd, tail_cmd, latency_cmd)  # fmt: skip


def register_calls_cli(group: click.Group) -> None:
    """Adds the call commands to a click group (the CLI registrar of ``register(api)``)."""
    for command in COMMANDS:
        group.add_command(command)
