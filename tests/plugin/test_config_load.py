"""Loading the host config: discovery, the Gateway section, env fallbacks, tts, load rules."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from voicecall.plugin.config import ConfigError, find_config, load_config
from voicecall.plugin.config_effective import deep_merge, mode_flow

PREFIX = "plugins.entries.voice-call.config"


def host(tmp_path: Path, section: str, *, extra: str = "", name: str = "openclaw.json") -> Path:
    """A JSON5 host file; the section's first line is line 4."""
    path = tmp_path / name
    path.write_text(f"// host\n{{{extra}\n  plugins: {{entries: {{'voice-call': {{config:\n"
                    f"{section}\n  }}}}}},\n}}\n")  # fmt: skip
    return path


GATEWAY = {"OPENCLAW_GATEWAY_TOKEN": "gw"}  # a gateway to run needs its token


def errors(path: Path, env: dict[str, str] | None = None, *, to_run: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path, env=GATEWAY | (env or {}), to_run=to_run)
    return str(caught.value).replace(str(path), "F").splitlines()


# --- discovery ----------------------------------------------------------------------------------


def test_discovery_follows_openclaws_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    named, by_env = tmp_path / "named.json", tmp_path / "env.json"
    state = tmp_path / "state"
    env = {"OPENCLAW_CONFIG_PATH": str(by_env), "OPENCLAW_STATE_DIR": str(state)}
    assert find_config(named, env) == (named, True)
    assert find_config(None, env) == (by_env, False)
    assert find_config(None, {"OPENCLAW_STATE_DIR": str(state)}) == (state / "openclaw.json", False)
    home = tmp_path / "home" / ".openclaw" / "openclaw.json"
    assert find_config(None, {}) == (home, False)
    assert find_config(None, {"VOICECALL_CONFIG": str(by_env)}) == (by_env, False)  # older alias


def test_the_file_found_is_the_one_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    state = tmp_path / "state"
    state.mkdir()
    host(state, "{maxConcurrentCalls: 3}")
    assert load_config(env={"OPENCLAW_STATE_DIR": str(state)}).plugin["maxConcurrentCalls"] == 3
    by_env = host(tmp_path, "{maxConcurrentCalls: 4}", name="env.json")
    env = {"OPENCLAW_CONFIG_PATH": str(by_env), "OPENCLAW_STATE_DIR": str(state)}
    assert load_config(env=env).plugin["maxConcurrentCalls"] == 4
    named = host(tmp_path, "{maxConcurrentCalls: 5}", name="named.json")
    assert load_config(named, env=env).plugin["maxConcurrentCalls"] == 5


def test_no_file_means_built_in_defaults_unless_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    loaded = load_config(env={"OPENCLAW_STATE_DIR": str(tmp_path / "none")})
    assert not loaded.found and loaded.plugin["provider"] == "mock"
    assert loaded.plugin["store"] == f"{tmp_path / 'none'}/voice-calls"
    assert loaded.gateway.port == 18789 and loaded.gateway.auth.mode == "token"
    with pytest.raises(ConfigError, match=r"nope\.json: no such config file"):
        load_config(tmp_path / "nope.json", env={})


# --- the Gateway section ------------------------------------------------------------------------


def test_gateway_settings_come_from_the_file_and_the_environment_wins(tmp_path: Path) -> None:
    path = host(tmp_path, "{}", extra=" gateway: {port: 19001, auth: {token: 'file-tok'}},")
    loaded = load_config(path, env={})
    assert loaded.gateway.port == 19001
    assert (loaded.gateway.auth.mode, loaded.gateway.auth.token) == ("token", "file-tok")
    env = {"OPENCLAW_GATEWAY_PORT": "19002", "OPENCLAW_GATEWAY_TOKEN": "env-tok"}
    loaded = load_config(path, env=env)
    assert (loaded.gateway.port, loaded.gateway.auth.token) == (19002, "env-tok")
    assert "file-tok" not in repr(loaded) and "env-tok" not in repr(loaded)


def test_password_mode_and_none_mode(tmp_path: Path) -> None:
    path = host(tmp_path, "{}", extra=" gateway: {auth: {password: 'pw'}},")
    auth = load_config(path, env={}, to_run=True).gateway.auth
    assert (auth.mode, auth.password) == ("password", "pw")
    path = host(tmp_path, "{}", extra=" gateway: {auth: {mode: 'none'}},")
    assert load_config(path, env={}, to_run=True).gateway.auth.mode == "none"


def test_a_gateway_to_run_needs_its_modes_secret(tmp_path: Path) -> None:
    path = host(tmp_path, "{}", extra=" gateway: {port: 19001, auth: {mode: 'password'}},")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, to_run=True)
    assert str(caught.value).replace(str(path), "F").splitlines() == [
        'F:2:32: gateway.auth.password: required when gateway.auth.mode is "password" '
        "(or set OPENCLAW_GATEWAY_PASSWORD env)"
    ]
    load_config(path, env={"OPENCLAW_GATEWAY_PASSWORD": "pw"}, to_run=True)


def test_wrong_gateway_values_name_their_key_and_line(tmp_path: Path) -> None:
    path = host(tmp_path, "{}", extra="\n gateway: {port: 'x', auth: {mode: 'oauth', token: 5}},")
    assert errors(path) == [
        "F:3:18: gateway.port: 'x' is not a port number (1-65535)",
        "F:3:36: gateway.auth.mode: 'oauth' is not one of token, password, none",
        "F:3:52: gateway.auth.token: expected non-empty text",
    ]
    assert errors(host(tmp_path, "{}"), {"OPENCLAW_GATEWAY_PORT": "70000"}) == [
        "$OPENCLAW_GATEWAY_PORT: '70000' is not a port number (1-65535)"
    ]


# --- env fallbacks ------------------------------------------------------------------------------


def test_credentials_come_from_the_environment_of_the_chosen_provider_only(
    tmp_path: Path,
) -> None:
    env = {"TWILIO_ACCOUNT_SID": "AC9", "TWILIO_AUTH_TOKEN": "tw",
           "TWILIO_FROM_NUMBER": "+15550009999", "TELNYX_API_KEY": "tx",
           "NGROK_AUTHTOKEN": "ng", "NGROK_DOMAIN": "d"}  # fmt: skip
    loaded = load_config(host(tmp_path, "{provider: 'twilio', twilio: {accountSid: 'AC1'}}"),
                         env=env | GATEWAY, to_run=True)  # fmt: skip
    plugin = loaded.plugin
    assert plugin["twilio"] == {"accountSid": "AC1", "authToken": "tw"}  # the file wins
    assert plugin["fromNumber"] == "+15550009999" and "telnyx" not in plugin
    assert plugin["tunnel"]["ngrokAuthToken"] == "ng" and plugin["tunnel"]["ngrokDomain"] == "d"
    assert loaded.from_env[("twilio", "authToken")] == "TWILIO_AUTH_TOKEN"
    assert ("twilio", "accountSid") not in loaded.from_env


def test_every_channel_env_var_of_the_manifest_is_a_fallback() -> None:
    from voicecall.plugin.config import manifest
    from voicecall.plugin.config_effective import ENV_FALLBACKS

    assert [f.var for f in ENV_FALLBACKS] == manifest()["channelEnvVars"]["voice-call"]


def test_a_value_from_the_environment_is_checked_like_one_in_the_file(tmp_path: Path) -> None:
    path = host(tmp_path, "{provider: 'twilio'}")
    env = {"TWILIO_FROM_NUMBER": "5550001", "TWILIO_ACCOUNT_SID": "AC", "TWILIO_AUTH_TOKEN": "t"}
    assert errors(path, env) == [
        "$TWILIO_FROM_NUMBER: '5550001' is not an E.164 number (+ then digits); "
        "for example +15550001234"
    ]


def test_an_env_secret_reference_is_resolved(tmp_path: Path) -> None:
    section = "{provider: 'twilio', fromNumber: '+15550001234', twilio: {accountSid: 'AC1',\n" \
              "  authToken: {source: 'env', provider: 'default', id: 'MY_TOKEN'}}}"  # fmt: skip
    path = host(tmp_path, section)
    assert load_config(path, env={"MY_TOKEN": "s3"}).plugin["twilio"]["authToken"] == "s3"
    assert errors(path, to_run=True) == [
        f"F:5:14: {PREFIX}.twilio.authToken is required (or set TWILIO_AUTH_TOKEN env)"
    ]


# --- tts deep merge -----------------------------------------------------------------------------


def test_the_plugins_tts_is_deep_merged_over_messages_tts(tmp_path: Path) -> None:
    core = " messages: {tts: {provider: 'openai', providers: {openai: {voice: 'alloy', " \
           "model: 'tts-1'}}, auto: 'always'}},"  # fmt: skip
    section = "{tts: {providers: {openai: {voice: 'nova'}, eleven: {voiceId: 'v'}}, auto: null}}"
    tts = load_config(host(tmp_path, section, extra=core), env={}).plugin["tts"]
    assert tts == {"provider": "openai", "auto": None,
                   "providers": {"openai": {"voice": "nova", "model": "tts-1"},
                                 "eleven": {"voiceId": "v"}}}  # fmt: skip


def test_prototype_keys_are_plain_data_in_the_merge() -> None:
    base = {"providers": {"openai": {"voice": "alloy"}}, "constructor": {"a": 1}}
    override = json.loads('{"__proto__": {"polluted": true}, "constructor": {"b": 2},'
                          ' "providers": {"__proto__": {"voice": "x"}}}')  # fmt: skip
    merged = deep_merge(base, override)
    assert merged == {"providers": {"openai": {"voice": "alloy"}, "__proto__": {"voice": "x"}},
                      "constructor": {"a": 1, "b": 2}, "__proto__": {"polluted": True}}  # fmt: skip
    assert base == {"providers": {"openai": {"voice": "alloy"}}, "constructor": {"a": 1}}
    assert "polluted" not in merged["providers"]["openai"] and not hasattr({}, "polluted")


def test_a_messages_tts_that_is_not_an_object_is_an_error(tmp_path: Path) -> None:
    assert errors(host(tmp_path, "{}", extra=" messages: {tts: 'openai'},")) == [
        "F:2:19: messages.tts: expected an object, got text 'openai'"
    ]


# --- rules at load ------------------------------------------------------------------------------


def test_the_originals_provider_rules_are_load_errors_with_their_texts(tmp_path: Path) -> None:
    section = "  {provider: 'telnyx',\n   telnyx: {apiKey: 'k'}}"
    assert errors(host(tmp_path, section), to_run=True) == [
        f"F:4:3: {PREFIX}.fromNumber is required",
        f"F:5:12: {PREFIX}.telnyx.connectionId is required (or set TELNYX_CONNECTION_ID env)",
        f"F:5:12: {PREFIX}.telnyx.publicKey is required (or set TELNYX_PUBLIC_KEY env)",
    ]
    section = "  {provider: 'plivo', fromNumber: '+15550001234'}"
    assert errors(host(tmp_path, section), to_run=True) == [
        f"F:4:3: {PREFIX}.plivo.authId is required (or set PLIVO_AUTH_ID env)",
        f"F:4:3: {PREFIX}.plivo.authToken is required (or set PLIVO_AUTH_TOKEN env)",
    ]


def test_provider_rules_wait_for_a_run_and_skip_a_disabled_plugin(tmp_path: Path) -> None:
    assert load_config(host(tmp_path, "{provider: 'twilio'}"), env={}).plugin["enabled"]
    off = host(tmp_path, "{provider: 'twilio', enabled: false}")
    assert load_config(off, env=GATEWAY, to_run=True).plugin["enabled"] is False
    entry_off = tmp_path / "entry.json"
    entry_off.write_text('{plugins: {entries: {"voice-call": {enabled: false, config: {}}}}}')
    assert load_config(entry_off, env={}).plugin["enabled"] is False


def test_the_mode_rules_are_load_errors_with_the_originals_texts(tmp_path: Path) -> None:
    section = "  {provider: 'plivo',\n   streaming: {enabled: true},\n   realtime: {enabled: true}}"
    # Not kept: the original's "provider must be twilio" (streaming) and "twilio, telnyx or
    # mock" (realtime): our media streams speak Plivo's protocol too.
    assert errors(host(tmp_path, section)) == [
        f'F:4:3: {PREFIX}.inboundPolicy must not be "disabled" when realtime.enabled is true',
        f"F:6:24: {PREFIX}.realtime.enabled and {PREFIX}.streaming.enabled cannot both be true",
    ]


def test_schema_errors_deep_in_the_section_name_key_path_and_line(tmp_path: Path) -> None:
    section = ("  {realtime: {fastContext: {sources: ['web']}, toolz: []},\n"
               "   tailscale: {mode: 'funnel', port: 444},\n"
               "   numbers: {'+15550001234': {flow: 3, greeting: 'x'}},\n"
               "   outbound: {defaultMode: 'chat'}}")  # fmt: skip
    assert errors(host(tmp_path, section)) == [
        f"F:4:39: {PREFIX}.realtime.fastContext.sources[0]: 'web' is not one of memory, sessions",
        f"F:4:48: {PREFIX}.realtime.toolz: unknown key; did you mean 'tools'?",
        f"F:5:38: {PREFIX}.tailscale.port: Tailscale Funnel HTTPS port must be one of 443, "
        "8443, 10000",
        f"F:6:37: {PREFIX}.numbers.+15550001234.flow: expected text, got the number 3",
        f"F:6:40: {PREFIX}.numbers.+15550001234.greeting: unknown key; "
        "did you mean 'inboundGreeting'?",
        f"F:7:28: {PREFIX}.outbound.defaultMode: 'chat' is not one of notify, conversation",
    ]


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://cache:6380"])
def test_a_redis_store_is_accepted(tmp_path: Path, url: str) -> None:
    section = f"{{\n store: '{url}', redis: {{keyPrefix: 'site-a:', leaseSeconds: 5}}}}"
    plugin: dict[str, Any] = load_config(host(tmp_path, section), env=GATEWAY).plugin
    assert plugin["store"] == url and plugin["redis"]["keyPrefix"] == "site-a:"


def test_a_store_url_of_another_kind_is_refused_clearly(tmp_path: Path) -> None:
    assert errors(host(tmp_path, "{\n store: 'postgres://db/calls'}")) == [
        f"F:5:9: {PREFIX}.store: postgres:// is not a store; give a folder for the SQLite "
        "store, or a redis:// URL"
    ]


def test_flows_may_name_the_flow_of_each_mode(tmp_path: Path) -> None:
    section = "{flows: {paths: 'flows', notify: 'remind', conversation: 'chat', inbound: 'desk'}}"
    plugin: dict[str, Any] = load_config(host(tmp_path, section), env={}).plugin
    assert [mode_flow(plugin, m) for m in ("notify", "conversation", "inbound")] == [
        "remind", "chat", "desk"]  # fmt: skip
    assert plugin["inboundFlow"] == "desk"
    assert mode_flow({"flows": "flows"}, "notify") is None


def test_the_runtime_takes_the_loaded_section(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from voicecall.runtime.app import RuntimeConfig

    loaded = load_config(host(tmp_path, "{store: 'calls', serve: {port: 4000}}"), env={})
    config = RuntimeConfig(raw=loaded.plugin, base_dir=loaded.base_dir)
    assert config.store_dir() == tmp_path / "calls" and config.serve()["port"] == 4000
    monkeypatch.setenv("OPENCLAW_STATE_DIR", str(tmp_path / "state"))
    assert RuntimeConfig(raw={}).store_dir() == tmp_path / "state" / "voice-calls"


DESK = """\
version: 1
name: desk
description: Answers the front desk.
direction: inbound
start: a
nodes:
  a: [{say: Hello}, hangup]
"""


def test_a_gateway_to_run_needs_the_flows_its_config_names(tmp_path: Path) -> None:
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "desk.yaml").write_text(DESK)
    good = (
        "{flows: {paths: 'flows', notify: 'notify'},\n numbers: {'+15550001234': {flow: 'desk'}}}"
    )
    load_config(host(tmp_path, good), env=GATEWAY, to_run=True)
    section = ("{flows: {paths: ['flows', 'nope'], notify: 'inbound', conversation: 'desc'},\n"
               " numbers: {'+15550001234': {flow: 'notify'}}}")  # fmt: skip
    assert errors(host(tmp_path, section), to_run=True) == [
        f"F:4:27: {PREFIX}.flows.paths[1]: no such folder: {tmp_path / 'nope'}"]  # fmt: skip
    section = section.replace("'flows', 'nope'", "'flows'")
    assert errors(host(tmp_path, section), to_run=True) == [
        f"F:4:36: {PREFIX}.flows.notify: the flow 'inbound' only answers calls (direction: "
        "inbound)",
        f"F:4:61: {PREFIX}.flows.conversation: no flow named 'desc'; did you mean 'desk'?",
        f"F:5:35: {PREFIX}.numbers.+15550001234.flow: the flow 'notify' only places calls "
        "(direction: outbound)",
    ]
    assert load_config(host(tmp_path, section), env={}).plugin["flows"]["notify"] == "inbound"


def test_keys_of_older_configs_say_where_they_went(tmp_path: Path) -> None:
    section = "{provider: 'log', twilio: {from: '+15550001234'},\n streaming: {sttProvider: 'x'}}"
    fix = " (`openclaw doctor --fix` migrates old configs)"
    assert errors(host(tmp_path, section)) == [
        f"F:4:12: {PREFIX}.provider: 'log' is not one of telnyx, twilio, plivo, mock; "
        f"the legacy provider log is now mock{fix}",
        f"F:4:28: {PREFIX}.twilio.from: unknown key; moved to fromNumber{fix}",
        f"F:5:14: {PREFIX}.streaming.sttProvider: unknown key; moved to streaming.provider{fix}",
    ]


def test_a_secret_reference_is_a_strict_object(tmp_path: Path) -> None:
    section = "{twilio: {authToken: {source: 'vault', id: 'X', key: 1}}}"
    assert errors(host(tmp_path, section)) == [
        f"F:4:31: {PREFIX}.twilio.authToken.source: 'vault' is not one of env, file, exec",
        f"F:4:49: {PREFIX}.twilio.authToken.key: unknown key; known keys: id, provider, source",
    ]
    assert errors(host(tmp_path, "{twilio: {authToken: {source: 'file', id: '/run/x'}}}")) == [
        f"F:4:22: {PREFIX}.twilio.authToken: a secret reference with source 'file' cannot be "
        'resolved here; write the token, or {source: "env", id: "VAR"}'
    ]


def test_a_file_that_is_not_an_object_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "openclaw.json"
    path.write_text("// nothing but a list\n[1, 2]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    assert str(caught.value) == f"{path}:2:1: (the file): expected an object, got a list"


def test_a_named_profile_moves_the_default_port_as_openclaw_does(tmp_path: Path) -> None:
    path = host(tmp_path, "{}")
    port = load_config(path, env={"OPENCLAW_PROFILE": "a"}).gateway.port
    assert port == 20000 + 0xE40C292C % 40000  # FNV-1a32("a"), the published test vector
    assert load_config(path, env={"OPENCLAW_PROFILE": "dev"}).gateway.port == 19001
    env = {"OPENCLAW_PROFILE": "a", "OPENCLAW_GATEWAY_PORT": "18001"}
    assert load_config(path, env=env).gateway.port == 18001
    configured = host(tmp_path, "{}", extra=" gateway: {port: 18002},")
    assert load_config(configured, env={"OPENCLAW_PROFILE": "a"}).gateway.port == 18002


def test_a_missing_gateway_secret_hides_none_of_the_plugins_problems(tmp_path: Path) -> None:
    # `voicecall config check` lists every problem at once, not the Gateway's first.
    path = host(tmp_path, "  {provider: 'plivo', realtime: {enabled: true}}")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={}, to_run=True)
    lines = str(caught.value).replace(str(path), "F").splitlines()
    assert lines[0].startswith("F:2:1: gateway.auth.token: required")
    assert (f'F:4:3: {PREFIX}.inboundPolicy must not be "disabled" when realtime.enabled is '
            "true") in lines  # fmt: skip
