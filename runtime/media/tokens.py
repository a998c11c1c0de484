"""Per-call stream tokens: what lets a WebSocket claim to be a call's media stream.

A token is issued when we hand the carrier a stream instruction (Twilio ``<Parameter>``, Plivo
``extraHeaders``, Telnyx ``client_state``) and comes back in the stream's ``start``. It is random
(16 bytes, hex), bound to one call id, compared in constant time, usable once and only for
``ttl_s`` after it was issued: a token seen in a log or replayed later opens nothing.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class TokenCheck(StrEnum):
    OK = "ok"
    UNKNOWN = "no stream token issued for this call (or already used)"
    WRONG = "wrong stream token"
    EXPIRED = "stream token expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class _Issued:
    token: str
    expires: float


class StreamTokens:
    """The live tokens, one per call id (a new one replaces the call's previous one)."""

    def __init__(self, *, ttl_s: float = 30.0, now: Callable[[], float] = time.monotonic):
        self.ttl_s = ttl_s
        self._now = now
        self._issued: dict[str, _Issued] = {}

    def issue(self, call_id: str) -> str:
        """A fresh token for ``call_id`` (16 random bytes, hex)."""
        self._purge()
        token = secrets.token_hex(16)  # alphanumeric: Plivo's extraHeaders allow no other
        self._issued[call_id] = _Issued(token=token, expires=self._now() + self.ttl_s)
        return token

    def redeem(self, call_id: str, token: str) -> TokenCheck:
        """Checks ``token`` for ``call_id`` and, if it is right, uses it up.

        A wrong token does not use it up: guessing one is hopeless, and the carrier's own
        stream must still get in after a forged attempt.
        """
        issued = self._issued.get(call_id)
        if issued is None:
            return TokenCheck.UNKNOWN
        if not hmac.compare_digest(issued.token.encode(), token.encode()):
            return TokenCheck.WRONG
        del self._issued[call_id]
        if self._now() > issued.expires:
            return TokenCheck.EXPIRED
        return TokenCheck.OK

    def revoke(self, call_id: str) -> None:
        """The call ended: its token opens nothing any more."""
        self._issued.pop(call_id, None)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._issued

    def __len__(self) -> int:
        return len(self._issued)

    def _purge(self) -> None:
        now = self._now()
        for call_id in [c for c, i in self._issued.items() if now > i.expires]:
            del self._issued[call_id]
