"""voicecall.runtime.sim.carrier: the mock carrier (a loopback fake of the three providers).

:class:`MockCarrier` serves a carrier's REST API, sends its signed webhooks, executes TwiML,
Plivo XML or Telnyx commands, and plays the caller of a script. See ``carrier.py``; media
streams (the caller's voice, the bot's audio, marks, clears, barge-in) are ``streams.py``.
"""

from __future__ import annotations

from .carrier import PROVIDERS, MockCarrier, generate_credentials
from .model import Clear, Delivery, Entry, MockCall, RecordedRequest, StreamRecord, Utterance
from .streams import CarrierStream, StreamSpec

__all__ = [
    "PROVIDERS",
    "CarrierStream",
    "Clear",
    "Delivery",
    "Entry",
    "MockCall",
    "MockCarrier",
    "RecordedRequest",
    "StreamRecord",
    "StreamSpec",
    "Utterance",
    "generate_credentials",
]
