"""Exposure: Tailscale serve/funnel through the `tailscale` CLI and ngrok through pyngrok, with
fake executables (tests/plugin/fake_tools.py); `voicecall expose`; a runtime whose public URL
comes from its tunnel, checked by signatures, and closed on stop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.plugin.fake_tools import alive, install, records
from tests.runtime.adapter_support import twilio_signature
from voicecall.plugin.expose import (
    ExposeError,
    NgrokTunnel,
    expose_command,
    expose_runtime,
    open_exposure,
    planned,
    stream_paths,
)
from voicecall.runtime.app import Runtime, RuntimeConfig, start_runtime

DNS = "voicebox.tail1234.ts.net"


@pytest.fixture
def tool_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    log = tmp_path / "tools.jsonl"
    monkeypatch.setenv("FAKE_TOOL_LOG", str(log))
    return log


@pytest.fixture
def fake_tailscale(tmp_path: Path, tool_log: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    install(bin_dir, "tailscale")
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return tool_log


@pytest.fixture
def fake_ngrok(tmp_path: Path, tool_log: Path) -> Path:
    folder = tmp_path / "ngrok-bin"
    folder.mkdir()
    return install(folder, "ngrok")


def tailscale_args(log: Path) -> list[list[str]]:
    return [r["args"] for r in records(log, "tailscale")]


# --- tailscale ------------------------------------------------------------------------------------


def test_what_the_config_asks_for() -> None:
    assert planned(RuntimeConfig(raw={"publicUrl": "https://x/y", "tunnel": {
        "provider": "ngrok"}})).kind == "public-url"  # fmt: skip
    assert planned(RuntimeConfig(raw={"tunnel": {"provider": "ngrok"}})).kind == "ngrok"
    funnel = planned(RuntimeConfig(raw={"tunnel": {"provider": "tailscale-funnel"},
                                        "tailscale": {"mode": "serve"}}))  # fmt: skip
    assert (funnel.mode, funnel.legacy) == ("funnel", False)
    legacy = planned(RuntimeConfig(raw={"tailscale": {"mode": "serve"}}))
    assert (legacy.kind, legacy.mode, legacy.legacy) == ("tailscale-serve", "serve", True)
    assert planned(RuntimeConfig(raw={})).kind == "none"


def test_stream_paths_follow_streaming_and_realtime() -> None:
    assert stream_paths(RuntimeConfig(raw={})) == []
    both = RuntimeConfig(raw={"streaming": {"enabled": True}, "realtime": {"enabled": True}})
    assert stream_paths(both) == ["/voice/stream", "/voice/stream/realtime"]
    custom = RuntimeConfig(raw={"serve": {"path": "/hooks/tw"}, "realtime": {"enabled": True},
                                "streaming": {"enabled": True,
                                              "streamPath": "/media"}})  # fmt: skip
    assert stream_paths(custom) == ["/media", "/hooks/tw/stream/realtime"]


async def test_expose_funnel_sets_webhook_and_stream_routes(fake_tailscale: Path) -> None:
    config = RuntimeConfig(raw={"serve": {"port": 4555}, "streaming": {"enabled": True}})
    payload = await expose_command(config, mode="funnel", path=None, port=None, serve_path=None)
    assert payload == {"ok": True, "mode": "funnel", "path": "/voice/webhook",
                       "streamPaths": ["/voice/stream"], "localUrl": "http://127.0.0.1:4555",
                       "publicUrl": f"https://{DNS}/voice/webhook"}  # fmt: skip
    assert tailscale_args(fake_tailscale) == [
        ["status", "--json"],
        ["funnel", "--bg", "--yes", "--set-path", "/voice/webhook",
         "http://127.0.0.1:4555/voice/webhook"],
        ["funnel", "--bg", "--yes", "--set-path", "/voice/stream",
         "http://127.0.0.1:4555/voice/stream"],
    ]  # fmt: skip


async def test_expose_off_removes_both_modes(fake_tailscale: Path) -> None:
    config = RuntimeConfig(raw={"tailscale": {"path": "/vc"}})
    payload = await expose_command(config, mode="off", path=None, port=None, serve_path=None)
    assert payload == {"ok": True, "mode": "off", "path": "/vc", "streamPaths": []}
    assert tailscale_args(fake_tailscale) == [["serve", "--set-path", "/vc", "off"],
                                              ["funnel", "--set-path", "/vc", "off"]]  # fmt: skip


async def test_a_refused_funnel_gives_the_hint_and_undoes_routes(
    fake_tailscale: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TS_FAIL", "funnel")
    config = RuntimeConfig(raw={})
    payload = await expose_command(config, mode="FUNNEL", path="/p", port=4000, serve_path="/w")
    assert payload["ok"] is False and payload["publicUrl"] is None
    assert payload["hint"] == {
        "note": "Tailscale serve/funnel may be disabled on this tailnet (or require admin enable).",
        "enableUrl": "https://login.tailscale.com/f/funnel?node=nFAKE123",
    }
    assert ["funnel", "--bg", "--yes", "--set-path", "/p", "http://127.0.0.1:4000/w"] in (
        tailscale_args(fake_tailscale)
    )


async def test_no_tailscale_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing there
    payload = await expose_command(RuntimeConfig(raw={}), mode="serve", path=None, port=None,
                                   serve_path=None)  # fmt: skip
    assert payload["ok"] is False
    assert payload["hint"]["note"].startswith("The tailscale CLI was not found")
    assert payload["hint"]["enableUrl"] is None


def run_expose(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "voicecall.plugin.cli_main", "--config", str(config),
               "expose", *args]  # fmt: skip
    return subprocess.run(command, check=False, capture_output=True, text=True, timeout=60)


def test_expose_command_line(
    fake_tailscale: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "openclaw.json"
    config.write_text(json.dumps({"plugins": {"entries": {"voice-call": {"config": {
        "serve": {"port": 4777}}}}}}))  # fmt: skip
    run = run_expose(config, "--mode", "serve")
    assert run.returncode == 0, run.stderr
    payload = json.loads(run.stdout)
    assert payload["publicUrl"] == f"https://{DNS}/voice/webhook"
    assert payload["localUrl"] == "http://127.0.0.1:4777"
    monkeypatch.setenv("FAKE_TS_FAIL", "serve")
    failed = run_expose(config, "--mode", "serve", "--port", "4888")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert json.loads(failed.stdout)["ok"] is False
    assert run_expose(config, "--port", "0").returncode == 2  # a usage error


# --- ngrok ----------------------------------------------------------------------------------------


async def test_ngrok_tunnel_with_token_and_domain(fake_ngrok: Path, tool_log: Path) -> None:
    tunnel = await NgrokTunnel.open(port=4321, auth_token="tok-SECRET-1", domain="calls.example",
                                    ngrok_path=str(fake_ngrok))  # fmt: skip
    try:
        assert tunnel.public_url == "https://calls.example"
        started, created = records(tool_log, "ngrok")[:2]
        assert started["args"][:4] == ["start", "--none", "--log", "stdout"]
        assert "tok-SECRET-1" not in " ".join(started["args"])  # never on a command line
        assert 'authtoken: "tok-SECRET-1"' in started["config"]
        assert started["config_mode"] == "0o600"
        assert created["body"] == {"name": "voicecall-4321", "addr": "4321", "proto": "http",
                                   "domain": "calls.example"}  # fmt: skip
    finally:
        await tunnel.close()
    assert records(tool_log, "ngrok")[-1]["api"] == "DELETE /api/tunnels/voicecall-4321"
    assert not alive(started["pid"])
    await tunnel.close()  # twice is fine


async def test_ngrok_refusal_is_one_clear_error(fake_ngrok: Path, tool_log: Path) -> None:
    with pytest.raises(ExposeError, match=r"ngrok did not start: .*ERR_NGROK_4018"):
        await NgrokTunnel.open(port=4321, auth_token=None, domain=None,
                               ngrok_path=str(fake_ngrok))  # fmt: skip


async def test_ngrok_is_never_downloaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = tmp_path / "nowhere" / "ngrok"
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("PYNGROK_NGROK_PATH", raising=False)
    with pytest.raises(ExposeError, match="never downloads"):
        await NgrokTunnel.open(port=1, auth_token="t", domain=None, ngrok_path=str(missing))
    with pytest.raises(ExposeError, match="no ngrok executable"):
        await NgrokTunnel.open(port=1, auth_token="t", domain=None)
    assert not missing.exists() and not missing.parent.exists()


async def test_ngrok_from_config_and_env(
    fake_ngrok: Path, tool_log: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYNGROK_NGROK_PATH", str(fake_ngrok))
    monkeypatch.setenv("NGROK_AUTHTOKEN", "env-token-7")
    monkeypatch.setenv("NGROK_DOMAIN", "env.example")
    exposure = await open_exposure(RuntimeConfig(raw={"tunnel": {"provider": "ngrok"}}), 5000)
    assert exposure is not None
    try:
        assert exposure.webhook_url == "https://env.example/voice/webhook"
        assert 'authtoken: "env-token-7"' in records(tool_log, "ngrok")[0]["config"]
    finally:
        await exposure.close()


# --- a runtime behind its tunnel ------------------------------------------------------------------


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[Runtime]:
    config = RuntimeConfig(raw={"provider": "twilio", "twilio": {"accountSid": "AC1",
                                "authToken": "rt-token"}, "fromNumber": "+15550001111",
                                "tunnel": {"provider": "tailscale-funnel"},
                                "streaming": {"enabled": True, "providers": {
                                    "openai": {"apiKey": "sk-stt"}}},
                                "tts": {"provider": "openai",
                                        "providers": {"openai": {"apiKey": "sk-tts"}}},
                                "store": str(tmp_path)})  # fmt: skip
    started = await start_runtime(config, port=0)
    yield started
    await started.stop()


async def test_runtime_uses_its_tunnel_url_and_closes_it(
    fake_tailscale: Path, runtime: Runtime
) -> None:
    import aiohttp

    config = RuntimeConfig(raw={"tunnel": {"provider": "tailscale-funnel"},
                                "streaming": {"enabled": True}})  # fmt: skip
    exposure = await expose_runtime(config, runtime)
    assert exposure is not None
    public = f"https://{DNS}/voice/webhook"
    assert runtime.webhook_url == public == runtime.manager.settings.webhook_base
    port = runtime.runner.addresses[0][1]
    form = {"Foo": "1"}  # no CallSid: a 400 after the signature, not a 401
    query = "?call=c1&kind=status"
    async with aiohttp.ClientSession() as http:
        for signed_for, status in (
            (public + query, 400),
            (f"http://127.0.0.1:{port}/voice/webhook{query}", 401),
        ):
            headers = {"X-Twilio-Signature": twilio_signature("rt-token", signed_for, form)}
            async with http.post(f"http://127.0.0.1:{port}/voice/webhook{query}", data=form,
                                 headers=headers) as response:  # fmt: skip
                assert response.status == status, signed_for
    targets = [a[-1] for a in tailscale_args(fake_tailscale) if a[0] == "funnel"]
    assert targets == [f"http://127.0.0.1:{port}/voice/webhook",
                       f"http://127.0.0.1:{port}/voice/stream"]  # fmt: skip
    await exposure.close()
    await exposure.close()
    offs = [a for a in tailscale_args(fake_tailscale) if a[-1] == "off"]
    assert offs == [["funnel", "--set-path", "/voice/webhook", "off"],
                    ["funnel", "--set-path", "/voice/stream", "off"]]  # fmt: skip


async def test_a_tunnel_that_fails_is_an_error(
    fake_tailscale: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_TS_FAIL", "serve")
    config = RuntimeConfig(raw={"tailscale": {"mode": "serve", "path": "/x"}})
    with pytest.raises(ExposeError, match="tailscale serve could not expose /x"):
        await open_exposure(config, 4000)
    bad_port = RuntimeConfig(raw={"tailscale": {"mode": "funnel", "port": 444}})
    with pytest.raises(ExposeError, match="Funnel only serves 443, 8443 or 10000"):
        await open_exposure(bad_port, 4000)


async def test_the_service_opens_and_closes_the_tunnel(
    fake_tailscale: Path, tmp_path: Path
) -> None:
    import logging

    from voicecall.plugin.service import VoiceCallService

    config = {"provider": "mock", "serve": {"port": 0}, "store": str(tmp_path / "store"),
              "tunnel": {"provider": "tailscale-serve"}}  # fmt: skip
    service = VoiceCallService(config, config_path=None, logger=logging.getLogger("t"),
                               emit=lambda name, payload: None)  # fmt: skip
    await service.start()
    try:
        assert service.runtime is not None
        assert service.runtime.webhook_url == f"https://{DNS}/voice/webhook"
    finally:
        await service.stop()
        await service.stop()
    assert tailscale_args(fake_tailscale)[-1] == ["serve", "--set-path", "/voice/webhook", "off"]


def test_the_gateway_opens_ngrok_and_closes_it_on_sigterm(
    fake_ngrok: Path, tool_log: Path, tmp_path: Path
) -> None:
    import signal
    import socket

    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
            return port

    secret = "ngrok-secret-4411"
    config = tmp_path / "openclaw.json"
    config.write_text(json.dumps({
        "gateway": {"port": free_port(), "auth": {"mode": "token", "token": "gw-token-1"}},
        "plugins": {"entries": {"voice-call": {"config": {
            "provider": "mock", "store": str(tmp_path / "store"), "serve": {"port": free_port()},
            "tunnel": {"provider": "ngrok", "ngrokAuthToken": secret,
                       "ngrokDomain": "voice.example.ngrok.app"}}}}},
    }))  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENCLAW_", "NGROK_"))}
    env.update(PYNGROK_NGROK_PATH=str(fake_ngrok), HOME=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "voicecall.plugin.cli_main", "gateway", "--config", str(config)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        assert ready, proc.stderr.read() if proc.stderr else "the gateway exited"
        started = records(tool_log, "ngrok")[0]
        assert alive(started["pid"])
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "https://voice.example.ngrok.app/voice/webhook" in err
    assert (
        records(tool_log, "ngrok")[-1]["api"]
        == "DELETE /api/tunnels/" + (records(tool_log, "ngrok")[1]["body"]["name"])
    )
    assert not alive(started["pid"])
    assert secret not in ready + out + err
