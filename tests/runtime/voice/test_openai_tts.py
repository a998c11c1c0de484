"""OpenAI TTS through the official SDK against a local fake of the speech endpoint."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pytest

from tests.fakes.openai_speech import API_KEY, Audio, FakeOpenAISpeech
from tests.runtime.voice.conftest import Closing
from voicecall.runtime.media import codec
from voicecall.runtime.voice.openai_tts import OpenAiTts, OpenAiTtsConfig
from voicecall.runtime.voice.tts import TtsConfigError, VoiceSettings


def tone(hz: float, seconds: float, rate: int = 24000) -> npt.NDArray[np.int16]:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * hz * t) * 12000).astype(np.int16)


def dominant_hz(ulaw: bytes, rate: int = 8000) -> float:
    pcm = codec.decode_array(np.frombuffer(ulaw, dtype=np.uint8)).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    return float(np.fft.rfftfreq(len(pcm), 1 / rate)[int(np.argmax(spectrum))])


def split_odd(data: bytes, size: int) -> tuple[bytes, ...]:
    """Network-like chunks, each ending mid-sample (an odd byte count)."""
    return tuple(data[i : i + size] for i in range(0, len(data), size))


async def collect(tts: OpenAiTts, text: str, settings: VoiceSettings | None = None) -> list[bytes]:
    return [c async for c in tts.synthesize(text, voice_settings=settings or VoiceSettings())]


async def test_streamed_pcm_arrives_in_order_as_8khz_ulaw(closing: Closing) -> None:
    # 0.3 s of 500 Hz then 0.3 s of 1500 Hz, cut at odd byte counts: the order and the rate
    # survive only if every chunk is converted in turn with the half samples carried over.
    pcm = np.concatenate([tone(500, 0.3), tone(1500, 0.3)]).astype("<i2").tobytes()
    async with FakeOpenAISpeech([Audio(chunks=split_odd(pcm, 2001))]) as fake:
        tts = closing(OpenAiTts(OpenAiTtsConfig(api_key=API_KEY, base_url=fake.base_url)))
        chunks = await collect(tts, "Hello")
    audio = b"".join(chunks)
    assert len(chunks) > 1  # streamed, not one buffer at the end
    assert abs(len(audio) - 4800) <= 2  # 0.6 s at 8 kHz, one byte a sample
    assert dominant_hz(audio[200:2200]) == pytest.approx(500, abs=10)
    assert dominant_hz(audio[2600:4600]) == pytest.approx(1500, abs=10)


async def test_the_request_carries_the_configured_model_voice_instructions_and_speed(
    closing: Closing,
) -> None:
    section = {
        "apiKey": API_KEY,
        "model": "gpt-4o-mini-tts",
        "voice": "coral",
        "instructions": "Speak warmly.",
        "speed": 1.25,
    }
    async with FakeOpenAISpeech() as fake:
        tts = closing(OpenAiTts.from_config({**section, "baseUrl": fake.base_url}, env={}))
        await collect(tts, "Your table is booked.")
    assert fake.requests == [
        {
            "model": "gpt-4o-mini-tts",
            "input": "Your table is booked.",
            "voice": "coral",
            "instructions": "Speak warmly.",
            "speed": 1.25,
            "response_format": "pcm",
        }
    ]


async def test_voice_settings_override_the_config_for_one_utterance(closing: Closing) -> None:
    async with FakeOpenAISpeech() as fake:
        tts = closing(OpenAiTts.from_config({"apiKey": API_KEY, "baseUrl": fake.base_url}, env={}))
        settings = VoiceSettings(voice="onyx", instructions="Slowly.", speed=0.8)
        await collect(tts, "Hi", settings)
    request = fake.requests[0]
    assert (request["voice"], request["instructions"], request["speed"]) == ("onyx", "Slowly.", 0.8)
    assert request["model"] == "gpt-4o-mini-tts"  # the default model


async def test_key_and_base_url_come_from_the_sdks_environment_variables(closing: Closing) -> None:
    async with FakeOpenAISpeech() as fake:
        env = {"OPENAI_API_KEY": API_KEY, "OPENAI_BASE_URL": fake.base_url}
        tts = closing(OpenAiTts.from_config({}, env=env))
        chunks = await collect(tts, "Hi")
    assert chunks
    assert fake.requests[0]["voice"] == "alloy"  # the default voice


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"speed": 9}, "tts.providers.openai.speed: expected 0.25..4, got 9"),
        ({"speed": "fast"}, "tts.providers.openai.speed: expected 0.25..4, got 'fast'"),
        ({"voice": 3}, "tts.providers.openai.voice: expected a string"),
        (
            {"baseUrl": "api.openai.com/v1"},
            "tts.providers.openai.baseUrl: expected an http(s) URL, got 'api.openai.com/v1'",
        ),
    ],
)
def test_a_bad_value_names_its_key_path(section: dict[str, object], message: str) -> None:
    with pytest.raises(TtsConfigError) as error:
        OpenAiTtsConfig.from_section(section)
    assert str(error.value) == message
