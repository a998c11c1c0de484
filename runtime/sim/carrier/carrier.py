"""The mock carrier: an in-process Twilio, Plivo or Telnyx that plays the other end of calls.

It serves the carrier's REST API on 127.0.0.1 (the runtime's adapters point their SDKs at
``api_base``), sends the webhooks the carrier would send — signed with the carrier's real
algorithm, over real HTTP — executes what comes back (TwiML, Plivo XML, Telnyx commands), and
answers as a caller :class:`~voicecall.runtime.sim.script.Script` says. Nothing waits in real time:
delays run on the clock it is given, which whoever drives the simulation advances when
:attr:`MockCarrier.idle` (and the bot) say nothing else is going on::

    clock = VirtualClock()
    carrier = MockCarrier("twilio", clock)
    await carrier.start()
    carrier.script = Script(caller=(Step(action="answer"), Step(action="press", value="1")))
    ...  # point the runtime at carrier.api_base with carrier.credentials, place a call
    call = await carrier.wait_ended(call_id, timeout=10)
    print(call.timeline)
    await carrier.stop()
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import string
import uuid
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
from aiohttp import web
from nacl.signing import SigningKey

from voicecall.runtime.clock import Clock, RealClock
from voicecall.runtime.sim.captions import Captions
from voicecall.runtime.sim.script import DEFAULT, Script
from voicecall.runtime.urls import decode_state

from .delivery import WebhookSender
from .model import Delivery, MockCall, RecordedRequest
from .plivoxml import PlivoSession
from .rest import create_app
from .session import CallSession, Work
from .signing import public_key_b64
from .telnyx import TelnyxSession, new_call_control_id
from .twiml import TwilioSession, new_sid

PROVIDERS = ("twilio", "plivo", "telnyx")
RequestHook = Callable[[str, str, str, Any], None]


def generate_credentials(provider: str) -> tuple[dict[str, str], SigningKey | None]:
    """Test credentials in each carrier's formats (and Telnyx's Ed25519 key pair).

    Returns:
        The credentials as the runtime reads them (twilio ``accountSid``, ``authToken``;
        plivo ``authId``, ``authToken``; telnyx ``apiKey``, ``connectionId``, ``publicKey``),
        and the Telnyx signing key.
    """
    if provider == "twilio":
        return {"accountSid": new_sid("AC"), "authToken": secrets.token_hex(16)}, None
    if provider == "plivo":
        alphabet = string.ascii_uppercase + string.digits
        auth_id = "MA" + "".join(secrets.choice(alphabet) for _ in range(18))
        token = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(40))
        return {"authId": auth_id, "authToken": token}, None
    key = SigningKey.generate()
    return {
        "apiKey": "KEY" + secrets.token_hex(16).upper() + "_" + secrets.token_urlsafe(16),
        "connectionId": str(secrets.randbelow(9 * 10**18) + 10**18),
        "publicKey": public_key_b64(key),
    }, key


def _credentials(
    provider: str, given: Mapping[str, str] | None
) -> tuple[dict[str, str], SigningKey | None]:
    generated, key = generate_credentials(provider)
    if not given:
        return generated, key
    credentials = {**generated, **given}
    if provider == "telnyx":
        # Given Telnyx credentials sign with their "signingKey" (base64 seed), if any.
        seed = given.get("signingKey")
        key = SigningKey(base64.b64decode(seed)) if seed else key
        credentials["publicKey"] = public_key_b64(key) if key else credentials["publicKey"]
    return credentials, key


class MockCarrier:
    """One fake carrier: its REST server, its calls, the webhooks it sends.

    Args:
        provider: twilio, plivo or telnyx.
        clock: the clock for timestamps and delays (a :class:`VirtualClock` in simulations);
            None for the real one.
        credentials: the credentials to accept and sign with (generated when None; see
            :func:`generate_credentials` for the keys).
    """

    def __init__(
        self,
        provider: str,
        clock: Clock | None = None,
        credentials: Mapping[str, str] | None = None,
    ):
        if provider not in PROVIDERS:
            raise ValueError(f"unknown provider {provider!r} ({', '.join(PROVIDERS)})")
        self.provider = provider
        self.clock: Clock = clock or RealClock()
        self.credentials, self.signing_key = _credentials(provider, credentials)
        self.work = Work(self.clock)
        self.calls: dict[str, MockCall] = {}  # by provider call id
        self.sessions: dict[str, CallSession] = {}
        self.requests: list[RecordedRequest] = []
        self.on_request: RequestHook | None = None
        # The caller script for every call, unless one is set for the number called
        # (outbound) or given to place_inbound.
        self.script: Script = DEFAULT
        self.scripts: dict[str, Script] = {}
        # Telnyx: the connection's webhook URL, for dials that name none.
        self.webhook_url: str | None = None
        # Behaviour knobs.
        self.speech_confidence = 0.92  # reported with every speech result
        self.reaction_s = 0.5  # Telnyx: how long the caller waits before answering a prompt
        self.inbound_ring_timeout_s = 60.0  # Telnyx: an unanswered inbound caller gives up
        self.reorder_telnyx = False  # send Telnyx events pairwise swapped
        # Telnyx: call.hangup of the new leg for a transfer that did not connect, as Telnyx
        # sends it; off only to test the runtime's safety timer for a report that never comes.
        self.report_failed_transfer = True
        # Media streams (streams.py): the words the caller speaks on them, for the offline
        # recognizers, and how the caller takes turns (real seconds).
        self.captions = Captions()
        self.stream_reply_pause_s = 0.3  # a polite caller's pause after the bot's audio ends
        self.stream_interrupt_after_s = 0.3  # `interrupt`: into the bot's audio by this much
        self.stream_prompt_wait_s = 5.0  # the bot says nothing this long: the caller goes on
        self.stream_dtmf_gap_s = 0.1  # between the keys of a `press` on a stream
        # A stream counts as busy (a simulation's virtual clock stays put) except while its
        # caller waits for the bot with nothing to say (silence, a dial step, a machine); off:
        # busy for as long as it is open.
        self.stream_idle_while_waiting = True
        self._stream_client: aiohttp.ClientSession | None = None
        self.sender = WebhookSender(provider, self.credentials, self.signing_key, clock=self.clock,
                                    timeout_s=15.0, in_flight=self._count_flight)  # fmt: skip
        self._in_flight = 0
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base = ""

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Starts the REST server on 127.0.0.1 (a free port) and the webhook client."""
        await self.sender.open()
        self._stream_client = aiohttp.ClientSession()
        self._runner = web.AppRunner(create_app(self), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self._base = f"http://{host}:{port}"

    async def stop(self) -> None:
        """Stops every call task, the server and the client."""
        await self.work.cancel_all()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.sender.close()
        if self._stream_client is not None:
            await self._stream_client.close()
            self._stream_client = None

    async def __aenter__(self) -> MockCarrier:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_base(self) -> str:
        """The REST base URL, e.g. http://127.0.0.1:PORT (Plivo: + /v1/Account, Telnyx: + /v2)."""
        if not self._base:
            raise RuntimeError("the mock carrier is not started")
        return self._base

    @property
    def stream_client(self) -> aiohttp.ClientSession:
        """The HTTP client that opens media-stream WebSockets to the bot."""
        if self._stream_client is None:
            raise RuntimeError("the mock carrier is not started")
        return self._stream_client

    @property
    def idle(self) -> bool:
        """True when no webhook is in flight, no REST request is being handled and every call
        waits on the clock or on the bot. An open media stream runs in real time and counts as
        busy, except while its caller waits for the bot with nothing to say (streams.py)."""
        return self.work.busy == 0 and self._in_flight == 0

    @property
    def deliveries(self) -> list[Delivery]:
        """Every webhook sent, in order."""
        return self.sender.deliveries

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions from the carrier's own tasks (always empty unless it has a bug)."""
        return self.work.errors

    # --- fault injection -----------------------------------------------------------------------

    @property
    def duplicate_rate(self) -> float:
        """The share of webhooks sent twice (seeded: ``sender.random``)."""
        return self.sender.duplicate_rate

    @duplicate_rate.setter
    def duplicate_rate(self, rate: float) -> None:
        self.sender.duplicate_rate = rate

    def duplicate_next(self, count: int = 1) -> None:
        """Sends each of the next ``count`` webhooks twice."""
        self.sender.duplicate_next(count)

    # --- calls ---------------------------------------------------------------------------------

    async def place_inbound(
        self,
        from_: str,
        to: str,
        url: str,
        *,
        script: Script | None = None,
        status_callback: str | None = None,
        hangup_url: str | None = None,
    ) -> MockCall:
        """Starts an inbound call from ``from_`` to the bot's number ``to``.

        Args:
            from_: the caller's number.
            to: the number called (the bot's).
            url: Twilio: the number's voice URL; Plivo: the application's answer URL; Telnyx:
                the connection's webhook URL.
            script: what the caller does (default: :attr:`script`).
            status_callback: Twilio: the number's status callback URL (completed only).
            hangup_url: Plivo: the application's hangup URL.

        Returns:
            The call (its session runs in the background).
        """
        ids: dict[str, Callable[[], str]] = {
            "twilio": new_sid, "plivo": lambda: str(uuid.uuid4()), "telnyx": new_call_control_id,
        }  # fmt: skip
        call_id = ids[self.provider]()
        call = self.new_call(call_id, "inbound", from_, to, urls=[url], script=script)
        session = self._inbound_session(call, url, status_callback, hangup_url)
        self.launch(session, session.run_inbound())
        return call

    def _inbound_session(
        self, call: MockCall, url: str, status_callback: str | None, hangup_url: str | None
    ) -> TwilioSession | PlivoSession | TelnyxSession:
        if self.provider == "twilio":
            return TwilioSession(self, call, url=url, status_callback=status_callback)
        if self.provider == "plivo":
            return PlivoSession(self, call, url=url, hangup_url=hangup_url)
        return TelnyxSession(self, call, webhook_url=url,
                             connection_id=self.credentials["connectionId"])  # fmt: skip

    def new_call(
        self,
        provider_call_id: str,
        direction: str,
        from_: str,
        to: str,
        *,
        urls: Sequence[str] = (),
        state: str | None = None,
        script: Script | None = None,
    ) -> MockCall:
        """Registers a call (sessions are added with :meth:`launch`)."""
        script = script or self.scripts.get(to if direction == "outbound" else from_, self.script)
        call = MockCall(provider=self.provider, provider_call_id=provider_call_id,
                        direction=direction, from_=from_, to=to, script=script,
                        started_at=self.clock.now())  # fmt: skip
        for url in urls:
            self.learn_call_id(call, url=url)
        self.learn_call_id(call, state=state)
        self.calls[provider_call_id] = call
        self._announce()
        return call

    def _announce(self) -> None:
        """Wakes wait_ended() callers: a call arrived or got its runtime id."""
        self._arrived.set()
        self._arrived = asyncio.Event()

    def launch(self, session: CallSession, run: Coroutine[Any, Any, None]) -> None:
        """Starts a call's session."""
        self.sessions[session.call.provider_call_id] = session
        session.spawn(run)

    def learn_call_id(
        self, call: MockCall, url: str | None = None, state: str | None = None
    ) -> None:
        """Notes the runtime's call id from a callback URL's ``call`` or a client_state."""
        if call.call_id is not None:
            return
        if url:
            value = parse_qs(urlsplit(url).query).get("call")
            call.call_id = value[0] if value else None
        if state and call.call_id is None:
            call.call_id = decode_state(state).call_id
        if call.call_id is not None and call.provider_call_id in self.calls:
            self._announce()

    def find(self, key: str) -> MockCall | None:
        """A call by provider call id, Plivo request uuid, or the runtime's call id."""
        if key in self.calls:
            return self.calls[key]
        for call in self.calls.values():
            if key in (call.request_uuid, call.call_id):
                return call
        return None

    async def wait_ended(self, key: str, timeout: float = 10.0) -> MockCall:
        """Waits until the call has ended and its final webhooks were sent.

        Args:
            key: a provider call id, Plivo request uuid or the runtime's call id (the call
                may not exist yet).
            timeout: real seconds, a safety net for tests.

        Returns:
            The call. Raises TimeoutError.
        """
        async with asyncio.timeout(timeout):
            while (call := self.find(key)) is None:
                await self._arrived.wait()
            await call.ended_event.wait()
        return call

    # --- bookkeeping ---------------------------------------------------------------------------

    def record_request(
        self, method: str, path: str, query: dict[str, str], headers: dict[str, str], body: Any
    ) -> None:
        self.requests.append(RecordedRequest(provider=self.provider, method=method, path=path,
                                             query=query, headers=headers, body=body))  # fmt: skip
        if self.on_request is not None:
            self.on_request(self.provider, method, path, body)

    def _count_flight(self, delta: int) -> None:
        self._in_flight += delta
