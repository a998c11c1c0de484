"""The realtime speech-to-speech bridge through the official SDK, against a local fake server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from tests.fakes.openai_realtime_voice import API_KEY, FakeRealtimeVoice, Reply, silence, tone
from voicecall.plugin.config import config_schema
from voicecall.runtime.sim.captions import Captions
from voicecall.runtime.voice.realtime import (
    DEFAULT_INSTRUCTIONS,
    END_GUIDE,
    FINISH_GUIDE,
    MAX_FEED_BYTES,
    RealtimeConfigError,
    RealtimeError,
    RealtimeSession,
    RealtimeSettings,
    realtime_from_config,
    session_tools,
)

LOOKUP = {
    "type": "function",
    "name": "lookup_order",
    "description": "Find an order.",
    "parameters": {"type": "object", "properties": {"order": {"type": "string"}}},
}
PARTY = {
    "type": "object",
    "properties": {"party_size": {"type": "integer"}},
    "required": ["party_size"],
}


class Handler:
    """A call side that keeps what the session told it."""

    def __init__(self, results: Mapping[str, Mapping[str, Any] | None] | None = None) -> None:
        self.results = dict(results or {})
        self.audio = bytearray()
        self.barge_ins = 0
        self.caller: list[str] = []  # heard
        self.spoken: list[tuple[str, bool]] = []  # said
        self.tools: list[tuple[str, dict[str, Any]]] = []
        self.ended: list[tuple[str, int]] = []  # farewell, audio bytes played by then
        self.played_ms: int | None = None  # what a barge-in reports as heard
        self.close_on: str | None = None  # a tool whose call hands the call back
        self.stall = asyncio.Event()  # a tool named "slow" waits for this
        self.session: RealtimeSession | None = None
        self.truncating: list[asyncio.Task[None]] = []

    def play(self, ulaw: bytes) -> None:
        self.audio += ulaw

    def barge_in(self) -> None:
        self.barge_ins += 1
        if self.played_ms is not None and self.session is not None:
            self.truncating.append(self.session.truncate(self.played_ms))

    def heard(self, text: str) -> None:
        self.caller.append(text)

    def said(self, text: str, cut: bool) -> None:
        self.spoken.append((text, cut))

    async def tool(self, name: str, arguments: dict[str, Any]) -> Mapping[str, Any] | None:
        self.tools.append((name, arguments))
        if name == "broken":
            raise RuntimeError("sk-tool-secret")
        if name == "slow":
            await self.stall.wait()
        if name == self.close_on and self.session is not None:
            await self.session.close()
        return self.results.get(name)

    def end(self, farewell: str) -> None:
        self.ended.append((farewell, len(self.audio)))


async def until(check: Callable[[], bool]) -> None:
    """Wait for ``check``; the timeout only guards against a hang."""
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.005)


async def played(handler: Handler, session: RealtimeSession, size: int) -> None:
    """Wait for ``size`` bytes of assistant audio and the end of the response."""
    await until(lambda: len(handler.audio) == size and not session.speaking)


def settings(fake: FakeRealtimeVoice, **kw: Any) -> RealtimeSettings:
    kw.setdefault("api_key", API_KEY)
    return RealtimeSettings(base_url=fake.base_url, silence_duration_ms=200, **kw)


@asynccontextmanager
async def bridge(
    fake: FakeRealtimeVoice, handler: Handler, **kw: Any
) -> AsyncIterator[RealtimeSession]:
    config = kw.pop("settings", None) or settings(fake)
    session = RealtimeSession(config, handler, **kw)
    handler.session = session
    await session.start()
    try:
        yield session
    finally:
        await session.close()


def speak(session: RealtimeSession, ms: int = 300) -> None:
    """One caller turn: speech, then enough silence for the server VAD to end it."""
    for _ in range(ms // 20):
        session.feed(tone(20, hz=300))
    for _ in range(300 // 20):
        session.feed(silence(20))


def output(fake: FakeRealtimeVoice, index: int = 0) -> Any:
    return json.loads(fake.function_outputs[index]["output"])


# --- the session's configuration ----------------------------------------------------------


async def test_the_session_is_ulaw_both_ways_with_the_instructions_and_tools() -> None:
    async with FakeRealtimeVoice() as fake:
        config = settings(fake, instructions="Be kind.", voice="marin", tools=(LOOKUP,))
        async with bridge(fake, Handler(), settings=config, instructions="Book a table."):
            pass
    [update] = fake.session_updates
    assert fake.models == ["gpt-realtime"]
    assert update["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert update["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin"}
    assert update["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert update["audio"]["input"]["turn_detection"]["silence_duration_ms"] == 200
    assert update["audio"]["input"]["transcription"]["model"]
    assert update["instructions"].startswith("Be kind.\n\nBook a table.")
    assert END_GUIDE in update["instructions"] and FINISH_GUIDE not in update["instructions"]
    assert fake.tools() == ["lookup_order", "end_call"]


async def test_collect_adds_finish_conversation_with_the_schema_as_parameters() -> None:
    async with FakeRealtimeVoice() as fake, bridge(fake, Handler(), collect=PARTY):
        pass
    assert fake.tools() == ["end_call", "finish_conversation"]
    assert fake.session_updates[0]["tools"][1]["parameters"] == PARTY
    assert FINISH_GUIDE in fake.session_updates[0]["instructions"]


async def test_tool_policy_none_declares_only_the_built_in_tools() -> None:
    async with FakeRealtimeVoice() as fake:
        config = settings(fake, tools=(LOOKUP,), tool_policy="none")
        async with bridge(fake, Handler(), settings=config, collect=PARTY):
            pass
    assert fake.tools() == ["end_call", "finish_conversation"]


# --- speech both ways ---------------------------------------------------------------------


async def test_the_greeting_is_asked_for_and_played() -> None:
    handler = Handler()
    async with (
        FakeRealtimeVoice([Reply(say="Hello, this is Ann.", audio_ms=300)]) as fake,
        bridge(fake, handler, greeting="Hello, this is Ann.") as session,
    ):
        await played(handler, session, 2400)
    assert "Hello, this is Ann." in fake.response_creates[0]["instructions"]
    assert handler.spoken == [("Hello, this is Ann.", False)]


async def test_a_caller_turn_is_heard_and_answered_with_audio_and_its_transcript() -> None:
    handler = Handler()
    replies = [Reply(say="For how many people?", audio_ms=400)]
    async with (
        FakeRealtimeVoice(replies, heard=["I need a table"]) as fake,
        bridge(fake, handler) as session,
    ):
        speak(session)
        await played(handler, session, 3200)
        assert handler.caller == ["I need a table"]
    assert handler.audio == tone(400)  # the service's μ-law, untouched and in order
    assert handler.spoken == [("For how many people?", False)]


async def test_the_callers_words_can_come_from_the_simulators_captions() -> None:
    handler = Handler()
    captions = Captions()
    captions.say("ca1", "two people please")
    async with (
        FakeRealtimeVoice([Reply(say="Done.")], captions=captions) as fake,
        bridge(fake, handler) as session,
    ):
        speak(session)
        await until(lambda: bool(handler.caller))
    assert handler.caller == ["two people please"]


async def test_barge_in_clears_the_call_side_and_truncates_at_what_was_played() -> None:
    handler = Handler()
    replies = [
        Reply(say="Let me tell you a long story", audio_ms=2000, hold_after_ms=300),
        Reply(say="Sure.", audio_ms=200),
    ]
    async with (
        FakeRealtimeVoice(replies, heard=["Tell me a story", "Stop"]) as fake,
        bridge(fake, handler) as session,
    ):
        speak(session)
        await until(lambda: len(handler.audio) == 2400)  # 300 ms, then the model holds
        handler.played_ms = 120
        speak(session)
        await played(handler, session, 2400 + 1600)
        assert handler.barge_ins == 2  # each caller turn starts with one
        [truncate] = fake.truncates
    assert truncate["audio_end_ms"] == 120
    assert truncate["content_index"] == 0
    assert handler.caller == ["Tell me a story", "Stop"]
    assert handler.spoken == [("Let me tell you a long story", True), ("Sure.", False)]


async def test_a_barge_in_the_call_side_hears_itself_truncates_too() -> None:
    handler = Handler()
    replies = [
        Reply(say="Let me tell you a long story", audio_ms=2000, hold_after_ms=300),
        Reply(say="Ok.", audio_ms=100),
    ]
    async with (
        FakeRealtimeVoice(replies, heard=["Tell me a story", "Stop"]) as fake,
        bridge(fake, handler) as session,
    ):
        speak(session)
        await until(lambda: len(handler.audio) == 2400)  # 300 ms, then the model holds
        await session.truncate(100)  # the call side's own VAD, before the service's
        await until(lambda: len(fake.truncates) == 1)
        speak(session)
        await played(handler, session, 2400 + 800)
    assert [t["audio_end_ms"] for t in fake.truncates] == [100]
    assert handler.spoken == [("Let me tell you a long story", True), ("Ok.", False)]


async def test_a_barge_in_after_everything_was_heard_truncates_nothing() -> None:
    handler = Handler()
    replies = [Reply(say="Yes.", audio_ms=200), Reply(say="Ok.", audio_ms=100)]
    async with (
        FakeRealtimeVoice(replies, heard=["a", "b"]) as fake,
        bridge(fake, handler) as session,
    ):
        speak(session)
        await played(handler, session, 1600)
        handler.played_ms = 200
        speak(session)
        await played(handler, session, 2400)
    assert fake.truncates == []
    assert handler.spoken == [("Yes.", False), ("Ok.", False)]


async def test_caller_audio_waiting_for_the_socket_is_bounded() -> None:
    handler = Handler()
    async with FakeRealtimeVoice() as fake:
        session = RealtimeSession(settings(fake), handler)
        for _ in range(500):  # 10 s of audio before the socket is open
            session.feed(silence(20))
        await session.start()
        try:
            await until(lambda: fake.appended_bytes == MAX_FEED_BYTES)
        finally:
            await session.close()


# --- tools --------------------------------------------------------------------------------


async def test_end_call_ends_after_the_farewell_audio_has_been_played() -> None:
    handler = Handler()
    farewell = Reply(say="Goodbye!", audio_ms=300, tool="end_call",
                     arguments={"farewell": "Goodbye!"})  # fmt: skip
    async with (
        FakeRealtimeVoice([farewell], heard=["bye"]) as fake,
        bridge(fake, handler) as session,
    ):
        speak(session)
        assert await session.wait_closed() is None
    assert handler.ended == [("Goodbye!", 2400)]
    assert handler.spoken == [("Goodbye!", False)]


async def test_end_call_without_speech_has_the_farewell_spoken_first() -> None:
    handler = Handler()
    replies = [
        Reply(tool="end_call", arguments={"farewell": "Bye now."}),
        Reply(say="Bye now.", audio_ms=200),
    ]
    async with FakeRealtimeVoice(replies, heard=["bye"]) as fake, bridge(fake, handler) as session:
        speak(session)
        await session.wait_closed()
    assert output(fake) == {"ok": True}
    assert "Bye now." in fake.response_creates[-1]["instructions"]
    assert handler.ended == [("Bye now.", 1600)]


async def test_finish_conversation_hands_the_values_to_the_call_side() -> None:
    handler = Handler({"finish_conversation": {"error": "'party_size' must be positive"}})
    replies = [
        Reply(tool="finish_conversation", arguments={"party_size": -4}),
        Reply(say="How many, again?", audio_ms=100),
    ]
    async with (
        FakeRealtimeVoice(replies, heard=["minus four"]) as fake,
        bridge(fake, handler, collect=PARTY) as session,
    ):
        speak(session)
        await played(handler, session, 800)
    assert handler.tools == [("finish_conversation", {"party_size": -4})]
    assert output(fake) == {"error": "'party_size' must be positive"}
    assert fake.response_creates == [{}]  # the model goes on after the output


async def test_finish_conversation_accepted_closes_without_sending_more() -> None:
    handler = Handler({"finish_conversation": {"ok": True}})
    handler.close_on = "finish_conversation"
    replies = [Reply(tool="finish_conversation", arguments={"party_size": 4})]
    async with (
        FakeRealtimeVoice(replies, heard=["four"]) as fake,
        bridge(fake, handler, collect=PARTY) as session,
    ):
        speak(session)
        assert await session.wait_closed() is None
    assert handler.tools == [("finish_conversation", {"party_size": 4})]
    assert fake.function_outputs == [] and fake.response_creates == []


async def test_a_configured_tool_without_a_handler_is_answered_and_the_call_goes_on() -> None:
    handler = Handler()  # no result for lookup_order: no handler bound
    replies = [
        Reply(tool="lookup_order", arguments={"order": "A1"}),
        Reply(say="I cannot look that up.", audio_ms=200),
        Reply(say="Anything else?", audio_ms=100),
    ]
    async with (
        FakeRealtimeVoice(replies, heard=["where is A1", "no"]) as fake,
        bridge(fake, handler, settings=settings(fake, tools=(LOOKUP,))) as session,
    ):
        speak(session)
        await played(handler, session, 1600)
        speak(session)
        await played(handler, session, 2400)
    assert handler.tools == [("lookup_order", {"order": "A1"})]
    assert "no handler is bound" in output(fake)["error"]


async def test_finish_and_end_call_together_hand_over_the_values_then_end() -> None:
    handler = Handler({"finish_conversation": {"ok": True}})
    bye = ("end_call", {"farewell": "Goodbye!"})
    reply = Reply(say="Booked, goodbye!", audio_ms=200, tool="finish_conversation",
                  arguments={"party_size": 2}, more=(bye,))  # fmt: skip
    async with (
        FakeRealtimeVoice([reply], heard=["two"]) as fake,
        bridge(fake, handler, collect=PARTY) as session,
    ):
        speak(session)
        assert await session.wait_closed() is None
    assert handler.tools == [("finish_conversation", {"party_size": 2})]
    assert handler.ended == [("Goodbye!", 1600)]


async def test_a_tool_that_fails_or_stalls_is_answered_with_an_error() -> None:
    broken = {**LOOKUP, "name": "broken"}
    slow = {**LOOKUP, "name": "slow"}
    handler = Handler()
    replies = [Reply(tool="broken"), Reply(tool="slow"), Reply(say="Sorry.", audio_ms=100)]
    async with FakeRealtimeVoice(replies, heard=["x"]) as fake:
        config = settings(fake, tools=(broken, slow), tool_timeout_s=0.05)
        async with bridge(fake, handler, settings=config) as session:
            speak(session)
            await played(handler, session, 800)
    assert output(fake, 0) == {"error": "the tool failed; go on without it"}
    assert "did not answer in time" in output(fake, 1)["error"]


# --- failures -----------------------------------------------------------------------------


async def test_a_wrong_key_fails_start_with_one_line_and_no_key() -> None:
    async with FakeRealtimeVoice() as fake:
        config = settings(fake, api_key="sk-wrong-secret-key-987654")
        session = RealtimeSession(config, Handler())
        with pytest.raises(RealtimeError) as caught:
            await session.start()
    message = str(caught.value)
    assert "401" in message
    assert "sk-wrong" not in message and "987654" not in message and "\n" not in message
    assert "sk-wrong" not in repr(config)


async def test_a_refused_session_update_fails_start_without_the_message() -> None:
    async with FakeRealtimeVoice(refuse_update="invalid_value") as fake:
        with pytest.raises(RealtimeError) as caught:
            await RealtimeSession(settings(fake), Handler()).start()
    assert str(caught.value) == (
        "realtime session did not start: refused by the service (invalid_value)"
    )


async def test_a_service_that_is_not_there_fails_start() -> None:
    async with FakeRealtimeVoice() as fake:
        base_url = fake.base_url
    session = RealtimeSession(RealtimeSettings(api_key=API_KEY, base_url=base_url), Handler())
    with pytest.raises(RealtimeError, match="did not start"):
        await session.start()


# --- config -------------------------------------------------------------------------------


def test_no_key_in_the_config_or_the_environment_means_no_realtime() -> None:
    assert realtime_from_config({"realtime": {"enabled": True}}, {}) is None


def test_defaults_and_the_key_from_the_environment() -> None:
    factory = realtime_from_config({}, {"OPENAI_API_KEY": "sk-env"})
    assert factory is not None
    cfg = factory.settings
    assert (cfg.api_key, cfg.model, cfg.voice) == ("sk-env", "gpt-realtime", "alloy")
    assert cfg.ws_url == "wss://api.openai.com/v1"
    assert cfg.tool_policy == "safe-read-only" and cfg.tools == ()


def test_the_provider_section_is_read_and_the_websocket_url_derived() -> None:
    section = {
        "provider": "openai",
        "toolPolicy": "owner",
        "tools": [LOOKUP],
        "providers": {"openai": {"apiKey": "sk-cfg", "model": "gpt-realtime-mini",
                                 "voice": "cedar", "baseUrl": "http://127.0.0.1:9/v1/",
                                 "silenceDurationMs": 700}},
    }  # fmt: skip
    factory = realtime_from_config({"realtime": section}, {"OPENAI_API_KEY": "sk-env"})
    assert factory is not None
    cfg = factory.settings
    assert (cfg.api_key, cfg.model, cfg.voice) == ("sk-cfg", "gpt-realtime-mini", "cedar")
    assert (cfg.base_url, cfg.ws_url) == ("http://127.0.0.1:9/v1", "ws://127.0.0.1:9/v1")
    assert cfg.silence_duration_ms == 700 and cfg.tool_policy == "owner"
    assert [t["name"] for t in session_tools(cfg, None)] == ["lookup_order", "end_call"]


def test_openai_base_url_from_the_environment_is_used_for_the_websocket_too() -> None:
    env = {"OPENAI_API_KEY": "sk-env", "OPENAI_BASE_URL": "https://proxy.example/v1"}
    factory = realtime_from_config({}, env)
    assert factory is not None and factory.settings.ws_url == "wss://proxy.example/v1"


def test_the_manifest_default_instructions_are_replaced_by_ones_naming_our_tools() -> None:
    schema = config_schema()["properties"]["realtime"]["properties"]["instructions"]
    env = {"OPENAI_API_KEY": "sk-env"}
    factory = realtime_from_config({"realtime": {"instructions": schema["default"]}}, env)
    assert factory is not None and factory.settings.instructions == DEFAULT_INSTRUCTIONS
    factory = realtime_from_config({"realtime": {"instructions": "Speak French."}}, env)
    assert factory is not None and factory.settings.instructions == "Speak French."


@pytest.mark.parametrize(
    ("section", "path"),
    [
        ({"provider": "google"}, "realtime.provider"),
        ({"toolPolicy": "all"}, "realtime.toolPolicy"),
        ({"tools": [{**LOOKUP, "name": "end_call"}]}, "realtime.tools[0].name"),
        ({"providers": {"openai": {"baseUrl": "ftp://x"}}}, "realtime.providers.openai.baseUrl"),
        ({"providers": {"openai": {"model": 5}}}, "realtime.providers.openai.model"),
        (
            {"providers": {"openai": {"silenceDurationMs": 0}}},
            "realtime.providers.openai.silenceDurationMs",
        ),
    ],
)
def test_a_bad_value_is_refused_naming_its_key_path(section: dict[str, Any], path: str) -> None:
    with pytest.raises(RealtimeConfigError) as caught:
        realtime_from_config({"realtime": section}, {"OPENAI_API_KEY": "sk-env"})
    assert str(caught.value).startswith(path + ":")
    assert isinstance(caught.value, ValueError)
