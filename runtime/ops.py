"""Operations endpoints of the webhook server: Prometheus ``/metrics``, ``/healthz``, ``/readyz``.

They live on the webhook server so that a scraper reaches them where the runtime listens. That
port may be public through a tunnel (ngrok, Tailscale Funnel), whose agent connects from
loopback: so an operations request is answered only when it comes from an allowed address
(``serve.metrics.allowFrom``; loopback only by default) **and** carries no proxy header (a
tunnel or reverse proxy always adds one); anything else gets 403 and one log line. Nothing
here ever answers 500: a failing source is a 503 (readiness) or a metric left out (one log line
per scrape).

Each runtime has its own :class:`~prometheus_client.CollectorRegistry` (tests and simulations
start many runtimes in one process; the global registry would mix them). Counters and the
webhook histogram move as things happen; the gauges (calls by state, streams open) are read
from the store and the stream endpoint at scrape time, and the audio-path latencies the
conversations record (:class:`~voicecall.runtime.voice.conversation.Metrics`) are moved into
histograms at scrape time, so the media path pays nothing extra.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Final

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from voicecall.runtime.forwarding import normalise_ip
from voicecall.runtime.providers.base import Event
from voicecall.runtime.state import CallRecord

log = logging.getLogger("voicecall.ops")

METRICS_PATH: Final = "/metrics"
HEALTH_PATH: Final = "/healthz"
READY_PATH: Final = "/readyz"
PATHS: Final = (METRICS_PATH, HEALTH_PATH, READY_PATH)

# Headers a proxy or tunnel adds (ngrok, Tailscale, nginx, Traefik, cloud load balancers, and
# `Via`, which RFC 9110 section 7.6.3 asks of a proxy); a scraper sends none of them.
PROXY_HEADERS: Final = ("Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto",
                        "X-Forwarded-Port", "X-Forwarded-Server", "X-Real-IP", "X-Original-Host",
                        "Via", "Ngrok-Forwarded-Host", "Tailscale-Funnel-Request",
                        "Tailscale-User-Login", "CF-Connecting-IP", "True-Client-IP",
                        "Fastly-Client-IP")  # fmt: skip

WEBHOOK_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MODEL_BUCKETS: Final = (0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 20.0, 30.0)
AUDIO_BUCKETS: Final = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0, 2.0, 5.0)
STORE_CHECK_S: Final = 2.0  # /readyz: a networked store slower than this to answer is not ready
ENDED_KEPT: Final = 10_000  # ended call ids remembered so a re-commit is not a second end

# Rejection reasons as labels: the log line's text carries sizes and addresses (unbounded),
# the label only its kind. First match wins.
_REASONS: Final = (
    ("missing signature header", "missing_signature"),
    ("signature rejected", "bad_signature"),
    ("only POST", "method"),
    ("only Expect", "expect"),
    ("not received in", "body_timeout"),
    ("body not received", "body_broken"),
    ("bytes is over", "too_large"),
    ("body over", "too_large"),
    ("verified requests in flight", "in_flight"),
    ("malformed", "malformed"),
)

# Refusals below HTTP, as labels: what the connection guard (GuardedSite) refused or closed
# before an answer of ours, and what the media-stream endpoint refused before a stream started
# or closed by a limit. Fixed sets: anything else counts as "other".
CONNECTION_REASONS: Final = frozenset({
    "max_connections",  # serve.maxConnections open already: 503 and closed
    "header_timeout",  # a request head not complete in serve.headerTimeoutMs: 408 and closed
    "head_too_large",  # a request line or header over aiohttp's limits: 400
    "not_http",  # no HTTP method where one was due (TLS or other protocols): 400
    "malformed_http",  # any other unparsable HTTP: 400
    "silent",  # opened, sent nothing, closed by serve.keepAliveTimeoutMs
    "other"})  # fmt: skip
STREAM_REASONS: Final = frozenset({
    "max_streams", "max_pending", "max_pending_per_ip",  # streaming.max*: 503, 429
    "not_websocket",  # 400: no upgrade
    "start_timeout", "no_token", "wrong_token", "token_expired", "unexpected_call",
    "audio_format", "before_start", "closed_before_start",  # closed 1008 (or by the peer)
    "malformed_frame", "binary_frame", "frame_too_large", "protocol_error",  # 1008, 1003, 1009
    "inactive", "not_reading",  # a started stream: no frame in time, or reads nothing of ours
    "other"})  # fmt: skip

LOOPBACK: Final = ("127.0.0.0/8", "::1/128")  # serve.metrics.allowFrom's default

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_KIND_KEY: Final = web.RequestKey("webhook_kind", str)  # what the gate made of the request


def reason_label(reason: str) -> str:
    """The bounded label of a rejection's reason text."""
    for needle, label in _REASONS:
        if needle in reason:
            return label
    return "other"


def networks(values: Iterable[str]) -> tuple[Network, ...]:
    """``serve.metrics.allowFrom``: addresses or CIDR networks (``10.0.0.0/8``, ``::1``).

    Raises:
        ValueError: one is neither, naming it by its index.
    """
    out = []
    for index, value in enumerate(values):
        try:
            out.append(ipaddress.ip_network(str(value).strip(), strict=False))
        except ValueError:
            raise ValueError(f"serve.metrics.allowFrom[{index}]: {value!r} is not an address "
                             "or a CIDR network") from None  # fmt: skip
    return tuple(out)


def allowed(remote: str, nets: Iterable[Network]) -> bool:
    """Whether a peer address is in one of ``nets`` (IPv4-mapped IPv6 as its IPv4 address)."""
    try:
        ip = ipaddress.ip_address(normalise_ip(remote))
    except ValueError:
        return False
    return any(ip in net for net in nets)


_LOOPBACK: Final = networks(LOOPBACK)


def event_kind(events: Iterable[Event]) -> str:
    """A webhook's kind for the latency histogram: its first event's (status, input, …)."""
    for event in events:
        kind = str(event.kind.value).removeprefix("call.")
        return {"initiated": "status", "ringing": "status", "answered": "status",
                "ended": "status"}.get(kind, kind)  # fmt: skip
    return "empty"


class Ops:
    """One runtime's metrics and health state (``app[OPS]``).

    Args:
        manager: the runtime's CallManager (store, adapter, and later its streams).
        allow_from: the networks whose scrapers it answers (``serve.metrics.allowFrom``).
    """

    def __init__(self, manager: Any, allow_from: Iterable[Network] = _LOOPBACK):
        self.manager = manager
        self.allow_from = tuple(allow_from)
        self.state = "starting"  # starting | ready | draining
        self.registry = CollectorRegistry()
        self._counters(self.registry)
        self._histograms(self.registry)
        if manager.responder is not None:  # the one given at start (a later one is not timed)
            manager.responder = TimedResponder(manager.responder, self.model)
        self.registry.register(_Live(self))
        self._live: dict[str, str] = {}  # call id: provider, of calls seen and not ended
        self._ended: OrderedDict[str, None] = OrderedDict()
        for call in manager.store.live():  # before restore: those are no new calls
            self._live[call.call_id] = call.provider
        manager.watch(self.observe)

    def _counters(self, r: CollectorRegistry) -> None:
        self.started = Counter("voicecall_calls_started", "Calls this process began handling.",
                               ["provider", "direction"], registry=r)  # fmt: skip
        self.ended = Counter("voicecall_calls_ended", "Calls that ended, by end reason.",
                             ["provider", "reason"], registry=r)  # fmt: skip
        self.rejected = Counter("voicecall_webhooks_rejected", "Webhooks refused, by reason.",
                                ["reason", "status"], registry=r)  # fmt: skip
        self.replays = Counter("voicecall_webhook_replays",
                               "Webhooks seen before: the stored reply, no side effect.",
                               registry=r)  # fmt: skip
        self.ops_refused = Counter("voicecall_ops_refused",
                                   "Operations requests refused (not from an allowed address, "
                                   "or proxied).", registry=r)  # fmt: skip
        self.connections_refused = Counter("voicecall_connections_refused",
                                           "Connections refused or closed before an HTTP answer "
                                           "of ours, by reason.", ["reason"],
                                           registry=r)  # fmt: skip
        self.streams_refused = Counter("voicecall_media_streams_refused",
                                       "Media streams refused before their start, or closed by "
                                       "a limit, by reason.", ["reason"], registry=r)  # fmt: skip
        for reason in sorted(CONNECTION_REASONS):  # every series from the start, at 0
            self.connections_refused.labels(reason)
        for reason in sorted(STREAM_REASONS):
            self.streams_refused.labels(reason)

    def _histograms(self, r: CollectorRegistry) -> None:
        self.webhook = Histogram("voicecall_webhook_duration_seconds",
                                 "Time to answer a carrier webhook, by kind.", ["kind"],
                                 buckets=WEBHOOK_BUCKETS, registry=r)  # fmt: skip
        self.audio = {name: Histogram(f"voicecall_stream_{name}_seconds", text,
                                      buckets=AUDIO_BUCKETS, registry=r)
                      for name, text in (
                          ("first_frame", "First TTS byte to the first frame sent."),
                          ("clear", "Caller speech onset to the clear sent (barge-in)."),
                          ("turn", "Final transcript to the responder request."),
                          ("frame_delay", "How late a paced frame of ours was sent against "
                                          "its 20 ms schedule."))}  # fmt: skip
        self.model = Histogram("voicecall_responder_seconds",
                               "Time the response model took to answer, by outcome.",
                               ["outcome"], buckets=MODEL_BUCKETS, registry=r)  # fmt: skip

    def ready(self) -> None:
        """The runtime is started (restored, exposed): /readyz answers 200 from now on."""
        self.state = "ready"

    def draining(self) -> None:
        """The runtime is stopping: /readyz answers 503 so a balancer sends nothing new."""
        self.state = "draining"

    # --- what moves the counters ---------------------------------------------------------------

    def observe(self, call: CallRecord) -> None:
        """A committed call change (a store watcher): counts starts and ends once each."""
        if call.call_id in self._ended:
            return
        if call.call_id not in self._live:
            self.started.labels(call.provider, call.direction).inc()
            self._live[call.call_id] = call.provider
        if call.ended:
            del self._live[call.call_id]
            self._ended[call.call_id] = None
            if len(self._ended) > ENDED_KEPT:
                self._ended.popitem(last=False)
            self.ended.labels(call.provider, call.end_reason or call.state).inc()

    def rejected_webhook(self, status: int, reason: str) -> None:
        self.rejected.labels(reason_label(reason), str(status)).inc()

    def refused_connection(self, reason: str) -> None:
        """A connection refused or closed below HTTP (one of :data:`CONNECTION_REASONS`)."""
        label = reason if reason in CONNECTION_REASONS else "other"
        self.connections_refused.labels(label).inc()

    def refused_stream(self, reason: str) -> None:
        """A media stream refused or closed by a limit (one of :data:`STREAM_REASONS`)."""
        self.streams_refused.labels(reason if reason in STREAM_REASONS else "other").inc()

    def answered(self, request: web.Request, started: float) -> None:
        """A webhook answered: its time, by the kind the gate noted (``rejected`` if none)."""
        kind = request.get(_KIND_KEY, "rejected")
        self.webhook.labels(kind).observe(time.perf_counter() - started)

    @staticmethod
    def note_kind(request: web.Request, kind: str) -> None:
        request[_KIND_KEY] = kind

    # --- the handlers ---------------------------------------------------------------------------

    def routes(self, app: web.Application) -> None:
        app.router.add_get(METRICS_PATH, self.metrics)
        app.router.add_get(HEALTH_PATH, self.healthz)
        app.router.add_get(READY_PATH, self.readyz)

    async def metrics(self, request: web.Request) -> web.StreamResponse:
        refused = self.refusal(request)
        if refused is not None:
            return refused
        self._move_audio()
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        refused = self.refusal(request)
        return refused if refused is not None else web.Response(text="ok\n")

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        refused = self.refusal(request)
        if refused is not None:
            return refused
        why = self.not_ready() or await self.store_problem()
        if why:
            return web.Response(status=503, text=f"{why}\n")
        return web.Response(text="ready\n")

    def not_ready(self) -> str:
        """Why the runtime's state says it should get no traffic now, or "" (its store is
        :meth:`store_problem`'s to check)."""
        if self.state == "starting":
            return "not ready: the runtime is starting"
        if self.state == "draining":
            return "not ready: the runtime is draining"
        return ""

    async def store_problem(self) -> str:
        """Why the store cannot be used now, or "". Asked without blocking (a networked store
        answers through its asyncio client) and within :data:`STORE_CHECK_S`: an unreachable
        server must not hold the event loop, and every call's media with it, at every probe."""
        try:
            async with asyncio.timeout(STORE_CHECK_S):
                await self.manager.store.count_live()
        except Exception as exc:  # a closed or unreachable store, whatever the backend
            return f"not ready: the store is not open ({type(exc).__name__})"
        return ""

    def refusal(self, request: web.Request) -> web.Response | None:
        """403 for a request from an address not allowed, or through a proxy or tunnel."""
        remote = request.remote or ""
        proxied = next((h for h in PROXY_HEADERS if h in request.headers), None)
        if proxied is None and allowed(remote, self.allow_from):
            return None
        self.ops_refused.inc()
        why = (f"it came through a proxy ({proxied})" if proxied else
               "not from serve.metrics.allowFrom")  # fmt: skip
        log.warning("%s %s from %s refused with 403: %s", request.method, request.path,
                    remote or "?", why)  # fmt: skip
        text = ("operations endpoints answer loopback only\n" if self.allow_from == _LOOPBACK
                else "operations endpoints answer serve.metrics.allowFrom only\n")  # fmt: skip
        return web.Response(status=403, text=text)

    def _move_audio(self) -> None:
        """The conversations' new latencies into the histograms (they only ever append)."""
        streams = getattr(self.manager.calls, "streams", None)
        source = getattr(streams, "metrics", None)
        if source is None:
            return
        for name, histogram in self.audio.items():
            values: list[float] = getattr(source, name, [])
            for value in values:
                histogram.observe(value)
            del values[:]  # taken: the lists stay small while something scrapes


class TimedResponder:
    """A responder whose answers are timed (everything else is the wrapped one's)."""

    def __init__(self, inner: Any, histogram: Histogram):
        self.inner = inner
        self._histogram = histogram

    async def reply(self, call: CallRecord, heard: str, options: Mapping[str, Any]) -> Any:
        started, outcome = time.perf_counter(), "error"
        try:
            answer = await self.inner.reply(call, heard, options)
            outcome = "ok"
            return answer
        except asyncio.CancelledError:  # the caller hung up or talked over it
            outcome = "cancelled"
            raise
        finally:
            self._histogram.labels(outcome).observe(time.perf_counter() - started)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


OPS: Final = web.AppKey("ops", Ops)


def ops_of(app: web.Application) -> Ops | None:
    """The operations state of a webhook app, if it has one."""
    return app.get(OPS)


class _Live:
    """The gauges read at scrape time: live calls by state and provider, streams open."""

    def __init__(self, ops: Ops):
        self.ops = ops

    def describe(self) -> list[Metric]:
        return []  # read at scrape only (the registry must not collect while registering)

    def collect(self) -> Iterator[Metric]:
        calls = GaugeMetricFamily("voicecall_calls", "Live calls, by state and provider.",
                                  labels=["state", "provider"])  # fmt: skip
        try:
            counts: dict[tuple[str, str], int] = {}
            for call in self.ops.manager.store.live():
                key = (call.state, call.provider)
                counts[key] = counts.get(key, 0) + 1
            for (state, provider), count in sorted(counts.items()):
                calls.add_metric([state, provider], count)
            yield calls
        except Exception as exc:  # the store failing leaves the gauge out, not the scrape
            log.warning("metrics: live calls not read: %s", type(exc).__name__)
        streams = getattr(self.ops.manager.calls, "streams", None)
        endpoint = getattr(streams, "endpoint", None)
        open_ = GaugeMetricFamily("voicecall_media_streams_open", "Media streams started.")
        open_.add_metric([], len(getattr(endpoint, "sessions", {}) or {}))
        yield open_
        talking = GaugeMetricFamily("voicecall_stream_conversations",
                                    "Conversations served on media streams.")  # fmt: skip
        talking.add_metric([], len(getattr(streams, "conversations", {}) or {}))
        yield talking
        cluster = getattr(self.ops.manager, "cluster", None)
        if cluster is not None:  # several gateways on Redis
            yield from _cluster_metrics(cluster)


def _cluster_metrics(cluster: Any) -> Iterator[Metric]:
    """This gateway's part in a Redis deployment: what it routed to the owners of calls, and
    the calls it took over from gateways whose lease expired."""
    routed = CounterMetricFamily(
        "voicecall_cluster_routed", "Webhooks and agent commands sent to the call's owner."
    )
    routed.add_metric([], cluster.routed)
    yield routed
    taken = CounterMetricFamily(
        "voicecall_cluster_takeovers", "Calls taken over from gateways whose lease expired."
    )
    taken.add_metric([], cluster.taken_over)
    yield taken
    owned = GaugeMetricFamily(
        "voicecall_cluster_owned_calls", "Unfinished calls this gateway owns."
    )
    owned.add_metric([], len(cluster.store.owned()))
    yield owned
