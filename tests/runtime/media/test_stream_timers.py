"""The media-stream endpoint's timers cost nothing per frame: a send to a carrier that reads
arms no timeout, and the inactivity watchdog (one timer per stream, set again from the last
frame's time) keeps a stream that sends frames alive past its timeout. The endpoint, server
and clients are those of test_streams."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import WSCloseCode

from tests.runtime.media.test_streams import (
    AUDIO,
    GENEROUS_S,
    Served,
    closing,
    frame,
    served,
    started,
    twilio_media,
)

__all__ = ["served"]  # the fixture, used here by name


async def test_sends_to_a_reading_carrier_arm_no_timeout(served: Any) -> None:
    s: Served = await served()
    ws, sink = await started(s)
    assert sink.session is not None
    for _ in range(200):
        await sink.session.send_audio(AUDIO)
        assert (await frame(ws))["event"] == "media"
    await sink.session.mark("m1")
    assert (await frame(ws))["event"] == "mark"
    assert sink.session.timed_sends == 0


async def test_a_stream_that_sends_frames_outlives_its_inactivity_timeout(served: Any) -> None:
    s: Served = await served(inactivity_timeout_s=0.4)
    ws, sink = await started(s)
    for seq in range(2, 26):  # 1.2 s of frames, 50 ms apart: three timeouts' worth
        await ws.send_str(twilio_media(seq))
        await asyncio.sleep(0.05)
    assert not sink.stopped.done() and not ws.closed
    code, _ = await closing(ws)  # then silence: the watchdog ends it
    assert code == WSCloseCode.INTERNAL_ERROR
    assert (await asyncio.wait_for(sink.stopped, GENEROUS_S)).startswith("inactive")
    assert len(sink.audio) == 24
