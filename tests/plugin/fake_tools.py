"""Fake `tailscale` and `ngrok` executables for the exposure tests (no network, no downloads).

Each is a small Python script written into a test's folder, run by this interpreter. It records
every invocation (one JSON line) in the file named by ``$FAKE_TOOL_LOG`` and answers as the
real tool does, as far as voicecall and pyngrok read it:

- ``tailscale status --json`` prints a status with ``Self.DNSName`` (trailing dot) and ``ID``;
  ``tailscale serve|funnel …`` exits 0, or 1 with a message on stderr when ``$FAKE_TS_FAIL``
  names that mode.
- ``ngrok start --none --log stdout --config F`` prints the agent's logfmt lines ("starting web
  service" with the API address, "client session established", "tunnel session started") and
  serves the agent API: ``GET/POST /api/tunnels``, ``DELETE /api/tunnels/<name>``. Without an
  ``authtoken`` in its config file it fails as ngrok does (ERR_NGROK_4018) and exits 1.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

TAILSCALE = r"""
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_TOOL_LOG"], "a") as log:
    log.write(json.dumps({"tool": "tailscale", "args": args}) + "\n")
if args[:2] == ["status", "--json"]:
    print(json.dumps({"BackendState": "Running",
                      "Self": {"ID": "nFAKE123", "DNSName": "voicebox.tail1234.ts.net.",
                               "HostName": "voicebox"}}))
    sys.exit(0)
if args and args[0] in ("serve", "funnel"):
    if os.environ.get("FAKE_TS_FAIL") == args[0]:
        sys.stderr.write("Funnel is not enabled on your tailnet.\n")
        sys.exit(1)
    sys.exit(0)
sys.stderr.write("unknown command\n")
sys.exit(2)
"""

NGROK = r"""
import json, os, sys, threading, time, uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

args = sys.argv[1:]
log_path = os.environ["FAKE_TOOL_LOG"]

def record(entry):
    with open(log_path, "a") as log:
        log.write(json.dumps({"tool": "ngrok", **entry}) + "\n")

config_path = args[args.index("--config") + 1] if "--config" in args else ""
config_text = open(config_path).read() if config_path else ""
mode = oct(os.stat(config_path).st_mode & 0o777) if config_path else ""
record({"args": args, "config": config_text, "config_mode": mode, "pid": os.getpid()})

def line(lvl, msg, **kw):
    t = time.strftime("%Y-%m-%dT%H:%M:%S+0000", time.gmtime())
    extra = " ".join(f'{k}={json.dumps(v) if " " in str(v) else v}' for k, v in kw.items())
    print(f't={t} lvl={lvl} msg="{msg}" {extra}'.rstrip(), flush=True)

if "authtoken:" not in config_text and "--authtoken" not in args:
    line("info", "open config file", path=config_path, err="nil")
    line("eror", "session closing", obj="tunnels.session",
         err="authentication failed: Usage of ngrok requires a verified account and "
             "authtoken. ERR_NGROK_4018")
    line("crit", "command failed", err="authentication failed: ERR_NGROK_4018")
    sys.exit(1)

tunnels = {}

class Api(BaseHTTPRequestHandler):
    def log_message(self, *a):
        pass

    def reply(self, code, body=None):
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/api/tunnels":
            self.reply(200, {"tunnels": list(tunnels.values()), "uri": "/api/tunnels"})
        else:
            self.reply(404, {"error_code": 100, "msg": "not found"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        record({"api": "POST /api/tunnels", "body": body})
        name = body["name"]
        host = body.get("domain") or (uuid.uuid4().hex[:12] + ".ngrok-free.app")
        tunnels[name] = {"name": name, "ID": uuid.uuid4().hex, "uri": "/api/tunnels/" + name,
                         "public_url": "https://" + host, "proto": "https",
                         "config": {"addr": "http://localhost:" + body["addr"], "inspect": True},
                         "metrics": {}}
        self.reply(201, tunnels[name])

    def do_DELETE(self):
        record({"api": "DELETE " + self.path})
        tunnels.pop(self.path.rsplit("/", 1)[-1], None)
        self.reply(204)

server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]
line("info", "no configuration paths supplied")
line("info", "starting web service", obj="web", addr=f"127.0.0.1:{port}", allow_hosts="[]")
line("info", "client session established", obj="tunnels.session")
line("info", "tunnel session started", obj="tunnels.session")
while True:
    time.sleep(3600)
"""


def install(folder: Path, name: str) -> Path:
    """Writes the fake ``name`` ("tailscale" or "ngrok") into ``folder``, executable."""
    source = {"tailscale": TAILSCALE, "ngrok": NGROK}[name]
    path = folder / name
    path.write_text(f"#!{sys.executable}\n{source}", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def records(log: Path, tool: str | None = None) -> list[dict[str, Any]]:
    """What the fakes recorded, in order."""
    if not log.exists():
        return []
    out = [json.loads(line) for line in log.read_text("utf-8").splitlines() if line]
    return [r for r in out if tool is None or r["tool"] == tool]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
