"""voicecall.runtime.sim.carrier: the mock carrier (a loopback fake of the three providers).

:class:`MockCarrier` serves a carrier's REST API, sends its signed webhooks, executes TwiML,
Plivo XML or Telnyx commands, and plays the caller of a script. See ``carrier.py``.
"""

from __future__ import annotations

from .carrier import PROVIDERS, MockCarrier, generate_credentials
from .model import Delivery, Entry, MockCall, RecordedRequest

__all__ = [
    "PROVIDERS",
    "Delivery",
    "Entry",
    "MockCall",
    "MockCarrier",
    "RecordedRequest",
    "generate_credentials",
]
