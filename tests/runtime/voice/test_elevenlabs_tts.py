"""ElevenLabs TTS through the official SDK against a local fake of the streaming endpoint."""

from __future__ import annotations

import pytest

from tests.fakes.elevenlabs import API_KEY, Audio, FakeElevenLabs
from tests.runtime.voice.conftest import Closing
from voicecall.runtime.voice.elevenlabs_tts import ElevenLabsTts, ElevenLabsTtsConfig
from voicecall.runtime.voice.tts import TtsConfigError, VoiceSettings


async def collect(
    tts: ElevenLabsTts, text: str, settings: VoiceSettings | None = None
) -> list[bytes]:
    return [c async for c in tts.synthesize(text, voice_settings=settings or VoiceSettings())]


async def test_ulaw_frames_arrive_unchanged_and_in_order(closing: Closing) -> None:
    frames = tuple(bytes([n]) * 160 for n in range(1, 7))
    async with FakeElevenLabs([Audio(chunks=frames, gap_s=0.01)]) as fake:
        tts = closing(ElevenLabsTts(ElevenLabsTtsConfig(api_key=API_KEY, base_url=fake.base_url)))
        chunks = await collect(tts, "Hello")
    assert tuple(chunks) == frames  # nothing transcoded, one 20 ms frame a chunk


async def test_the_request_carries_the_configured_voice_model_format_and_settings(
    closing: Closing,
) -> None:
    section = {
        "apiKey": API_KEY,
        "voiceId": "voice-123",
        "modelId": "eleven_flash_v2_5",
        "languageCode": "de",
        "voiceSettings": {"stability": 0.4, "similarityBoost": 0.7, "useSpeakerBoost": True},
    }
    async with FakeElevenLabs() as fake:
        tts = closing(ElevenLabsTts.from_config({**section, "baseUrl": fake.base_url}, env={}))
        await collect(tts, "Guten Tag")
    request = fake.requests[0]
    assert request.voice_id == "voice-123"
    assert request.query == {"output_format": "ulaw_8000"}
    assert request.body == {
        "text": "Guten Tag",
        "model_id": "eleven_flash_v2_5",
        "language_code": "de",
        "voice_settings": {"stability": 0.4, "similarity_boost": 0.7, "use_speaker_boost": True},
    }


async def test_voice_settings_override_the_config_for_one_utterance(closing: Closing) -> None:
    section = {"apiKey": API_KEY, "voiceSettings": {"stability": 0.5, "speed": 1.0}}
    async with FakeElevenLabs() as fake:
        tts = closing(ElevenLabsTts.from_config({**section, "baseUrl": fake.base_url}, env={}))
        await collect(tts, "Hi", VoiceSettings(voice="other-voice", speed=1.1, language="fr"))
    request = fake.requests[0]
    assert request.voice_id == "other-voice"
    assert request.body["voice_settings"] == {"stability": 0.5, "speed": 1.1}
    assert request.body["language_code"] == "fr"
    assert request.body["model_id"] == "eleven_multilingual_v2"  # the default model


async def test_the_key_comes_from_the_sdks_environment_variable(closing: Closing) -> None:
    async with FakeElevenLabs() as fake:
        tts = closing(
            ElevenLabsTts.from_config(
                {"baseUrl": fake.base_url}, env={"ELEVENLABS_API_KEY": API_KEY}
            )
        )
        chunks = await collect(tts, "Hi")
    assert chunks == [b"\xff" * 160]
    assert fake.requests[0].voice_id == "pMsXgVXv3BLzUgSXRplE"  # the default voice


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"voiceSettings": {"loudness": 1}},
            "tts.providers.elevenlabs.voiceSettings.loudness: unknown setting"
            " (stability, similarityBoost, style, useSpeakerBoost, speed)",
        ),
        (
            {"voiceSettings": {"stability": "high"}},
            "tts.providers.elevenlabs.voiceSettings.stability: expected a number",
        ),
        (
            {"voiceSettings": {"useSpeakerBoost": 1}},
            "tts.providers.elevenlabs.voiceSettings.useSpeakerBoost: expected true or false",
        ),
        ({"voiceSettings": []}, "tts.providers.elevenlabs.voiceSettings: expected an object"),
        ({"voiceId": 7}, "tts.providers.elevenlabs.voiceId: expected a string"),
        (
            {"baseUrl": "ftp://example.com"},
            "tts.providers.elevenlabs.baseUrl: expected an http(s) URL, got 'ftp://example.com'",
        ),
    ],
)
def test_a_bad_value_names_its_key_path(section: dict[str, object], message: str) -> None:
    with pytest.raises(TtsConfigError) as error:
        ElevenLabsTtsConfig.from_section(section)
    assert str(error.value) == message
