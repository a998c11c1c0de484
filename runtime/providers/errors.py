"""The one exception a carrier's REST API failure becomes, whatever the SDK raised."""

from __future__ import annotations

from collections.abc import Iterable


class ProviderError(Exception):
    """A carrier's REST API refused a request or could not be reached.

    ``status`` is the HTTP status (``None`` when no response came back). The message never
    carries credentials: adapters build it from the carrier's error text, passed through
    :func:`redact` with their secrets.
    """

    def __init__(self, provider: str, status: int | None, message: str):
        self.provider = provider
        self.status = status
        self.message = message
        where = f"{provider} API" if status is None else f"{provider} API (HTTP {status})"
        super().__init__(f"{where}: {message}")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by ``***`` (carriers may echo them)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text
