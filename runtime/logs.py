"""Log records that say which call they are about, as text or one JSON object a line, and
never carry a configured secret.

Which call a line is about, in the order tried: ``extra={"call_id": …}`` on the call; the
call whose webhook is being handled (a context variable the webhook server sets around the
manager's work, so timers and sends started from it inherit it); a message that names the call
the way the runtime's lines do (``"call %s: …"``). The flow's ``file:line`` (the block the
webhook is about) is looked up only when a JSON line is written.

Secrets: :class:`Redactor` replaces every configured secret value in the formatted message and
traceback of every record that reaches the handler, whichever logger wrote it (carrier SDKs log
request headers), in both formats.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import IO, Any, Final

from voicecall.runtime.providers.base import Event

FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(name)s %(message)s"
MASK: Final = "<redacted>"
MIN_SECRET: Final = 4  # shorter values would mask ordinary words; config checks refuse them
# Messages that name a call in their first argument (the runtime's own wording).
_NAMING: Final = ("call %s", "media stream of call %s", "inbound call %s")


@dataclass(slots=True)
class CallContext:
    """The call a webhook is about, while the manager handles it."""

    manager: Any
    provider: str
    call_id: str | None
    provider_call_id: str | None
    block: str | None

    def resolved_id(self) -> str | None:
        if self.call_id is None and self.provider_call_id:
            with contextlib.suppress(Exception):
                found = self.manager.store.peek_by(self.provider, self.provider_call_id)
                self.call_id = found.call_id if found is not None else None
        return self.call_id

    def flow_at(self) -> str | None:
        """The ``file:line`` of the flow block the webhook is about (None if unknown)."""
        call_id = self.resolved_id()
        if call_id is None:
            return None
        try:
            call = self.manager.store.peek(call_id)  # never a network round trip for a log line
            block = self.block or (call.waiting.block if call and call.waiting else None)
            if call is None or block is None:
                return None
            found = self.manager.compiled(call.flow).blocks.get(block)
            return None if found is None else str(found.source.short)
        except Exception:  # a log line must never fail for want of a position
            return None


CALL: ContextVar[CallContext | None] = ContextVar("voicecall_call", default=None)


@contextlib.contextmanager
def webhook_context(manager: Any, provider: str, events: Sequence[Event]) -> Iterator[None]:
    """Names the call of a webhook's events for the lines logged while it is handled."""
    first = next((e for e in events if e.call_id or e.provider_call_id), None)
    context = CallContext(manager=manager, provider=provider,
                          call_id=first.call_id if first else None,
                          provider_call_id=first.provider_call_id if first else None,
                          block=first.block if first else None)  # fmt: skip
    token = CALL.set(context)
    try:
        yield
    finally:
        CALL.reset(token)


class CallFilter(logging.Filter):
    """Adds ``call_id`` and ``provider`` (None when unknown) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = CALL.get()
        if getattr(record, "call_id", None) is None:
            named = _named_call(record)
            record.call_id = named or (context.resolved_id() if context else None)
        if getattr(record, "provider", None) is None:
            record.provider = context.provider if context else None
        if context is not None and getattr(record, "call_id", None) == context.resolved_id():
            record.voicecall_call = context  # for the flow's file:line, if a JSON line asks
        return True


def _named_call(record: logging.LogRecord) -> str | None:
    msg = record.msg
    named = isinstance(msg, str) and any(msg.startswith(prefix) for prefix in _NAMING)
    if named and isinstance(record.args, tuple) and record.args:
        return str(record.args[0])
    return None


class Redactor(logging.Filter):
    """Replaces configured secret values in every record's message and traceback.

    The message is formatted here (once) so that a secret passed as an argument is caught
    too; the record then carries the finished text and no arguments.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """The values to hide from now on (longest first: one secret may contain another)."""
        kept = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET}
        self.secrets = tuple(sorted(kept, key=len, reverse=True))

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: logged as written, still redacted
            message = str(record.msg)
        record.msg, record.args = self.hide(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.hide(record.exc_text)
        if record.stack_info:
            record.stack_info = self.hide(record.stack_info)
        return True

    def hide(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, and when known
    call_id, provider and flow (``file:line``); exc for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _iso(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = getattr(record, "call_id", None)
        if call_id is not None:
            out["call_id"] = str(call_id)
        provider = getattr(record, "provider", None)
        if provider is not None:
            out["provider"] = str(provider)
        context = getattr(record, "voicecall_call", None)
        where = getattr(record, "flow", None) or (context.flow_at() if context else None)
        if where:
            out["flow"] = str(where)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False, default=str)


def _iso(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


def configure(log_format: str = "text", *, stream: IO[str] | None = None,
              secrets: Iterable[str] = ()) -> Redactor:  # fmt: skip
    """Our own lines at INFO, libraries' from WARNING, on one handler (stderr by default) in
    ``log_format``; returns the handler's :class:`Redactor` (secrets are known only once the
    config is loaded: :meth:`Redactor.update` then).

    Raises:
        ValueError: an unknown format.
    """
    handler, redactor = make_handler(log_format, stream or sys.stderr, secrets)
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig: a host that set up logging keeps its own
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    logging.getLogger("voicecall").setLevel(logging.INFO)
    return redactor


def make_handler(log_format: str, stream: IO[str],
                 secrets: Iterable[str] = ()) -> tuple[logging.Handler, Redactor]:  # fmt: skip
    """A stream handler writing ``log_format`` lines with the call filter and a redactor.

    Raises:
        ValueError: an unknown format.
    """
    if log_format not in FORMATS:
        raise ValueError(f"unknown log format {log_format!r}; expected text or json")
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if log_format == "json" else
                         logging.Formatter(TEXT_FORMAT))  # fmt: skip
    redactor = Redactor(secrets)
    handler.addFilter(CallFilter())
    handler.addFilter(redactor)
    return handler, redactor


def masked_values(value: Any, masked: Any, mark: str) -> list[str]:
    """The strings of ``value`` where its redacted copy ``masked`` holds ``mark`` (the plugin
    config redacted by its ``sensitive`` paths): the secret values, for :class:`Redactor`."""
    found: list[str] = []
    _walk(value, masked, mark, found)
    return found


def _walk(value: Any, masked: Any, mark: str, found: list[str]) -> None:
    if masked == mark and value != mark:
        found.extend(_strings(value))
    elif isinstance(value, str) and isinstance(masked, str) and masked != value and mark in masked:
        # A secret inside a text (a URL's password): what the mark stands for.
        head, _, tail = masked.partition(mark)
        if value.startswith(head) and value.endswith(tail):
            found.append(value[len(head) : len(value) - len(tail)])
    elif isinstance(value, Mapping) and isinstance(masked, Mapping):
        for key, inner in value.items():
            _walk(inner, masked.get(key), mark, found)
    elif isinstance(value, list) and isinstance(masked, list):
        for inner, hidden in zip(value, masked, strict=False):
            _walk(inner, hidden, mark, found)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []
