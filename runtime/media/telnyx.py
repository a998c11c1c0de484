"""Telnyx media streaming (``streaming_start`` / ``stream_url``, bidirectional RTP mode).

Telnyx sends ``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``error`` and ``stop`` with
snake_case fields (``stream_id``, ``sequence_number``, ``call_control_id``); the order of frames
is not guaranteed (``sequence_number`` and ``media.chunk`` tell it). We send ``media`` (in RTP mode
the raw payload of the stream's bidirectional codec, PCMU here), ``clear`` and ``mark``, none of
which names the stream. Our parameters travel in ``client_state`` (base64 of a JSON object).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from voicecall.runtime.media import protocol as p

NAME = "telnyx"


def parse(frame: str | bytes) -> p.Event:
    """One frame from Telnyx as an event.

    Raises:
        ProtocolError: not a Telnyx media-streaming message.
    """
    event, data = p.load(frame)
    if event == "connected":
        return p.Connected(version=p.text(data, "version", required=False))
    if event == "start":
        return _start(data)
    if event == "error":
        return _error(data)
    return _sequenced(event, data)


def _sequenced(event: str, data: Mapping[str, Any]) -> p.Event:
    sid = p.text(data, "stream_id")
    seq = p.number(data, "sequence_number")
    if event == "media":
        return p.media(data, sid, seq)
    if event == "mark":
        return p.Mark(stream_id=sid, name=p.text(p.obj(data, "mark"), "name"), sequence=seq)
    if event == "dtmf":
        return p.Dtmf(stream_id=sid, digit=p.text(p.obj(data, "dtmf"), "digit"), sequence=seq)
    if event == "stop":
        stop = data.get("stop")
        call = p.text(stop, "call_control_id", required=False) if isinstance(stop, dict) else ""
        return p.Stop(stream_id=sid, call_id=call, sequence=seq)
    raise p.ProtocolError(f"unknown Telnyx stream event {event!r}")


def _error(data: Mapping[str, Any]) -> p.StreamError:
    error = data.get("payload")
    error = error if isinstance(error, dict) else {}
    return p.StreamError(stream_id=p.text(data, "stream_id", required=False),
                         code=str(error.get("code", "")), title=str(error.get("title", "")),
                         detail=str(error.get("detail", "")))  # fmt: skip


def _start(data: Mapping[str, Any]) -> p.Start:
    start = p.obj(data, "start")
    fmt = p.obj(start, "media_format")
    return p.Start(
        stream_id=p.text(data, "stream_id"),
        call_id=p.text(start, "call_control_id"),
        account_id=p.text(start, "user_id", required=False),
        tracks=p.tracks(start.get("tracks")),
        params=client_state_params(p.text(start, "client_state", required=False)),
        encoding=p.text(fmt, "encoding"),
        sample_rate=p.number(fmt, "sample_rate") or 8000,
        channels=p.number(fmt, "channels") or 1,
        sequence=p.number(data, "sequence_number"),
    )


def client_state_params(client_state: str) -> dict[str, str]:
    """Our parameters from ``client_state``; anything else there (another app's state) is none."""
    if not client_state:
        return {}
    try:
        data = json.loads(base64.b64decode(client_state, validate=True))
    except (binascii.Error, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, str)}


def client_state(params: Mapping[str, str]) -> str:
    """``client_state`` carrying ``params`` (the inverse of :func:`client_state_params`)."""
    return base64.b64encode(p.dump(dict(params)).encode()).decode("ascii")


def media(stream_id: str, ulaw: bytes) -> str:
    """Audio to play (RTP mode: raw PCMU, 20 ms to 30 s a message). Telnyx frames we send
    name no stream: the socket is the stream."""
    return p.dump({"event": "media", "media": {"payload": p.b64(ulaw)}})


def mark(stream_id: str, name: str) -> str:
    return p.dump({"event": "mark", "mark": {"name": name}})


def clear(stream_id: str) -> str:
    return p.dump({"event": "clear"})


def streaming_start(url: str, params: Mapping[str, str]) -> dict[str, str]:
    """The ``streaming_start`` command's parameters for a bidirectional PCMU stream (RTP mode:
    our frames are raw 20 ms payloads) that carries ``params`` in ``client_state``.

    Raises:
        ValueError: ``url`` is not ``wss://`` or has a query string.
    """
    return {"stream_url": p.stream_url(url), "stream_track": "inbound_track",
            "stream_codec": "PCMU", "stream_bidirectional_mode": "rtp",
            "stream_bidirectional_codec": "PCMU",
            "client_state": client_state(params)}  # fmt: skip


PROTOCOL = p.StreamProtocol(name=NAME, parse=parse, media=media, clear=clear, mark=mark)
