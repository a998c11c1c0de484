"""The call manager: calls' lifecycle, one event at a time, exactly once (see
:mod:`voicecall.runtime.manager.facade` for its collaborators)."""

from voicecall.runtime.manager.core import (
    CallError,
    FlowSource,
    ManagerSettings,
    Outcome,
    Responder,
    Send,
)
from voicecall.runtime.manager.facade import CallManager

__all__ = ["CallError", "CallManager", "FlowSource", "ManagerSettings", "Outcome", "Responder",
           "Send"]  # fmt: skip
