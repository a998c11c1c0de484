"""Ad hoc blocks for agent commands: "say this, then listen", "say this, then hang up".

They are written as a small flow and compiled by the same backend as the call's flow, with the
same voice and language settings, so an agent's turn sounds like the rest of the call and goes
through the same escaping. Their block ids start with ``@`` in callback URLs.
"""

from __future__ import annotations

from functools import lru_cache

import yaml

from voicecall.compiler.base import CompiledFlow, compile_flow
from voicecall.dsl import model as m
from voicecall.dsl.errors import FlowError
from voicecall.dsl.validate import validate_text

PREFIX = "@"
TURN, FINAL, LISTEN, REJECT, HANGUP = "turn", "final", "listen", "reject", "hangup"
DTMF = "dtmf"  # keypad tones sent to a live call, then listening again
KINDS = (TURN, FINAL, LISTEN, DTMF)


def _settings(settings: m.Settings) -> dict[str, object]:
    out: dict[str, object] = {}
    if settings.voice:
        out["voice"] = settings.voice
    if settings.language:
        out["language"] = settings.language
    for name, provider in settings.providers:
        fields = {k: getattr(provider, k) for k in ("voice", "language", "speech_model",
                  "service_level") if getattr(provider, k)}  # fmt: skip
        if fields:
            out[name] = fields
    return out


@lru_cache(maxsize=256)
def _adhoc(provider: str, settings: m.Settings, start: str) -> CompiledFlow:
    flow = {
        "version": 1,
        "name": "agent-turn",
        "description": "What an agent says on a live call.",
        "params": {"message": {"type": "string", "default": ""}},
        "settings": _settings(settings),
        "start": start,
        "nodes": {
            TURN: [{"say": "{{ message }}"}, {"converse": {"driver": "agent"}}],
            FINAL: [{"say": "{{ message }}"}, "hangup"],
            LISTEN: [{"converse": {"driver": "agent"}}],
            REJECT: [{"say": "{{ message }}"}, "hangup"],
            HANGUP: ["hangup"],
            DTMF: [{"send_digits": "{{ message }}"}, {"converse": {"driver": "agent"}}],
        },
    }
    checked = validate_text(yaml.safe_dump(flow, sort_keys=False), "<agent-turn>")
    if checked.flow is None or not checked.ok:
        raise FlowError(list(checked.diagnostics))
    return compile_flow(checked.flow, provider, {})


def agent_flow(compiled: CompiledFlow, kind: str) -> CompiledFlow:
    """An agent-turn flow (TURN, FINAL, LISTEN, DTMF; REJECT, HANGUP for a rejected caller) for a
    call's compiled flow: same provider and settings; its blocks start at ``kind``."""
    return _adhoc(compiled.provider, compiled.flow.settings, kind)
