"""The OpenAI responder, against a local fake of the chat-completions API (through the SDK)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from tests.fakes.openai_http import API_KEY, FakeOpenAI, Turn
from voicecall.runtime.manager.core import ModelReply
from voicecall.runtime.state import CallRecord
from voicecall.runtime.store import SQLiteStore
from voicecall.runtime.voice.responder import (
    FALLBACK,
    SPOKEN_CONTRACT,
    OpenAIResponder,
    ResponderSettings,
    responder_from_config,
    session_key,
    spoken_text,
)

CALLER = "+15551230000"


def call(frm: str = CALLER, direction: str = "inbound") -> CallRecord:
    return CallRecord.new(provider="twilio", direction=direction, from_number=frm,
                          to_number="+15550009999", flow="inbound", flow_digest="d", params={},
                          started_at=1.0)  # fmt: skip


def responder(fake: FakeOpenAI, store: SQLiteStore, **settings: Any) -> OpenAIResponder:
    client = AsyncOpenAI(api_key=API_KEY, base_url=fake.base_url, max_retries=0)
    return OpenAIResponder(client, store, ResponderSettings(**settings))


async def ask(
    turns: list[Turn], tmp_path: Path, options: Mapping[str, Any] | None = None, **settings: Any
) -> tuple[ModelReply, FakeOpenAI]:
    store = SQLiteStore(tmp_path / "calls.sqlite")
    async with FakeOpenAI(turns) as fake:
        answer = await responder(fake, store, **settings).reply(call(), "hello", options or {})
    store.close()
    return answer, fake


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ('{"spoken":"Hi there."}', "Hi there."),
        ('```json\n{"spoken": "Fenced  reply."}\n```', "Fenced reply."),
        ('Sure! Here it is: {"spoken":"Inside prose."} Hope that helps.', "Inside prose."),
        ('{"spoken":""}', ""),
        ('{"spoken": "Broken, " trailing', "Broken,"),
        ("Thinking process: the caller greets me.\n\nHello, how can I help?",
         "Hello, how can I help?"),
        ("The user said hi, I should greet them.\n\nHi! What can I do for you?",
         "Hi! What can I do for you?"),
        ("Plain   text\nreply.", "Plain text reply."),
        ("Here:\n```\ncode\n```\nand the answer.", "Here: and the answer."),
        ("", ""),
        ("Analysis: a lone paragraph is spoken.", "Analysis: a lone paragraph is spoken."),
    ],
)  # fmt: skip
def test_the_spoken_output_contract(raw: str, spoken: str) -> None:
    assert spoken_text(raw) == spoken


async def test_a_reply_goes_through_the_sdk_with_the_contract(tmp_path: Path) -> None:
    turns = [Turn(content='{"spoken":"Hello, caller."}')]
    answer, fake = await ask(turns, tmp_path, model="openai/gpt-test",
                             system_prompt="You answer for Acme.")  # fmt: skip
    assert answer == ModelReply(text="Hello, caller.")
    request = fake.requests[0]
    assert request["model"] == "gpt-test"
    system = fake.messages()[0]
    assert system["role"] == "system"
    assert system["content"].startswith("You answer for Acme.")
    assert SPOKEN_CONTRACT in system["content"]
    assert fake.messages()[-1] == {"role": "user", "content": "hello"}
    assert request["tools"][0]["function"]["name"] == "end_call"


async def test_empty_spoken_is_silence(tmp_path: Path) -> None:
    answer, _ = await ask([Turn(content='```json\n{"spoken": ""}\n```')], tmp_path)
    assert answer == ModelReply(text="")


async def test_a_late_reply_is_a_spoken_fallback(tmp_path: Path) -> None:
    answer, fake = await ask([Turn(content='{"spoken":"Too late."}', delay_s=30)], tmp_path,
                             timeout_ms=200)  # fmt: skip
    assert answer == ModelReply(text=FALLBACK)
    assert len(fake.requests) == 1


@pytest.mark.parametrize("status", [500, 429])
async def test_an_error_is_a_spoken_fallback(tmp_path: Path, status: int) -> None:
    answer, fake = await ask([Turn(status=status)], tmp_path)
    assert answer == ModelReply(text=FALLBACK)
    assert len(fake.requests) == 1  # no retries: a caller is waiting


async def test_the_end_call_tool_says_the_farewell_then_ends(tmp_path: Path) -> None:
    turn = Turn(content=None, tool="end_call", arguments={"farewell": "Goodbye,  take care."})
    answer, _ = await ask([turn], tmp_path)
    assert answer == ModelReply(text="Goodbye, take care.", end=True)


async def test_the_number_and_flow_options_override_the_config(tmp_path: Path) -> None:
    options = {"model": "small", "system_prompt": "You are the clinic.", "agent_id": "nurse",
               "timeout_ms": 4000}  # fmt: skip
    _, fake = await ask([Turn(content='{"spoken":"ok"}')], tmp_path, options,
                        model="big", system_prompt="You are the shop.")  # fmt: skip
    assert fake.requests[0]["model"] == "small"
    assert fake.messages()[0]["content"].startswith("You are the clinic.")


def test_session_keys_follow_the_scope() -> None:
    inbound, outbound = call("+1 (555) 123-0000"), call(direction="outbound")
    assert session_key("per-phone", "main", inbound) == "agent:main:voice:15551230000"
    assert session_key("per-phone", "Nurse", outbound) == "agent:nurse:voice:15550009999"
    assert session_key("per-call", "main", inbound) == f"agent:main:voice:call:{inbound.call_id}"
    assert session_key("main", "main", inbound) == "agent:main:main"
    assert session_key("per-phone", "main", call("anonymous")).startswith("agent:main:voice:call:")


async def converse_twice(
    tmp_path: Path, scope: str, second_from: str = CALLER
) -> list[dict[str, Any]]:
    """Two calls, with the store closed and reopened between them (a restart); the messages
    of the second call's request."""
    path = tmp_path / "calls.sqlite"
    turns = [Turn(content='{"spoken":"Your order ships Monday."}'), Turn(content='{"spoken":"ok"}')]
    async with FakeOpenAI(turns) as fake:
        store = SQLiteStore(path)
        await responder(fake, store, session_scope=scope).reply(call(), "where is my order", {})
        store.close()
        store = SQLiteStore(path)
        await responder(fake, store, session_scope=scope).reply(call(second_from), "thanks", {})
        store.close()
    return fake.messages(1)


async def test_per_phone_history_survives_a_restart_for_the_same_number(tmp_path: Path) -> None:
    messages = await converse_twice(tmp_path, "per-phone")
    assert messages[1:] == [
        {"role": "user", "content": "where is my order"},
        {"role": "assistant", "content": '{"spoken": "Your order ships Monday."}'},
        {"role": "user", "content": "thanks"},
    ]


async def test_per_phone_history_is_not_shared_with_another_number(tmp_path: Path) -> None:
    messages = await converse_twice(tmp_path, "per-phone", second_from="+15557770000")
    assert messages[1:] == [{"role": "user", "content": "thanks"}]


async def test_per_call_history_starts_afresh_on_the_next_call(tmp_path: Path) -> None:
    messages = await converse_twice(tmp_path, "per-call")
    assert messages[1:] == [{"role": "user", "content": "thanks"}]


async def test_main_history_is_shared_by_every_caller(tmp_path: Path) -> None:
    messages = await converse_twice(tmp_path, "main", second_from="+15557770000")
    assert [m["content"] for m in messages[1:]] == [
        "where is my order", '{"spoken": "Your order ships Monday."}', "thanks"]  # fmt: skip


def test_no_key_and_no_base_url_means_no_responder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    store = SQLiteStore(tmp_path / "calls.sqlite")
    assert responder_from_config({}, store) is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    assert responder_from_config({}, store, env=False) is None
    from_env = responder_from_config({"responseModel": "m", "sessionScope": "main"}, store)
    assert from_env is not None and from_env.settings.session_scope == "main"
    section = {"responseProviders": {"openai": {"baseUrl": "http://127.0.0.1:9/v1"}}}
    configured = responder_from_config(section, store, env=False)
    assert configured is not None and str(configured.client.base_url).startswith("http://127")
    store.close()
