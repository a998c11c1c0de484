"""Operations from the plugin's side: JSON log lines that name their call, secrets hidden in
both formats, `voicecall gateway --log-format`, readiness following the service, and
`serve.metrics.allowFrom` in the config."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from tests.plugin.service_support import running
from voicecall.plugin import service as service_module
from voicecall.plugin.config import ConfigError, load_config
from voicecall.plugin.expose import expose_runtime
from voicecall.plugin.gateway import runner
from voicecall.plugin.gateway.runner import gateway_cmd, hide_secrets
from voicecall.runtime.logs import MASK, Redactor, configure, make_handler
from voicecall.runtime.ops import ops_of
from voicecall.runtime.sim.script import AgentStep, Script, Step
from voicecall.runtime.sim.simulate import Simulator

SECRET = "sk-test-0123456789abcdef"


@pytest.fixture
def lines() -> Iterator[tuple[io.StringIO, Redactor]]:
    """The runtime's lines as `voicecall gateway --log-format json` writes them."""
    out = io.StringIO()
    handler, redactor = make_handler("json", out)
    logger = logging.getLogger("voicecall")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield out, redactor
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


async def test_json_lines_parse_and_name_the_call(lines: tuple[io.StringIO, Redactor]) -> None:
    out, _ = lines
    script = Script(caller=(Step(action="answer"), Step(action="press", value="1")),
                    agent=(AgentStep(action="end"),), model=())  # fmt: skip
    async with Simulator("telnyx") as sim:
        result = await sim.call("appointment-reminder", script=script,
                                params={"patient": "Ann", "when": "today"})  # fmt: skip
    assert result.record is not None
    records = [json.loads(line) for line in out.getvalue().splitlines()]
    assert records, "the call logged nothing"
    for record in records:
        assert {"time", "level", "logger", "message"} <= set(record)
        assert record["time"].endswith("Z")
    about = [r for r in records if r.get("call_id") == result.record.call_id]
    assert about, records
    ended = [r for r in about if "ended" in r["message"]]
    assert ended
    assert ended[0]["provider"] == "telnyx"  # logged while its webhook was handled
    # The block the webhook was about (Telnyx names it in client_state), in the flow's file.
    assert re.fullmatch(r".*appointment-reminder\.yaml:\d+", ended[0]["flow"]), ended[0]


def test_a_named_call_and_an_explicit_one(lines: tuple[io.StringIO, Redactor]) -> None:
    out, _ = lines
    log = logging.getLogger("voicecall.test")
    log.info("call %s: something happened", "c-1")
    log.info("plain line", extra={"call_id": "c-2", "flow": "flows/x.yaml:14"})
    log.info("about nothing")
    first, second, third = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["call_id"] == "c-1"
    assert first["message"] == "call c-1: something happened"
    assert (second["call_id"], second["flow"]) == ("c-2", "flows/x.yaml:14")
    assert "call_id" not in third


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_secret_never_reaches_a_line(log_format: str) -> None:
    out = io.StringIO()
    handler, _ = make_handler(log_format, out, secrets=[SECRET, "abc"])
    logger = logging.getLogger("voicecall.test.secrets")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("header Authorization: Bearer %s", SECRET)
        logger.warning(f"inline {SECRET}")
        try:
            raise RuntimeError(f"the service said no to {SECRET}")
        except RuntimeError:
            logger.exception("failed with key=%r", {"apiKey": SECRET})
        logging.getLogger("voicecall.test.secrets.child").error("child %s", SECRET)
        logger.info("abc is too short to be masked")
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    text = out.getvalue()
    assert SECRET not in text
    assert text.count(MASK) >= 5  # message, argument, exception, repr, a child logger's
    assert "abc is too short" in text  # a value that short would mask ordinary words
    if log_format == "json":
        assert all(json.loads(line) for line in text.splitlines() if line.startswith("{"))


def test_configure_installs_one_json_handler_on_a_bare_root() -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    voicecall_level = logging.getLogger("voicecall").level
    out = io.StringIO()
    try:
        for handler in saved:
            root.removeHandler(handler)
        redactor = configure("json", stream=out)
        redactor.update([SECRET])
        logging.getLogger("voicecall.test").info("key %s", SECRET)
        logging.getLogger("some.library").info("not shown: libraries from WARNING")
        again = configure("text", stream=io.StringIO())  # a host's own setup is kept
        assert len(root.handlers) == 1
        assert again is not redactor
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("voicecall").setLevel(voicecall_level)
    (line,) = out.getvalue().splitlines()
    assert json.loads(line)["message"] == f"key {MASK}"


def test_the_config_secrets_are_hidden(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "openclaw.json"
    section = {"provider": "twilio", "fromNumber": "+15550000000",
               "twilio": {"accountSid": "AC0123", "authToken": "tw-token-98765"},
               "tts": {"provider": "openai",
                       "providers": {"openai": {"apiKey": SECRET}}},
               "store": "redis://voice:redis-pw-5150@10.0.0.5:6379/0"}  # fmt: skip
    config.write_text(json.dumps({"plugins": {"entries": {"voice-call": {"config": section}}},
                                  "gateway": {"auth": {"token": "gw-token-4242"}}}))  # fmt: skip
    redactor = Redactor()
    monkeypatch.setattr(runner, "_REDACTOR", redactor)
    hide_secrets(load_config(str(config), env={}))
    assert {"tw-token-98765", SECRET, "gw-token-4242", "redis-pw-5150"} <= set(redactor.secrets)
    assert "AC0123" not in redactor.secrets  # an account id is no secret
    assert redactor.hide(f"x tw-token-98765 {SECRET}") == f"x {MASK} {MASK}"


def test_the_gateway_takes_a_log_format() -> None:
    help_text = CliRunner().invoke(gateway_cmd, ["--help"]).output
    assert "--log-format [text|json]" in help_text
    refused = CliRunner().invoke(gateway_cmd, ["--log-format", "xml"])
    assert refused.exit_code == 2
    assert "xml" in refused.output


async def test_ready_follows_the_service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    while_exposing: list[str] = []
    expose = expose_runtime  # what the service calls

    async def watched(config: Any, runtime: Any) -> Any:
        ops = ops_of(runtime.runner.app)
        assert ops is not None
        while_exposing.append(ops.not_ready())
        return await expose(config, runtime)

    monkeypatch.setattr(service_module, "expose_runtime", watched)
    async with running(tmp_path) as (service, _):
        assert while_exposing == ["not ready: the runtime is starting"]  # not before exposed
        assert service.runtime is not None
        app = service.runtime.runner.app
        port = service.runtime.runner.addresses[0][1]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as response:
                assert (response.status, await response.text()) == (200, "ready\n")
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
        ops = ops_of(app)
        assert ops is not None
    assert ops.state == "draining"
    assert ops.not_ready() == "not ready: the runtime is draining"


def _config(tmp_path: Path, serve: dict[str, Any]) -> Path:
    path = tmp_path / "openclaw.json"
    section = {"provider": "mock", "serve": serve}
    path.write_text(json.dumps({"plugins": {"entries": {"voice-call": {"config": section}}}}))
    return path


def test_allow_from_defaults_to_loopback_and_takes_networks(tmp_path: Path) -> None:
    plain = load_config(str(_config(tmp_path, {})), env={})
    assert plain.plugin["serve"]["metrics"] == {"allowFrom": ["127.0.0.0/8", "::1/128"]}
    wide = load_config(str(_config(tmp_path, {"metrics": {"allowFrom": ["10.0.0.0/8"]}})), env={})
    assert wide.plugin["serve"]["metrics"]["allowFrom"] == ["10.0.0.0/8"]


def test_a_bad_allow_from_entry_is_a_load_error(tmp_path: Path) -> None:
    path = _config(tmp_path, {"metrics": {"allowFrom": ["10.0.0.0/8", "10.0.0/33x"]}})
    with pytest.raises(ConfigError) as caught:
        load_config(str(path), env={})
    (line,) = str(caught.value).splitlines()
    assert line.startswith(f"{path}:1:")
    assert ("plugins.entries.voice-call.config.serve.metrics.allowFrom[1]: '10.0.0/33x' is not "
            "an address or a CIDR network") in line  # fmt: skip
    with pytest.raises(ConfigError, match=r"allowFrom: \[\] is not allowed here"):  # minItems
        load_config(str(_config(tmp_path, {"metrics": {"allowFrom": []}})), env={})
