"""Plivo audio streams (``<Stream bidirectional="true">``): frames in, events out, and back.

Plivo sends ``start``, ``media``, ``dtmf``, ``playedStream`` (a checkpoint reached; an older
page calls it ``played``: both are accepted) and ``clearedAudio``; its counters are JSON numbers,
and our parameters come back in ``extra_headers`` (``k=v;k2=v2``). We send ``playAudio``,
``checkpoint`` and ``clearAudio``; the codec must not change between ``playAudio`` events, so
every one is μ-law 8 kHz.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from plivo import plivoxml

from voicecall.runtime.media import protocol as p

NAME = "plivo"


def parse(frame: str | bytes) -> p.Event:
    """One frame from Plivo as an event.

    Raises:
        ProtocolError: not a Plivo audio-stream message.
    """
    event, data = p.load(frame)
    if event == "start":
        return _start(data)
    sid = p.text(data, "streamId")
    seq = p.number(data, "sequenceNumber")
    if event == "media":
        return p.media(data, sid, seq)
    if event in ("playedStream", "played"):
        return p.Mark(stream_id=sid, name=p.text(data, "name"), sequence=seq)
    if event == "clearedAudio":
        return p.Cleared(stream_id=sid)
    if event == "dtmf":
        return p.Dtmf(stream_id=sid, digit=p.text(p.obj(data, "dtmf"), "digit"), sequence=seq)
    if event == "stop":  # not in Plivo's list; the socket's close is the usual end
        return p.Stop(stream_id=sid, sequence=seq)
    raise p.ProtocolError(f"unknown Plivo stream event {event!r}")


def _start(data: Mapping[str, Any]) -> p.Start:
    start = p.obj(data, "start")
    fmt = p.obj(start, "mediaFormat")
    return p.Start(
        stream_id=p.text(start, "streamId"),
        call_id=p.text(start, "callId"),
        account_id=p.text(start, "accountId", required=False),
        tracks=p.tracks(start.get("tracks")),
        params=extra_headers(p.text(data, "extra_headers", required=False)),
        encoding=p.text(fmt, "encoding"),
        sample_rate=p.number(fmt, "sampleRate") or 8000,
        channels=p.number(fmt, "channels") or 1,
        sequence=p.number(data, "sequenceNumber"),
    )


def extra_headers(value: str) -> dict[str, str]:
    """``k=v;k2=v2`` (``,`` accepted too, as ``<Stream extraHeaders>`` is written) as a dict."""
    out: dict[str, str] = {}
    for item in value.replace(",", ";").split(";"):
        key, sep, val = item.partition("=")
        if sep and key.strip():
            out[key.strip()] = val.strip()
    return out


def media(stream_id: str, ulaw: bytes) -> str:
    """``playAudio`` with μ-law 8 kHz (Plivo's documented shape: no stream id)."""
    return p.dump({"event": "playAudio", "media": {"contentType": p.ULAW_CONTENT_TYPE,
                                                   "sampleRate": 8000,
                                                   "payload": p.b64(ulaw)}})  # fmt: skip


def mark(stream_id: str, name: str) -> str:
    """A ``checkpoint``: Plivo answers ``playedStream`` with this name once played."""
    return p.dump({"event": "checkpoint", "streamId": stream_id, "name": name})


def clear(stream_id: str) -> str:
    """``clearAudio``: Plivo drops queued audio and answers ``clearedAudio``."""
    return p.dump({"event": "clearAudio", "streamId": stream_id})


MAX_EXTRA_HEADERS = 512  # bytes, Plivo's limit


def stream_xml(url: str, params: Mapping[str, str]) -> str:
    """The Plivo XML that opens a bidirectional μ-law stream carrying ``params`` in
    ``extraHeaders`` (``k=v,k2=v2``: alphanumerics only, at most 512 bytes).

    Raises:
        ValueError: a bad URL, or parameters Plivo would not carry.
    """
    if not all(k.isalnum() and k.isascii() and v.isalnum() and v.isascii()
               for k, v in params.items()):  # fmt: skip
        raise ValueError("Plivo extraHeaders carry alphanumeric names and values only")
    headers = ",".join(f"{k}={v}" for k, v in params.items())
    if len(headers) > MAX_EXTRA_HEADERS:
        raise ValueError(f"Plivo extraHeaders are {MAX_EXTRA_HEADERS} bytes at most")
    response = plivoxml.ResponseElement()
    response.add(plivoxml.StreamElement(p.stream_url(url), bidirectional=True,
                                        audioTrack="inbound", keepCallAlive=True,
                                        contentType=f"{p.ULAW_CONTENT_TYPE};rate=8000",
                                        extraHeaders=headers))  # fmt: skip
    return str(response.to_string(pretty=False))


PROTOCOL = p.StreamProtocol(name=NAME, parse=parse, media=media, clear=clear, mark=mark)
