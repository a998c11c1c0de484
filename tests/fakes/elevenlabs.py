"""A local stand-in for ElevenLabs' streaming TTS endpoint, reached through the SDK's base_url.

It speaks what the official SDK sends and reads: ``POST /v1/text-to-speech/{voice_id}/stream``
with the ``xi-api-key`` header, ``output_format`` in the query and a JSON body (``text``,
``model_id``, ``voice_settings``, ``language_code``), answered with the audio as a chunked HTTP
body, one scripted chunk per write. Each request (voice, query, body) is kept for the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from aiohttp import web

API_KEY = "xi-test-fake-0123456789"


@dataclass(frozen=True, slots=True, kw_only=True)
class Audio:
    """One scripted answer: the chunks, and when they are sent."""

    chunks: tuple[bytes, ...] = ()
    first_delay_s: float = 0.0  # before the response starts (a slow first byte)
    gap_s: float = 0.0  # between chunks
    stall_after: int | None = None  # after this many chunks, send nothing more until closed
    status: int = 200  # an error status answers with ElevenLabs' error object


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """What the fake received."""

    voice_id: str
    query: dict[str, str]
    body: dict[str, Any]


class FakeElevenLabs:
    """``async with FakeElevenLabs([Audio(...)]) as fake:`` then ``base_url=fake.base_url``."""

    def __init__(self, answers: list[Audio] | None = None, api_key: str = API_KEY):
        self.answers = list(answers or [])
        self.api_key = api_key
        self.requests: list[Request] = []
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()
        self.base_url = ""

    async def __aenter__(self) -> FakeElevenLabs:
        app = web.Application()
        app.router.add_post("/v1/text-to-speech/{voice_id}/stream", self._stream)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.base_url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _wait(self, seconds: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("xi-api-key") != self.api_key:
            return _error(401, "invalid_api_key", "Invalid API key")
        voice_id = request.match_info["voice_id"]
        body = await request.json()
        self.requests.append(Request(voice_id=voice_id, query=dict(request.query), body=body))
        audio = self.answers.pop(0) if self.answers else Audio(chunks=(b"\xff" * 160,))
        await self._wait(audio.first_delay_s)
        if audio.status != 200:
            return _error(audio.status, "internal_error", "Something went wrong")
        response = web.StreamResponse(headers={"Content-Type": "audio/basic"})
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


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response({"detail": {"status": code, "message": message}}, status=status)
