"""No secret of the config or the environment in anything a whole run prints.

A real `voicecall gateway` on the mock carrier, with secrets in every place the config may hold
one and in the environment; a call driven through the CLI; then everything the gateway and
every command printed (stdout, stderr, the gateway's log) is grepped for them.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

CLI = [sys.executable, "-m", "voicecall.plugin.cli_main"]
TOKEN = "gw-SECRET-run-token"
ENV = {"NGROK_AUTHTOKEN": "ngrok-SECRET-run", "TWILIO_AUTH_TOKEN": "tw-env-SECRET-run",
       "OPENAI_API_KEY": "sk-env-SECRET-run"}  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(folder: Path) -> Path:
    config = {
        "gateway": {"port": free_port(), "auth": {"mode": "token", "token": TOKEN,
                                                  "password": "gw-pw-SECRET-run"}},
        "messages": {"tts": {"providers": {"openai": {"apiKey": "sk-SECRET-run"}}}},
        "plugins": {"entries": {"voice-call": {"config": {
            "provider": "mock", "store": str(folder / "store"), "serve": {"port": free_port()},
            "twilio": {"accountSid": "AC1", "authToken": "tw-SECRET-run"},
            "plivo": {"authId": "MA1", "authToken": "pl-SECRET-run"},
            "telnyx": {"apiKey": "tx-SECRET-run", "connectionId": "c"},
            "tunnel": {"ngrokDomain": "calls.example.com"},
            "numbers": {"+15550001234": {"tts": {"providers": {
                "eleven": {"apiKey": "el-SECRET-run"}}}}},
            "streaming": {"providers": {"openai": {"apiKey": "st-SECRET-run"}}},
            "realtime": {"providers": {"google": {"apiKey": "rt-SECRET-run"}}},
        }}}},
    }  # fmt: skip
    path = folder / "openclaw.json"
    path.write_text(json.dumps(config, indent=2))
    return path


def start(config: Path, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """The gateway, its stderr in ``log``; fresh ports if another process took one."""
    for _ in range(5):
        with log.open("w") as err:
            proc = subprocess.Popen([*CLI, "gateway", "--config", str(config)], text=True,
                                    stdout=subprocess.PIPE, stderr=err, env=env)  # fmt: skip
        assert proc.stdout is not None
        if proc.stdout.readline():  # one JSON line once it serves
            return proc
        proc.wait()
        assert "already in use" in log.read_text(), log.read_text()
        data = json.loads(config.read_text())
        data["gateway"]["port"] = free_port()
        data["plugins"]["entries"]["voice-call"]["config"]["serve"]["port"] = free_port()
        config.write_text(json.dumps(data))
    raise AssertionError("no free ports for the gateway")


def test_a_whole_run_prints_no_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "VOICECALL_"))}
    env |= {"HOME": str(tmp_path), "NO_COLOR": "1"} | ENV
    config = write_config(tmp_path)
    log = tmp_path / "gateway.log"
    printed: list[str] = []

    def cli(*args: str) -> Any:
        result = subprocess.run([*CLI, "--config", str(config), *args], capture_output=True,
                                text=True, env=env, check=False)  # fmt: skip
        printed.append(result.stdout + result.stderr)
        assert result.returncode == 0, result.stdout + result.stderr
        return json.loads(result.stdout) if "--json" in args else result.stdout

    proc = start(config, env, log)
    try:
        call_id = cli("start", "--to", "+15550001234", "--message", "Hello", "--json")["callId"]
        cli("continue", "--call-id", call_id, "--message", "How are you?", "--json")
        cli("speak", "--call-id", call_id, "--message", "One moment.")
        cli("status")
        cli("status", "--call-id", call_id, "--json")
        cli("end", "--call-id", call_id, "--json")
        cli("config", "show")
        cli("config", "show", "--json")
        cli("setup", "--json")
        cli("latency")
    finally:
        proc.terminate()
        out, _ = proc.communicate()
        printed.append(out)
    printed.append(log.read_text())
    everything = "\n".join(printed)
    assert "placed to" in everything  # the gateway did log the call
    for secret in [TOKEN, *ENV.values()]:
        assert secret not in everything
    assert "SECRET" not in everything, [line for line in everything.splitlines()
                                        if "SECRET" in line]  # fmt: skip
