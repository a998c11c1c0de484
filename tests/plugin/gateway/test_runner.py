"""`voicecall gateway`'s host: what it refuses before serving, one line each, and its events."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from voicecall.plugin.gateway.runner import GatewayHost, run
from voicecall.plugin.gateway.server import GatewayServer, ServerSettings
from voicecall.plugin.host import PluginApi, Service

from .support import TOKEN, free_port, write_config


class Recorder:
    """A plugin whose one service records what the host did with it."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.calls: list[str] = []

    def register(self, api: PluginApi) -> None:
        api.register_service(Service(id="first", start=self._start("first"), stop=self._stop))
        api.register_service(Service(id="second", start=self._start("second"), stop=self._stop))

    def _start(self, name: str) -> Any:
        async def start() -> None:
            if self.fail and name == "second":
                raise OSError(98, "address already in use: 127.0.0.1:3334")
            self.calls.append(f"start {name}")

        return start

    async def _stop(self) -> None:
        self.calls.append("stop")


@pytest.fixture(autouse=True)
def _no_gateway_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_PASSWORD", "OPENCLAW_GATEWAY_PORT"):
        monkeypatch.delenv(var, raising=False)


def test_a_port_in_use_is_one_line_and_nothing_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = Recorder()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_config(tmp_path, {"provider": "mock"}, port=port)
        code = run(str(config), register=plugin.register)
    assert code == 1
    assert capsys.readouterr().err == (
        f"error: cannot listen on 127.0.0.1:{port} (gateway.port): the port is already in use "
        "(another gateway running?)\n"
    )
    assert plugin.calls == []


def test_a_service_that_cannot_start_is_named_and_the_others_stopped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plugin = Recorder(fail=True)
    code = run(str(write_config(tmp_path, {"provider": "mock"})), register=plugin.register)
    assert code == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot start service second: ") and err.count("\n") == 1
    assert "address already in use: 127.0.0.1:3334" in err
    assert plugin.calls == ["start first", "stop"]


def test_token_mode_needs_a_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, {"provider": "mock"}, auth={"mode": "token"})
    assert run(str(config), register=Recorder().register) == 1
    err = capsys.readouterr().err
    assert "gateway.auth.token" in err and "OPENCLAW_GATEWAY_TOKEN" in err


def test_the_plugin_section_alone_is_refused_with_where_it_belongs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "voicecall.json"
    config.write_text(json.dumps({"provider": "mock", "serve": {"port": free_port()}}))
    assert run(str(config), register=Recorder().register) == 1
    err = capsys.readouterr().err
    assert "move it under plugins.entries.voice-call.config" in err
    assert "provider, serve" in err


def test_the_host_pushes_plugin_events_to_the_server_and_its_sinks() -> None:
    host = GatewayHost()
    seen: list[tuple[str, Any]] = []
    host.sinks.append(lambda event, payload: seen.append((event, payload)))
    server = GatewayServer({}, ServerSettings())
    pushed: list[tuple[str, Any]] = []
    server.broadcast = lambda event, payload: pushed.append((event, payload))  # type: ignore[method-assign]
    host.emit("voicecall.call", {"callId": "a"})  # before the server exists: sinks only
    host.server = server
    host.emit("voicecall.call", {"callId": "b"})
    assert seen == [("voicecall.call", {"callId": "a"}), ("voicecall.call", {"callId": "b"})]
    assert pushed == [("voicecall.call", {"callId": "b"})]


def test_the_token_from_the_environment_is_enough(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", TOKEN)
    monkeypatch.setenv("VOICECALL_GATEWAY_TICK_MS", "fast")
    config = write_config(tmp_path, {"provider": "mock"}, auth={"mode": "token"})
    assert run(str(config), register=Recorder().register) == 1  # got past the token check
    assert (
        capsys.readouterr().err
        == "error: VOICECALL_GATEWAY_TICK_MS='fast': expected a whole number\n"
    )
