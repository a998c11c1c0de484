"""A local stand-in for OpenAI's speech endpoint, reached through the SDK's base_url.

It speaks what the official SDK sends and reads: ``POST /v1/audio/speech`` with a Bearer key and
a JSON body (``model``, ``input``, ``voice``, ``instructions``, ``speed``, ``response_format``),
answered with the audio as a chunked HTTP body, one scripted chunk per write, so a test sees
whether its client streams. Each request body is kept for the tests to read.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

API_KEY = "sk-test-fake-speech-0123456789"


@dataclass(frozen=True, slots=True, kw_only=True)
class Audio:
    """One scripted answer: the chunks, and when they are sent."""

    chunks: tuple[bytes, ...] = ()
    first_delay_s: float = 0.0  # before the response starts (a slow first byte)
    gap_s: float = 0.0  # between chunks
    stall_after: int | None = None  # after this many chunks, send nothing more until closed
    status: int = 200  # an error status answers with OpenAI's error object


class FakeOpenAISpeech:
    """``async with FakeOpenAISpeech([Audio(...)]) as fake:`` then ``base_url=fake.base_url``."""

    def __init__(self, answers: list[Audio] | None = None, api_key: str = API_KEY):
        self.answers = list(answers or [])
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    async def __aenter__(self) -> FakeOpenAISpeech:
        app = web.Application()
        app.router.add_post("/v1/audio/speech", self._speech)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _wait(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _speech(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        self.requests.append(await request.json())
        audio = self.answers.pop(0) if self.answers else Audio(chunks=(b"\0\0" * 240,))
        await self._wait(audio.first_delay_s)
        if audio.status != 200:
            return _error(audio.status, "The server had an error.", "server_error")
        response = web.StreamResponse(headers={"Content-Type": "audio/pcm"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client stopped listening
            for index, chunk in enumerate(audio.chunks):
                if audio.stall_after is not None and index >= audio.stall_after:
                    await self._wait(None)
                    break
                if index and audio.gap_s:
                    await self._wait(audio.gap_s)
                await response.write(chunk)
            await response.write_eof()
        return response


def _error(status: int, message: str, code: str) -> web.Response:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return web.json_response({"error": error}, status=status)
