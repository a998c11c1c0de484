"""webhookSecurity: which forwarded headers may shape the URL a signature is checked against.

The rules (unit tests of ``signed_url``), then signed Twilio requests through the real server
and adapter: a request whose signature passes gets past verification (here 400: the form has no
CallSid, which is only looked at after the signature), one whose does not is 401.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.runtime.adapter_support import plivo_v3_signature, twilio_signature
from tests.runtime.support import Flows
from voicecall.runtime.app import RuntimeConfig
from voicecall.runtime.clock import VirtualClock
from voicecall.runtime.forwarding import ForwardingTrust, signed_url
from voicecall.runtime.manager import CallManager, ManagerSettings
from voicecall.runtime.providers.base import AdapterSettings
from voicecall.runtime.providers.registry import get_adapter
from voicecall.runtime.server import ServerSettings, make_app, set_public_url
from voicecall.runtime.store import SQLiteStore

TOKEN = "forwarding-test-token"
PUBLIC = "abc123.ngrok-free.app"
FORWARDED = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": PUBLIC}


def url(headers: dict[str, str], trust: ForwardingTrust, *, remote: str = "10.0.0.5",
        provider: str = "twilio") -> str:  # fmt: skip
    return signed_url(scheme="http", host="127.0.0.1:3334", raw_path="/voice/webhook?call=c1",
                      headers=headers, remote=remote, provider=provider,
                      trust=trust)  # fmt: skip


DIRECT = "http://127.0.0.1:3334/voice/webhook?call=c1"
VIA_PROXY = f"https://{PUBLIC}/voice/webhook?call=c1"


def test_forwarded_headers_are_ignored_unless_configured() -> None:
    assert url(FORWARDED, ForwardingTrust()) == DIRECT


def test_trust_forwarding_headers_uses_proto_and_host() -> None:
    assert url(FORWARDED, ForwardingTrust.of(trust_forwarding_headers=True)) == VIA_PROXY


def test_allowed_hosts_admit_only_their_hosts() -> None:
    trust = ForwardingTrust.of(allowed_hosts=[PUBLIC.upper() + ":443"])  # port and case ignored
    assert url(FORWARDED, trust) == VIA_PROXY
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    assert url(forged, trust) == "https://127.0.0.1:3334/voice/webhook?call=c1"


def test_header_order_and_malformed_hosts() -> None:
    trust = ForwardingTrust.of(trust_forwarding_headers=True)
    both = {"X-Forwarded-Host": "first.example", "Ngrok-Forwarded-Host": PUBLIC}
    assert url(both, trust).startswith("http://first.example/")
    # A malformed or user-info host is skipped; the next header is tried.
    for bad in ("evil.example:80@good.example", "bad_host!", "a.example:99999", "[::1"):
        headers = {"X-Forwarded-Host": bad, "X-Original-Host": "orig.example:8443"}
        assert url(headers, trust) == "http://orig.example:8443/voice/webhook?call=c1", bad
    # The first of a list (proxies append theirs); v6 literals keep their brackets.
    assert url({"X-Forwarded-Host": f"{PUBLIC}, inner.local"}, trust).startswith(
        f"http://{PUBLIC}/"
    )
    assert url({"X-Forwarded-Host": "[::1]:8080"}, trust).startswith("http://[::1]:8080/")


def test_trusted_proxy_ips_gate_everything() -> None:
    trust = ForwardingTrust.of(trust_forwarding_headers=True, trusted_proxy_ips=["10.0.0.9"])
    assert url(FORWARDED, trust, remote="10.0.0.5") == DIRECT
    assert url(FORWARDED, trust, remote="10.0.0.9") == VIA_PROXY
    assert url(FORWARDED, trust, remote="::ffff:10.0.0.9") == VIA_PROXY  # dual-stack socket
    listed_allowlist = ForwardingTrust.of(allowed_hosts=[PUBLIC], trusted_proxy_ips=["10.0.0.9"])
    assert url(FORWARDED, listed_allowlist, remote="10.0.0.5") == DIRECT


def test_ngrok_loopback_rule_only_for_twilio_on_loopback() -> None:
    trust = ForwardingTrust.of(ngrok_loopback=True)
    assert url(FORWARDED, trust, remote="127.0.0.1") == VIA_PROXY
    assert url(FORWARDED, trust, remote="::ffff:127.0.0.1") == VIA_PROXY
    assert url(FORWARDED, trust, remote="::1") == VIA_PROXY
    assert url(FORWARDED, trust, remote="192.168.1.4") == DIRECT
    assert url(FORWARDED, trust, remote="127.0.0.1", provider="plivo") == DIRECT
    # trustedProxyIPs still applies on top.
    fenced = ForwardingTrust.of(ngrok_loopback=True, trusted_proxy_ips=["10.0.0.9"])
    assert url(FORWARDED, fenced, remote="127.0.0.1") == DIRECT


@pytest.mark.parametrize(
    ("tunnel", "bind", "effective"),
    [
        ({"provider": "ngrok", "allowNgrokFreeTierLoopbackBypass": True}, "127.0.0.1", True),
        ({"provider": "ngrok", "allowNgrokFreeTierLoopbackBypass": True}, "localhost", True),
        ({"provider": "ngrok", "allowNgrokFreeTierLoopbackBypass": True}, "0.0.0.0", False),
        ({"provider": "tailscale-funnel", "allowNgrokFreeTierLoopbackBypass": True}, "::1",
         False),
        ({"provider": "ngrok"}, "127.0.0.1", False),
    ],
)  # fmt: skip
def test_config_makes_the_ngrok_rule_effective_only_with_ngrok_on_loopback(
    tunnel: dict[str, Any], bind: str, effective: bool
) -> None:
    config = RuntimeConfig(raw={"tunnel": tunnel, "serve": {"bind": bind}})
    assert config.forwarding().ngrok_loopback is effective


def test_config_reads_webhook_security() -> None:
    config = RuntimeConfig(raw={"webhookSecurity": {
        "allowedHosts": ["Voice.Example.com"], "trustForwardingHeaders": True,
        "trustedProxyIPs": ["::ffff:10.1.2.3"]}})  # fmt: skip
    assert config.forwarding() == ForwardingTrust(
        allowed_hosts=frozenset({"voice.example.com"}),
        trust_forwarding_headers=True,
        trusted_proxy_ips=frozenset({"10.1.2.3"}),
    )


# --- through the server ---------------------------------------------------------------------------

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Any]


@pytest.fixture
async def make_client(tmp_path: Any) -> AsyncIterator[MakeClient]:
    clients: list[Client] = []

    async def make(trust: ForwardingTrust, provider: str = "twilio") -> Client:
        credentials = {"accountSid": "AC1", "authToken": TOKEN, "authId": "MA1"}
        adapter = get_adapter(provider)(AdapterSettings(credentials=credentials))
        settings = ManagerSettings(provider=provider, from_number="+15550000000",
                                   webhook_base="http://t/voice/webhook")  # fmt: skip
        store = SQLiteStore(tmp_path / f"c{len(clients)}.sqlite")
        manager = CallManager(settings, store, adapter, Flows(), VirtualClock())
        client: Client = TestClient(TestServer(make_app(manager, ServerSettings(forwarding=trust))))
        await client.start_server()
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.close()


FORM = {"Foo": "1"}  # signed, but no CallSid: refused as malformed only after the signature
PATH = "/voice/webhook?call=c1&kind=status"


async def post(client: Client, signed_for: str, headers: dict[str, str]) -> int:
    signature = twilio_signature(TOKEN, signed_for, FORM)
    response = await client.post(PATH, data=FORM,
                                 headers={**headers, "X-Twilio-Signature": signature})  # fmt: skip
    return response.status


async def test_signed_through_a_trusted_proxy(make_client: MakeClient) -> None:
    client = await make_client(ForwardingTrust.of(allowed_hosts=[PUBLIC],
                                                  trusted_proxy_ips=["127.0.0.1"]))  # fmt: skip
    assert await post(client, f"https://{PUBLIC}{PATH}", FORWARDED) == 400
    # The same request signed for the local URL no longer matches what is checked.
    local = f"http://{client.host}:{client.port}{PATH}"
    assert await post(client, local, FORWARDED) == 401


async def test_signed_through_an_untrusted_proxy(make_client: MakeClient) -> None:
    client = await make_client(ForwardingTrust.of(trust_forwarding_headers=True,
                                                  trusted_proxy_ips=["10.20.30.40"]))  # fmt: skip
    assert await post(client, f"https://{PUBLIC}{PATH}", FORWARDED) == 401
    assert await post(client, f"http://{client.host}:{client.port}{PATH}", FORWARDED) == 400


async def test_a_forged_forwarded_host_cannot_pass(make_client: MakeClient) -> None:
    client = await make_client(ForwardingTrust.of(allowed_hosts=[PUBLIC]))
    forged = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil.example"}
    assert await post(client, f"https://evil.example{PATH}", forged) == 401


async def test_ngrok_free_tier_rule_never_admits_a_bad_signature(make_client: MakeClient) -> None:
    client = await make_client(ForwardingTrust.of(ngrok_loopback=True))
    assert await post(client, f"https://{PUBLIC}{PATH}", FORWARDED) == 400  # from loopback
    bad = {**FORWARDED, "X-Twilio-Signature": "AAAA"}
    response = await client.post(PATH, data=FORM, headers=bad)
    assert response.status == 401
    assert await post(client, f"https://{PUBLIC}{PATH}?x=1", FORWARDED) == 401


async def test_public_url_set_after_start_is_what_is_checked(make_client: MakeClient) -> None:
    client = await make_client(ForwardingTrust())
    tunnel = "https://t.example.ts.net/voice/webhook"
    assert await post(client, tunnel + "?call=c1&kind=status", {}) == 401
    set_public_url(client.app, tunnel)
    assert await post(client, tunnel + "?call=c1&kind=status", {}) == 400


async def test_plivo_urls_follow_the_same_rules_but_not_the_ngrok_one(
    make_client: MakeClient,
) -> None:
    async def plivo(client: Client, signed_for: str, headers: dict[str, str]) -> int:
        form = {"Foo": "1"}  # no CallUUID: refused as malformed only after the signature
        signature = plivo_v3_signature(TOKEN, "POST", signed_for, form, "n-1")
        response = await client.post(PATH, data=form, headers={
            **headers, "X-Plivo-Signature-V3": signature,
            "X-Plivo-Signature-V3-Nonce": "n-1"})  # fmt: skip
        return response.status

    trusted = await make_client(ForwardingTrust.of(allowed_hosts=[PUBLIC]), "plivo")
    assert await plivo(trusted, f"https://{PUBLIC}{PATH}", FORWARDED) == 400
    ngrok_only = await make_client(ForwardingTrust.of(ngrok_loopback=True), "plivo")
    assert await plivo(ngrok_only, f"https://{PUBLIC}{PATH}", FORWARDED) == 401
