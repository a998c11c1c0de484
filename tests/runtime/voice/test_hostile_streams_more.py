"""Hostile media streams that broke the runtime (found by an adversarial pass; the rig:
test_hostile_streams.py): each test pins the behaviour that holds now."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.runtime import hostile_support as hs
from tests.runtime.voice.test_hostile_streams import (
    SILENCE,
    Carrier,
    Rig,
    failures,
    gather_pairs,
    gather_url,
    media,
    opening,
    runtime_rig,
    speak,
    started,
    until,
)
from voicecall.runtime.manager.core import ModelReply
from voicecall.runtime.voice import conversation


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with runtime_rig(tmp_path) as made:
        yield made


async def settled(rig: Rig, key: str, live: Any) -> None:
    """The stand-in transcriber has heard the caller's words and their turn has run."""
    await until(lambda: rig.runtime.carrier.captions.pending(key) == 0, "the words heard")
    await asyncio.sleep(0.2)  # the transcriber's loop hands the words to a turn task
    await until(lambda: len(live._tasks) <= 2, "the turn ran")  # its main and player only
    await rig.runtime.manager.drain()


async def test_a_stream_in_another_format_is_refused(rig: Rig) -> None:
    """We asked for μ-law 8 kHz; a start saying L16 would have its audio read as μ-law (the
    VAD and the transcriber hear noise) and ours played in the wrong codec."""
    opened = await rig.inbound()
    ws = await rig.stream(opened, encoding="audio/l16")
    streams = rig.runtime.streams
    assert streams is not None
    await until(lambda: rig.conversation(opened.call_id) is not None or not streams._open,
                "the start was answered")  # fmt: skip
    assert rig.conversation(opened.call_id) is None
    assert ws is not None


async def test_a_farewell_whose_mark_never_comes_back_still_hangs_up(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FAREWELL_WAIT_S bounds the wait for a realtime farewell's mark; a streamed
    conversation waits for every mark forever, so a lost echo keeps the call up."""
    monkeypatch.setattr(conversation, "FAREWELL_WAIT_S", 0.5)
    opened = await rig.inbound()
    ws, _ = await started(rig, opened)
    carrier = Carrier(ws)
    await until(lambda: carrier.marks, "the greeting's mark echoed")
    carrier.echo = False  # from now on, no echo
    await rig.runtime.manager.turns.end_call(opened.call_id, "Goodbye then.")
    for _ in range(100):
        await ws.send_str(media(SILENCE))
        await asyncio.sleep(0.02)
    await until(lambda: rig.record(opened.call_id).ending == "hangup-bot", "hung up")
    await carrier.aclose()


async def test_a_hang_up_during_the_model_reply_cancels_the_request(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The turn is cancelled when the call ends, but _ask awaits its request through
    asyncio.wait, which does not cancel it: the model call runs on for a call that is gone."""
    rig.responder.hold = asyncio.Event()
    opened = await rig.inbound()
    ws, live = await started(rig, opened)
    await speak(ws, rig, opened.key, "Is breakfast included")
    await until(lambda: rig.responder.running == 1, "the model was asked")
    await rig.ended(opened)
    await until(lambda: live.stopped and not live._tasks, "the conversation stopped")
    await until(lambda: rig.responder.cancelled == 1, "the model request cancelled")
    assert failures(caplog) == []


async def test_a_new_stream_for_the_call_closes_the_one_it_replaces(rig: Rig) -> None:
    """Twilio comes back to the <Connect action> (here before the old socket has closed): the
    new stream starts, the old conversation stops, but the old socket stays open."""
    opened = await rig.inbound()
    _, old = await started(rig, opened)
    pairs = [*hs.inbound_pairs(rig.target)[:-1], ("CallStatus", "in-progress")]
    status, document = await rig.post(opened.action, pairs)
    assert status == 200, document
    await rig.stream(opening(document), sid="MZ2")
    await until(lambda: rig.conversation(opened.call_id) not in (None, old), "replaced")
    assert old.stopped
    streams = rig.runtime.streams
    assert streams is not None
    await until(lambda: len(streams._open) == 1, "the first socket closed by the runtime")


async def test_a_stream_whose_call_ended_is_closed(rig: Rig) -> None:
    """Our side ended the call (a status callback here): its conversation stops, but the
    socket stays open, holding a connection slot for as long as the carrier sends frames."""
    opened = await rig.inbound()
    ws, live = await started(rig, opened)
    carrier = Carrier(ws)
    await rig.ended(opened)
    await until(lambda: live.stopped, "the conversation stopped")
    for _ in range(50):
        if ws.closed:
            break
        await ws.send_str(media(SILENCE))
        await asyncio.sleep(0.02)
    streams = rig.runtime.streams
    assert streams is not None
    await until(lambda: not streams._open, "the runtime closed the stream")
    await carrier.aclose()


async def test_words_heard_after_the_conversation_finished_leave_the_next_node_alone(
    rig: Rig,
) -> None:
    """The model finished; the flow waits in a <Gather> while the carrier has not yet swapped
    the document, and the stream still carries the caller's next words. They rewrite the
    Gather's waiting (kind converse, step 2): its key press is then answered with a hold."""
    rig.responder.answers = [ModelReply(text="", done={"party": 4})]
    opened = await rig.inbound(flow="then-ask")
    ws, live = await started(rig, opened)
    carrier = Carrier(ws)
    await speak(ws, rig, opened.key, "Four of us")
    await until(lambda: (w := rig.record(opened.call_id).waiting) is not None
                and w.block == "menu", "the flow went on")  # fmt: skip
    await speak(ws, rig, opened.key, "and a high chair please")
    await settled(rig, opened.key, live)
    await rig.runtime.manager.drain()
    _, document = await rig.post(gather_url(rig, opened), gather_pairs(rig))
    await carrier.aclose()
    assert rig.responder.heard == ["Four of us"]
    assert "Confirmed." in document


async def test_words_heard_after_a_finish_that_hangs_up_fail_no_task(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    """The same, when the next node hangs up (no waiting): the turn fails with KeyError ''."""
    rig.responder.answers = [ModelReply(text="", done={"date": "2026-01-05", "party": 4})]
    opened = await rig.inbound(flow="table-booking")
    ws, live = await started(rig, opened)
    carrier = Carrier(ws)
    await speak(ws, rig, opened.key, "Four of us on Monday")
    await until(lambda: rig.record(opened.call_id).waiting is None, "the flow went on")
    await speak(ws, rig, opened.key, "and a high chair please")
    await settled(rig, opened.key, live)
    for _ in range(25):
        await ws.send_str(media(SILENCE))
    await rig.runtime.manager.drain()
    await carrier.aclose()
    assert failures(caplog) == []


async def test_words_over_a_farewell_are_not_sent_to_the_model(rig: Rig) -> None:
    """The farewell is protected and the call hangs up after it; what the caller said over it
    is still sent to the model (a request for a call that is hanging up)."""
    rig.responder.answers = [ModelReply(text="Goodbye, and thanks for calling the hotel.",
                                        end=True)]  # fmt: skip
    opened = await rig.inbound()
    ws, live = await started(rig, opened)
    carrier = Carrier(ws)
    await until(lambda: carrier.marks, "the greeting played")
    await speak(ws, rig, opened.key, "No thanks, bye")
    await until(lambda: rig.responder.heard, "the model was asked")
    audio = carrier.audio
    await until(lambda: carrier.audio > audio + 10, "the farewell is playing")
    await speak(ws, rig, opened.key, "wait, one more thing")
    await until(lambda: rig.record(opened.call_id).ending == "hangup-bot", "hung up")
    await settled(rig, opened.key, live)
    for _ in range(25):
        await ws.send_str(media(SILENCE))
    await rig.runtime.manager.drain()
    await carrier.aclose()
    assert rig.responder.heard == ["No thanks, bye"]


def test_caller_audio_waiting_for_the_transcriber_is_bounded_in_bytes() -> None:
    """A stalled transcription service: the audio queued for it is capped at 150 frames,
    whatever their size. A carrier's 48 KB media frames (the stream's 64 KB frame cap) hold
    7 MB a call instead of 3 s; the realtime bridge caps its queue in bytes."""
    from voicecall.runtime.voice.stt import MAX_PENDING_FRAMES, OpenAITranscriber, SttSettings

    transcriber = OpenAITranscriber(SttSettings(api_key="sk-unused"), call_id="c1")
    for _ in range(2 * MAX_PENDING_FRAMES):
        transcriber.feed(b"\xff" * 48_000)  # fed before start: queued for the service
    queued = sum(len(frame) for frame in transcriber._pending)
    assert queued <= (MAX_PENDING_FRAMES + 1) * 160  # 3 s of 8 kHz μ-law, and one frame
