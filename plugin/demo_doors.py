"""`make demo`, part 1: the doors, as a user types them, on the mock carrier (no keys, offline).

A config file in a temporary folder (gateway port and token, provider mock, the store), then
``voicecall gateway`` in the background, ``voicecall call --follow`` (its live view relayed as
it happens), ``voicecall continue`` twice (the mock carrier's patient callee answers),
``voicecall end``, ``voicecall status`` and ``voicecall latency``; the gateway is stopped with
SIGTERM and must exit 0. Every command is a real process talking protocol 4 to the gateway.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import click

from voicecall.plugin.output import no_color

CLI = [sys.executable, "-m", "voicecall.plugin.cli_main"]
CALLEE = "+15550002222"
WAIT_S = 30.0  # a bound on every wait: the demo never hangs
QUESTIONS = ("Your check-up is due. Could you come on Thursday at ten?",
             "Great. Anything we should know before your visit?")  # fmt: skip
CALL_ID = re.compile(r"call ([0-9a-f-]{36})")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(folder: Path) -> Path:
    """The OpenClaw config file of the demo: the gateway's port and token, the mock carrier."""
    config = {
        "gateway": {"port": free_port(), "auth": {"mode": "token",
                                                   "token": secrets.token_urlsafe(16)}},
        "plugins": {"entries": {"voice-call": {"config": {
            "provider": "mock", "store": str(folder / "voice-calls"), "toNumber": CALLEE,
            "serve": {"port": free_port()}}}}},
    }  # fmt: skip
    path = folder / "openclaw.json"
    path.write_text(json.dumps(config, indent=2))
    return path


@dataclass
class Doors:
    """The demo's state: the config, the child processes and what was seen."""

    config: Path
    env: dict[str, str]
    lock: threading.Lock = field(default_factory=threading.Lock)
    call_id: str = ""
    heard: threading.Event = field(default_factory=threading.Event)  # the greeting was said
    lines: int = 0  # transcript lines the live view showed
    ok: list[tuple[str, bool]] = field(default_factory=list)

    def say(self, text: str = "", **style: Any) -> None:
        with self.lock:
            click.secho(text, **style)

    def shown(self, args: list[str]) -> str:
        return "$ voicecall " + " ".join(shlex.quote(a) for a in args)

    def run(self, *args: str, check: str) -> subprocess.CompletedProcess[str]:
        """Runs one command, shows it and its output; records whether it did its job."""
        self.say(self.shown(list(args)), bold=True)
        result = subprocess.run([*CLI, "--config", str(self.config), *args], text=True,
                                capture_output=True, env=self.env, timeout=WAIT_S * 4,
                                check=False)  # fmt: skip
        for line in (result.stdout + result.stderr).rstrip().splitlines():
            self.say(f"  {line}")
        self.ok.append((check, result.returncode == 0))
        return result


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "VOICECALL_"))}
    if sys.stdout.isatty() and not no_color():
        env["FORCE_COLOR"] = "1"  # the children's output is relayed to a terminal
        env.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))
    return env


def start_gateway(doors: Doors) -> subprocess.Popen[str]:
    doors.say(f"$ voicecall gateway --config {doors.config.name} &", bold=True)
    for _ in range(5):  # a port picked free may be taken before the gateway binds it
        proc = subprocess.Popen([*CLI, "gateway", "--config", str(doors.config)], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=doors.env)  # fmt: skip
        ready = _readline(proc.stdout)
        if ready:
            doors.say(f"  {ready.strip()}")
            # The log goes on while the demo runs: drained so the gateway never blocks on it.
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # type: ignore[union-attr]
            return proc
        proc.kill()
        error = proc.communicate()[1]
        if "already in use" not in error:
            raise click.ClickException(f"the gateway did not start: {error.strip()}")
        write_config(doors.config.parent)
    raise click.ClickException("the gateway did not start: no free port")


def _readline(stream: IO[str] | None) -> str:
    box: list[str] = []
    reader = threading.Thread(target=lambda: box.append(stream.readline() if stream else ""),
                              daemon=True)  # fmt: skip
    reader.start()
    reader.join(WAIT_S)
    return box[0] if box else ""


def follow(doors: Doors) -> subprocess.Popen[str]:
    """`voicecall call --follow` in the background, its live view relayed line by line."""
    args = ["call", "-m", "Hello, this is the dental clinic's assistant.", "--follow"]
    doors.say(doors.shown(args) + " &", bold=True)
    proc = subprocess.Popen([*CLI, "--config", str(doors.config), *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=doors.env)  # fmt: skip
    threading.Thread(target=_relay, args=(doors, proc), daemon=True).start()
    return proc


def _relay(doors: Doors, proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        plain = click.unstyle(line)
        found = CALL_ID.search(plain)
        if found and not doors.call_id:
            doors.call_id = found.group(1)
        if re.search(r"\b(bot|user)\b", plain) and not plain.lstrip().startswith("Calling"):
            doors.lines += 1
            doors.heard.set()
        doors.say(click.style("  │ ", fg="magenta") + line.rstrip("\n"))


def converse(doors: Doors) -> None:
    if not doors.heard.wait(WAIT_S) or not doors.call_id:
        doors.ok.append(("the call was answered and greeted", False))
        return
    for question in QUESTIONS:
        time.sleep(0.3)  # let the live view print before the next command
        doors.run("continue", "--call-id", doors.call_id, "--message", question,
                  check="continue")  # fmt: skip
    doors.run("end", "--call-id", doors.call_id, check="end")


def stop(proc: subprocess.Popen[str], doors: Doors, what: str) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(WAIT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        doors.ok.append((f"{what} stopped in time", False))
        return proc.wait()


def run_doors(folder: Path) -> tuple[bool, str]:
    """Part 1 of the demo; returns whether every step did its job, and a one-line summary."""
    doors = Doors(config=write_config(folder), env=child_env())
    doors.say("# config: a gateway token, provider mock, the store in a temporary folder", dim=True)
    gateway = start_gateway(doors)
    try:
        watcher = follow(doors)
        converse(doors)
        try:
            code = watcher.wait(WAIT_S)
        except subprocess.TimeoutExpired:
            code = stop(watcher, doors, "call --follow")
        time.sleep(0.1)  # the relay thread prints the last lines
        doors.ok.append(("call --follow saw the call end", code == 0))
        doors.run("status", "--call-id", doors.call_id or "-", check="status")
        doors.run("status", check="status (no call left)")
        doors.run("latency", check="latency")
    finally:
        drained = stop(gateway, doors, "the gateway")
    doors.say(f"$ kill -TERM <gateway>   # drains, exit {drained}", bold=True)
    doors.ok.append(("the gateway drained and exited 0", drained == 0))
    failed = [name for name, ok in doors.ok if not ok]
    turns = f"{doors.lines} transcript lines live"
    summary = (f"gateway, call --follow ({turns}), continue x{len(QUESTIONS)}, end, status, "
               "latency: all worked" if not failed else "failed: " + ", ".join(failed))  # fmt: skip
    return not failed, summary
