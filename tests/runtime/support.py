"""A stand-in carrier adapter and flow source for runtime tests without a carrier."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from tests.compiler.conftest import bundled
from voicecall.runtime.providers.base import (
    Adapter,
    AdapterSettings,
    BadRequest,
    CallStatus,
    Event,
    EventKind,
    Reply,
    Verification,
    WebhookRequest,
)  # fmt: skip


class StandIn(Adapter):
    """Signs with a shared word; speaks JSON events; answers TwiML-like XML."""

    name = "twilio"
    signature_headers = ("X-Test-Signature",)

    def __init__(self) -> None:
        super().__init__(AdapterSettings(credentials={}))
        self.parsed = 0
        self.hangups: list[str] = []
        self.status = CallStatus.ACTIVE

    def verify(self, request: WebhookRequest) -> Verification:
        if request.headers.get("X-Test-Signature") != "good":
            return Verification(False, "signature does not match")
        return Verification(
            True, key=hashlib.sha256(request.url.encode() + request.body).hexdigest()
        )

    def parse(self, request: WebhookRequest) -> list[Event]:
        self.parsed += 1
        try:
            data = json.loads(request.body)
        except ValueError as exc:
            raise BadRequest("body is not JSON") from exc
        return [
            Event(
                kind=EventKind(data["kind"]),
                provider=self.name,
                direction="inbound",
                provider_call_id=data.get("id"),
                from_number=data.get("from"),
            )
        ]

    def document(self, fragments: Sequence[str]) -> Reply:
        return Reply(("<Response>" + "".join(fragments) + "</Response>").encode(), "text/xml")

    def empty(self) -> Reply:
        return Reply(b"<Response/>", "text/xml")

    async def create_call(self, **_: Any) -> str:
        return "P1"

    async def hangup(self, provider_call_id: str) -> None:
        self.hangups.append(provider_call_id)

    async def command(
        self, provider_call_id: str, command: str, body: Mapping[str, object]
    ) -> None:
        pass

    async def call_status(self, provider_call_id: str) -> CallStatus:
        return self.status


class Flows:
    def flow(self, name: str) -> Any:
        return bundled()[name]

    def flows(self) -> Any:
        return bundled()
