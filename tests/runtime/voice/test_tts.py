"""The TTS factory (config merge, provider choice) and the synthesis timeout with its fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from tests.fakes import elevenlabs as fake_elevenlabs
from tests.fakes import openai_speech as fake_openai
from tests.runtime.voice.conftest import Closing
from voicecall.plugin.config import config_schema
from voicecall.plugin.config_effective import effective
from voicecall.runtime.voice.elevenlabs_tts import ElevenLabsTts
from voicecall.runtime.voice.openai_tts import OpenAiTts
from voicecall.runtime.voice.tts import (
    CarrierVoice,
    Speech,
    TtsConfigError,
    VoiceSettings,
    choose_tts,
    effective_tts,
    start_speech,
    synthesize_ahead,
)

OPENAI_KEY = fake_openai.API_KEY
XI_KEY = fake_elevenlabs.API_KEY


def plugin_tts(messages_tts: dict[str, Any], section_tts: dict[str, Any]) -> Any:
    """The effective ``tts`` as the plugin computes it from the host's config file."""
    host = {"messages": {"tts": messages_tts}}
    out, _ = effective(config_schema(), {"tts": section_tts}, host=host, env={})
    return out["tts"]


def test_the_plugins_tts_is_deep_merged_over_messages_tts_and_chooses_the_provider() -> None:
    messages_tts = {
        "provider": "openai",
        "providers": {
            "openai": {"apiKey": OPENAI_KEY, "voice": "alloy"},
            "elevenlabs": {"apiKey": XI_KEY, "voiceId": "host-voice", "modelId": "m1"},
        },
    }
    section_tts = {"provider": "elevenlabs", "providers": {"elevenlabs": {"voiceId": "call-voice"}}}
    choice = choose_tts(plugin_tts(messages_tts, section_tts), env={})
    assert isinstance(choice.service, ElevenLabsTts)
    config = choice.service.config
    assert (config.voice_id, config.model_id, config.api_key) == ("call-voice", "m1", XI_KEY)
    assert choice.timeout_ms == 8000


def test_a_numbers_tts_and_the_legacy_provider_key_merge_too() -> None:
    tts = {"provider": "openai", "openai": {"apiKey": OPENAI_KEY, "voice": "alloy"}}
    merged = effective_tts(tts, {"providers": {"openai": {"voice": "nova"}}, "timeoutMs": 3000})
    assert merged == {
        "provider": "openai",
        "timeoutMs": 3000,
        "providers": {"openai": {"apiKey": OPENAI_KEY, "voice": "nova"}},
    }
    choice = choose_tts(merged, env={})
    assert isinstance(choice.service, OpenAiTts)
    assert (choice.service.config.voice, choice.timeout_ms) == ("nova", 3000)


@pytest.mark.parametrize(
    ("tts", "env", "chosen"),
    [
        ({}, {"OPENAI_API_KEY": OPENAI_KEY}, OpenAiTts),
        ({}, {"ELEVENLABS_API_KEY": XI_KEY}, ElevenLabsTts),
        ({"providers": {"elevenlabs": {"apiKey": XI_KEY}}}, {}, ElevenLabsTts),
        ({}, {"OPENAI_API_KEY": OPENAI_KEY, "ELEVENLABS_API_KEY": XI_KEY}, OpenAiTts),
        ({}, {}, type(None)),
        (None, {}, type(None)),
    ],
)
def test_without_a_provider_the_first_service_with_a_key_is_used(
    tts: dict[str, Any] | None, env: dict[str, str], chosen: type
) -> None:
    assert type(choose_tts(tts, env=env).service) is chosen


@pytest.mark.parametrize(
    "tts",
    [
        {"provider": "edge", "providers": {"openai": {"apiKey": OPENAI_KEY}}},
        {"provider": "Microsoft"},
        {"providers": {"edge": {"voice": "en-US-AriaNeural"}}},
        {"edge": {"voice": "en-US-AriaNeural"}},  # the legacy shape
    ],
)
def test_edge_tts_is_ignored_for_calls_with_one_warning(
    tts: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="voicecall.runtime.voice.tts"):
        choice = choose_tts(tts, env={})
    assert choice.service is None
    assert len(caplog.records) == 1
    assert "ignored for calls" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("tts", "message"),
    [
        ({"provider": "polly"}, "tts.provider: unknown TTS provider 'polly' (openai, elevenlabs)"),
        ({"provider": "openai"}, "tts.providers.openai.apiKey: missing (or set OPENAI_API_KEY)"),
        (
            {"provider": "elevenlabs", "providers": {"elevenlabs": {}}},
            "tts.providers.elevenlabs.apiKey: missing (or set ELEVENLABS_API_KEY)",
        ),
        ({"timeoutMs": 0}, "tts.timeoutMs: expected a positive integer (ms), got 0"),
        ({"timeoutMs": "8s"}, "tts.timeoutMs: expected a positive integer (ms), got '8s'"),
    ],
)
def test_an_unusable_config_names_its_key_path(tts: dict[str, Any], message: str) -> None:
    with pytest.raises(TtsConfigError) as error:
        choose_tts(tts, env={})
    assert str(error.value) == message


def openai_service(base_url: str) -> OpenAiTts:
    return OpenAiTts.from_config({"apiKey": OPENAI_KEY, "baseUrl": base_url}, env={})


async def test_no_first_audio_within_the_timeout_falls_back_to_the_carrier_voice(
    closing: Closing,
) -> None:
    slow = fake_openai.Audio(chunks=(b"\0\0" * 480,), first_delay_s=600)
    async with fake_openai.FakeOpenAISpeech([slow]) as fake:
        result = await start_speech(
            closing(openai_service(fake.base_url)),
            "Hello",
            voice_settings=VoiceSettings(),
            timeout_ms=100,
        )
    assert result == CarrierVoice(text="Hello", reason="timeout")


async def test_an_elevenlabs_timeout_falls_back_too(closing: Closing) -> None:
    slow = fake_elevenlabs.Audio(chunks=(b"\xff" * 160,), first_delay_s=600)
    async with fake_elevenlabs.FakeElevenLabs([slow]) as fake:
        service = closing(
            ElevenLabsTts.from_config({"apiKey": XI_KEY, "baseUrl": fake.base_url}, env={})
        )
        result = await start_speech(
            service, "Hallo", voice_settings=VoiceSettings(), timeout_ms=100
        )
    assert result == CarrierVoice(text="Hallo", reason="timeout")


async def test_a_service_error_falls_back_and_names_only_its_kind(closing: Closing) -> None:
    async with fake_openai.FakeOpenAISpeech() as fake:
        service = closing(
            OpenAiTts.from_config({"apiKey": "sk-wrong", "baseUrl": fake.base_url}, env={})
        )
        result = await start_speech(service, "Hi", voice_settings=VoiceSettings(), timeout_ms=5000)
    assert result == CarrierVoice(text="Hi", reason="error: AuthenticationError 401")


async def test_no_service_means_the_carrier_voice() -> None:
    result = await start_speech(None, "Hi", voice_settings=VoiceSettings(), timeout_ms=100)
    assert result == CarrierVoice(text="Hi", reason="no tts service")


async def test_a_stall_after_the_first_audio_ends_the_utterance_as_stalled(
    closing: Closing,
) -> None:
    # The response never completes: first audio arriving at all proves the client streams.
    chunks = tuple(bytes([n, 0]) * 2400 for n in range(1, 5))  # 0.1 s each
    stalling = fake_openai.Audio(chunks=chunks, stall_after=2)
    async with fake_openai.FakeOpenAISpeech([stalling]) as fake:
        speech = await start_speech(
            closing(openai_service(fake.base_url)),
            "Hi",
            voice_settings=VoiceSettings(),
            timeout_ms=300,
        )
        assert isinstance(speech, Speech)
        played = b"".join([chunk async for chunk in speech])
    assert speech.outcome == "stalled"
    assert 0 < len(played) <= 2 * 800  # a part of the audio (0.2 s at most), not all of it


async def test_first_audio_latency_is_measured(
    closing: Closing, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = tuple(bytes([n]) * 160 for n in range(1, 11))
    async with fake_elevenlabs.FakeElevenLabs([fake_elevenlabs.Audio(chunks=frames)]) as fake:
        service = closing(
            ElevenLabsTts.from_config({"apiKey": XI_KEY, "baseUrl": fake.base_url}, env={})
        )
        speech = await start_speech(service, "Hi", voice_settings=VoiceSettings(), timeout_ms=5000)
        assert isinstance(speech, Speech)
        played = [chunk async for chunk in speech]
    assert tuple(played) == frames
    assert speech.outcome == "complete"
    with capsys.disabled():
        print(f"\nelevenlabs fake: first audio after {speech.first_audio_ms:.1f} ms")


async def test_first_audio_latency_through_the_resampler_is_measured(
    closing: Closing, capsys: pytest.CaptureFixture[str]
) -> None:
    # 0.5 s of speech delivered in real time (20 ms chunks 20 ms apart): the first audio waits
    # for the resampler's filter to fill as well as for the network.
    chunks = tuple(b"\x10\x20" * 480 for _ in range(25))
    answer = fake_openai.Audio(chunks=chunks, gap_s=0.02)
    async with fake_openai.FakeOpenAISpeech([answer]) as fake:
        speech = await start_speech(
            closing(openai_service(fake.base_url)),
            "Hi",
            voice_settings=VoiceSettings(),
            timeout_ms=5000,
        )
        assert isinstance(speech, Speech)
        played = b"".join([chunk async for chunk in speech])
    assert speech.outcome == "complete"
    assert abs(len(played) - 4000) <= 2  # 0.5 s at 8 kHz
    with capsys.disabled():
        print(
            f"\nopenai fake, real-time delivery: first audio after {speech.first_audio_ms:.1f} ms"
        )


async def test_a_listener_that_stops_early_leaves_the_speech_cancelled(closing: Closing) -> None:
    frames = tuple(bytes([n]) * 160 for n in range(1, 11))
    async with fake_elevenlabs.FakeElevenLabs([fake_elevenlabs.Audio(chunks=frames)]) as fake:
        service = closing(
            ElevenLabsTts.from_config({"apiKey": XI_KEY, "baseUrl": fake.base_url}, env={})
        )
        speech = await start_speech(service, "Hi", voice_settings=VoiceSettings(), timeout_ms=5000)
        assert isinstance(speech, Speech)
        async with contextlib.aclosing(aiter(speech)) as chunks:
            async for _ in chunks:
                break  # barge-in
    assert speech.outcome == "cancelled"


async def test_a_greeting_synthesized_ahead_is_the_whole_audio(closing: Closing) -> None:
    frames = tuple(bytes([n]) * 160 for n in range(1, 6))
    async with fake_elevenlabs.FakeElevenLabs([fake_elevenlabs.Audio(chunks=frames)]) as fake:
        service = closing(
            ElevenLabsTts.from_config({"apiKey": XI_KEY, "baseUrl": fake.base_url}, env={})
        )
        ringing = asyncio.create_task(
            synthesize_ahead(service, "Hello", voice_settings=VoiceSettings(), timeout_ms=5000)
        )
        audio = await ringing
    assert audio == b"".join(frames)


@pytest.mark.parametrize(
    ("answer", "max_bytes", "reason"),
    [
        (fake_elevenlabs.Audio(chunks=(b"\x01" * 160,) * 4, stall_after=2), 10_000, "stalled"),
        (fake_elevenlabs.Audio(chunks=(b"\x01" * 160,) * 4), 400, "too long to synthesize ahead"),
        (fake_elevenlabs.Audio(status=500), 10_000, "error: ApiError 500"),
    ],
)
async def test_a_greeting_that_cannot_be_synthesized_whole_falls_back(
    closing: Closing, answer: fake_elevenlabs.Audio, max_bytes: int, reason: str
) -> None:
    async with fake_elevenlabs.FakeElevenLabs([answer]) as fake:
        service = closing(
            ElevenLabsTts.from_config({"apiKey": XI_KEY, "baseUrl": fake.base_url}, env={})
        )
        result = await synthesize_ahead(
            service, "Hello", voice_settings=VoiceSettings(), timeout_ms=300, max_bytes=max_bytes
        )
    assert result == CarrierVoice(text="Hello", reason=reason)
