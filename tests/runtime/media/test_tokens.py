"""Stream tokens: random, bound to one call, compared in constant time, usable once, short-lived."""

from __future__ import annotations

import hmac

import pytest

from voicecall.runtime.media.tokens import StreamTokens, TokenCheck


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_a_token_opens_its_call_once() -> None:
    store = StreamTokens(ttl_s=30, now=Clock())
    token = store.issue("call-1")
    assert store.redeem("call-1", token) is TokenCheck.OK
    assert store.redeem("call-1", token) is TokenCheck.UNKNOWN  # reused


def test_wrong_token_or_other_call_is_refused() -> None:
    store = StreamTokens(ttl_s=30, now=Clock())
    one, two = store.issue("call-1"), store.issue("call-2")
    assert one != two and len(one) == 32 and one.isalnum()  # 16 random bytes, hex
    assert store.redeem("call-1", two) is TokenCheck.WRONG
    assert store.redeem("call-3", one) is TokenCheck.UNKNOWN
    assert store.redeem("call-1", "") is TokenCheck.WRONG
    assert store.redeem("call-1", one) is TokenCheck.OK  # a forged attempt did not burn it


def test_late_token_is_refused_and_used_up() -> None:
    clock = Clock()
    store = StreamTokens(ttl_s=30, now=clock)
    token = store.issue("call-1")
    clock.t += 31
    assert store.redeem("call-1", token) is TokenCheck.EXPIRED
    assert store.redeem("call-1", token) is TokenCheck.UNKNOWN


def test_expired_tokens_are_purged_and_revoked_ones_gone() -> None:
    clock = Clock()
    store = StreamTokens(ttl_s=30, now=clock)
    for n in range(5):
        store.issue(f"old-{n}")
    clock.t += 31
    token = store.issue("new")
    assert len(store) == 1
    store.revoke("new")
    assert store.redeem("new", token) is TokenCheck.UNKNOWN


def test_the_compare_is_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    store = StreamTokens(now=Clock())
    token = store.issue("call-1")
    assert store.redeem("call-1", "x" * len(token)) is TokenCheck.WRONG
    assert store.redeem("call-1", token) is TokenCheck.OK
    assert seen == [(token.encode(), b"x" * len(token)), (token.encode(), token.encode())]
