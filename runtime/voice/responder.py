"""The response model: what `converse: {driver: model}` and inbound auto-replies say back.

One OpenAI chat-completions request per caller turn through the official SDK, with the
original plugin's spoken-output contract (the model answers ``{"spoken": "…"}``; fenced JSON,
JSON inside prose and plain text are recovered, planning paragraphs dropped, empty means
silence), an ``end_call`` tool whose farewell is said before the hangup, and the conversation
history kept in the store under the ``sessionScope`` key, so a restart loses no context. A
reply that fails or is late is a short spoken fallback: the caller never hears dead air.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from openai import AsyncOpenAI

from voicecall.runtime.manager.core import ModelReply
from voicecall.runtime.state import CallRecord
from voicecall.runtime.store import Store

log = logging.getLogger("voicecall.runtime")

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT_MS = 30_000
FALLBACK = "Sorry, I'm having trouble answering right now. Could you say that again?"
END_CALL = "end_call"
SCOPES = ("per-phone", "per-call", "main")
# The original's contract, word for word: models follow this exact wording well.
SPOKEN_CONTRACT = "\n".join([
    "Output format requirements:",
    '- Return only valid JSON in this exact shape: {"spoken":"..."}',
    "- Do not include markdown, code fences, planning text, or extra keys.",
    '- Put exactly what should be spoken to the caller into "spoken".',
    '- If there is nothing to say, return {"spoken":""}.',
])  # fmt: skip
END_CALL_HINT = (f"When the conversation is over, call the {END_CALL} tool with a short farewell; "
                 "the farewell is spoken to the caller, then the call ends.")  # fmt: skip
FINISH = "finish_conversation"
FINISH_HINT = (f"Once you know every value the conversation needs, call the {FINISH} tool with "
               "them; say nothing more yourself.")  # fmt: skip
END_CALL_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": END_CALL,
        "description": "Say a farewell to the caller, then hang up.",
        "parameters": {
            "type": "object",
            "properties": {"farewell": {"type": "string",
                                        "description": "What to say before hanging up."}},
            "required": ["farewell"],
        },
    },
}  # fmt: skip


@dataclass(frozen=True, slots=True, kw_only=True)
class ResponderSettings:
    """The plugin config's responder keys (each overridable per number and per flow)."""

    model: str = DEFAULT_MODEL  # responseModel: `openai/<model>` or a bare model name
    system_prompt: str | None = None  # responseSystemPrompt (None: the original's prompt)
    timeout_ms: int = DEFAULT_TIMEOUT_MS  # responseTimeoutMs
    agent_id: str = "main"  # agentId
    session_scope: str = "per-phone"  # sessionScope
    history_messages: int = 40  # messages of history sent with each turn
    history_kept: int = 200  # messages kept per session in the store
    fallback: str = FALLBACK


class OpenAIResponder:
    """Answers caller turns with an OpenAI (or compatible) chat model."""

    def __init__(self, client: AsyncOpenAI, store: Store, settings: ResponderSettings):
        self.client = client
        self.store = store
        self.settings = settings

    async def reply(self, call: CallRecord, heard: str, options: Mapping[str, Any]) -> ModelReply:
        """The spoken answer to ``heard``; ``options`` are the flow's converse options and the
        dialled number's settings (model, system_prompt, timeout_ms, agent_id)."""
        settings = self._for(options)
        session = session_key(settings.session_scope, settings.agent_id, call)
        collect = options.get("collect")
        messages = await self._messages(call, settings, session, heard, finishing=bool(collect))
        tools = [END_CALL_TOOL, *([finish_tool(collect)] if collect else [])]
        timeout = settings.timeout_ms / 1000
        try:
            answer = await asyncio.wait_for(self._ask(settings, messages, tools, timeout),
                                            timeout)  # fmt: skip
        except TimeoutError:
            log.warning("call %s: the response model took over %d ms; saying the fallback",
                        call.call_id, settings.timeout_ms)  # fmt: skip
            return ModelReply(text=settings.fallback)
        except Exception as exc:  # the SDK's errors, and anything a compatible service sends
            log.warning("call %s: the response model failed (%s); saying the fallback",
                        call.call_id, type(exc).__name__)  # fmt: skip
            return ModelReply(text=settings.fallback)
        stored = json.dumps({"spoken": answer.text}, ensure_ascii=False)
        await self.store.add_history(session, [("user", heard), ("assistant", stored)],
                                     settings.history_kept)  # fmt: skip
        return answer

    def _for(self, options: Mapping[str, Any]) -> ResponderSettings:
        base = self.settings
        return replace(
            base,
            model=str(options.get("model") or base.model),
            system_prompt=options.get("system_prompt") or base.system_prompt,
            timeout_ms=int(options.get("timeout_ms") or base.timeout_ms),
            agent_id=str(options.get("agent_id") or base.agent_id),
        )

    async def _messages(
        self, call: CallRecord, settings: ResponderSettings, session: str, heard: str,
        *, finishing: bool = False,
    ) -> list[dict[str, Any]]:  # fmt: skip
        caller = call.from_number if call.direction == "inbound" else call.to_number
        prompt = settings.system_prompt or (
            f"You are {settings.agent_id}, a helpful voice assistant on a phone call. Keep "
            "responses brief and conversational (1-2 sentences max). Be natural and friendly. "
            f"The caller's phone number is {caller}.")  # fmt: skip
        hints = f"{END_CALL_HINT}\n{FINISH_HINT}" if finishing else END_CALL_HINT
        system = f"{prompt}\n\n{SPOKEN_CONTRACT}\n\n{hints}"
        history = await self.store.history(session, settings.history_messages)
        return [{"role": "system", "content": system},
                *({"role": role, "content": content} for role, content in history),
                {"role": "user", "content": heard}]  # fmt: skip

    async def _ask(
        self, settings: ResponderSettings, messages: list[dict[str, Any]],
        tools: list[dict[str, Any]], timeout: float,
    ) -> ModelReply:  # fmt: skip
        completion = await self.client.chat.completions.create(
            model=model_name(settings.model),
            messages=messages,  # type: ignore[arg-type]  # plain dicts of the wire format
            tools=tools,  # type: ignore[arg-type]
            timeout=timeout,
        )
        if not completion.choices:
            raise ValueError("the reply has no choices")
        message = completion.choices[0].message
        text = spoken_text(message.content or "")
        for tool in message.tool_calls or ():
            function = getattr(tool, "function", None)
            if function is not None and function.name == FINISH:
                return ModelReply(text=text, done=_values(function.arguments))
        for tool in message.tool_calls or ():
            function = getattr(tool, "function", None)
            if function is not None and function.name == END_CALL:
                farewell = _farewell(function.arguments)
                return ModelReply(text=" ".join(t for t in (text, farewell) if t), end=True)
        return ModelReply(text=text)


def finish_tool(collect: Mapping[str, Any]) -> dict[str, Any]:
    """The finishing tool of a conversation that collects values: its parameters are the
    JSON Schema of those values (``collect.tool_parameters``)."""
    return {"type": "function",
            "function": {"name": FINISH, "parameters": dict(collect),
                         "description": "Finish the conversation with the values it collected; "
                                        "the call goes on without you."}}  # fmt: skip


def _values(arguments: str) -> dict[str, Any]:
    """The finishing tool's values (checked by the flow, which says what to fix)."""
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def _farewell(arguments: str) -> str:
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError:
        return ""
    value = parsed.get("farewell") if isinstance(parsed, dict) else None
    return spoken_text(value) if isinstance(value, str) else ""


def model_name(ref: str) -> str:
    """`openai/gpt-4o-mini` → `gpt-4o-mini` (the original's provider/model form); a bare name
    goes to the service as it is."""
    provider, slash, model = ref.partition("/")
    return model if slash and provider == "openai" else ref


def session_key(scope: str, agent_id: str, call: CallRecord) -> str:
    """The history's key, as the original's: per-phone `agent:<id>:voice:<digits>` (the
    caller, or the callee of an outbound call), per-call `agent:<id>:voice:call:<callId>`,
    main `agent:<id>:main`."""
    agent = re.sub(r"[^a-z0-9_-]+", "-", agent_id.strip().lower()) or "main"
    if scope == "main":
        return f"agent:{agent}:main"
    prefix = f"agent:{agent}:voice"
    phone = call.from_number if call.direction == "inbound" else call.to_number
    digits = re.sub(r"\D", "", phone or "")
    if scope == "per-call" or not digits:
        return f"{prefix}:call:{call.call_id}".lower()
    return f"{prefix}:{digits}"


# --- the spoken-output contract ------------------------------------------------------------------

_FENCED = re.compile(r"^```(?:json)?\s*([\s\S]*?)\s*```$", re.IGNORECASE)
_INLINE = re.compile(r'"spoken"\s*:\s*"((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def spoken_text(raw: str) -> str:
    """What to say of a model's output ("" is silence): the ``spoken`` value of the contract's
    JSON (bare, fenced, or inside prose), else the plain text without code blocks and without
    leading planning paragraphs; whitespace collapsed."""
    structured = _spoken_json(raw)
    if structured is not None:
        return structured
    without_code = re.sub(r"```[\s\S]*?```", " ", raw).strip()
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n+", without_code) if p.strip()]
    while len(paragraphs) > 1 and _planning(paragraphs[0]):
        paragraphs.pop(0)
    return _normal(" ".join(paragraphs))


def _spoken_json(raw: str) -> str | None:
    trimmed = raw.strip()
    if not trimmed:
        return None
    candidates = [trimmed]
    fenced = _FENCED.match(trimmed)
    if fenced and fenced.group(1):
        candidates.append(fenced.group(1))
    first, last = trimmed.find("{"), trimmed.rfind("}")
    if 0 <= first < last:  # the JSON wrapped in prose
        candidates.append(trimmed[first : last + 1])
    for candidate in candidates:
        try:
            parsed = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(parsed, dict) and isinstance(parsed.get("spoken"), str):
            return _normal(parsed["spoken"])
    inline = _INLINE.search(trimmed)  # broken JSON around a well-formed "spoken" string
    if inline is None:
        return None
    try:
        decoded = json.loads(f'"{inline.group(1)}"')
    except ValueError:
        return None
    return _normal(decoded) if isinstance(decoded, str) else None


def _planning(paragraph: str) -> bool:
    """The original's test for a paragraph of the model's reasoning, never to be spoken."""
    lower = paragraph.lower()
    return (
        lower.startswith(("thinking process", "reasoning:", "analysis:"))
        or (lower.startswith("the user ")
            and any(p in lower for p in ("i should", "i need to", "i will")))
        or "this is a natural continuation of the conversation" in lower
        or "keep the conversation flowing" in lower
    )  # fmt: skip


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# --- building one from the config ----------------------------------------------------------------


def openai_options(raw: Mapping[str, Any], *, env: bool = True) -> dict[str, str] | None:
    """The OpenAI client settings for the responder: `responseProviders.openai.apiKey` and
    `.baseUrl`, else (``env``) the SDK's own OPENAI_API_KEY / OPENAI_BASE_URL; None when
    neither a key nor a base URL is set (no responder: the model stays silent)."""
    providers = raw.get("responseProviders") or {}
    section = providers.get("openai") or {} if isinstance(providers, Mapping) else {}
    key = str(section.get("apiKey") or (os.environ.get("OPENAI_API_KEY", "") if env else ""))
    base = str(section.get("baseUrl") or (os.environ.get("OPENAI_BASE_URL", "") if env else ""))
    if not key and not base:
        return None
    # A compatible service behind baseUrl may want no key; the SDK insists on one.
    return {"api_key": key or "unused", **({"base_url": base} if base else {})}


def responder_from_config(
    raw: Mapping[str, Any], store: Store, *, env: bool = True
) -> OpenAIResponder | None:
    """The responder the plugin config asks for, or None (see :func:`openai_options`)."""
    options = openai_options(raw, env=env)
    if options is None:
        return None
    scope = str(raw.get("sessionScope") or "per-phone")
    settings = ResponderSettings(
        model=str(raw.get("responseModel") or DEFAULT_MODEL),
        system_prompt=raw.get("responseSystemPrompt"),
        timeout_ms=int(raw.get("responseTimeoutMs") or DEFAULT_TIMEOUT_MS),
        agent_id=str(raw.get("agentId") or "main"),
        session_scope=scope if scope in SCOPES else "per-phone",
    )
    # No SDK retries: a caller is waiting, and the deadline is responseTimeoutMs anyway.
    client = AsyncOpenAI(api_key=options["api_key"], base_url=options.get("base_url"),
                         max_retries=0)  # fmt: skip
    return OpenAIResponder(client, store, settings)
