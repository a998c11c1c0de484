"""Conversations over carrier media streams: the caller's audio in, synthesized speech out.

When ``streaming.enabled`` (or a conversation's driver is ``realtime``), a flow's ``converse``
node answers the carrier with a stream opening instead of speech ``<Gather>``s (see
:meth:`voicecall.runtime.interpreter.Interpreter.stream_opening`). :class:`CallStreams` issues
the stream's one-use token, synthesizes the conversation's first words while the carrier
connects, and once the stream has started runs a :class:`StreamedConversation` on it:

- **out**: each utterance is synthesized (:func:`~voicecall.runtime.voice.tts.start_speech`),
  cut into 20 ms frames and paced in real time a few frames ahead of the carrier's playout,
  then marked; the mark's echo says whether the caller heard it or it was cut off, and the
  transcript records which;
- **in**: every frame goes to the local voice-activity detector (barge-in without waiting for
  the speech service: the carrier's queued audio is cleared the moment speech starts, unless
  the greeting is protected; our own echo does not count) and to the transcriber, whose final
  transcripts are the caller's turns;
- **turns**: :meth:`~voicecall.runtime.manager.turns.AgentTurns.stream_heard` asks the model
  (or hands the words to a waiting agent); its reply is spoken, its end-call tool says the
  farewell and hangs up once the farewell has played, its finishing tool leaves the stream and
  the flow goes on at ``on_done``;
- **failure is never silence**: synthesis that fails mid-conversation is said in the carrier's
  voice (the stream is closed for it and opened again after), a transcriber that cannot start
  ends the call with a spoken apology, and a stream that drops is opened again by the carrier's
  callback (:meth:`~voicecall.runtime.manager.turns.AgentTurns._stream_lost`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from voicecall.runtime.collect import CollectError, check_values
from voicecall.runtime.interpreter import LiveStream
from voicecall.runtime.media.marks import MarkOutcome
from voicecall.runtime.media.pacing import Framer, Pacer
from voicecall.runtime.media.streams import StreamClosed, StreamEndpoint, StreamSession, stream_key
from voicecall.runtime.media.vad import Vad, VadEvent
from voicecall.runtime.state import CallRecord, TranscriptLine
from voicecall.runtime.urls import websocket_url
from voicecall.runtime.voice.stt import Final, SpeechStarted, SttError, Transcriber
from voicecall.runtime.voice.tts import (
    DEFAULT_TIMEOUT_MS,
    CarrierVoice,
    Speech,
    TtsService,
    VoiceSettings,
    effective_tts,
    start_speech,
    synthesize_ahead,
)

log = logging.getLogger("voicecall.voice")

# Frames sent ahead of real time: the carrier's jitter buffer never runs dry, and a clear
# still drops at most this much that was already on its way.
LEAD_FRAMES = 3
STT_UNAVAILABLE = "Sorry, I can't hear you right now. Please call again later."
BURST_GAP_S = 0.04  # the model's audio paused this long: its burst is marked (< the lead)
REPLY_START_WAIT_S = 2.0  # the model's answer to a conversation's last turn: its start …
LAST_REPLY_WAIT_S = 15.0  # … and its end, at most
FAREWELL_WAIT_S = 30.0  # a farewell whose mark never comes back: hang up anyway
# The model's last words before it finished: the flow goes on after them, or after this (the
# bridge answers a tool slower than 10 s with an error).
FINISH_WAIT_S = 5.0
TranscriberFactory = Callable[[str, "str | None"], Transcriber]


@dataclass(frozen=True, slots=True, kw_only=True)
class VoiceServices:
    """What streamed conversations use, from the config (see ``runtime/app.py``)."""

    stream_path: str  # streaming.streamPath, on the webhook's host
    tts: TtsService | None = None
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    tts_timeout_ms: int = DEFAULT_TIMEOUT_MS
    transcriber: TranscriberFactory | None = None
    realtime: Any = None  # a RealtimeFactory (runtime/voice/realtime.py), or None
    streaming: bool = False  # streaming.enabled: model and agent conversations stream
    realtime_calls: bool = False  # realtime.enabled: the model's conversations are realtime
    # Whose first words the caller cannot interrupt: "outbound" (the original's rule: a call
    # we placed says why before it listens), "always" or "never".
    protect_greeting: str = "outbound"


def stream_url(webhook: str, path: str) -> str:
    """Where carriers open media streams: the webhook's host (as it is now: a tunnel may have
    replaced it after start) with ``ws(s)://`` and the stream path. Carriers need ``wss://``;
    plain ``ws://`` is for a loopback host (the mock carrier)."""
    parts = urlsplit(webhook)
    return websocket_url(urlunsplit((parts.scheme, parts.netloc, path, "", "")))


class Metrics:
    """Latencies of the audio path, for `make bench` and `/metrics` (seconds). Each list is
    bounded: past ``KEPT`` values the oldest half goes (`/metrics` takes them as it reads)."""

    KEPT = 10_000

    def __init__(self) -> None:
        self.first_frame: list[float] = []  # first TTS byte -> first frame sent
        self.clear: list[float] = []  # speech onset detected -> clear sent
        self.turn: list[float] = []  # final transcript -> responder request
        self.frame_delay: list[float] = []  # a paced frame sent, later than its schedule

    def add(self, name: str, seconds: float) -> None:
        values: list[float] = getattr(self, name)
        if len(values) >= self.KEPT:
            del values[: self.KEPT // 2]
        values.append(seconds)


class CallStreams:
    """The runtime's streamed conversations: the interpreter's stream hook, and the live
    conversations by call id (agent commands speak through them)."""

    def __init__(self, endpoint: StreamEndpoint, services: VoiceServices, manager: Any):
        self.endpoint = endpoint
        self.services = services
        self.manager = manager  # the CallManager: its turns, store and clock
        self.node_url: str | None = None  # redis.nodeUrl: where this gateway's streams come
        self.conversations: dict[str, StreamedConversation] = {}
        self.metrics = Metrics()
        self._ahead: dict[str, asyncio.Task[bytes | CarrierVoice]] = {}
        self._ahead_text: dict[str, str] = {}  # what each is the audio of
        manager.calls.end_hooks.append(self._ended)

    # --- the interpreter's hook ----------------------------------------------------------------

    def wants(self, call: CallRecord, talk: Any) -> bool:
        if self.realtime(talk.driver):
            return True
        return self.services.streaming and self.services.transcriber is not None

    def realtime(self, driver: str) -> bool:
        """Whether a conversation with this driver is served by the realtime model."""
        s = self.services
        return s.realtime is not None and (
            driver == "realtime" or (driver == "model" and s.realtime_calls)
        )

    def open(
        self, call: CallRecord, block_id: str, greeting: str, driver: str = "agent"
    ) -> dict[str, str]:
        meta = call.metadata.setdefault("stream", {})
        meta.update(block=block_id, open=True, opens=int(meta.get("opens", 0)) + 1)
        ahead = self._ahead_text.get(call.call_id)
        spoken_by_us = not self.realtime(driver)  # a realtime model speaks its own greeting
        if greeting and spoken_by_us and self.services.tts is not None and ahead != greeting:
            self._synthesize_ahead(call, greeting)

        def started(session: StreamSession) -> StreamedConversation:
            return self._started(session, greeting)

        token = self.endpoint.expect(call.call_id, started)
        key = stream_key(call.call_id)
        # With several gateways, this one's own URL: the stream must reach the call's owner.
        base = self.node_url or self.manager.settings.webhook_base
        url = stream_url(base, self.services.stream_path)
        return {"stream_url": url, "call_key": key, "stream_token": token,
                "stream_headers": f"callId={key},token={token}"}  # fmt: skip

    def live(self, call_id: str) -> LiveStream | None:
        return self.conversations.get(call_id)

    def voice_for(self, call: CallRecord | None) -> VoiceSettings:
        """The voice a call's streamed speech uses: the dialled number's `numbers.<E164>.tts`
        (deep-merged over the configured tts, as the original) where it names one for the
        service in use, else the service's own."""
        base = self.services.voice
        override = ((call.metadata.get("route") or {}).get("tts") if call else None) or {}
        name = getattr(self.services.tts, "name", "")
        section = (effective_tts(None, override).get("providers") or {}).get(name) or {}
        if not isinstance(section, dict) or not section:
            return base
        speed = section.get("speed")
        return VoiceSettings(
            voice=str(section.get("voice") or section.get("voiceId") or "") or base.voice,
            instructions=section.get("instructions") or base.instructions,
            speed=float(speed) if isinstance(speed, int | float) else base.speed,
            language=section.get("languageCode") or base.language,
        )  # fmt: skip

    def ring(self, call: CallRecord, interp: Any) -> None:
        opening = interp.opening_words(call)
        if opening is None or not opening[1] or self.services.tts is None:
            return
        talk, words = opening
        if self.wants(call, talk) and not self.realtime(talk.driver):  # realtime: the model's
            self._synthesize_ahead(call, words)

    # --- streams starting and ending ------------------------------------------------------------

    def _synthesize_ahead(self, call: CallRecord, text: str) -> None:
        """The greeting is synthesized while the carrier fetches the document and connects the
        stream, so the caller's first second is not spent waiting for the first audio."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        s = self.services
        call_id, voice = call.call_id, self.voice_for(call)
        task = asyncio.ensure_future(synthesize_ahead(
            s.tts, text, voice_settings=voice, timeout_ms=s.tts_timeout_ms))  # fmt: skip
        previous = self._ahead.pop(call_id, None)
        if previous is not None:
            previous.cancel()
        self._ahead[call_id] = task
        self._ahead_text[call_id] = text

    def _started(self, session: StreamSession, greeting: str) -> StreamedConversation:
        call = self.manager.calls.store.get(session.call_id)
        options = dict((call.metadata.get("converse") or {}) if call else {})
        options["said_at"] = (call.metadata.get("stream") or {}).get("said_at") if call else None
        direction = call.direction if call else "inbound"
        rule = self.services.protect_greeting
        protect = rule == "always" or (rule == "outbound" and direction == "outbound")
        realtime = self.realtime(str(options.get("driver")))
        kind = RealtimeConversation if realtime else StreamedConversation
        conversation = kind(self, session, options, greeting=greeting,
                                            ahead=self._take_ahead(session.call_id, greeting),
                                            protect_greeting=protect)  # fmt: skip
        old = self.conversations.get(session.call_id)
        if old is not None:
            old.stop("replaced by a new stream")
            old.close_stream("replaced by a new stream")
        self.conversations[session.call_id] = conversation
        conversation.begin()
        return conversation

    def _take_ahead(self, call_id: str, greeting: str) -> asyncio.Task[bytes | CarrierVoice] | None:
        """The greeting's audio synthesized ahead, if it is this greeting's."""
        text = self._ahead_text.pop(call_id, None)
        task = self._ahead.pop(call_id, None)
        if task is not None and (text != greeting or not greeting):
            task.cancel()
            return None
        return task

    def _ended(self, call_id: str, reason: str) -> None:
        self.endpoint.forget(call_id)
        self._ahead_text.pop(call_id, None)
        ahead = self._ahead.pop(call_id, None)
        if ahead is not None:
            ahead.cancel()
        conversation = self.conversations.pop(call_id, None)
        if conversation is not None:
            conversation.stop(f"the call ended: {reason}")
            conversation.close_stream("the call ended")

    def finished(self, conversation: StreamedConversation) -> None:
        if self.conversations.get(conversation.call_id) is conversation:
            del self.conversations[conversation.call_id]

    async def aclose(self) -> None:
        for conversation in list(self.conversations.values()):
            conversation.stop("server stopping")
        for task in self._ahead.values():
            task.cancel()
        self._ahead.clear()


@dataclass(slots=True, kw_only=True)
class _Utterance:
    text: str
    source: str
    final: bool = False  # hang up once it has played
    protected: bool = False  # barge-in does not cut it
    audio: bytes | None = None  # synthesized ahead
    done: asyncio.Future[bool] | None = None  # True: heard to the end


class StreamedConversation:
    """One call's conversation on a started media stream (a :class:`StreamSink`)."""

    def __init__(
        self, owner: CallStreams, session: StreamSession, options: dict[str, Any], *,
        greeting: str = "", ahead: asyncio.Task[bytes | CarrierVoice] | None = None,
        protect_greeting: bool = False,
    ):  # fmt: skip
        self.owner = owner
        self.session = session
        self.call_id = session.call_id
        self.options = options
        self.driver = str(options.get("driver") or "agent")
        self.greeting = greeting
        self.protect_greeting = protect_greeting
        self.vad = Vad()
        self.transcriber: Transcriber | None = None
        self.stopped = False
        self.finished = False  # left for the flow, or ending: the caller's words are no turn
        self.voice = owner.voice_for(owner.manager.calls.store.get(session.call_id))
        self._ahead = ahead
        self._queue: asyncio.Queue[_Utterance] = asyncio.Queue()
        self._playing: _Utterance | None = None
        self._player: asyncio.Task[None] | None = None
        self._framer = Framer()
        self._pacer = Pacer(max_lag=0.1)
        self._marks: dict[str, asyncio.Future[bool]] = {}  # sent, not echoed yet
        self._mark_seq = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._turn_lock = asyncio.Lock()
        self._onset_at: float | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def begin(self) -> None:
        self._spawn(self._main())

    def stop(self, reason: str) -> None:
        """Ends the conversation's work (the call ended, the stream stopped or was replaced)."""
        if self.stopped:
            return
        self.stopped = True
        log.info("call %s: streamed conversation stopped: %s", self.call_id, reason)
        for task in list(self._tasks):
            task.cancel()
        if self._playing is not None and self._playing.done and not self._playing.done.done():
            self._playing.done.set_result(False)
        if self.transcriber is not None:
            _CLOSING.add(asyncio.ensure_future(_quietly(self.transcriber.close())))
        self.owner.finished(self)

    def close_stream(self, reason: str) -> None:
        """Closes the carrier's socket (the call ended, a new stream replaced it): it would
        hold a connection slot for as long as the carrier sends frames."""
        if not self.session.closed:
            _CLOSING.add(asyncio.ensure_future(_quietly(self.session.close(reason))))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(_log_failure)
        return task

    async def _main(self) -> None:
        self._player = self._spawn(self._play_queue())
        where = str(self.options.get("said_at") or self.driver)
        greeting = self._say(self.greeting, where, protected=self.protect_greeting,
                             ahead=self._ahead) if self.greeting else None  # fmt: skip
        factory = self.owner.services.transcriber
        if factory is None:
            return
        try:
            self.transcriber = factory(self.call_id, self.options.get("language"))
            await self.transcriber.start()
        except SttError as exc:
            log.warning("call %s: speech recognition unavailable: %s", self.call_id, exc)
            if greeting is not None:
                await greeting
            await self.owner.manager.turns.end_call(self.call_id, STT_UNAVAILABLE)
            return
        async for event in self.transcriber.events():
            if self.finished:  # left for the flow, or saying its farewell: no more turns
                continue
            if isinstance(event, SpeechStarted):
                self.barge_in("speech recognition")
            elif isinstance(event, Final) and event.text.strip():
                self._spawn(self._turn(event.text.strip()))

    # --- the caller's side (StreamSink) ----------------------------------------------------------

    def on_audio(self, ulaw: bytes) -> None:
        if self.vad.feed_ulaw(ulaw) is VadEvent.SPEECH_START:
            playing = self._playing
            if playing is not None and not playing.protected:  # timed only when it clears
                self._onset_at = time.perf_counter()
            self.barge_in("voice activity")
        if self.transcriber is not None:
            self.transcriber.feed(ulaw)

    def on_mark(self, outcome: MarkOutcome) -> None:
        marked = self._marks.pop(outcome.name, None)
        if marked is not None and not marked.done():
            marked.set_result(outcome.heard)

    def on_dtmf(self, digit: str) -> None:
        log.debug("call %s: keypad %r on the stream (not used by conversations)", self.call_id,
                  digit)  # fmt: skip

    def on_stop(self, reason: str) -> None:
        ours = self.stopped  # stopped by the runtime (the call ended, a new stream)
        self.stop(f"stream {reason}")
        if not ours and self.session.provider == "telnyx":
            # Twilio and Plivo come back to us by themselves (the <Connect> action, the
            # <Redirect> after <Stream>); a Telnyx call stays up without its stream.
            manager = self.owner.manager
            manager.delivery.background(manager.turns.stream_dropped(self.call_id))

    # --- our side ------------------------------------------------------------------------------

    def say(self, text: str, *, final: bool = False) -> None:
        """An agent's words (LiveStream): spoken after what is queued."""
        if text:
            self._say(text, "agent", final=final, protected=final)
        elif final:
            self._spawn(self.owner.manager.turns.end_call(self.call_id))

    def _say(
        self, text: str, source: str, *, final: bool = False, protected: bool = False,
        ahead: asyncio.Task[bytes | CarrierVoice] | None = None,
    ) -> asyncio.Future[bool]:  # fmt: skip
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        utterance = _Utterance(text=text, source=source, final=final, protected=protected,
                               done=done)  # fmt: skip
        if ahead is not None:
            self._spawn(self._queue_ahead(utterance, ahead))
        else:
            self._queue.put_nowait(utterance)
        return done

    async def _queue_ahead(
        self, utterance: _Utterance, ahead: asyncio.Task[bytes | CarrierVoice]
    ) -> None:
        audio = await ahead
        if isinstance(audio, bytes):
            utterance.audio = audio
        self._queue.put_nowait(utterance)

    def barge_in(self, why: str) -> None:
        """The caller started speaking: what we are saying stops now (unless protected)."""
        playing = self._playing
        if playing is None or playing.protected or self.stopped:
            return
        log.info("call %s: barge-in (%s): clearing our audio", self.call_id, why)
        self._playing = None
        self._framer.clear()
        if self._player is not None:
            self._player.cancel()
        self._spawn(self._clear(playing))

    async def _clear(self, playing: _Utterance) -> None:
        await self._send_clear()
        for marked in self._marks.values():
            if not marked.done():
                marked.set_result(False)
        self._marks.clear()
        self._record(playing, heard=False)
        if playing.done is not None and not playing.done.done():
            playing.done.set_result(False)
        if not self.stopped:
            self._player = self._spawn(self._play_queue())

    async def _play_queue(self) -> None:
        while True:
            utterance = await self._queue.get()
            self._playing = utterance
            heard = await self._play(utterance)
            if self._playing is not utterance:
                continue  # cut off: _clear recorded it
            self._playing = None
            if heard is None:
                continue  # said in the carrier's voice instead
            self._record(utterance, heard=heard)
            if utterance.done is not None and not utterance.done.done():
                utterance.done.set_result(heard)
            if utterance.final:
                await self.owner.manager.turns.end_call(self.call_id)
                return

    async def _play(self, utterance: _Utterance) -> bool | None:
        """Plays one utterance: True once its mark says it was heard to the end, False when
        it was cut off, None when the carrier's voice said it instead."""
        s = self.owner.services
        chunks: Any
        if utterance.audio is not None:
            chunks = _once(utterance.audio)
            first_at = time.perf_counter()
        else:
            speech = await start_speech(s.tts, utterance.text, voice_settings=self.voice,
                                        timeout_ms=s.tts_timeout_ms)  # fmt: skip
            if isinstance(speech, CarrierVoice):
                if utterance.done is not None and not utterance.done.done():
                    utterance.done.set_result(True)
                await self._carrier_voice(utterance)
                return None
            chunks, first_at = speech, time.perf_counter()
        self._pacer.restart()
        sent = 0
        try:
            async for chunk in chunks:
                for frame in self._framer.push(chunk):
                    # The first few go at once (the carrier's buffer), then on the schedule.
                    await self._send_paced(frame, paced=sent >= LEAD_FRAMES)
                    sent += 1
                    if sent == 1:
                        self.owner.metrics.add("first_frame", time.perf_counter() - first_at)
            tail = self._framer.flush()
            if tail is not None:
                self.vad.played_ulaw(tail)
                await self.session.send_audio(tail)
            self._mark_seq += 1
            name = f"u{self._mark_seq}"
            marked: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self._marks[name] = marked
            await self.session.mark(name)
        except StreamClosed:
            return False
        finally:
            if isinstance(chunks, Speech):
                await chunks.aclose()
        return await self._heard(name, marked)

    async def _send_clear(self) -> None:
        """Drops the carrier's queued audio; times it from the speech onset that caused it."""
        with contextlib.suppress(StreamClosed):
            await self.session.clear()
        if self._onset_at is not None:
            self.owner.metrics.add("clear", time.perf_counter() - self._onset_at)
            self._onset_at = None

    async def _send_paced(self, frame: bytes, *, paced: bool) -> None:
        due = await self._pacer.wait() if paced else None
        self.vad.played_ulaw(frame)
        await self.session.send_audio(frame)
        if due is not None:  # how late the frame left against its schedule
            self.owner.metrics.add("frame_delay", time.monotonic() - due)

    async def _heard(self, name: str, marked: asyncio.Future[bool]) -> bool:
        """The mark's echo: heard to the end, or cut off. A carrier that loses the echo must
        not hold the conversation (or its farewell) forever: past the bound it counts heard."""
        try:
            bound = LEAD_FRAMES * 0.02 + FAREWELL_WAIT_S
            return await asyncio.wait_for(asyncio.shield(marked), bound)
        except TimeoutError:
            log.warning("call %s: no echo of mark %s in %gs; taken as heard", self.call_id,
                        name, FAREWELL_WAIT_S)  # fmt: skip
            self._marks.pop(name, None)
            return True

    async def _carrier_voice(self, utterance: _Utterance) -> None:
        """Synthesis failed: the words are said in the carrier's voice. The stream is left
        for it (never a <Say> beside a live stream) and opened again after."""
        log.warning("call %s: speaking in the carrier's voice (synthesis unavailable)",
                    self.call_id)  # fmt: skip
        await self.owner.manager.turns.carrier_turn(self.call_id, utterance.text,
                                                    final=utterance.final)  # fmt: skip

    def _record(self, utterance: _Utterance, *, heard: bool | None) -> None:
        source = utterance.source if heard else f"{utterance.source}; cut off"
        line = TranscriptLine(at=self.owner.manager.clock.now(), speaker="bot",
                              text=utterance.text, source=source)  # fmt: skip
        self.owner.manager.turns.stream_said(self.call_id, line)

    # --- the caller's turns --------------------------------------------------------------------

    async def _turn(self, text: str) -> None:
        async with self._turn_lock:
            if self.finished:
                return
            started = time.perf_counter()
            turns = self.owner.manager.turns
            reply = await turns.stream_heard(
                self.call_id, text, block=self.options.get("block"),
                on_request=lambda: self.owner.metrics.add("turn", time.perf_counter() - started),
            )  # fmt: skip
            if reply is None:
                return
            if reply.left or reply.end:
                self.finished = True  # what the caller says from now on is not a turn
            if reply.left:
                return
            if reply.text:
                # A farewell is not cut off: the call ends once it has been heard.
                await self._say(reply.text, self.driver, final=reply.end, protected=reply.end)
            elif reply.end:
                await turns.end_call(self.call_id)


class RealtimeConversation(StreamedConversation):
    """A ``driver: realtime`` conversation: the call's audio bridged both ways to a realtime
    speech-to-speech session (:mod:`voicecall.runtime.voice.realtime`), with the same
    pacing, barge-in, transcript and flow hand-back as a streamed model conversation.

    The model's audio arrives faster than it plays; it is paced out in bursts, each ended by a
    mark. A mark's echo says the carrier has played everything before it, so a caller who
    speaks after the model's words have played out interrupts nothing (no clear, no truncate,
    the reply is not cut off), and a farewell is heard to its end before the hangup.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self._ahead is not None:  # the model says the greeting in its own voice
            self._ahead.cancel()
            self._ahead = None
        self.realtime: Any = None  # the RealtimeSession
        self._out = bytearray()  # model audio not yet sent
        self._wake = asyncio.Event()
        self._sending = False  # the pump is in a burst (its mark not sent yet)
        self._sent = 0  # frames sent since the last clear
        self._confirmed = 0  # of those, frames the carrier says it has played
        self._burst_marks: dict[str, int] = {}  # a burst's mark -> frames sent before it
        self._generation = 0  # clears so far: a burst under way stops at one
        self._drained = asyncio.Event()  # nothing sent or waiting is unplayed
        self._drained.set()
        self._ending: str | None = None
        self._caller_turns = 0
        # A protected greeting: no barge-in until it has been said and played out.
        self._greeting_guard = self.protect_greeting and bool(self.greeting)

    async def _main(self) -> None:
        factory = self.owner.services.realtime
        self.realtime = factory.session(
            self, instructions=str(self.options.get("system_prompt") or ""),
            collect=self.options.get("collect"), greeting=self.greeting or None,
            protect_greeting=self._greeting_guard,
        )  # fmt: skip
        self._spawn(self._pump())
        try:
            await self.realtime.start()
        except Exception as exc:  # RealtimeError: one line, then the caller hears why
            log.warning("call %s: %s", self.call_id, exc)
            await self.owner.manager.turns.carrier_turn(self.call_id, STT_UNAVAILABLE, final=True)
            return
        if self._greeting_guard:
            self._spawn(self._guard_greeting())
        reason = await self.realtime.wait_closed()
        if reason is not None and not self.stopped and self._ending is None:
            await self.owner.manager.turns.carrier_turn(self.call_id, STT_UNAVAILABLE, final=True)

    def stop(self, reason: str) -> None:
        if not self.stopped and self.realtime is not None:
            _CLOSING.add(asyncio.ensure_future(_quietly(self.realtime.close())))
        super().stop(reason)

    def on_audio(self, ulaw: bytes) -> None:
        if self.vad.feed_ulaw(ulaw) is VadEvent.SPEECH_START and self._out_pending():
            self._onset_at = time.perf_counter()
            self.barge_in("voice activity")
        if self.realtime is not None:
            self.realtime.feed(ulaw)

    def on_mark(self, outcome: MarkOutcome) -> None:
        frames = self._burst_marks.pop(outcome.name, None)
        if frames is None:
            return  # a mark from before a clear
        if outcome.heard:
            self._confirmed = max(self._confirmed, frames)
        self._settle()

    def _out_pending(self) -> bool:
        """Model audio the caller has not heard yet: waiting, being sent, or at the carrier."""
        return bool(self._out) or self._sending or self._confirmed < self._sent

    def _settle(self) -> None:
        if self._out_pending():
            self._drained.clear()
        else:
            self._drained.set()

    # --- RealtimeHandler ---------------------------------------------------------------------

    def play(self, ulaw: bytes) -> None:
        self._out += ulaw
        self._drained.clear()
        self._wake.set()

    def barge_in(self, why: str = "") -> None:
        if self._ending is not None or self.stopped or not self._out_pending():
            return
        if self._greeting_guard:
            return
        log.info("call %s: barge-in (%s): clearing the model's audio", self.call_id,
                 why or "the service heard speech")  # fmt: skip
        # What the caller heard: what the carrier confirmed, or what was sent less what the
        # carrier may still have had buffered.
        played_ms = max(self._confirmed, self._sent - LEAD_FRAMES) * 20
        self._generation += 1
        self._out.clear()
        self._framer.clear()
        self._sent = self._confirmed = 0
        self._burst_marks.clear()
        if self.realtime is not None:  # at the moment of the clear: the session's bookkeeping
            self._spawn(_awaited(self.realtime.truncate(played_ms)))
        self._spawn(self._send_clear())
        self._settle()

    def heard(self, text: str) -> None:
        line = TranscriptLine(at=self.owner.manager.clock.now(), speaker="user", text=text,
                              block=str(self.options.get("block") or ""))  # fmt: skip
        self.owner.manager.turns.stream_said(self.call_id, line)
        self._caller_turns += 1
        limit = self.options.get("max_turns")
        if limit and self._caller_turns >= int(limit) and self._ending is None:
            self._ending = "turns used up"
            self._spawn(self._turns_used_up())

    async def _guard_greeting(self) -> None:
        """Lifts the greeting's protection once its response is done and has played."""
        rt = self.realtime
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LAST_REPLY_WAIT_S):
                while rt is not None and rt.protecting and not rt.closed:
                    await asyncio.sleep(0.02)
        await self._played_out(FAREWELL_WAIT_S)
        self._greeting_guard = False

    async def _turns_used_up(self) -> None:
        """The conversation's turns are used up: the model answers this last turn, and once
        that has played the flow goes on at ``on_timeout`` (else the call ends), as a model
        conversation does."""
        rt = self.realtime
        with contextlib.suppress(TimeoutError):  # its answer starts (or already has: the
            async with asyncio.timeout(REPLY_START_WAIT_S):  # transcript may come after it)
                while rt is not None and not rt.speaking and not rt.closed:
                    await asyncio.sleep(0.02)
        with contextlib.suppress(TimeoutError):  # and ends
            async with asyncio.timeout(LAST_REPLY_WAIT_S):
                while rt is not None and rt.speaking:
                    await asyncio.sleep(0.02)
        await self._played_out(FAREWELL_WAIT_S)
        if rt is not None:
            await rt.close()  # reports what it said; it says nothing more
        await self.owner.manager.turns.stream_timeout(self.call_id)

    def said(self, text: str, cut: bool) -> None:
        if text:
            self._record(_Utterance(text=text, source="realtime"), heard=not cut)

    async def tool(self, name: str, arguments: dict[str, Any]) -> Any:
        """``finish_conversation``: values that do not fit are answered with what to fix (the
        model asks again); values that fit end the session once the model's last words have
        played (they are heard and recorded before the flow's next words), then the flow goes
        on at ``on_done``."""
        if name != "finish_conversation":
            return None
        problem = self._unfit(arguments)
        if problem is not None:
            return {"error": problem}
        # Ours, not the session's: the bridge's tool timeout does not cut a hand-back short.
        await asyncio.shield(self._spawn(self._finish(arguments)))
        return {"ok": True}

    async def _finish(self, values: dict[str, Any]) -> None:
        await self._played_out(FINISH_WAIT_S)
        self._ending = "finished"  # the flow goes on: nothing more is said here
        if self.realtime is not None:
            await self.realtime.close()
        turns = self.owner.manager.turns
        try:
            await turns.finish(self.call_id, values)
        except Exception as exc:  # the call changed meanwhile: never an open, silent stream
            log.warning("call %s: the conversation could not finish: %s", self.call_id, exc)
            with contextlib.suppress(Exception):
                await turns.carrier_turn(self.call_id, STT_UNAVAILABLE, final=True)

    def _unfit(self, values: dict[str, Any]) -> str | None:
        """What is wrong with the values for the conversation's ``collect`` (the check
        :meth:`AgentTurns.finish` makes), None when they fit."""
        calls = self.owner.manager.calls
        call = calls.store.get(self.call_id)
        talk = calls.interpreter(call).conversation(call) if call is not None else None
        if talk is None or talk.on_done is None:
            return "not finished: this conversation has no on_done to finish to"
        try:
            check_values(talk.converse.collect, values)
        except CollectError as exc:
            return f"not finished: {exc}"
        return None

    def end(self, farewell: str) -> None:
        self._ending = farewell or "end"
        self._spawn(self._end_after_playout())

    # --- an agent's words (LiveStream) ---------------------------------------------------------

    def say(self, text: str, *, final: bool = False) -> None:
        """An agent's words on a realtime call (`voicecall speak`, `end`): in the TTS voice
        through the same paced output (else the carrier's voice). ``final``: the model stops
        at once, and the call ends once the words have played."""
        if final:
            self._ending = text or "end"
        self._spawn(self._agent_says(text, final))

    async def _agent_says(self, text: str, final: bool) -> None:
        if final and self.realtime is not None:
            await self.realtime.close()  # reports what the model said; it says nothing more
        if text:
            s = self.owner.services
            speech = await start_speech(s.tts, text, voice_settings=self.voice,
                                        timeout_ms=s.tts_timeout_ms)  # fmt: skip
            if isinstance(speech, CarrierVoice):
                await self.owner.manager.turns.carrier_turn(self.call_id, text, final=final)
                return
            try:
                async for chunk in speech:
                    self.play(chunk)
            finally:
                await speech.aclose()
            if final:
                await self._played_out(FAREWELL_WAIT_S)
            self._record(_Utterance(text=text, source="agent"), heard=True)
        if final:
            await self.owner.manager.turns.end_call(self.call_id)

    async def _end_after_playout(self) -> None:
        """Hangs up once the farewell has played."""
        await self._played_out(FAREWELL_WAIT_S)
        await self.owner.manager.turns.end_call(self.call_id)

    async def _played_out(self, limit_s: float) -> None:
        """Waits until the model's audio has all played (its bursts' marks echoed); a carrier
        that never echoes does not hold the call longer than ``limit_s``."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit_s):
                while self._out_pending():
                    await self._drained.wait()

    # --- the model's audio out ----------------------------------------------------------------

    async def _pump(self) -> None:
        """Sends the model's audio in paced frames, as it arrives, one burst at a time."""
        with contextlib.suppress(StreamClosed):
            while True:
                await self._wake.wait()
                await self._burst()

    async def _burst(self) -> None:
        """Sends what has arrived and whatever follows without a pause, then marks it. A
        partial frame is held while more may come (no silence padded into the middle of a
        reply); a clear ends the burst at once."""
        generation = self._generation
        self._sending = True
        self._pacer.restart()
        sent = 0
        try:
            while self._out and generation == self._generation:
                self._wake.clear()
                chunk = bytes(self._out)
                self._out.clear()
                for frame in self._framer.push(chunk):
                    due = None
                    if sent >= LEAD_FRAMES:  # the first few go at once: the carrier's buffer
                        due = await self._pacer.wait()
                    if generation != self._generation:
                        return
                    await self._send_frame(frame)
                    if due is not None:
                        self.owner.metrics.add("frame_delay", time.monotonic() - due)
                    sent += 1
                if not self._out:  # the model's audio paused: the carrier has some in hand
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(BURST_GAP_S):
                            await self._wake.wait()
            if generation != self._generation:
                return
            tail = self._framer.flush()
            if tail is not None:
                await self._send_frame(tail)
            self._mark_seq += 1
            name = f"rt{self._mark_seq}"
            self._burst_marks[name] = self._sent
            await self.session.mark(name)
        finally:
            self._sending = False
            self._settle()

    async def _send_frame(self, frame: bytes) -> None:
        self.vad.played_ulaw(frame)
        self._sent += 1  # before the send: a clear meanwhile counts from zero
        await self.session.send_audio(frame)


async def _awaited(work: Any) -> None:
    await work


async def _once(audio: bytes) -> Any:
    yield audio


_CLOSING: set[asyncio.Future[None]] = set()  # closes under way (a reference keeps each alive)


async def _quietly(work: Coroutine[Any, Any, Any]) -> None:
    try:
        with contextlib.suppress(Exception):
            await work
    finally:
        _CLOSING.discard(asyncio.current_task())


def _log_failure(task: asyncio.Task[Any]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None:
        log.warning("streamed conversation task failed: %s: %s", type(exc).__name__, exc)
