"""`streaming.*` config: the endpoint is on the webhook server exactly when streaming is on,
at `streaming.streamPath`, with the configured limits and the carrier's protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest

from voicecall.runtime.app import RuntimeConfig, start_runtime
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.media.streams import StreamSettings


def test_streaming_keys_become_endpoint_settings() -> None:
    raw = {"streaming": {"enabled": True, "streamPath": "/media", "preStartTimeoutMs": 2500,
                         "maxPendingConnections": 7, "maxPendingConnectionsPerIp": 2,
                         "maxConnections": 9}}  # fmt: skip
    assert RuntimeConfig(raw=raw).streaming() == StreamSettings(
        path="/media", pre_start_timeout_s=2.5, max_pending=7, max_pending_per_ip=2,
        max_connections=9)  # fmt: skip
    assert RuntimeConfig(raw={"streaming": {"enabled": False}}).streaming() is None
    assert RuntimeConfig(raw={}).streaming() is None


def test_the_stream_path_cannot_be_the_webhook_path() -> None:
    raw = {"streaming": {"enabled": True, "streamPath": "/voice/webhook"}}
    with pytest.raises(ValueError, match=r"streaming\.streamPath"):
        RuntimeConfig(raw=raw).streaming()


@pytest.mark.parametrize(
    ("backend", "enabled"), [("twilio", True), ("telnyx", True), ("plivo", True), ("twilio", False)]
)
async def test_the_endpoint_is_served_when_streaming_is_on(
    tmp_path: Path, backend: str, enabled: bool
) -> None:
    raw: dict[str, Any] = {"provider": "mock", "store": str(tmp_path),
                           "streaming": {"enabled": enabled, "streamPath": "/media"}}  # fmt: skip
    runtime = await start_runtime(RuntimeConfig(raw=raw), clock=VirtualClock(),
                                  mock_backend=backend, port=0, restore=False)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{runtime.runner.addresses[0][1]}/media"
        async with aiohttp.ClientSession() as http:
            if not enabled:
                assert runtime.streams is None
                async with http.get(url) as response:
                    assert response.status == 404
                return
            assert runtime.streams is not None
            assert runtime.streams.protocol.name == backend
            ws = await http.ws_connect(url)  # upgraded: the endpoint is there
            await ws.close()
    finally:
        await runtime.stop()


def test_realtime_alone_takes_its_streams_at_realtime_stream_path() -> None:
    """With realtime on and streaming off, the endpoint is where the original (and exposure)
    put realtime streams; with streaming on, at streaming.streamPath."""
    alone = RuntimeConfig(raw={"realtime": {"enabled": True,
                                            "streamPath": "/voice/stream/realtime"}})  # fmt: skip
    settings = alone.streaming()
    assert settings is not None and settings.path == "/voice/stream/realtime"
    keyed = RuntimeConfig(raw={"realtime": {"providers": {"openai": {"apiKey": "k"}}}})
    settings = keyed.streaming()
    assert settings is not None and settings.path == "/voice/stream"
    clash = RuntimeConfig(raw={"realtime": {"enabled": True, "streamPath": "/voice/webhook"}})
    with pytest.raises(ValueError, match=r"^realtime\.streamPath: /voice/webhook is serve\.path"):
        clash.streaming()
