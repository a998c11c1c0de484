"""Assembling a runtime: store, carrier adapter (or the mock carrier), manager, webhook server.

:func:`start_runtime` is what the Gateway host, `voicecall simulate`, the demo and the tests use.
With ``provider: mock`` it starts the mock carrier in-process, speaking the wire format of
``mock_backend`` (twilio by default), and points the real adapter at it: every webhook still
goes through signature checks, the replay check and the real server on loopback.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from aiohttp import web

from voicecall.dsl import model as m
from voicecall.dsl.catalog import Catalog
from voicecall.dsl.checks import CONFIG_KEYS
from voicecall.dsl.validate import load_valid_flow
from voicecall.dsl.values import zone
from voicecall.runtime.clock import Clock, RealClock
from voicecall.runtime.forwarding import ForwardingTrust, is_loopback
from voicecall.runtime.manager import CallManager, ManagerSettings, Responder
from voicecall.runtime.manager.core import ModelReply
from voicecall.runtime.media.streams import PROTOCOLS, StreamEndpoint, StreamSettings
from voicecall.runtime.ops import LOOPBACK, Network, networks, ops_of
from voicecall.runtime.providers.base import AdapterSettings
from voicecall.runtime.providers.registry import get_adapter
from voicecall.runtime.server import GuardedSite, ServerSettings, make_app
from voicecall.runtime.state import CallRecord
from voicecall.runtime.store import SQLiteStore, Store
from voicecall.runtime.store.redis import RedisStore
from voicecall.runtime.voice.conversation import CallStreams, VoiceServices
from voicecall.runtime.voice.responder import responder_from_config

log = logging.getLogger("voicecall.runtime")

DEFAULT_STORE = Path("~/.openclaw/voice-calls")
MOCK_FROM = "+15550000000"
ENV_CREDENTIALS = {
    "twilio": {"accountSid": "TWILIO_ACCOUNT_SID", "authToken": "TWILIO_AUTH_TOKEN"},
    "plivo": {"authId": "PLIVO_AUTH_ID", "authToken": "PLIVO_AUTH_TOKEN"},
    "telnyx": {"apiKey": "TELNYX_API_KEY", "connectionId": "TELNYX_CONNECTION_ID",
               "publicKey": "TELNYX_PUBLIC_KEY"},
}  # fmt: skip


class CatalogFlows:
    """Named flows for the manager: the bundled set and the configured folders."""

    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self._flows: dict[str, m.Flow] = {}

    def flow(self, name: str) -> m.Flow:
        if name not in self._flows:
            path = self.catalog.resolve(name)
            self._flows[name] = load_valid_flow(path, self.catalog.infos())
        return self._flows[name]

    def flows(self) -> dict[str, m.Flow]:
        return {e.name: e.flow for e in self.catalog if e.ok}


class ScriptedResponder:
    """The model's replies from a caller script (simulations), one per caller turn."""

    def __init__(self, replies: Sequence[str | ModelReply]):
        self.replies = list(replies)

    async def reply(
        self, call: CallRecord, heard: str, options: Mapping[str, Any]
    ) -> str | ModelReply:
        return self.replies.pop(0) if self.replies else ""


@dataclass(slots=True, kw_only=True)
class RuntimeConfig:
    """The plugin config keys the runtime reads (names as in the original plugin).

    ``raw`` is the plugin's effective section as ``plugin.config.load_config`` returns it
    (``HostConfig.plugin``: validated, defaults filled, credentials from the environment, tts
    merged); ``base_dir`` is ``HostConfig.base_dir``. A bare mapping works too (tests).
    """

    raw: Mapping[str, Any] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)

    def get(self, key: str, default: Any = None) -> Any:
        return self.raw.get(key, default)

    @property
    def provider(self) -> str:
        return str(self.get("provider", "mock"))

    def credentials(self, provider: str) -> dict[str, str]:
        section = self.get(provider, {}) or {}
        env = ENV_CREDENTIALS.get(provider, {})
        found = {k: str(section.get(k) or os.environ.get(var, "")) for k, var in env.items()}
        if provider == "twilio" and section.get("region"):
            found["region"] = str(section["region"])  # us1, ie1, au1: Twilio's regional hosts
        return found

    def api_base(self, provider: str) -> str | None:
        """`<provider>.apiBaseUrl`: another REST base, for tests against a fake carrier.

        Loopback only, so that credentials never go to a host other than the carrier's.
        """
        base = (self.get(provider, {}) or {}).get("apiBaseUrl")
        if base is None:
            return None
        host = urlsplit(str(base)).hostname or ""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError(f"{provider}.apiBaseUrl must be a loopback address, not {host!r}")
        return str(base).rstrip("/")

    def store_dir(self) -> Path:
        # Expand `~` first: joined to base_dir first, `~/x` would become a folder named `~`.
        state = os.environ.get("OPENCLAW_STATE_DIR")  # as the loader's default store
        default = Path(state) / "voice-calls" if state else DEFAULT_STORE
        return self.base_dir / Path(str(self.get("store") or default)).expanduser()

    def event_retention_s(self) -> float:
        """`eventRetentionHours`: how long processed-event keys (and rejected ids) are kept."""
        return float(self.get("eventRetentionHours", 72)) * 3600

    def redis_url(self) -> str | None:
        """`store` when it is a redis:// (rediss://) URL: several gateways share that store."""
        store = str(self.get("store") or "")
        return store if store.split("://", 1)[0].lower() in ("redis", "rediss") else None

    def redis(self) -> dict[str, Any]:
        """`redis.*`: the key prefix, the lease, and this process's own URL (for streams)."""
        section = dict(self.get("redis", {}) or {})
        node_url = os.environ.get("VOICECALL_NODE_URL") or section.get("nodeUrl")
        return {"prefix": str(section.get("keyPrefix") or "voicecall:"),
                "lease_s": float(section.get("leaseSeconds") or 10),
                "ended_kept_s": float(section.get("keepEndedHours", 168)) * 3600,
                "node_url": str(node_url) if node_url else None}  # fmt: skip

    def serve(self) -> dict[str, Any]:
        serve = dict(self.get("serve", {}) or {})
        return {"port": int(serve.get("port", 3334)), "bind": str(serve.get("bind", "127.0.0.1")),
                "path": str(serve.get("path", "/voice/webhook")),
                # Behind a tunnel or proxy all carrier traffic comes from one address.
                "max_in_flight": int(serve.get("maxInFlightPerIp", 8))}  # fmt: skip

    def webhook_limits(self) -> dict[str, Any]:
        """`serve.*` limits of the webhook server, as ServerSettings fields (defaults there)."""
        serve = dict(self.get("serve", {}) or {})
        keys = {"maxBodyBytes": ("max_body", 1), "bodyTimeoutMs": ("read_timeout_s", 1000),
                "headerTimeoutMs": ("header_timeout_s", 1000),
                "keepAliveTimeoutMs": ("keepalive_timeout_s", 1000),
                "maxConnections": ("max_connections", 1)}  # fmt: skip
        return {field: (int(serve[key]) if unit == 1 else float(serve[key]) / unit)
                for key, (field, unit) in keys.items() if serve.get(key) is not None}  # fmt: skip

    def ops_allow_from(self) -> tuple[Network, ...]:
        """`serve.metrics.allowFrom`: who may read /metrics, /healthz, /readyz (loopback)."""
        section = dict(dict(self.get("serve", {}) or {}).get("metrics") or {})
        return networks(section.get("allowFrom") or LOOPBACK)

    def forwarding(self) -> ForwardingTrust:
        """`webhookSecurity`, and the ngrok free-tier rule where it is effective: tunnel.provider
        ngrok and a loopback serve.bind (it only widens how the signed URL is rebuilt)."""
        security = dict(self.get("webhookSecurity", {}) or {})
        tunnel = dict(self.get("tunnel", {}) or {})
        ngrok_loopback = (
            bool(tunnel.get("allowNgrokFreeTierLoopbackBypass", False))
            and tunnel.get("provider") == "ngrok"
            and (self.serve()["bind"] == "localhost" or is_loopback(self.serve()["bind"]))
        )
        return ForwardingTrust.of(
            allowed_hosts=[str(h) for h in security.get("allowedHosts", []) or []],
            trust_forwarding_headers=bool(security.get("trustForwardingHeaders", False)),
            trusted_proxy_ips=[str(ip) for ip in security.get("trustedProxyIPs", []) or []],
            ngrok_loopback=ngrok_loopback,
        )

    def streaming(self) -> StreamSettings | None:
        """`streaming.*` limits of the media-stream endpoint; None when neither streaming nor
        realtime is on or configured (realtime calls use the same endpoint)."""
        section = dict(self.get("streaming", {}) or {})
        realtime = dict(self.get("realtime") or {})
        # A realtime conversation needs the endpoint too: realtime.enabled, or a flow's
        # `driver: realtime` with the realtime service configured.
        configured = "apiKey" in dict(dict(realtime.get("providers") or {}).get(_OPENAI) or {})
        if not (section.get("enabled", False) or realtime.get("enabled", False) or configured):
            return None
        path = str(section.get("streamPath", "/voice/stream"))
        key = "streaming.streamPath"
        if not section.get("enabled", False) and realtime.get("enabled") and realtime.get(
                "streamPath"):  # fmt: skip
            # Realtime alone: its streams come where the original (and exposure) put them.
            path, key = str(realtime["streamPath"]), "realtime.streamPath"
        if path == self.serve()["path"]:
            raise ValueError(f"{key}: {path} is serve.path; streams need their own")
        keys = {"preStartTimeoutMs": "pre_start_timeout_s", "maxConnections": "max_connections",
                "maxPendingConnections": "max_pending",
                "maxPendingConnectionsPerIp": "max_pending_per_ip"}  # fmt: skip
        found = {f: section[k] for k, f in keys.items() if section.get(k) is not None}
        if "pre_start_timeout_s" in found:
            found["pre_start_timeout_s"] = float(found["pre_start_timeout_s"]) / 1000
        return StreamSettings(path=path, **{k: v if k.endswith("_s") else int(v)
                                            for k, v in found.items()})  # fmt: skip

    def allow_plivo_v2(self) -> bool:
        """`plivo.allowV2Signatures` (unsafe: V2 signs neither the body nor the query)."""
        return bool((self.get("plivo", {}) or {}).get("allowV2Signatures", False))

    def template_view(self) -> dict[str, Any]:
        """What flows may read as ``config.*``: the non-secret keys only, all present."""
        return {key: self.raw.get(key) for key in sorted(CONFIG_KEYS)}


@dataclass(slots=True, kw_only=True)
class Runtime:
    manager: CallManager
    store: Store
    runner: web.AppRunner
    webhook_url: str
    carrier: Any = None  # the MockCarrier, with provider: mock
    streams: StreamEndpoint | None = None  # with streaming.enabled
    conversations: CallStreams | None = None  # the conversations on those streams

    @property
    def sqlite(self) -> SQLiteStore:
        """The store as the SQLite file it is by default (tests and benchmarks look inside)."""
        assert isinstance(self.store, SQLiteStore), "the store is not SQLite"
        return self.store

    def ready(self) -> None:
        """/readyz answers 200 from now on (while the store is open)."""
        ops = ops_of(self.runner.app)
        if ops is not None:
            ops.ready()

    async def stop(self) -> None:
        ops = ops_of(self.runner.app)
        if ops is not None:  # /readyz: 503 from the start of the drain
            ops.draining()
        if self.conversations is not None:
            await self.conversations.aclose()
        await self.manager.stop_background()
        await self.manager.drain()
        await self.runner.cleanup()
        if self.manager.cluster is not None:  # after the drain: its calls go to the others
            await self.manager.cluster.stop()
        await self.manager.adapter.aclose()
        if self.carrier is not None:
            await self.carrier.stop()
        await self.store.aclose()


async def start_runtime(
    config: RuntimeConfig,
    *,
    clock: Clock | None = None,
    catalog: Catalog | None = None,
    responder: Responder | None = None,
    mock_backend: str = "twilio",
    port: int | None = None,
    restore: bool = True,
    ready: bool = True,
) -> Runtime:
    """Starts the webhook server and the call manager as configured; restores live calls.

    With ``ready``, /readyz answers 200 once this returns (its server serving, its calls
    restored, while its store is open); without, the caller says when (the service: once the
    runtime is exposed too).
    """
    clock = clock or RealClock()
    _check_timezone(config)
    store = _open_store(config, clock)  # first: an unreachable Redis leaves nothing to close
    provider, carrier, credentials, api_base = config.provider, None, {}, None
    if provider == "mock":
        from voicecall.runtime.sim.carrier.carrier import MockCarrier

        provider = mock_backend
        carrier = MockCarrier(provider, clock)
        await carrier.start()
        credentials, api_base = dict(carrier.credentials), carrier.api_base
    else:
        credentials = config.credentials(provider)
        api_base = config.api_base(provider)
    serve = config.serve()
    skip = bool(config.get("skipSignatureVerification", False))
    if skip:
        log.warning("SECURITY WARNING: skipSignatureVerification is on; webhooks are not verified")
    adapter = get_adapter(provider)(
        AdapterSettings(
            credentials=credentials,
            api_base=api_base,
            skip_signature=skip,
            now=clock.now,
            allow_v2_signatures=config.allow_plivo_v2(),
        )
    )
    if responder is None:  # the response model; with the mock carrier only when configured,
        # so that a developer's OPENAI_API_KEY never makes a simulation call the network
        responder = responder_from_config(config.raw, store, env=config.provider != "mock")
    placeholder = ManagerSettings(provider=provider, from_number="", webhook_base="")
    manager = CallManager(placeholder, store, adapter, CatalogFlows(catalog or Catalog()), clock,
                          responder)  # fmt: skip
    server = ServerSettings(path=serve["path"], public_url=config.get("publicUrl"),
                            skip_signature=skip,
                            max_in_flight_per_ip=serve["max_in_flight"],
                            forwarding=config.forwarding(),
                            ops_allow_from=config.ops_allow_from(),
                            **config.webhook_limits())  # fmt: skip
    stream_settings = config.streaming()
    streams = StreamEndpoint(PROTOCOLS[provider], stream_settings) if stream_settings else None
    runner = web.AppRunner(make_app(manager, server, streams), access_log=None)
    await runner.setup()
    site = GuardedSite(runner, serve["bind"], serve["port"] if port is None else port, server)
    try:
        await site.start()
    except OSError as exc:  # close what was opened for it; one line naming the key
        await _close_opened(runner, adapter, carrier, store)
        raise _bind_error(exc, serve["bind"], serve["port"] if port is None else port) from None
    bound = runner.addresses[0][1] if runner.addresses else serve["port"]
    webhook = config.get("publicUrl") or f"http://{serve['bind']}:{bound}{serve['path']}"
    manager.settings = _manager_settings(config, provider, webhook, carrier is not None)
    try:
        conversations = _conversations(config, manager, streams, carrier)
    except ValueError:
        await _close_opened(runner, adapter, carrier, store)
        raise
    runtime = Runtime(manager=manager, store=store, runner=runner, webhook_url=webhook,
                      carrier=carrier, streams=streams,
                      conversations=conversations)  # fmt: skip
    await _pick_up(config, manager, conversations, restore=restore)
    manager.start_background()
    if ready:
        runtime.ready()
    return runtime


def _open_store(config: RuntimeConfig, clock: Clock) -> Store:
    """SQLite in the store folder, or the Redis store of several gateways (`store: redis://`)."""
    url = config.redis_url()
    if url is None:
        return SQLiteStore(config.store_dir() / "calls.sqlite", now=clock.now)
    try:
        settings = config.redis()
        store = RedisStore(url, prefix=settings["prefix"], now=clock.now,
                           retention_s=config.event_retention_s(),
                           ended_kept_s=settings["ended_kept_s"])  # fmt: skip
    except ValueError as exc:  # redis-py's word on a malformed URL: name the key
        raise ValueError(f"store: {exc}") from None
    try:
        store.sync.ping()
    except redis.RedisError as exc:
        store.close()
        raise OSError(f"store: Redis at {_redacted(url)} is not reachable ({exc})") from None
    return store


async def _pick_up(
    config: RuntimeConfig, manager: CallManager, conversations: CallStreams | None, *,
    restore: bool,
) -> None:  # fmt: skip
    """Restores the calls a previous process left; with Redis, takes this process's lease
    instead (and the calls of gateways whose lease expired); its streams come to its URL."""
    if restore:
        kept = await manager.restore()
        if kept:
            log.info("restored %d call(s) after restart", len(kept))
    store = manager.store
    if not isinstance(store, RedisStore):
        return
    from voicecall.runtime.cluster import Cluster

    settings = config.redis()
    cluster = Cluster(store, manager, lease_s=settings["lease_s"], node_url=settings["node_url"])
    if conversations is not None and settings["node_url"]:
        conversations.node_url = settings["node_url"]
    await cluster.start()
    manager.cluster = cluster


def _redacted(url: str) -> str:
    """A Redis URL for messages: without its password."""
    parts = urlsplit(url)
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"


def _conversations(
    config: RuntimeConfig, manager: CallManager, streams: StreamEndpoint | None, carrier: Any
) -> CallStreams | None:
    """The conversations on media streams (None with streaming off), attached to the manager."""
    if streams is None:
        return None
    conversations = CallStreams(streams, _voice_services(config, streams, carrier),
                                manager)  # fmt: skip
    manager.calls.streams = conversations
    return conversations


_OPENAI = "openai"  # streaming.providers.<id> (free-form per provider: not schema keys)


NO_TTS = ("streaming.enabled: streamed conversations need a TTS service: set tts.provider "
          "(openai or elevenlabs) and its apiKey")  # fmt: skip
NO_REALTIME = "realtime.providers.openai.apiKey: missing (or set OPENAI_API_KEY)"


def voice_problems(config: RuntimeConfig) -> list[str]:
    """What would stop the voice services from starting, one line each, naming the key path
    (`voicecall config check`; the runtime refuses to start with the first)."""
    if config.streaming() is None:
        return []
    from voicecall.runtime.voice.realtime import RealtimeConfigError, realtime_from_config
    from voicecall.runtime.voice.stt import SttConfigError, stt_from_config
    from voicecall.runtime.voice.tts import PROVIDERS, TtsConfigError, choose_tts

    mock = config.provider == "mock"
    env: Mapping[str, str] = {} if mock else os.environ
    problems: list[str] = []
    unbuilt = dict.fromkeys(PROVIDERS, _unbuilt)  # checked, no client made
    try:
        choice = choose_tts(config.get("tts"), env=env, builders=unbuilt)
        if choice.service is None and not mock and _streaming_on(config):
            problems.append(NO_TTS)
    except TtsConfigError as exc:
        problems.append(str(exc))
    try:
        if not _offline_stt(config):
            stt_from_config(config.raw, env)
    except SttConfigError as exc:
        problems.append(str(exc))
    try:
        realtime = realtime_from_config(config.raw, env)
        if realtime is None and not mock and (config.get("realtime") or {}).get("enabled"):
            problems.append(NO_REALTIME)
    except RealtimeConfigError as exc:
        problems.append(str(exc))
    return problems


def _unbuilt(section: Mapping[str, Any], env: Mapping[str, str]) -> Any:
    return object()


def _streaming_on(config: RuntimeConfig) -> bool:
    return bool((config.get("streaming") or {}).get("enabled"))


def _offline_stt(config: RuntimeConfig) -> bool:
    """With the mock carrier, speech recognition is the offline stand-in unless the config
    points the OpenAI section at a service (a local fake in tests)."""
    if config.provider != "mock":
        return False
    providers = dict((config.get("streaming") or {}).get("providers") or {})
    return "baseUrl" not in dict(providers.get(_OPENAI) or {})


def _voice_services(config: RuntimeConfig, streams: StreamEndpoint, carrier: Any) -> VoiceServices:
    """The voice services of streamed conversations, from the config. With the mock carrier
    nothing reaches the network unless a section configures it: the offline stand-ins (a tone
    voice, a transcriber reading the mock caller's captions) are used and labelled.

    Raises:
        ValueError: the first of :func:`voice_problems`.
    """
    from voicecall.runtime.voice.realtime import realtime_from_config
    from voicecall.runtime.voice.stt import scripted_stt, stt_from_config
    from voicecall.runtime.voice.tts import choose_tts

    problems = voice_problems(config)
    if problems:
        raise ValueError(problems[0])
    mock = carrier is not None
    env: Mapping[str, str] = {} if mock else os.environ
    choice = choose_tts(config.get("tts"), env=env)
    tts = choice.service
    if tts is None:
        from voicecall.runtime.sim.voice import ToneVoice

        tts = ToneVoice()
        log.info("media streams: offline stand-in voice (a tone, not speech)")
    if _offline_stt(config):
        transcriber: Any = scripted_stt(carrier.captions)
        log.info("media streams: offline stand-in speech recognition (the mock caller's words)")
    else:
        transcriber = stt_from_config(config.raw, env)
    section = dict(config.get("streaming", {}) or {})
    # Flow nodes may ask for `driver: realtime` whatever realtime.enabled says; realtime.enabled
    # (the original's switch) makes the model's conversations realtime too.
    return VoiceServices(
        stream_path=streams.settings.path, tts=tts,
        tts_timeout_ms=choice.timeout_ms, transcriber=transcriber,
        realtime=realtime_from_config(config.raw, env),
        realtime_calls=bool((config.get("realtime") or {}).get("enabled")),
        streaming=bool(section.get("enabled")),
        protect_greeting=str(section.get("protectGreeting") or "outbound"),
    )  # fmt: skip


def _check_timezone(config: RuntimeConfig) -> None:
    """Flows read `now` in it: an unknown zone fails at start, not on the first call."""
    try:
        zone(str(config.get("timezone") or "UTC"))
    except ValueError as exc:
        raise ValueError(f"timezone: {exc}") from None


async def _close_opened(runner: web.AppRunner, adapter: Any, carrier: Any, store: Any) -> None:
    """What start_runtime opened, closed when it cannot finish (no 'Unclosed' warnings)."""
    await runner.cleanup()
    await adapter.aclose()
    if carrier is not None:
        await carrier.stop()
    await store.aclose()


def _bind_error(exc: OSError, bind: str, port: int) -> OSError:
    why = "the port is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror or exc
    return OSError(f"cannot listen on {bind}:{port} (serve.port): {why}")


def _manager_settings(
    config: RuntimeConfig, provider: str, webhook: str, mock: bool
) -> ManagerSettings:
    from_number = config.get("fromNumber") or (MOCK_FROM if mock else "")
    return ManagerSettings(
        provider=provider,
        from_number=str(from_number),
        webhook_base=webhook,
        to_number=config.get("toNumber"),
        max_concurrent=int(config.get("maxConcurrentCalls", 1)),
        max_duration_s=float(config.get("maxDurationSeconds", 300)),
        ring_timeout_s=float(config.get("ringTimeoutMs", 30_000)) / 1000,
        transcript_timeout_s=float(config.get("transcriptTimeoutMs", 180_000)) / 1000,
        stale_reaper_s=float(config.get("staleCallReaperSeconds", 120)),
        event_retention_s=config.event_retention_s(),
        inbound_policy=str(config.get("inboundPolicy", "disabled")),
        allow_from=tuple(config.get("allowFrom", []) or ()),
        inbound_flow=str(config.get("inboundFlow", "inbound")),
        config_view=config.template_view(),
        numbers={str(k): dict(v) for k, v in (config.get("numbers") or {}).items()},
    )
