"""The three carriers' media-stream protocols on frames shaped exactly as documented."""

from __future__ import annotations

import base64
import json
from types import ModuleType

import pytest

from voicecall.runtime.media import plivo, telnyx, twilio
from voicecall.runtime.media import protocol as p
from voicecall.runtime.media.marks import MarkOutcome, MarkTracker

AUDIO = bytes(range(160))
B64 = base64.b64encode(AUDIO).decode()

TWILIO_START = {"event": "start", "sequenceNumber": "1", "streamSid": "MZ1",
                "start": {"streamSid": "MZ1", "accountSid": "AC1", "callSid": "CA1",
                          "tracks": ["inbound"], "customParameters": {"token": "t", "callId": "c"},
                          "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                          "channels": 1}}}  # fmt: skip
TELNYX_START = {"event": "start", "sequence_number": "1", "stream_id": "S1",
                "start": {"user_id": "U1", "call_control_id": "v3:cc", "from": "+1555",
                          "to": "+1666", "client_state": telnyx.client_state({"token": "t"}),
                          "media_format": {"encoding": "PCMU", "sample_rate": 8000,
                                           "channels": 1}}}  # fmt: skip
PLIVO_START = {"event": "start", "sequenceNumber": 1,
               "start": {"callId": "CU1", "streamId": "ST1", "accountId": "MA1",
                         "tracks": ["inbound"],
                         "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}},
               "extra_headers": "callId=c;token=t"}  # fmt: skip


def test_twilio_frames_in() -> None:
    assert twilio.parse(json.dumps({"event": "connected", "protocol": "Call",
                                    "version": "1.0.0"})) == p.Connected(
        protocol="Call", version="1.0.0")  # fmt: skip
    assert twilio.parse(json.dumps(TWILIO_START)) == p.Start(
        stream_id="MZ1", call_id="CA1", account_id="AC1", tracks=("inbound",),
        params={"token": "t", "callId": "c"}, encoding="audio/x-mulaw", sample_rate=8000,
        channels=1, sequence=1)  # fmt: skip
    media = {
        "event": "media",
        "sequenceNumber": "3",
        "streamSid": "MZ1",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "5", "payload": B64},
    }
    assert twilio.parse(json.dumps(media)) == p.Media(
        stream_id="MZ1", payload=AUDIO, track="inbound", chunk=1, timestamp=5, sequence=3
    )
    dtmf = {
        "event": "dtmf",
        "streamSid": "MZ1",
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": "1"},
    }
    assert twilio.parse(json.dumps(dtmf)) == p.Dtmf(
        stream_id="MZ1", digit="1", track="inbound_track", sequence=5
    )
    mark = {"event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": {"name": "m1"}}
    assert twilio.parse(json.dumps(mark)) == p.Mark(stream_id="MZ1", name="m1", sequence=4)
    stop = {
        "event": "stop",
        "sequenceNumber": "6",
        "streamSid": "MZ1",
        "stop": {"accountSid": "AC1", "callSid": "CA1"},
    }
    assert twilio.parse(json.dumps(stop)) == p.Stop(stream_id="MZ1", call_id="CA1", sequence=6)


def test_twilio_frames_out() -> None:
    assert json.loads(twilio.media("MZ1", AUDIO)) == {
        "event": "media",
        "streamSid": "MZ1",
        "media": {"payload": B64},
    }
    assert json.loads(twilio.mark("MZ1", "m")) == {
        "event": "mark",
        "streamSid": "MZ1",
        "mark": {"name": "m"},
    }
    assert json.loads(twilio.clear("MZ1")) == {"event": "clear", "streamSid": "MZ1"}


def test_telnyx_frames_in() -> None:
    assert telnyx.parse('{"event":"connected","version":"1.0.0"}') == p.Connected(version="1.0.0")
    assert telnyx.parse(json.dumps(TELNYX_START)) == p.Start(
        stream_id="S1", call_id="v3:cc", account_id="U1", params={"token": "t"},
        encoding="PCMU", sample_rate=8000, channels=1, sequence=1)  # fmt: skip
    media = {
        "event": "media",
        "sequence_number": "4",
        "stream_id": "S1",
        "media": {"track": "inbound", "chunk": "2", "timestamp": "20", "payload": B64},
    }
    assert telnyx.parse(json.dumps(media)) == p.Media(
        stream_id="S1", payload=AUDIO, track="inbound", chunk=2, timestamp=20, sequence=4
    )
    assert telnyx.parse(json.dumps({"event": "dtmf", "stream_id": "S1", "sequence_number": "5",
                                    "dtmf": {"digit": "#"}})) == p.Dtmf(
        stream_id="S1", digit="#", sequence=5)  # fmt: skip
    assert telnyx.parse(
        json.dumps({"event": "mark", "stream_id": "S1", "mark": {"name": "m"}})
    ) == p.Mark(stream_id="S1", name="m")
    error = {
        "event": "error",
        "stream_id": "S1",
        "payload": {"code": 100002, "title": "unknown_error", "detail": "x"},
    }
    assert telnyx.parse(json.dumps(error)) == p.StreamError(
        stream_id="S1", code="100002", title="unknown_error", detail="x"
    )
    stop = {
        "event": "stop",
        "sequence_number": "9",
        "stream_id": "S1",
        "stop": {"user_id": "U1", "call_control_id": "v3:cc"},
    }
    assert telnyx.parse(json.dumps(stop)) == p.Stop(stream_id="S1", call_id="v3:cc", sequence=9)


def test_telnyx_frames_out_name_no_stream() -> None:
    assert json.loads(telnyx.media("S1", AUDIO)) == {"event": "media", "media": {"payload": B64}}
    assert json.loads(telnyx.mark("S1", "m")) == {"event": "mark", "mark": {"name": "m"}}
    assert json.loads(telnyx.clear("S1")) == {"event": "clear"}


def test_telnyx_foreign_client_state_gives_no_params() -> None:
    assert telnyx.client_state_params(base64.b64encode(b"not json").decode()) == {}
    assert telnyx.client_state_params("%%%") == {}


def test_plivo_frames_in() -> None:
    assert plivo.parse(json.dumps(PLIVO_START)) == p.Start(
        stream_id="ST1", call_id="CU1", account_id="MA1", tracks=("inbound",),
        params={"callId": "c", "token": "t"}, encoding="audio/x-mulaw", sample_rate=8000,
        sequence=1)  # fmt: skip
    media = {"event": "media", "sequenceNumber": 42, "streamId": "ST1",
             "media": {"track": "inbound", "timestamp": "1705312200000", "chunk": 41,
                       "payload": B64}, "extra_headers": "callId=c"}  # fmt: skip
    assert plivo.parse(json.dumps(media)) == p.Media(
        stream_id="ST1", payload=AUDIO, track="inbound", chunk=41, timestamp=1705312200000,
        sequence=42)  # fmt: skip
    for name in ("playedStream", "played"):
        assert plivo.parse(json.dumps({"event": name, "streamId": "ST1", "name": "m"})) == (
            p.Mark(stream_id="ST1", name="m")
        )
    assert plivo.parse('{"event":"clearedAudio","streamId":"ST1"}') == p.Cleared(stream_id="ST1")
    assert plivo.parse(
        json.dumps({"event": "dtmf", "streamId": "ST1", "dtmf": {"digit": "5"}})
    ) == p.Dtmf(stream_id="ST1", digit="5")


def test_plivo_frames_out() -> None:
    assert json.loads(plivo.media("ST1", AUDIO)) == {
        "event": "playAudio",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": B64},
    }
    assert json.loads(plivo.mark("ST1", "m")) == {
        "event": "checkpoint",
        "streamId": "ST1",
        "name": "m",
    }
    assert json.loads(plivo.clear("ST1")) == {"event": "clearAudio", "streamId": "ST1"}


@pytest.mark.parametrize(
    ("module", "frame", "message"),
    [
        (twilio, "not json", "not JSON"),
        (twilio, "[1]", "not a JSON object"),
        (twilio, '{"event":"media","streamSid":"MZ1","media":{"payload":"@@"}}', "not base64"),
        (twilio, '{"event":"mark","streamSid":"MZ1","sequenceNumber":"x","mark":{"name":"m"}}',
         "sequenceNumber"),
        (twilio, '{"event":"hello","streamSid":"MZ1"}', "unknown Twilio stream event"),
        (twilio, '{"event":"start","streamSid":"MZ1","start":{"callSid":"CA1"}}', "mediaFormat"),
        (telnyx, '{"event":"media","stream_id":"S1"}', "media: an object"),
        (plivo, '{"event":"media","streamId":"ST1","sequenceNumber":true,'
                '"media":{"payload":""}}', "sequenceNumber"),
        (plivo, '{"event":"playAudio","streamId":"ST1"}', "unknown Plivo stream event"),
    ],
)  # fmt: skip
def test_malformed_frames_are_protocol_errors(module: ModuleType, frame: str,
                                              message: str) -> None:  # fmt: skip
    with pytest.raises(p.ProtocolError, match=message):
        module.parse(frame)


def test_marks_tell_heard_from_cut_off() -> None:
    marks = MarkTracker()
    for name in ("a", "b", "c"):
        marks.sent(name)
    assert marks.echoed("b") == (MarkOutcome(name="a", heard=True),
                                 MarkOutcome(name="b", heard=True))  # fmt: skip
    assert marks.cleared() == ("c",)
    assert marks.echoed("c") == (MarkOutcome(name="c", heard=False),)
    assert marks.echoed("c") == ()  # a second echo, or a forged one, means nothing
    assert marks.echoed("zzz") == ()
    marks.sent("d")
    marks.cleared()
    marks.forget_cut()
    assert marks.echoed("d") == ()


PARAMS = {"callId": "0f1e2d3c", "token": "ab12" * 8}


def test_twilio_connect_stream_twiml() -> None:
    assert twilio.connect_stream("wss://h.example/voice/stream", PARAMS) == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://h.example/voice/stream">'
        '<Parameter name="callId" value="0f1e2d3c" />'
        f'<Parameter name="token" value="{"ab12" * 8}" /></Stream></Connect></Response>'
    )


def test_plivo_stream_xml() -> None:
    assert plivo.stream_xml("wss://h.example/voice/stream", PARAMS) == (
        '<Response><Stream bidirectional="true" audioTrack="inbound" '
        'contentType="audio/x-mulaw;rate=8000" '
        f'extraHeaders="callId=0f1e2d3c,token={"ab12" * 8}" keepCallAlive="true">'
        "wss://h.example/voice/stream</Stream></Response>"
    )
    with pytest.raises(ValueError, match="alphanumeric"):
        plivo.stream_xml("wss://h/s", {"callId": "a-b"})
    with pytest.raises(ValueError, match="512"):
        plivo.stream_xml("wss://h/s", {"k": "a" * 600})


def test_telnyx_streaming_start_carries_params_in_client_state() -> None:
    command = telnyx.streaming_start("wss://h.example/voice/stream", PARAMS)
    assert command == {"stream_url": "wss://h.example/voice/stream",
                       "stream_track": "inbound_track", "stream_codec": "PCMU",
                       "stream_bidirectional_mode": "rtp", "stream_bidirectional_codec": "PCMU",
                       "client_state": command["client_state"]}  # fmt: skip
    assert telnyx.client_state_params(command["client_state"]) == PARAMS


@pytest.mark.parametrize("url", ["https://h/s", "wss://h/s?token=x", "ws://h/s"])
def test_stream_urls_are_wss_without_query(url: str) -> None:
    for build in (twilio.connect_stream, plivo.stream_xml, telnyx.streaming_start):
        with pytest.raises(ValueError, match="wss://"):
            build(url, PARAMS)
