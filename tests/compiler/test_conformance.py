"""What every provider receives is well formed: Telnyx bodies match Telnyx's OpenAPI spec,
XML documents parse and nest only allowed elements, and values never become markup."""

from __future__ import annotations

import base64
import datetime
import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from plivo import plivoxml

from tests.compiler.conftest import PROVIDERS, bundled, telnyx_validator
from voicecall.compiler.base import CompiledBlock, CompiledFlow, ErrorLevel, compile_flow
from voicecall.compiler.telnyx import RUNTIME_COMMANDS
from voicecall.dsl.validate import validate_text

SYSTEM = {
    "callback_url": "https://voice.example.com/voice/webhook?call=c1&block=b&step=0",
    "client_state": base64.b64encode(b'{"c":"c1","b":"b","s":0}').decode(),
    "command_id": "c1:b:0:0",
}
SAMPLE = {
    "message": "Your table is ready.", "patient": "Ann", "when": "tomorrow at 3 PM",
    "sales_number": "+15550100200", "reason": "sales",
    "call": {"id": "c1", "from": "+15550001111", "to": "+15550002222", "direction": "outbound",
             "provider": "twilio"},
    "config": {"inboundGreeting": None}, "settings": {},
    "reply": {"text": "yes", "digits": "", "confidence": 0.9},
    "choice": {"text": "", "digits": "1", "confidence": 1.0},
    "request": {"number": "5551234567", "entry": {"text": "", "digits": "5551234567"}},
    "entry": {"text": "", "digits": "5551234567", "confidence": 1.0},
    "again": {"text": "", "digits": "9", "confidence": 1.0},
    "clinic": "Riverside Clinic", "opens": 9, "closes": 17, "front_desk": "+15550100300",
    "nurse": "+15550100400", "date": "2026-01-05", "party": 4, "note": "by the window",
    "now": datetime.datetime(2026, 1, 5, 19, 30, tzinfo=datetime.UTC),
}  # fmt: skip

# Which elements TwiML allows inside which (twilio.com/docs/voice/twiml, for the verbs we emit).
TWIML_CHILDREN = {
    "Response": {"Say", "Play", "Pause", "Gather", "Dial", "Redirect", "Hangup", "Connect",
                 "Start", "Stop", "Reject", "Record", "Enqueue", "Leave"},
    "Gather": {"Say", "Play", "Pause"},
    "Dial": {"Number", "Sip", "Client", "Conference", "Queue", "Sim", "Application"},
    "Connect": {"Stream", "ConversationRelay", "Room", "VirtualAgent", "AiSession"},
}  # fmt: skip


def all_compiled() -> list[CompiledFlow]:
    flows = bundled()
    return [compile_flow(f, p, flows, ErrorLevel.RAISE) for f in flows.values() for p in PROVIDERS]


def render_xml(block: CompiledBlock) -> ET.Element:
    assert block.xml is not None
    return ET.fromstring(f"<Response>{block.xml.render(SAMPLE, SYSTEM)}</Response>")


def check_nesting(element: ET.Element, allowed: dict[str, set[str]]) -> None:
    for child in element:
        if element.tag in allowed:
            assert child.tag in allowed[element.tag], f"<{child.tag}> inside <{element.tag}>"
        else:
            assert len(element) == 0 or element.tag in ("Say", "Speak"), element.tag
        check_nesting(child, allowed)


def plivo_nesting() -> dict[str, set[str]]:
    """Plivo's own SDK lists what each element may contain (its `_nestable`)."""
    out: dict[str, set[str]] = {}
    for name in dir(plivoxml):
        cls = getattr(plivoxml, name)
        nestable = getattr(cls, "_nestable", None)
        if isinstance(cls, type) and name.endswith("Element") and nestable is not None:
            out[name.removesuffix("Element")] = set(nestable)
    return out


@pytest.mark.parametrize("compiled", all_compiled(), ids=lambda c: f"{c.flow.name}-{c.provider}")
def test_rendered_output_is_well_formed(compiled: CompiledFlow) -> None:
    for block in compiled.blocks.values():
        if compiled.kind == "xml":
            allowed = TWIML_CHILDREN if compiled.provider == "twilio" else plivo_nesting()
            check_nesting(render_xml(block), allowed)
            continue
        for command in (*block.commands, *block.after_input):
            body = command.render(SAMPLE, SYSTEM)
            json.dumps(body)  # plain JSON values only
            if command.command in RUNTIME_COMMANDS:
                continue
            errors = [e.message for e in telnyx_validator(command.command).iter_errors(body)]
            assert errors == [], f"{block.id} {command.command}: {errors}"


def test_the_spec_oracle_rejects_a_bad_body() -> None:
    body = {"payload": "hi", "voice": "female", "payload_type": "html"}
    assert list(telnyx_validator("speak").iter_errors(body))


HOSTILE = "</Say><Dial>+19005550100</Dial> & {{ 7*7 }} ' \" <!-- \x07"


@pytest.mark.parametrize("provider", PROVIDERS)
def test_values_from_params_are_literal_text(provider: str) -> None:
    flows = bundled()
    compiled = compile_flow(flows["notify"], provider, flows)
    block = compiled.block(compiled.start)
    values = {**SAMPLE, "message": HOSTILE}
    expected = HOSTILE.replace("\x07", "")
    if provider == "telnyx":
        speak = block.commands[0].render(values, SYSTEM)
        assert speak["payload"] == HOSTILE  # JSON carries it as data; nothing to escape
        return
    assert block.xml is not None
    doc = ET.fromstring(f"<Response>{block.xml.render(values, SYSTEM)}</Response>")
    spoken = [el for el in doc.iter() if el.tag in ("Say", "Speak")]
    assert [el.text for el in spoken] == [expected]
    assert not [el for el in doc.iter() if el.tag == "Dial"]


def compile_snippet(body: str, provider: str, level: ErrorLevel = ErrorLevel.RAISE) -> CompiledFlow:
    text = "version: 1\nname: t\ndescription: test\nstart: a\nnodes:\n  a:\n" + body
    checked = validate_text(text, "t.yaml")
    assert checked.ok, [d.message for d in checked.diagnostics]
    assert checked.flow is not None
    return compile_flow(checked.flow, provider, {}, level)


def first(compiled: CompiledFlow) -> Any:
    block = compiled.block(compiled.start)
    if block.kind == "xml":
        assert block.xml is not None
        return block.xml.show({})
    return [(c.command, {k: v for k, v in c.show({}).items()
             if k not in ("client_state", "command_id")}) for c in block.commands]  # fmt: skip


# One snippet, the expected output for each provider (sqlglot's validate_all, for flows).
TABLE: dict[str, tuple[str, dict[str, Any]]] = {
    "say with voice and loop": (
        "    - say: {text: Hi, voice: nova, loop: 2}\n    - hangup\n",
        {
            "twilio": '<Say loop="2" voice="Polly.Salli">Hi</Say><Hangup />',
            "plivo": '<Speak voice="Polly.Salli" loop="2">Hi</Speak><Hangup/>',
            "telnyx": [("speak", {"payload": "Hi", "payload_type": "text", "loop": 2,
                                  "voice": "AWS.Polly.Salli"}), ("hangup", {})],
        },
    ),
    "pause rounds up on xml providers": (
        "    - pause: 1500ms\n",
        {
            "twilio": '<Pause length="2" /><Hangup />',
            "plivo": '<Wait length="2"/><Hangup/>',
            "telnyx": [("pause", {"duration_ms": 1500}), ("hangup", {})],
        },
    ),
    "send digits": (
        "    - send_digits: 1w2#\n",
        {
            "twilio": '<Play digits="1w2#" /><Hangup />',
            "plivo": "<DTMF>1w2#</DTMF><Hangup/>",
            "telnyx": [("send_dtmf", {"digits": "1w2#"}), ("hangup", {})],
        },
    ),
    "transfer without fallback hangs up": (
        "    - transfer: {to: '+15551234567', timeout: 20s}\n",
        {
            "twilio": '<Dial timeout="20"><Number>+15551234567</Number></Dial><Hangup />',
            "plivo": '<Dial timeout="20"><Number>+15551234567</Number></Dial><Hangup/>',
            "telnyx": [("transfer", {"to": "+15551234567", "timeout_secs": 20})],
        },
    ),
    "keypad ask with retries": (
        "    - ask: {prompt: Press 1, input: [dtmf], num_digits: 1, retries: 2,"
        " reprompt: Again, save_as: k}\n",
        {
            "twilio": '<Gather action="{{ callback_url }}" actionOnEmptyResult="true" '
            'input="dtmf" method="POST" numDigits="1" timeout="5"><Say voice="Polly.Joanna">'
            'Press 1</Say></Gather><Redirect method="POST">{{ callback_url }}</Redirect>',
            "plivo": '<GetInput action="{{ callback_url }}" method="POST" inputType="dtmf" '
            'executionTimeout="5" numDigits="1" redirect="true"><Speak voice="Polly.Joanna">'
            'Press 1</Speak></GetInput><Redirect method="POST">{{ callback_url }}</Redirect>',
            "telnyx": [("gather_using_speak", {
                "payload": "Press 1", "payload_type": "text", "voice": "AWS.Polly.Joanna",
                "minimum_digits": 1, "maximum_digits": 1, "maximum_tries": 3,
                "timeout_millis": 5000, "terminating_digit": "#", "invalid_payload": "Again"})],
        },
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TABLE))
@pytest.mark.parametrize("provider", PROVIDERS)
def test_table(case: str, provider: str) -> None:
    snippet, expected = TABLE[case]
    assert first(compile_snippet(snippet, provider)) == expected[provider]


@pytest.mark.parametrize(
    ("provider", "voice", "ok"),
    [("twilio", "Google.en-US-Neural2-F", True), ("plivo", "Google.en-US-Neural2-F", False),
     ("telnyx", "Polly.Joanna", True), ("telnyx", "Google.en-US-Neural2-F", False)],
)  # fmt: skip
def test_voices_a_provider_cannot_speak_are_errors(provider: str, voice: str, ok: bool) -> None:
    snippet = f"    - say: {{text: Hi, voice: {voice}}}\n"
    compiled = compile_snippet(snippet, provider, ErrorLevel.COLLECT)
    codes = [d.code for d in compiled.diagnostics]
    assert ("E-PROVIDER-UNSUPPORTED" not in codes) is ok


def test_plivo_clamps_timeouts_it_cannot_take() -> None:
    compiled = compile_snippet(
        "    - ask: {prompt: Hi, timeout: 2s}\n", "plivo", ErrorLevel.COLLECT
    )
    assert [d.code for d in compiled.diagnostics] == ["W-PROVIDER-ADJUSTED"]
    assert 'executionTimeout="5"' in first(compiled)
