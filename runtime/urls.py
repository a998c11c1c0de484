"""The URLs the carriers call back, and Telnyx's client_state: what they carry and how.

Every callback URL names our call, what the request is (``kind``), and for waits the block and
step it answers, so that a webhook finds its place without any lookup by provider id:

    https://example.com/voice/webhook?call=<call id>&kind=input&block=greet&step=1

Kinds: ``answer`` (the carrier fetches what to do when the callee answers), ``status`` (call
progress callbacks), ``input`` (a gather result), ``dial`` (a transfer's outcome), ``live``
(the carrier fetches an update we pushed: an agent's turn), ``hangup`` (Plivo's hangup_url),
``event`` (Telnyx: every event of the call). An inbound call's first request has no query.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

_ASCII_DIGITS = re.compile(r"[0-9]+")
KINDS = ("answer", "status", "input", "dial", "live", "hangup", "event")


def callback_url(
    base: str, call_id: str, kind: str, block: str | None = None, step: int | None = None
) -> str:
    """The URL a carrier calls back for one call, with the query in a fixed order."""
    assert kind in KINDS, kind
    sep = "&" if "?" in base else "?"
    url = f"{base}{sep}call={quote(call_id, safe='')}&kind={kind}"
    if block is not None:
        url += f"&block={quote(block, safe='')}"
    if step is not None:
        url += f"&step={int(step)}"
    return url


@dataclass(frozen=True, slots=True)
class Place:
    """Where in a call a request or event belongs."""

    call_id: str | None = None
    kind: str | None = None
    block: str | None = None
    step: int | None = None


MAX_STEP_DIGITS = 9  # steps we write are small; a longer one is not ours


def place_from_query(query: Mapping[str, str]) -> Place:
    """Reads call, kind, block and step from a callback URL's query (missing parts are None).

    Raises:
        ValueError: ``step`` is not 1 to 9 ASCII digits (``str.isdigit`` also takes "²", which
            ``int`` refuses, and ``int`` refuses more than 4,300 digits).
    """
    step = query.get("step")
    if step is not None and not (len(step) <= MAX_STEP_DIGITS and _ASCII_DIGITS.fullmatch(step)):
        raise ValueError(f"step is not a number: {step[:20]!r}")
    return Place(
        call_id=query.get("call") or None,
        kind=query.get("kind") or None,
        block=query.get("block") or None,
        step=int(step) if step is not None else None,
    )


def encode_state(
    call_id: str, block: str | None = None, step: int | None = None,
    extra: Mapping[str, str] | None = None,
) -> str:  # fmt: skip
    """Telnyx client_state: base64 of {"c": call, "b": block, "s": step} (echoed in webhooks),
    with ``extra`` keys beside them (a media stream's callId and token)."""
    data: dict[str, object] = {**(extra or {}), "c": call_id, "b": block, "s": step}
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.b64encode(raw).decode()


def decode_state(value: str | None) -> Place:
    """The place a Telnyx client_state names; an empty Place when it is absent or not ours."""
    if not value:
        return Place()
    try:
        data = json.loads(base64.b64decode(value, validate=True))
    except (ValueError, TypeError):
        return Place()
    if not isinstance(data, dict) or not _text(data.get("c")):
        return Place()
    step = data.get("s")
    block = data.get("b") if _text(data.get("b")) else None
    return Place(call_id=data["c"], kind="event", block=block,
                 step=step if isinstance(step, int) else None)  # fmt: skip


def _text(value: object) -> bool:
    """A string UTF-8 can encode: JSON may escape half a UTF-16 pair ("\\ud800"), which
    Python reads into a str that SQLite (UTF-8) refuses."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def websocket_url(base_url: str) -> str:
    """The WebSocket base for an HTTP base: http→ws, https→wss, the rest kept (the OpenAI
    SDK ignores OPENAI_BASE_URL for its wss:// realtime URL, so it is derived and passed)."""
    parts = urlsplit(base_url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    return urlunsplit(parts._replace(scheme=scheme))
