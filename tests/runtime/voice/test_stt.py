"""Speech to text: OpenAI realtime transcription against a local fake, the scripted stand-in,
and the config."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest

from tests.fakes.openai_realtime import API_KEY, FakeOpenAIRealtime
from voicecall.runtime.media import codec
from voicecall.runtime.media.streams import stream_key
from voicecall.runtime.sim.captions import Captions
from voicecall.runtime.voice.stt import (
    EndOfTurn,
    Final,
    OpenAITranscriber,
    Partial,
    ScriptedTranscriber,
    SpeechStarted,
    SttConfigError,
    SttError,
    SttEvent,
    SttSettings,
    Transcriber,
    scripted_stt,
    stt_from_config,
)

RATE = 8000
FRAME = 160
GUARD_S = 10.0  # only so a broken test fails instead of hanging; nothing is timed


def speech(ms: int, seed: float = 0.0) -> bytes:
    """A voiced sound at speech level (about -22 dBFS): 300 Hz and its harmonics."""
    t = np.arange(ms * RATE // 1000) / RATE
    wave = np.zeros_like(t)
    for k in (1, 2, 3, 4):
        wave += np.sin(2 * np.pi * 300 * k * t + seed * k) / k
    pcm = (wave * 2500).astype("<i2")
    return codec.encode(pcm.tobytes())


def silence(ms: int) -> bytes:
    return b"\xff" * (ms * RATE // 1000)  # μ-law zero


def frames(audio: bytes) -> Iterator[bytes]:
    for i in range(0, len(audio), FRAME):
        yield audio[i : i + FRAME]


def settings(fake: FakeOpenAIRealtime, **overrides: object) -> SttSettings:
    values: dict[str, object] = {"api_key": API_KEY, "base_url": fake.base_url}
    values.update(overrides)
    return SttSettings(**values)  # type: ignore[arg-type]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAIRealtime]:
    async with FakeOpenAIRealtime(transcripts=["I would like a table for two"]) as server:
        yield server


async def until_final(stt: Transcriber) -> list[SttEvent]:
    events: list[SttEvent] = []
    async with asyncio.timeout(GUARD_S):
        async for event in stt.events():
            events.append(event)
            if isinstance(event, Final):
                break
    return events


async def feed_all(stt: Transcriber, audio: bytes) -> None:
    for frame in frames(audio):
        stt.feed(frame)


# --- OpenAI realtime ------------------------------------------------------------------------


async def test_the_session_asks_for_ulaw_the_model_the_language_and_the_server_vad(
    fake: FakeOpenAIRealtime,
) -> None:
    stt = OpenAITranscriber(
        settings(
            fake,
            model="gpt-4o-mini-transcribe",
            silence_duration_ms=650,
            vad_threshold=0.6,
            prompt="Table bookings.",
        ),
        call_id="c1",
        language="de-DE",
    )
    await stt.start()
    await stt.close()
    conn = fake.last
    assert conn.path == "/v1/realtime"
    assert conn.query == {"intent": "transcription"}
    audio_input = conn.session["audio"]["input"]
    assert conn.session["type"] == "transcription"
    assert audio_input["format"] == {"type": "audio/pcmu"}
    assert audio_input["transcription"] == {
        "model": "gpt-4o-mini-transcribe", "language": "de", "prompt": "Table bookings."
    }  # fmt: skip
    assert audio_input["turn_detection"] == {
        "type": "server_vad", "silence_duration_ms": 650, "threshold": 0.6
    }  # fmt: skip


async def test_defaults_are_the_originals(fake: FakeOpenAIRealtime) -> None:
    stt = OpenAITranscriber(settings(fake))
    await stt.start()
    await stt.close()
    audio_input = fake.last.session["audio"]["input"]
    assert audio_input["transcription"] == {"model": "gpt-4o-transcribe"}
    assert audio_input["turn_detection"]["silence_duration_ms"] == 800
    assert audio_input["turn_detection"]["threshold"] == 0.5


async def test_speech_then_silence_gives_started_partials_and_the_final(
    fake: FakeOpenAIRealtime,
) -> None:
    stt = OpenAITranscriber(settings(fake), call_id="c1")
    await stt.start()
    audio = speech(600) + silence(1000)
    await feed_all(stt, audio)
    events = await until_final(stt)
    await stt.close()
    assert events[0] == SpeechStarted()
    assert events[-1] == Final("I would like a table for two")
    partials = [e.text for e in events if isinstance(e, Partial)]
    assert partials == ["I", "I would", "I would like", "I would like a", "I would like a table",
                        "I would like a table for", "I would like a table for two"]  # fmt: skip
    # The service heard the speech and 800 ms of silence at least, as μ-law bytes unchanged.
    assert (600 + 800) * 8 <= fake.last.audio_bytes <= len(audio)
    assert bytes(fake.last.audio) == audio[: fake.last.audio_bytes]


async def test_audio_fed_before_start_is_sent_once_connected(fake: FakeOpenAIRealtime) -> None:
    stt = OpenAITranscriber(settings(fake))
    audio = speech(400) + silence(900)
    await feed_all(stt, audio)
    await stt.start()
    events = await until_final(stt)
    await stt.close()
    assert events[0] == SpeechStarted() and events[-1] == Final("I would like a table for two")


async def test_the_words_can_come_from_captions() -> None:
    captions = Captions()
    captions.say(stream_key("a1b2-c3"), "Two people at eight")
    async with FakeOpenAIRealtime(captions=captions) as fake:
        stt = OpenAITranscriber(settings(fake))
        await stt.start()
        await feed_all(stt, speech(500) + silence(900))
        events = await until_final(stt)
        await stt.close()
    assert events[-1] == Final("Two people at eight")


async def test_an_empty_transcript_is_no_final() -> None:
    async with FakeOpenAIRealtime(transcripts=["", "Yes"]) as fake:
        stt = OpenAITranscriber(settings(fake))
        await stt.start()
        await feed_all(stt, speech(400) + silence(900) + speech(400, seed=1) + silence(900))
        events = await until_final(stt)
        await stt.close()
    assert events == [SpeechStarted(), SpeechStarted(), Partial("Yes"), Final("Yes")]


async def test_a_refused_key_is_one_line_without_the_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "sk-wrong-key-abcdef123456"
    async with FakeOpenAIRealtime() as fake:
        stt = OpenAITranscriber(settings(fake, api_key=wrong))
        with pytest.raises(SttError) as raised:
            await stt.start()
        assert fake.refused == 1
    message = str(raised.value)
    assert "401" in message and "apiKey" in message
    assert "\n" not in message
    assert wrong not in message and wrong not in caplog.text
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


async def test_a_server_error_on_connect_is_an_stt_error() -> None:
    async with FakeOpenAIRealtime(status=500) as fake:
        with pytest.raises(SttError, match="HTTP 500"):
            await OpenAITranscriber(settings(fake)).start()


async def test_a_rejected_session_config_is_an_stt_error() -> None:
    async with FakeOpenAIRealtime(update_error="invalid_model") as fake:
        with pytest.raises(SttError, match="refused the session: invalid_model"):
            await OpenAITranscriber(settings(fake, model="no-such-model")).start()


async def test_no_answer_within_the_connect_timeout_is_an_stt_error() -> None:
    async with FakeOpenAIRealtime(ack=False) as fake:
        stt = OpenAITranscriber(settings(fake, connect_timeout_s=0.2))
        with pytest.raises(SttError, match=r"no answer within 0\.2 s"):
            await stt.start()


async def test_an_unreachable_service_is_an_stt_error() -> None:
    async with FakeOpenAIRealtime() as fake:
        base_url = fake.base_url
    with pytest.raises(SttError, match="unreachable"):
        await OpenAITranscriber(SttSettings(api_key=API_KEY, base_url=base_url)).start()


async def test_a_connection_closed_mid_session_ends_the_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeOpenAIRealtime(close_after_frames=10) as fake:
        stt = OpenAITranscriber(settings(fake), call_id="c9")
        await stt.start()
        await feed_all(stt, speech(600))
        with caplog.at_level(logging.WARNING):
            events = await until_final(stt)
        stt.feed(speech(20))  # after the end: ignored, no error
        await stt.close()
    assert events == [SpeechStarted()]
    assert "c9" in caplog.text and "1011" in caplog.text


async def test_the_service_ending_the_session_ends_the_events(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with FakeOpenAIRealtime(close_after_frames=5, close_code=1000) as fake:
        stt = OpenAITranscriber(settings(fake), call_id="c8")
        await stt.start()
        await feed_all(stt, silence(200))
        with caplog.at_level(logging.INFO):
            events = await until_final(stt)
        await stt.close()
    assert events == []
    assert "c8: openai realtime ended the session" in caplog.text


async def test_close_ends_the_events_and_is_idempotent(fake: FakeOpenAIRealtime) -> None:
    stt = OpenAITranscriber(settings(fake))
    await stt.start()
    received: list[SttEvent] = []

    async def listen() -> None:
        async for event in stt.events():
            received.append(event)

    listener = asyncio.create_task(listen())
    await asyncio.sleep(0)
    await stt.close()
    await stt.close()
    async with asyncio.timeout(GUARD_S):
        await listener
    assert received == []
    with pytest.raises(SttError, match="already started or closed"):
        await stt.start()


async def test_feeding_faster_than_the_service_drops_the_oldest_and_logs_once(
    fake: FakeOpenAIRealtime, caplog: pytest.LogCaptureFixture
) -> None:
    stt = OpenAITranscriber(settings(fake, max_pending_frames=20), call_id="c2")
    numbered = [bytes([i]) * FRAME for i in range(100)]
    with caplog.at_level(logging.WARNING):
        for frame in numbered:  # not started: nothing drains the queue
            stt.feed(frame)
    assert stt.dropped_frames == 80
    assert sum("falls behind" in r.message for r in caplog.records) == 1
    await stt.start()
    async with asyncio.timeout(GUARD_S):
        while fake.last.audio_bytes < 20 * FRAME:
            await asyncio.sleep(0.01)
    await stt.close()
    assert bytes(fake.last.audio) == b"".join(numbered[80:])  # the newest 20, in order


async def test_base_url_only_reaches_the_fake_over_websocket_too() -> None:
    async with FakeOpenAIRealtime() as fake:
        openai = {"apiKey": API_KEY, "baseUrl": fake.base_url}
        factory = stt_from_config(
            {"streaming": {"enabled": True, "providers": {"openai": openai}}}, {}
        )
        assert factory is not None
        stt = factory("call-1", None)
        await stt.start()
        await stt.close()
        assert len(fake.connections) == 1


async def test_the_base_url_can_come_from_the_environment() -> None:
    async with FakeOpenAIRealtime() as fake:
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": fake.base_url}
        factory = stt_from_config({"streaming": {"enabled": True}}, env)
        assert factory is not None
        stt = factory("call-1", "en-GB")
        await stt.start()
        await stt.close()
        assert fake.last.session["audio"]["input"]["transcription"]["language"] == "en"


# --- the scripted stand-in ------------------------------------------------------------------


class Listener:
    """Collects a transcriber's events as they come (the loop runs between feeds)."""

    def __init__(self, stt: Transcriber) -> None:
        self.events: list[SttEvent] = []
        self._task = asyncio.create_task(self._run(stt))

    async def _run(self, stt: Transcriber) -> None:
        async for event in stt.events():
            self.events.append(event)

    async def settle(self) -> None:
        for _ in range(3):
            await asyncio.sleep(0)

    async def done(self) -> None:
        async with asyncio.timeout(GUARD_S):
            await self._task


async def test_scripted_ends_the_turn_after_silence_ms_of_audio() -> None:
    captions = Captions()
    captions.say("k1", "Table for two")
    stt = ScriptedTranscriber(captions, "k1", silence_ms=800)
    listener = Listener(stt)
    await stt.start()
    await feed_all(stt, speech(600))
    await listener.settle()
    assert listener.events == [SpeechStarted()]
    silent = list(frames(silence(800)))
    for frame in silent[:-1]:  # 780 ms of silence: the turn is not over
        stt.feed(frame)
    await listener.settle()
    assert listener.events == [SpeechStarted()]
    stt.feed(silent[-1])  # the 800th millisecond
    await listener.settle()
    assert listener.events == [SpeechStarted(), Final("Table for two")]
    await stt.close()
    await listener.done()
    assert captions.pending("k1") == 0


async def test_scripted_keeps_a_short_pause_inside_the_turn() -> None:
    captions = Captions()
    captions.say("k1", "Yes please")
    captions.say("other", "not mine")
    stt = ScriptedTranscriber(captions, "k1", silence_ms=800)
    listener = Listener(stt)
    await feed_all(stt, speech(300) + silence(500) + speech(300, seed=2) + silence(800))
    await stt.close()
    await listener.done()
    assert listener.events == [SpeechStarted(), Final("Yes please")]
    assert captions.pending("other") == 1


async def test_scripted_without_captions_says_nothing_at_the_end() -> None:
    stt = ScriptedTranscriber(Captions(), "k1", silence_ms=400)
    listener = Listener(stt)
    await feed_all(stt, speech(400) + silence(600) + silence(2000))
    await stt.close()
    stt.feed(speech(400))  # after close: ignored
    await listener.done()
    assert listener.events == [SpeechStarted()]


async def test_scripted_factory_keys_by_the_stream_key() -> None:
    captions = Captions()
    call_id = "5F3A-77B0-41aa"
    captions.say(stream_key(call_id), "Hello")
    stt = scripted_stt(captions, silence_ms=300)(call_id, None)
    listener = Listener(stt)
    await feed_all(stt, speech(300) + silence(400))
    await stt.close()
    await listener.done()
    assert listener.events == [SpeechStarted(), Final("Hello")]


def test_end_of_turn_counts_audio_not_frames() -> None:
    # 40 ms frames: the same 800 ms of silence is 20 frames, not 40.
    turn = EndOfTurn(silence_ms=800)
    edges = [turn.feed(f) for f in _chunks(speech(400), 320)]
    assert edges.count("start") == 1
    ends = [turn.feed(f) for f in _chunks(silence(800), 320)]
    assert ends[-1] == "end" and ends[:-1].count("end") == 0


def _chunks(audio: bytes, size: int) -> list[bytes]:
    return [audio[i : i + size] for i in range(0, len(audio), size)]


# --- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [{}, {"streaming": {}}, {"streaming": {"enabled": False, "provider": "deepgram"}}],
)
def test_streaming_off_is_no_transcriber(config: dict[str, object]) -> None:
    assert stt_from_config(config, {"OPENAI_API_KEY": "sk-x"}) is None


def test_an_unknown_provider_names_the_key() -> None:
    config = {"streaming": {"enabled": True, "provider": "deepgram"}}
    with pytest.raises(SttConfigError, match=r"^streaming\.provider: .*'deepgram'"):
        stt_from_config(config, {"OPENAI_API_KEY": "sk-x"})


def test_the_key_falls_back_to_the_environment() -> None:
    factory = stt_from_config({"streaming": {"enabled": True}}, {"OPENAI_API_KEY": "sk-env"})
    assert factory is not None
    stt = factory("call-1", None)
    assert isinstance(stt, OpenAITranscriber)
    assert stt.settings.api_key == "sk-env"
    assert stt.settings.base_url is None  # the SDK's default service


def test_the_configured_key_wins_and_the_section_is_read() -> None:
    openai = {"apiKey": "sk-cfg", "model": "gpt-4o-mini-transcribe", "silenceDurationMs": 600,
              "vadThreshold": 0.7, "language": "fr", "prompt": "Noms propres.",
              "baseUrl": "https://proxy.example/v1"}  # fmt: skip
    config = {"streaming": {"enabled": True, "provider": "OpenAI",
                            "providers": {"openai": openai}}}  # fmt: skip
    factory = stt_from_config(config, {"OPENAI_API_KEY": "sk-env"})
    assert factory is not None
    stt = factory("call-1", None)
    assert isinstance(stt, OpenAITranscriber)
    assert stt.settings == SttSettings(
        api_key="sk-cfg", model="gpt-4o-mini-transcribe", silence_duration_ms=600,
        vad_threshold=0.7, language="fr", prompt="Noms propres.",
        base_url="https://proxy.example/v1",
    )  # fmt: skip
    assert stt.language == "fr"
    assert factory("call-2", "es-MX").language == "es"  # type: ignore[attr-defined]


def test_a_missing_key_names_the_key_and_the_variable() -> None:
    with pytest.raises(
        SttConfigError, match=r"streaming\.providers\.openai\.apiKey.*OPENAI_API_KEY"
    ):
        stt_from_config({"streaming": {"enabled": True}}, {})


@pytest.mark.parametrize(
    ("key", "value"),
    [("silenceDurationMs", 0), ("silenceDurationMs", "800"), ("vadThreshold", 1.5),
     ("vadThreshold", True), ("model", 4), ("baseUrl", "ftp://x"), ("websocketBaseUrl", "x")],
)  # fmt: skip
def test_a_bad_value_names_its_key_path(key: str, value: object) -> None:
    config = {"streaming": {"enabled": True, "providers": {"openai": {key: value}}}}
    with pytest.raises(SttConfigError, match=rf"^streaming\.providers\.openai\.{key}: "):
        stt_from_config(config, {"OPENAI_API_KEY": "sk-x"})


def test_a_key_of_the_wrong_type_is_not_echoed() -> None:
    config = {"streaming": {"enabled": True, "providers": {"openai": {"apiKey": 12345678}}}}
    with pytest.raises(SttConfigError) as raised:
        stt_from_config(config, {})
    assert "12345678" not in str(raised.value)
