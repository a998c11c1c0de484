"""Twilio Media Streams (``<Connect><Stream>``, bidirectional): frames in, events out, and back.

Twilio sends ``connected``, ``start``, ``media``, ``dtmf``, ``mark`` and ``stop``; its counters
(``sequenceNumber``, ``chunk``, ``timestamp``) are JSON strings. We may send only ``media``
(base64 μ-law 8 kHz, no header), ``mark`` and ``clear``, each with the ``streamSid``: anything
else is Twilio error 31924. Twilio strips query strings from stream URLs, so our parameters come
back in ``start.customParameters`` (``<Parameter>``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from twilio.twiml.voice_response import Connect, VoiceResponse

from voicecall.runtime.media import protocol as p

NAME = "twilio"


def parse(frame: str | bytes) -> p.Event:
    """One frame from Twilio as an event.

    Raises:
        ProtocolError: not a Twilio Media Streams message.
    """
    event, data = p.load(frame)
    if event == "connected":
        return p.Connected(protocol=p.text(data, "protocol", required=False),
                           version=p.text(data, "version", required=False))  # fmt: skip
    if event == "start":
        return _start(data)
    sid = p.text(data, "streamSid")
    seq = p.number(data, "sequenceNumber")
    if event == "media":
        return p.media(data, sid, seq)
    if event == "mark":
        return p.Mark(stream_id=sid, name=p.text(p.obj(data, "mark"), "name"), sequence=seq)
    if event == "dtmf":
        dtmf = p.obj(data, "dtmf")
        return p.Dtmf(stream_id=sid, digit=p.text(dtmf, "digit"), sequence=seq,
                      track=p.text(dtmf, "track", required=False))  # fmt: skip
    if event == "stop":
        stop = data.get("stop")
        call = p.text(stop, "callSid", required=False) if isinstance(stop, dict) else ""
        return p.Stop(stream_id=sid, call_id=call, sequence=seq)
    raise p.ProtocolError(f"unknown Twilio stream event {event!r}")


def _start(data: Mapping[str, Any]) -> p.Start:
    start = p.obj(data, "start")
    fmt = p.obj(start, "mediaFormat")
    return p.Start(
        stream_id=p.text(data, "streamSid"),
        call_id=p.text(start, "callSid"),
        account_id=p.text(start, "accountSid", required=False),
        tracks=p.tracks(start.get("tracks")),
        params=p.string_map(start.get("customParameters"), "start.customParameters"),
        encoding=p.text(fmt, "encoding"),
        sample_rate=p.number(fmt, "sampleRate") or 8000,
        channels=p.number(fmt, "channels") or 1,
        sequence=p.number(data, "sequenceNumber"),
    )


def media(stream_id: str, ulaw: bytes) -> str:
    """Audio to play: μ-law 8 kHz, no header (Twilio queues it in order)."""
    return p.dump({"event": "media", "streamSid": stream_id, "media": {"payload": p.b64(ulaw)}})


def mark(stream_id: str, name: str) -> str:
    """Ask Twilio to echo ``name`` once the audio sent before it has played (or was cleared)."""
    return p.dump({"event": "mark", "streamSid": stream_id, "mark": {"name": name}})


def clear(stream_id: str) -> str:
    """Drop the audio Twilio has queued; the pending marks come back at once."""
    return p.dump({"event": "clear", "streamSid": stream_id})


def connect_stream(url: str, params: Mapping[str, str]) -> str:
    """The TwiML that opens a bidirectional stream: ``<Connect><Stream>`` with ``params`` as
    ``<Parameter>`` (TwiML after it waits until the socket closes).

    Raises:
        ValueError: ``url`` is not ``wss://`` or has a query string.
    """
    connect = Connect()
    stream = connect.stream(url=p.stream_url(url))
    for name, value in params.items():
        stream.parameter(name=name, value=value)
    response = VoiceResponse()
    response.append(connect)
    return str(response)


PROTOCOL = p.StreamProtocol(name=NAME, parse=parse, media=media, clear=clear, mark=mark)
