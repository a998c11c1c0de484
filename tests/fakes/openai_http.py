"""A local stand-in for OpenAI's chat-completions HTTP API, reached through the SDK's base_url.

It speaks the wire format the official SDK reads (``POST /v1/chat/completions``, Bearer key,
``chat.completion`` objects with ``tool_calls``) and answers each request with the next
scripted :class:`Turn`: text, a tool call, an HTTP error, or a delay first. Requests are kept
for the tests to read (the messages the responder sent: system prompt, history).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

API_KEY = "sk-test-fake-0123456789"


@dataclass(frozen=True, slots=True, kw_only=True)
class Turn:
    """One scripted answer."""

    content: str | None = None
    tool: str | None = None  # a function tool call's name
    arguments: dict[str, Any] | None = None  # its arguments
    status: int = 200  # an error status answers with OpenAI's error object
    delay_s: float = 0.0  # waited before answering (a slow model)


class FakeOpenAI:
    """``async with FakeOpenAI([Turn(...), ...]) as fake:`` then ``base_url=fake.base_url``."""

    def __init__(self, turns: list[Turn] | None = None, api_key: str = API_KEY):
        self.turns = list(turns or [])
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()  # ends the delays of requests still answering
        self.base_url = ""

    async def __aenter__(self) -> FakeOpenAI:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._completions)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def messages(self, index: int = -1) -> list[dict[str, Any]]:
        """The messages of a received request (default: the last)."""
        messages: list[dict[str, Any]] = self.requests[index]["messages"]
        return messages

    async def _completions(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        body = await request.json()
        self.requests.append(body)
        turn = self.turns.pop(0) if self.turns else Turn(content='{"spoken":""}')
        if turn.delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), turn.delay_s)
        if turn.status != 200:
            return _error(turn.status, "The server had an error.", "server_error")
        return web.json_response(_completion(body.get("model", ""), turn))


def _completion(model: str, turn: Turn) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.content, "refusal": None}
    if turn.tool is not None:
        message["tool_calls"] = [{
            "id": "call_fake_1",
            "type": "function",
            "function": {"name": turn.tool, "arguments": json.dumps(turn.arguments or {})},
        }]  # fmt: skip
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": "tool_calls" if turn.tool else "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }  # fmt: skip


def _error(status: int, message: str, code: str) -> web.Response:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None,
                      "code": code}}  # fmt: skip
    return web.json_response(body, status=status)
