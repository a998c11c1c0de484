"""Adapters by provider name, imported on first use (the carriers' SDKs are slow to import)."""

from __future__ import annotations

from voicecall.dsl.lookup import load_named
from voicecall.runtime.providers.base import Adapter

# name -> module holding ADAPTER. `provider: mock` is no adapter: the runtime starts the mock
# carrier and points one of these at it (runtime/app.py).
ADAPTERS = {
    "twilio": "voicecall.runtime.providers.twilio",
    "plivo": "voicecall.runtime.providers.plivo",
    "telnyx": "voicecall.runtime.providers.telnyx",
}


def get_adapter(name: str) -> type[Adapter]:
    """The adapter class for a provider name.

    Raises:
        KeyError: "unknown provider 'twilo'; did you mean 'twilio'?"
    """
    adapter: type[Adapter] = load_named(ADAPTERS, name, "ADAPTER")
    return adapter
