"""The Gateway protocol state machine: each rule of reference openclaw-gateway.md §2-3."""

from __future__ import annotations

import json
from typing import Any

import pytest

from voicecall.plugin.gateway.protocol import (
    CloseConnection,
    ConnectRequested,
    GatewayConnection,
    Phase,
    RequestReceived,
    SendFrame,
    has_scope,
)
from voicecall.plugin.host import READ, WRITE, ClientInfo

from .frames import connect, request

METHODS = {"voicecall.status": READ, "voicecall.end": WRITE}


def new_conn(**kw: Any) -> GatewayConnection:
    return GatewayConnection(conn_id="c1", nonce="n-1", now_ms=1795962486800, methods=METHODS, **kw)


def feed(conn: GatewayConnection, frame: Any) -> list[Any]:
    return conn.receive(frame if isinstance(frame, str) else json.dumps(frame))


def opened(scopes: frozenset[str] = frozenset({READ, WRITE})) -> GatewayConnection:
    conn = new_conn()
    (event,) = feed(conn, connect(token="t"))
    assert isinstance(event, ConnectRequested)
    conn.accept(ClientInfo(conn_id="c1", scopes=scopes), {"type": "hello-ok"}, event.request_id)
    return conn


def rejected(events: list[Any]) -> tuple[dict[str, Any], CloseConnection]:
    send, close = events
    assert isinstance(send, SendFrame) and isinstance(close, CloseConnection)
    assert close.code == 1008
    return send.frame, close


def test_challenge_is_the_first_frame() -> None:
    frame = new_conn().challenge()
    assert frame == {"type": "event", "event": "connect.challenge",
                     "payload": {"nonce": "n-1", "ts": 1795962486800}}  # fmt: skip


def test_a_good_connect_is_handed_to_the_server_to_authenticate() -> None:
    conn = new_conn()
    frame = connect(token="t")
    (event,) = feed(conn, frame)
    assert event == ConnectRequested(request_id=frame["id"], params=frame["params"])
    assert conn.phase is Phase.AUTHENTICATING
    assert feed(conn, request("voicecall.status")) == []  # nothing read until it is decided
    hello = conn.accept(ClientInfo(conn_id="c1"), {"type": "hello-ok", "protocol": 4}, frame["id"])
    assert hello == {"type": "res", "id": frame["id"], "ok": True,
                     "payload": {"type": "hello-ok", "protocol": 4}}  # fmt: skip
    assert conn.phase.value == "open"


def test_a_first_request_other_than_connect_is_refused_and_closed() -> None:
    conn = new_conn()
    frame = request("voicecall.status", {})
    out, _close = rejected(feed(conn, frame))
    assert out == {
        "type": "res",
        "id": frame["id"],
        "ok": False,
        "error": {
            "code": "INVALID_REQUEST",
            "message": "invalid handshake: first request must be connect",
        },
    }
    assert conn.phase is Phase.CLOSED


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"client": None}, "invalid connect params: at /client: must be object"),
        ({"minProtocol": "4"}, "invalid connect params: at /minProtocol: must be integer"),
        ({"surprise": 1}, "invalid connect params: at root: unexpected property 'surprise'"),
        ({"auth": {"x": 1}}, "invalid connect params: at /auth: unexpected property 'x'"),
        ({"scopes": "operator.read"}, "invalid connect params: at /scopes: must be array"),
    ],
)  # fmt: skip
def test_invalid_connect_params_name_the_place(change: dict[str, Any], message: str) -> None:
    frame = connect(token="t")
    frame["params"].update(change)
    out, _close = rejected(feed(new_conn(), frame))
    assert out["error"] == {"code": "INVALID_REQUEST", "message": message}


def test_a_missing_client_field_is_named() -> None:
    frame = connect(token="t")
    del frame["params"]["client"]["mode"]
    out, _close = rejected(feed(new_conn(), frame))
    assert out["error"]["message"] == (
        "invalid connect params: at /client: must have required property 'mode'"
    )


@pytest.mark.parametrize(("low", "high"), [(5, 6), (1, 3)])
def test_protocol_mismatch_says_what_the_server_speaks(low: int, high: int) -> None:
    out, _close = rejected(
        feed(new_conn(), connect(token="t", min_protocol=low, max_protocol=high))
    )
    assert out["error"]["code"] == "INVALID_REQUEST"
    assert out["error"]["details"] == {"code": "PROTOCOL_MISMATCH", "expectedProtocol": 4}


def test_a_range_holding_4_is_accepted() -> None:
    (event,) = feed(new_conn(), connect(token="t", min_protocol=3, max_protocol=5))
    assert isinstance(event, ConnectRequested)


@pytest.mark.parametrize("text", ["not json", "[1,2]", '{"type":"event","event":"x"}'])
def test_garbage_before_connect_closes_without_an_answer(text: str) -> None:
    conn = new_conn()
    (close,) = feed(conn, text)
    assert close == CloseConnection(code=1008, reason="invalid request frame")


def test_a_frame_larger_than_the_bound_closes_1009() -> None:
    conn = new_conn(max_frame_bytes=100)
    (close,) = feed(conn, json.dumps(connect(token="x" * 200)))
    assert close == CloseConnection(code=1009, reason="frame too large")


def test_requests_reach_the_server_with_their_params() -> None:
    conn = opened()
    frame = request("voicecall.status", {"callId": "abc"})
    (event,) = feed(conn, frame)
    assert isinstance(event, RequestReceived)
    assert (event.request_id, event.method, dict(event.params)) == (
        frame["id"], "voicecall.status", {"callId": "abc"})  # fmt: skip


def test_absent_params_are_an_empty_object() -> None:
    (event,) = feed(opened(), request("voicecall.status"))
    assert isinstance(event, RequestReceived) and dict(event.params) == {}


def test_params_that_are_not_an_object_are_refused() -> None:
    (event,) = feed(opened(), request("voicecall.status", [1]))
    assert isinstance(event, SendFrame)
    assert event.frame["error"]["message"] == "invalid params: must be an object"


def test_unknown_method() -> None:
    frame = request("voicecall.nosuch", {})
    (event,) = feed(opened(), frame)
    assert isinstance(event, SendFrame)
    assert event.frame == {"type": "res", "id": frame["id"], "ok": False, "error": {
        "code": "INVALID_REQUEST", "message": "unknown method: voicecall.nosuch"}}  # fmt: skip


def test_connect_twice_is_refused_but_the_connection_stays() -> None:
    conn = opened()
    (event,) = feed(conn, connect(token="t", request_id="2:x"))
    assert isinstance(event, SendFrame)
    assert event.frame["error"]["message"] == "connect is only valid as the first request"
    assert conn.phase is Phase.OPEN


def test_missing_scope_is_forbidden() -> None:
    conn = opened(frozenset({READ}))
    (event,) = feed(conn, request("voicecall.end", {"callId": "x"}))
    assert isinstance(event, SendFrame)
    assert event.frame["error"] == {"code": "FORBIDDEN", "message": "missing scope: operator.write"}
    (ok,) = feed(conn, request("voicecall.status"))
    assert isinstance(ok, RequestReceived)


def test_scope_implications() -> None:
    assert has_scope(frozenset({"operator.admin"}), WRITE)
    assert has_scope(frozenset({WRITE}), READ)
    assert not has_scope(frozenset({READ}), WRITE)
    assert not has_scope(frozenset({"operator.pairing"}), READ)


def test_a_bad_frame_after_connect_is_answered_when_it_has_an_id() -> None:
    conn = opened()
    (event,) = feed(conn, {"type": "req", "id": "3:x", "method": "voicecall.status", "extra": 1})
    assert isinstance(event, SendFrame)
    assert event.frame["error"]["message"] == (
        "invalid request frame: at root: unexpected property 'extra'"
    )
    assert conn.phase is Phase.OPEN
    (close,) = feed(conn, "{")
    assert close == CloseConnection(code=1008, reason="invalid request frame")


def test_events_only_to_readers_and_numbered() -> None:
    reader = opened()
    assert reader.event("voicecall.call", {"a": 1}) == {
        "type": "event", "event": "voicecall.call", "payload": {"a": 1}, "seq": 1}  # fmt: skip
    assert reader.event("voicecall.call", {"a": 2})["seq"] == 2  # type: ignore[index]
    assert opened(frozenset({"operator.pairing"})).event("voicecall.call", {}) is None
    assert new_conn().event("voicecall.call", {}) is None  # not connected yet


def test_tick_has_no_seq() -> None:
    conn = opened()
    assert conn.tick(5) == {"type": "event", "event": "tick", "payload": {"ts": 5}}
    assert new_conn().tick(5) is None
