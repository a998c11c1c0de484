"""The voice-call service in-process on the mock carrier: every operation, its errors, events."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from tests.plugin.service_support import CALLEE, run, running, state, until
from voicecall.plugin.host import INVALID_REQUEST, UNAVAILABLE, GatewayError
from voicecall.plugin.service import OPERATION_TTL_S, VoiceCallService
from voicecall.runtime.sim.script import PATIENT_REPLIES, script_from_config

PROVIDERS = ("twilio", "plivo", "telnyx")


def listening(service: VoiceCallService, call_id: str) -> bool:
    """The conversation holds for the agent: the callee has answered the greeting."""
    assert service.runtime is not None
    call = service.runtime.manager.get(call_id)
    assert call is not None
    return any(line.speaker == "user" for line in call.transcript) or call.ended


def timeline(service: VoiceCallService, what: str) -> list[dict[str, Any]]:
    assert service.runtime is not None
    return [e.detail for c in service.runtime.carrier.calls.values() for e in c.timeline
            if e.who == "bot" and e.what == what]  # fmt: skip


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_conversation_continue_speak_dtmf_end(tmp_path: Path, provider: str) -> None:
    async with running(tmp_path, provider) as (service, events):
        placed = await service.initiate({"message": "Hi there", "mode": "conversation"})
        assert placed["initiated"] is True
        call_id = placed["callId"]
        await until(service, lambda: listening(service, call_id))
        answer = await run(service, service.continue_call(
            {"callId": call_id, "message": "When suits you?"}))  # fmt: skip
        assert answer["success"] is True
        assert answer["transcript"] in PATIENT_REPLIES
        assert await service.speak({"callId": call_id, "message": "Noted."}) == {"success": True}
        assert await service.dtmf({"callId": call_id, "digits": "12w#"}) == {"success": True}
        await until(service, lambda: bool(timeline(service, "dtmf")))
        sent = timeline(service, "dtmf")[0]
        assert sent["digits"] == "12w#"
        # Plivo: through its DTMF API, beside what the call runs; others: a live update.
        assert sent.get("via") == ("api" if provider == "plivo" else None)
        assert await service.end({"callId": call_id}) == {"success": True}
        await until(service, lambda: state(service, call_id) == "hangup-bot")
        status = await service.status({"callId": call_id})
    assert status["found"] is True
    assert status["call"]["endReason"] == "hangup-bot"
    states = [p["state"] for p in events.of("voicecall.call", call_id)]
    assert states[0] == "initiated"
    assert states[-1] == "hangup-bot" and len(states) == len(set(states))
    assert states.index("answered") < states.index("listening")
    assert "answeredAt" in events.of("voicecall.call", call_id)[-1]
    said = [(p["speaker"], p["text"]) for p in events.of("voicecall.transcript", call_id)]
    assert said[0] == ("bot", "Hi there")
    assert ("bot", "When suits you?") in said
    assert ("user", answer["transcript"]) in said
    assert ("bot", "Noted.") in said


async def test_status_is_the_redacted_view_from_memory_and_the_store(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        call_id = (await service.initiate({"message": "Hello"}))["callId"]
        live = await service.status({})
        assert [c["callId"] for c in live["calls"]] == [call_id]
        view = live["calls"][0]
        assert set(view) <= {"callId", "providerCallId", "provider", "direction", "state",
                             "startedAt", "answeredAt", "endedAt", "endReason"}  # fmt: skip
        assert view["provider"] == "mock" and view["direction"] == "outbound"
        assert CALLEE not in str(live)
        await until(service, lambda: state(service, call_id) == "hangup-bot")
        pid = (await service.status({"callId": call_id}))["call"]["providerCallId"]
        assert (await service.status({}))["calls"] == []
    # A new service on the same store finds the ended call there, by either id.
    async with running(tmp_path) as (again, _):
        by_sid = await again.status({"sid": pid})
        assert by_sid["found"] is True and by_sid["call"]["callId"] == call_id
        assert by_sid["call"]["endedAt"] >= by_sid["call"]["startedAt"]
        assert await again.status({"callId": "nope"}) == {"found": False}


async def test_a_named_flow_with_typed_params(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, events):
        placed = await service.start_call(
            {
                "to": CALLEE,
                "flow": "appointment-reminder",
                "params": {"patient": "Ann", "when": "at noon"},
            }
        )
        await until(service, lambda: state(service, placed["callId"]) not in (
            "initiated", "ringing", "answered", "active", "speaking", "listening"))  # fmt: skip
    said = [p["text"] for p in events.of("voicecall.transcript", placed["callId"])]
    assert said[0] == "Hello Ann, this is a reminder of your appointment at noon."


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"flow": "appointment-reminder", "params": {"patient": "Ann"}},
         "flow appointment-reminder needs param when"),
        ({"flow": "appointment-reminder", "params": {"patient": 3, "when": "x"}},
         "param patient: expected a string, got an integer"),
        ({"flow": "appointment-reminder", "params": {"patient": "A", "when": "x", "color": 1}},
         "flow appointment-reminder has no param color (its params: patient, when)"),
        ({"flow": "appointment-reminder", "params": "patient=Ann"},
         "params must be an object of the flow's param values"),
        ({"flow": "inbound"}, "flow inbound only answers calls (direction: inbound)"),
        ({"flow": "appointment-remindr"}, "no flow named 'appointment-remindr'"),
        ({"message": "x", "mode": "chat"}, "mode must be notify or conversation, not 'chat'"),
        ({"message": "x", "dtmfSequence": "12x"},
         "dtmfSequence may only hold 0-9, *, # and w (wait)"),
        ({"message": "x", "agentId": "main"},
         "agentId requires a trusted plugin caller and a valid agent id"),
        ({"message": "  "}, "to required"),
    ],
)  # fmt: skip
async def test_start_rejects_bad_params_naming_them(
    tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    async with running(tmp_path) as (service, _):
        with pytest.raises(GatewayError) as caught:
            await service.start_call({"to": "" if message == "to required" else CALLEE,
                                      **params})  # fmt: skip
    assert caught.value.code == INVALID_REQUEST
    assert caught.value.message.startswith(message)


async def test_the_original_error_texts(tmp_path: Path) -> None:
    async with running(tmp_path, toNumber=None) as (service, _):
        cases: list[tuple[Any, str, str]] = [
            (service.initiate({}), INVALID_REQUEST, "message required"),
            (service.initiate({"message": "x"}), INVALID_REQUEST, "to required"),
            (service.continue_call({"callId": "a"}), INVALID_REQUEST,
             "callId and message required"),
            (service.continue_call({"callId": "a", "message": "m"}), INVALID_REQUEST,
             "Call not found"),
            (service.continue_start({"message": "m"}), INVALID_REQUEST,
             "callId and message required"),
            (service.continue_result({}), INVALID_REQUEST, "operationId required"),
            (service.continue_result({"operationId": "x"}), INVALID_REQUEST,
             "operation not found"),
            (service.speak({"callId": "a", "message": "m"}), INVALID_REQUEST, "Call not found"),
            (service.dtmf({"callId": "a"}), INVALID_REQUEST, "callId and digits required"),
            (service.dtmf({"callId": "a", "digits": "1"}), UNAVAILABLE, "Call not found"),
            (service.end({}), INVALID_REQUEST, "callId required"),
            (service.end({"callId": "a"}), UNAVAILABLE, "Call not found"),
            (service.initiate({"message": "x", "to": "12345"}), UNAVAILABLE,
             "'12345' is not an E.164 number"),
        ]  # fmt: skip
        for coro, code, message in cases:
            with pytest.raises(GatewayError) as caught:
                await coro
            assert (caught.value.code, caught.value.message[: len(message)]) == (code, message)


async def test_an_ended_call_is_not_active(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        call_id = (await service.initiate({"message": "Bye"}))["callId"]
        await until(service, lambda: state(service, call_id) == "hangup-bot")
        with pytest.raises(GatewayError) as caught:
            await service.speak({"callId": call_id, "message": "again"})
    assert caught.value.code == INVALID_REQUEST
    assert caught.value.message.startswith(
        "call is not active (last state=hangup-bot, endReason=hangup-bot, endedAt="
    )


async def test_continue_as_an_operation_polled_then_deleted(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        call_id = (await service.initiate({"message": "Hi", "mode": "conversation"}))["callId"]
        await until(service, lambda: listening(service, call_id))
        started = await service.continue_start({"callId": call_id, "message": "Still there?"})
        op = started["operationId"]
        assert started["status"] == "pending"
        assert started["pollTimeoutMs"] == 180_000 + 8000 + 30_000
        first = await service.continue_result({"operationId": op})
        assert first["status"] == "pending"
        await until(service, service._ops[op].task.done)
        done = await service.continue_result({"operationId": op})
        assert done["status"] == "completed"
        assert done["result"]["success"] is True
        assert done["result"]["transcript"] in PATIENT_REPLIES
        with pytest.raises(GatewayError, match="operation not found"):
            await service.continue_result({"operationId": op})


async def test_a_finished_operation_expires_unread(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        call_id = (await service.initiate({"message": "Hi", "mode": "conversation"}))["callId"]
        await until(service, lambda: listening(service, call_id))
        op = (await service.continue_start({"callId": call_id, "message": "Hm?"}))["operationId"]
        await until(service, service._ops[op].task.done)
        await service.end({"callId": call_id})
        clock = service.clock
        assert clock is not None
        clock.advance(OPERATION_TTL_S - 1)  # type: ignore[attr-defined]
        assert op in service._ops
        clock.advance(2)  # type: ignore[attr-defined]
        with pytest.raises(GatewayError, match="operation not found"):
            await service.continue_result({"operationId": op})


async def test_a_failed_continue_reports_why(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        call_id = (await service.initiate({"message": "Hi", "mode": "conversation"}))["callId"]
        await until(service, lambda: listening(service, call_id))
        op = (await service.continue_start({"callId": call_id, "message": "Hm?"}))["operationId"]
        await service.end({"callId": call_id})
        await until(service, service._ops[op].task.done)
        result = await service.continue_result({"operationId": op})
    assert result["status"] == "failed"
    assert result["error"].startswith("the call ended")


async def test_flows_lists_each_flow_with_its_params(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        flows = {f["name"]: f for f in service.flows()["flows"]}
    reminder = flows["appointment-reminder"]
    assert reminder["direction"] == "outbound"
    assert reminder["description"].startswith("Remind a patient")
    assert [p["name"] for p in reminder["params"]] == ["patient", "when"]
    assert reminder["params"][0] == {"name": "patient", "type": "string", "required": True,
                                     "description": "The name to greet"}  # fmt: skip
    assert flows["inbound"]["direction"] == "inbound"


async def test_disabled_and_stopped(tmp_path: Path) -> None:
    async with running(tmp_path, enabled=False) as (service, _):
        assert service.runtime is None
        with pytest.raises(GatewayError, match="Voice call disabled in plugin config"):
            await service.status({})
    async with running(tmp_path) as (service, _):
        await service.stop()
        await service.stop()  # twice is fine
        with pytest.raises(GatewayError) as caught:
            await service.status({})
        assert caught.value.code == UNAVAILABLE


async def test_a_configured_mock_caller(tmp_path: Path) -> None:
    async with running(tmp_path, mock={"caller": ["busy"]}) as (service, events):
        call_id = (await service.initiate({"message": "Hi"}))["callId"]
        await until(service, lambda: state(service, call_id) == "busy")
    assert events.of("voicecall.call", call_id)[-1]["endReason"] == "busy"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_dtmf_sequence_is_played_on_answer_before_the_flow(
    tmp_path: Path, provider: str
) -> None:
    async with running(tmp_path, provider) as (service, _):
        placed = await service.start_call(
            {
                "to": CALLEE,
                "message": "Joining now",
                "mode": "conversation",
                "dtmfSequence": "123w#",
            }
        )
        call_id = placed["callId"]
        await until(service, lambda: listening(service, call_id))
        assert service.runtime is not None
        (call,) = service.runtime.carrier.calls.values()
    bot = [(e.what, e.detail) for e in call.timeline if e.who == "bot"]
    assert bot[0] == ("dtmf", {"digits": "123w#", **({"via": "create"} if provider != "telnyx"
                                                      else {})})  # fmt: skip
    assert bot[1][0] == "say" and bot[1][1]["text"] == "Joining now"


def test_the_mock_caller_is_a_config_key() -> None:
    from voicecall.plugin.config import check_section

    ok = {"provider": "mock", "mock": {"caller": ["answer", {"say": "hi"}]}}
    assert check_section(ok) == []
    bad = check_section({"provider": "mock", "mock": {"callee": []}})
    assert [p.path[-2:] for p in bad] == [("mock", "callee")]


def test_a_bad_mock_caller_is_named() -> None:
    with pytest.raises(ValueError, match=r"^mock.caller: unknown key 'shout' in caller\[1\]"):
        script_from_config({"caller": ["answer", {"shout": "hi"}]})


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_the_patient_callee_answers_turn_after_turn(tmp_path: Path, provider: str) -> None:
    async with running(tmp_path, provider) as (service, _):
        call_id = (await service.initiate({"message": "Hi", "mode": "conversation"}))["callId"]
        await until(service, lambda: listening(service, call_id))
        answers = []
        for turn in range(6):
            got = await run(service, service.continue_call(
                {"callId": call_id, "message": f"Question {turn}?"}))  # fmt: skip
            answers.append(got["transcript"])
        assert state(service, call_id) in ("listening", "speaking", "active")
    assert all(a in PATIENT_REPLIES for a in answers)
    assert all(a != b for a, b in itertools.pairwise(answers))


async def test_every_text_param_is_bounded(tmp_path: Path) -> None:
    async with running(tmp_path) as (service, _):
        cases = [
            (service.initiate({"message": "x" * 4001}), "message is longer than 4000"),
            (service.initiate({"message": "x", "sessionKey": "k" * 513}),
             "sessionKey is longer than 512"),
            (service.speak({"callId": "a", "message": "x" * 4001}), "message is longer than 4000"),
            (service.dtmf({"callId": "a", "digits": "1" * 65}), "digits may only hold"),
            (service.start_call({"to": CALLEE, "flow": "appointment-reminder",
                                 "params": {"patient": "p" * 2001, "when": "x"}}),
             "param patient: longer than 2000"),
        ]  # fmt: skip
        for coro, message in cases:
            with pytest.raises(GatewayError, match=f"^{message}"):
                await coro


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_start_without_a_message_listens_first(tmp_path: Path, provider: str) -> None:
    async with running(tmp_path, provider) as (service, events):
        call_id = (await service.start_call({"to": CALLEE, "mode": "conversation"}))["callId"]
        await until(service, lambda: state(service, call_id) == "listening")
        answer = await run(service, service.continue_call(
            {"callId": call_id, "message": "Hi, is this Sam?"}))  # fmt: skip
    said = [(p["speaker"], p["text"]) for p in events.of("voicecall.transcript", call_id)]
    assert said[0] == ("bot", "Hi, is this Sam?")
    assert ("user", answer["transcript"]) in said
