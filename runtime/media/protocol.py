"""What the three carriers' media-stream protocols have in common: typed events.

Each carrier module (:mod:`.twilio`, :mod:`.telnyx`, :mod:`.plivo`) is a pure protocol module in
the manner of wsproto: a JSON text frame in, one of these events out, and builders for the frames
we send. No sockets, no asyncio, no clock: every protocol rule is a plain unit test, and the
WebSocket endpoint (:mod:`.streams`) only moves frames between the socket and these functions.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

ULAW_CONTENT_TYPE = "audio/x-mulaw"


class ProtocolError(ValueError):
    """A frame that is not the carrier's protocol (not JSON, a field missing or mistyped)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Connected:
    """The socket is the carrier's stream; a ``start`` follows."""

    protocol: str = ""
    version: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Start:
    """The stream's metadata: which call, which tracks, what audio, and our parameters.

    ``params`` are what we asked the carrier to hand back (Twilio ``<Parameter>``, Plivo
    ``extraHeaders``, Telnyx ``client_state``): the call id and the stream token live there.
    """

    stream_id: str
    call_id: str  # the carrier's call id (CallSid, call_control_id, CallUUID)
    account_id: str = ""
    tracks: tuple[str, ...] = ()
    params: Mapping[str, str] = field(default_factory=dict)
    encoding: str = ""
    sample_rate: int = 8000
    channels: int = 1
    sequence: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Media:
    stream_id: str
    payload: bytes  # the carrier's codec bytes (μ-law 8 kHz here), base64-decoded
    track: str = "inbound"
    chunk: int | None = None
    timestamp: int | None = None  # milliseconds (Twilio: from the stream's start)
    sequence: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Mark:
    """The carrier played our audio up to the mark named ``name`` (or cleared it: see
    :class:`voicecall.runtime.media.marks.MarkTracker`)."""

    stream_id: str
    name: str
    sequence: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Dtmf:
    stream_id: str
    digit: str
    track: str = ""
    sequence: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Cleared:
    """Plivo's ``clearedAudio``: our queued audio was dropped."""

    stream_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamError:
    """Telnyx's ``error`` event (the stream continues or a ``stop`` follows)."""

    stream_id: str
    code: str = ""
    title: str = ""
    detail: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    stream_id: str
    call_id: str = ""
    sequence: int | None = None


Event = Connected | Start | Media | Mark | Dtmf | Cleared | StreamError | Stop


@dataclass(frozen=True, slots=True, kw_only=True)
class StreamProtocol:
    """One carrier's protocol, as the endpoint uses it."""

    name: str
    parse: Callable[[str | bytes], Event]
    media: Callable[[str, bytes], str]  # (stream id, μ-law bytes) -> frame
    clear: Callable[[str], str]
    mark: Callable[[str, str], str]  # (stream id, mark name) -> frame


# --- helpers for the carrier modules ----------------------------------------------------------


def load(text: str | bytes) -> tuple[str, Mapping[str, Any]]:
    """The frame as a JSON object and its ``event`` name."""
    try:
        data = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("not a JSON object")
    event = data.get("event")
    if not isinstance(event, str):
        raise ProtocolError("no event name")
    return event, data


def dump(message: Mapping[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def obj(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ProtocolError(f"{key}: an object is required")
    return value


def text(data: Mapping[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise ProtocolError(f"{key}: a string is required")
    return value


def number(data: Mapping[str, Any], key: str) -> int | None:
    """A count that one carrier sends as a JSON number and another as a decimal string."""
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, bool):
        raise ProtocolError(f"{key}: a number is required")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and value.isascii():
        return int(value)
    raise ProtocolError(f"{key}: a number is required")


def payload(media: Mapping[str, Any]) -> bytes:
    raw = text(media, "payload")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("media.payload: not base64") from None


def media(data: Mapping[str, Any], stream_id: str, sequence: int | None) -> Media:
    """A ``media`` frame: the three carriers name its body's fields alike."""
    body = obj(data, "media")
    return Media(stream_id=stream_id, payload=payload(body), sequence=sequence,
                 track=text(body, "track", required=False) or "inbound",
                 chunk=number(body, "chunk"), timestamp=number(body, "timestamp"))  # fmt: skip


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def string_map(value: Any, key: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ProtocolError(f"{key}: an object of strings is required")
    return dict(value)


def stream_url(url: str) -> str:
    """A stream URL as carriers take it: ``wss://``, no query string (Twilio strips it and
    refuses some, error 31920; our parameters travel in the protocol instead)."""
    if not url.startswith("wss://") or "?" in url or "#" in url:
        raise ValueError(f"stream URL must be wss:// with no query string, not {url!r}")
    return url


def tracks(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
        raise ProtocolError("tracks: a list of strings is required")
    return tuple(value)
