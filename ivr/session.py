"""The call session: runs one call of a flow over a Channel, through VAD → ASR → NLU → flow → TTS.

The flow interpreter decides; the session executes its actions on the channel and turns what the caller
does into events for it. The same session serves a SIP call, an audio-fixture replay and a local
microphone. Time for caller-facing timers (no-input, end of speech, DTMF gaps) is counted in 20 ms frames
received from the channel, so a replay can run faster than real time with the same behaviour; waits on
work (recognition, webhooks) are measured on the wall clock.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from ivr.audio.frame import FRAME_MS, AudioFrame, pcm_from_frames
from ivr.audio.wavfile import write_wav
from ivr.channel import Channel
from ivr.events import (
    CallInterrupted,
    ControlEvent,
    DtmfDigit,
    Hangup,
    HttpResult,
    NoInput,
    RecordingFinished,
    SpeechEnded,
    SpeechStarted,
    Transcript,
)
from ivr.flow import actions as fa
from ivr.flow.prompts import queue_announcement, system_prompts
from ivr.handoff import context_headers
from ivr.services import SpeechServices
from ivr.speech.interfaces import Recognizer
from ivr.store.masking import mask_sensitive
from ivr.store.views import SECRET_MASK, for_handoff, text_for_handoff

log = logging.getLogger(__name__)

FRAME_SECONDS = FRAME_MS / 1000


class CallObserver(Protocol):
    """Who wants to know what happens in a call (replay runner, metrics, the console)."""

    def on_event(self, kind: str, data: dict[str, Any]) -> None:
        """``kind`` is one of: prompt, listen, speech_started, transcript, dtmf, no_input, barge_in,
        http, transfer, hangup, error, turn_latency, recording, end."""
        ...


class CallStore(Protocol):
    """The part of ``ivr.store`` a session writes to (each write is durable when it returns)."""

    def start_call(self, call_id: str, caller: str, called: str, flow: str, started_at: float) -> None: ...
    def mark_answered(self, call_id: str, at: float) -> None: ...
    def add_turn(
        self,
        call_id: str,
        at: float,
        speaker: str,
        text: str,
        intent: str | None = None,
        confidence: float | None = None,
    ) -> None: ...
    def add_event(self, call_id: str, at: float, kind: str, data: dict[str, Any]) -> None: ...
    def set_context(self, call_id: str, context: dict[str, Any]) -> None: ...
    def end_call(self, call_id: str, at: float, outcome: str) -> None: ...


class QueueService(Protocol):
    """The part of ``ivr.queue.Acd`` a session uses while its caller waits for an agent."""

    def enqueue(self, call_id: str, queue: str, priority: int | None = None,
                context: dict[str, Any] | None = None) -> Any: ...
    def poll(self, call_id: str) -> list[Any]: ...
    def abandon(self, call_id: str) -> None: ...
    def call_finished(self, call_id: str) -> None: ...
    def has_queue(self, name: str) -> bool: ...


class Interpreter(Protocol):
    """What the session needs of ``ivr.flow``'s per-call interpreter."""

    finished: bool

    def start(self) -> list[fa.FlowAction]: ...
    def handle(self, event: ControlEvent) -> list[fa.FlowAction]: ...
    def context(self) -> dict[str, Any]: ...


@dataclass
class SessionConfig:
    """Per-server settings of call handling."""

    fallback_queue: str = "support"
    recordings_dir: str = "var/recordings"
    max_call_seconds: float = 3600.0
    goodbye_drain_seconds: float = 30.0
    comfort_noise_after: float = 1.0
    """Seconds of waiting on recognition without a filler prompt before soft comfort noise plays."""
    speculate_after: float = 0.15
    """A pause this long starts recognising speculatively (on a live call, while the pause goes on)."""
    early_silence_phrase: float = 0.2
    """A pause this long after speech that already spells one of the prompt's grammar phrases ends the turn
    (before the full end-of-speech silence)."""
    early_silence_sentence: float = 0.3
    """A pause this long after free speech that the recognizer closes as a sentence (., ?, !) ends the
    turn. Longer than for phrases: people pause mid-sentence ("Yes, … that's right")."""
    context_url: Callable[[str], str] | None = None
    """Makes the signed ``X-IVR-Context-Url`` link for a call id (None: no link is sent)."""
    speculate_max_backlog: int = 2
    """On a live call, no speculative recognition starts while this many recognitions (or other jobs) are
    already queued or running: under load the extra passes would delay everyone's final results."""


@dataclass
class CallResult:
    """How a call ended and what the bot learned."""

    call_id: str
    outcome: str
    context: dict[str, Any] = field(default_factory=dict)
    transfer_target: str | None = None
    turn_latencies: list[float] = field(default_factory=list)


class _CallEnded(Exception):
    """The caller hung up (or the channel died): unwinds the session loop."""


class CallSession:
    """Runs one call: give it a channel, an interpreter for the flow, and the shared speech services.
    ``language`` and ``prompts`` are the flow's (``Flow.language``, ``Flow.prompts``): the voice and the
    words of everything the session says on its own."""

    def __init__(
        self,
        channel: Channel,
        interpreter: Interpreter,
        services: SpeechServices,
        *,
        flow_name: str = "",
        language: str | None = None,
        prompts: Mapping[str, str] | None = None,
        store: CallStore | None = None,
        queues: QueueService | None = None,
        observer: CallObserver | None = None,
        config: SessionConfig | None = None,
        fallback_queue: str | None = None,
    ) -> None:
        """``fallback_queue``: the flow's (``global.fallback_queue``), where a failed transfer goes next;
        default: the server's ``SessionConfig.fallback_queue``."""
        self.channel = channel
        self.interp = interpreter
        self.services = services
        self.flow_name = flow_name
        self.tts = services.tts_for(language)
        self.prompts = system_prompts(language or "en", prompts)
        """What the bot says on its own (apology, voicemail, queue announcements), in the flow's language."""
        self.store = store
        self.queues = queues
        self.observer = observer
        self.config = config or SessionConfig()
        self.fallback_queue = fallback_queue or self.config.fallback_queue
        self.call_id = channel.call_id or uuid.uuid4().hex
        self.rate = channel.sample_rate
        self.now = 0.0  # seconds of caller audio received (the call clock)
        self._prompt_barge_in = True
        self._control: deque[ControlEvent] = deque()
        self._result = CallResult(self.call_id, "completed")
        self._speech_end_wall: float | None = None  # when the caller's last turn ended, for turn latency
        self._speculation: tuple[Future[Transcript], float] | None = None
        self._answer_sensitive = ""  # the current question's answer is a 'card' number or a 'secret'

    # ----------------------------------------------------------------- public

    def run(self) -> CallResult:
        """Run the call to its end; never raises (errors end in the apology and a fallback)."""
        started = time.time()
        self._store("start_call", self.call_id, self.channel.caller, self.channel.called, self.flow_name, started)
        self._store("mark_answered", self.call_id, started)
        try:
            self._run_actions(self.interp.start())
        except _CallEnded:
            pass  # the outcome was set where the call ended
        except Exception as exc:  # a failing call must never take down the server
            log.exception("call %s: unexpected error", self.call_id)
            self._notify("error", {"error": repr(exc)})
            self._fallback()
        finally:
            self._finish()
        return self._result

    # ------------------------------------------------------------- main loop

    def _run_actions(self, initial: list[fa.FlowAction]) -> None:
        pending: deque[fa.FlowAction] = deque(initial)
        while pending:
            action = pending.popleft()
            event = self._execute(action)
            if event is None:
                continue
            if isinstance(event, Hangup):
                self._result.outcome = "caller_hangup"
                self.interp.handle(event)
                raise _CallEnded
            pending.extend(self._handle(event))

    def _handle(self, event: ControlEvent) -> list[fa.FlowAction]:
        actions = self.interp.handle(event)
        if isinstance(event, Transcript):
            ctx = self.interp.context()
            self._notify("intent", {"intent": ctx.get("intent"), "confidence": ctx.get("confidence")})
            self._store("add_turn", self.call_id, time.time(), "caller", self._private(self._answer_text(event.text)),
                        ctx.get("intent"), ctx.get("confidence"))
        return actions

    def _execute(self, action: fa.FlowAction) -> ControlEvent | None:
        if isinstance(action, fa.Say):
            self._say(action)
            return None
        if isinstance(action, fa.Listen):
            return self._listen(action)
        if isinstance(action, fa.HttpRequest):
            return self._http(action)
        if isinstance(action, fa.Record):
            return self._record(action)
        if isinstance(action, fa.Transfer):
            self._transfer(action)
            return None
        if isinstance(action, fa.Hangup):
            self._hangup(action.reason)
            return None
        raise TypeError(f"unknown flow action {action!r}")

    # ------------------------------------------------------------------ say

    def _say(self, action: fa.Say) -> None:
        self._prompt_barge_in = action.barge_in
        text = action.text
        first = True
        if action.audio:
            chunks: Any = [self.services.load_prompt(action.audio, self.rate)]
        else:
            chunks = self.tts.stream(text, self.rate)
        for chunk in chunks:
            if first:
                self._mark_first_reply_audio()
                first = False
            self.channel.play(chunk)
        self._notify("prompt", {"text": text, "audio": action.audio, "barge_in": action.barge_in})
        self._store("add_turn", self.call_id, time.time(), "bot", self._private(text) or f"[audio {action.audio}]")

    def _mark_first_reply_audio(self) -> None:
        if self._speech_end_wall is None:
            return
        latency = time.perf_counter() - self._speech_end_wall
        self._result.turn_latencies.append(latency)
        self._notify("turn_latency", {"seconds": latency})
        self._speech_end_wall = None

    # --------------------------------------------------------------- frames

    def _next_frame(self, timeout: float = 0.2) -> AudioFrame | None:
        """One step of the call clock: the next caller frame (control events are queued aside)."""
        for event in self.channel.poll_control():
            self._control.append(event)
        frame = self.channel.receive_audio(timeout)
        if frame is not None:
            self.now += FRAME_SECONDS
            if self.now > self.config.max_call_seconds:
                log.warning("call %s: maximum call length reached", self.call_id)
                self._control.append(Hangup())
        for event in self.channel.poll_control():
            self._control.append(event)
        if any(isinstance(event, CallInterrupted) for event in self._control):
            log.warning("call %s: the line was lost (interrupted)", self.call_id)
            self._result.outcome = "interrupted"
            raise _CallEnded
        return frame

    def _take_control(self) -> ControlEvent | None:
        return self._control.popleft() if self._control else None

    def _check_hangup(self) -> None:
        if any(isinstance(e, Hangup) for e in self._control):
            self._result.outcome = "caller_hangup"
            raise _CallEnded

    # --------------------------------------------------------------- listen

    def _listen(self, action: fa.Listen) -> ControlEvent:
        """Wait for the caller's answer; returns exactly one event for the interpreter."""
        self._answer_sensitive = action.sensitive
        self._notify("listen", {"speech": action.speech, "dtmf": action.dtmf, "grammar": action.grammar})
        # The endpointer starts with the first frame after the prompt (its no-input timer with it), on the
        # call clock; the barge-in detector listens while the prompt plays.
        vad: Any = None
        barge = self.services.new_barge_in_detector(self.rate, start_at=self.now)
        recognizer: Recognizer | None = None
        self._speculation = None
        digits = ""
        last_digit_at = 0.0
        waiting_since: float | None = None  # call time when the prompt finished and the timer started
        while True:
            frame = self._next_frame()
            event = self._take_control()
            while event is not None:
                if isinstance(event, Hangup):
                    return event
                if isinstance(event, DtmfDigit) and action.dtmf:
                    if self.channel.playback_pending() > 0 and self._prompt_barge_in:
                        self.channel.stop_playback()
                        self._notify("barge_in", {"by": "dtmf"})
                    for key in event.digit:
                        if key == action.dtmf_terminator:
                            if digits:
                                return self._digits(digits)
                            continue
                        digits += key
                        last_digit_at = self.now
                        if len(digits) >= action.dtmf_max_digits:
                            return self._digits(digits)
                event = self._take_control()
            if digits and self.now - last_digit_at >= action.dtmf_inter_digit_timeout:
                return self._digits(digits)
            if frame is None:
                continue
            playing = self.channel.playback_pending() > 0
            if playing and recognizer is None:
                if action.speech and self._prompt_barge_in and barge.process(frame):
                    self.channel.stop_playback()
                    self._notify("barge_in", {"by": "speech", "at": self.now})
                    recognizer = self._start_recognizer(action, barge.preroll())
                    vad = self.services.new_endpointer(self.rate, action, start_at=self.now)
                    vad.force_speech(self.now)
                continue
            if waiting_since is None:
                waiting_since = self.now
            if vad is None:
                vad = self.services.new_endpointer(self.rate, action, start_at=self.now - FRAME_SECONDS)
            if digits:
                continue
            if not action.speech:
                if self.now - waiting_since >= action.no_input_timeout:
                    return self._no_input()
                continue
            for vad_event in vad.process(frame):
                if isinstance(vad_event, SpeechStarted) and recognizer is None:
                    self._notify("speech_started", {"at": self.now})
                    recognizer = self._start_recognizer(action, vad.preroll())
                    continue
                if isinstance(vad_event, SpeechEnded):
                    if recognizer is None:
                        recognizer = self._start_recognizer(action, vad.preroll())
                    return self._final_transcript(recognizer, action, vad_event)
                if isinstance(vad_event, NoInput):
                    return self._no_input()
            if recognizer is not None:
                partial = recognizer.accept(frame)
                if partial is not None and partial.text:
                    self._notify("partial", {"text": partial.text})
                early = self._speculate(recognizer, vad.trailing_silence, action)
                if early is not None:
                    return early
            elif self.now - waiting_since >= action.no_input_timeout:
                return self._no_input()

    def _start_recognizer(self, action: fa.Listen, preroll: list[AudioFrame]) -> Recognizer:
        recognizer = self.services.asr.new_recognizer(self.rate, list(action.grammar) if action.grammar else None)
        for frame in preroll:
            recognizer.accept(frame)
        return recognizer

    def _speculate(self, recognizer: Recognizer, silence: float, action: fa.Listen) -> Transcript | None:
        """Once the caller pauses (``early_silence_*``), look at what was said so far (``peek``); a
        complete-sounding result (a grammar phrase, or a sentence end) ends the turn without waiting for
        the full end-of-speech silence. Speech resuming discards the look.

        Per-utterance engines (whisper) peek in the worker pool on a live call; a replay peeks at once,
        as if the machine kept up, and counts the peek's time in the turn latency.
        """
        peek = getattr(recognizer, "peek", None)
        if peek is None:
            return None
        if silence < self.config.speculate_after:
            if self._speculation is not None:
                self._speculation[0].cancel()  # the caller spoke again: a look not started yet is not needed
            self._speculation = None
            return None
        if self._speculation is None:
            started = time.perf_counter()
            if self._realtime:
                if getattr(self.services, "backlog", 0) >= self.config.speculate_max_backlog:
                    return None  # busy: try again on the next frame of the pause
                future = self.services.submit(peek)
            else:
                future = Future()
                future.set_result(peek())
            self._speculation = (future, started - silence)
        future, speech_end = self._speculation
        wait = self.config.early_silence_phrase if action.grammar else self.config.early_silence_sentence
        if silence < wait or not future.done():
            return None
        transcript: Transcript = future.result()
        text = transcript.text.rstrip()
        if not text or not (action.grammar or text[-1] in ".?!"):
            return None
        if action.grammar and any(p.startswith(text + " ") for p in action.grammar):
            return None  # "상담원" may be the start of "상담원 연결": wait for the end of speech
        if getattr(recognizer, "streaming", False):
            transcript = recognizer.finish()  # the peek was a partial result: the final one has confidences
        # Recognition time of an early-ended turn: from the start of its speculative pass (the ASR metric).
        self._notify("asr", {"seconds": max(0.0, time.perf_counter() - speech_end - self.config.speculate_after)})
        # On a live call both estimates agree; in a replay the second accounts for the pause still needed.
        return self._commit(transcript, "early", min(speech_end, time.perf_counter() - silence))

    def _final_transcript(self, recognizer: Recognizer, action: fa.Listen, ended: SpeechEnded) -> ControlEvent:
        silence = max(0.0, self.now - ended.at) if ended.reason == "silence" else 0.0
        started = time.perf_counter()
        future: Future[Transcript]
        if self._speculation is not None and not getattr(recognizer, "streaming", False):
            future = self._speculation[0]  # the caller stayed silent since: it heard the whole utterance
        else:
            future = self.services.submit(recognizer.finish)
        transcript: Transcript = self._wait(future, None, 0.0)
        self._notify("asr", {"seconds": time.perf_counter() - started})
        return self._commit(transcript, "silence", started - silence)

    def _commit(self, transcript: Transcript, how: str, speech_end_wall: float) -> Transcript:
        """The caller's turn is over; ``speech_end_wall`` is when their speech ended on the wall clock (for
        the turn latency: from there to the first audio of the reply)."""
        self._speech_end_wall = speech_end_wall
        self._speculation = None
        self._notify("transcript", {"text": self._answer_text(transcript.text), "confidence": transcript.confidence,
                                    "endpoint": how})
        return transcript

    def _private(self, text: str) -> str:
        """``text`` as it may be written down: card numbers to their last 4 digits, and the values the flow
        collected as a ``card`` or a ``secret`` masked wherever they appear (a prompt reading one back)."""
        try:
            context = self.interp.context()
        except Exception:
            context = {}
        return text_for_handoff(text, context)

    def _answer_text(self, text: str) -> str:
        """What may be written or reported of the caller's answer: all of it, but the digits of a card
        number (last 4 kept) and nothing of a secret."""
        if self._answer_sensitive == "secret":
            return SECRET_MASK if text else text
        if self._answer_sensitive == "card":
            return mask_sensitive(text)
        return text

    def _digits(self, digits: str) -> DtmfDigit:
        self._notify("dtmf", {"digits": self._answer_text(digits)})
        self._store("add_turn", self.call_id, time.time(), "caller", f"[DTMF {self._answer_text(digits)}]")
        self._speech_end_wall = time.perf_counter()
        return DtmfDigit(digits)

    def _no_input(self) -> NoInput:
        self._notify("no_input", {"at": self.now})
        return NoInput()

    # ------------------------------------------------------------ waiting

    def _wait(self, future: Future[Any], filler: str | None, filler_after: float,
              give_up_after: float | None = None) -> Any:
        """Wait for background work while keeping the call alive (caller audio flowing, hang-up noticed).
        After ``filler_after`` seconds the caller hears ``filler``, or, without one, soft comfort noise
        (after ``comfort_noise_after``) so the line never goes dead; the noise stops when the work is done.
        Raises TimeoutError after ``give_up_after`` seconds (the work is left to finish on its own)."""
        started = time.perf_counter()
        filler_played = comfort = False
        while True:
            try:
                result = future.result(timeout=0.0 if self._realtime else 0.05)
            except TimeoutError:
                pass
            else:
                if comfort:
                    self.channel.stop_playback()
                return result
            if self._realtime:
                self._next_frame(timeout=0.02)
                self._check_hangup()
            waited = time.perf_counter() - started
            if give_up_after is not None and waited >= give_up_after:
                future.cancel()
                if comfort:
                    self.channel.stop_playback()
                raise TimeoutError
            if filler and not filler_played and waited >= filler_after:
                filler_played = True
                self._say(fa.Say(text=filler, barge_in=False))
            elif (not filler and self._realtime and waited >= self.config.comfort_noise_after
                  and self.channel.playback_pending() < 0.05):
                comfort = True
                self.channel.play(self.services.comfort_noise(self.rate))

    @property
    def _realtime(self) -> bool:
        return bool(getattr(self.channel, "realtime", True))

    # ----------------------------------------------------------------- http

    def _http(self, action: fa.HttpRequest) -> HttpResult:
        self._notify("http", {"method": action.method, "url": action.url})
        future = self.services.submit_webhook(action)
        try:
            # requests' timeout bounds each read, not a reply that trickles in: the call gives up on time
            result: HttpResult = self._wait(future, action.filler, action.filler_after,
                                            give_up_after=self.services.webhook_deadline(action) + 1.0)
        except TimeoutError:
            log.warning("call %s: webhook %s %s gave no answer in time", self.call_id, action.method, action.url)
            result = HttpResult(ok=False, status=0, error="Timeout: timed out")
        self._store(
            "add_event",
            self.call_id,
            time.time(),
            "http",
            {"url": action.url, "status": result.status, "ok": result.ok, "error": result.error},
        )
        return result

    # --------------------------------------------------------------- record

    def _record(self, action: fa.Record) -> ControlEvent:
        self._drain_playback()
        if action.beep:
            self.channel.play(self.services.beep(self.rate))
            self._drain_playback()
        vad = self.services.new_endpointer(
            self.rate,
            fa.Listen(
                no_input_timeout=action.max_seconds, end_silence=action.end_silence, max_speech=action.max_seconds
            ),
            start_at=self.now,
        )
        self._notify("listen", {"record": True})
        frames: list[AudioFrame] = []
        started = self.now
        heard = hung_up = False
        while self.now - started < action.max_seconds:
            frame = self._next_frame()
            event = self._take_control()
            if isinstance(event, Hangup):
                hung_up = True
                break  # keep what the caller said before hanging up
            if isinstance(event, DtmfDigit) and action.terminator in event.digit:
                break
            if frame is None:
                continue
            frames.append(frame)
            events = vad.process(frame)
            heard = heard or any(isinstance(e, SpeechStarted) for e in events)
            if heard and any(isinstance(e, SpeechEnded) for e in events):
                break
        path = f"{self.config.recordings_dir}/{self.call_id}-{int(time.time())}.wav"
        write_wav(path, pcm_from_frames(frames), self.rate, private=True)
        duration = len(frames) * FRAME_SECONDS
        self._notify("recording", {"path": path, "duration": duration})
        self._store("add_event", self.call_id, time.time(), "recording", {"path": path, "duration": duration})
        if hung_up:
            self.interp.handle(RecordingFinished(path, duration))
            self._result.outcome = "caller_hangup"
            raise _CallEnded
        return RecordingFinished(path, duration)

    # ------------------------------------------------------- transfer / end

    def _drain_playback(self) -> None:
        """Let queued prompts finish playing (the caller should hear the last words before we act)."""
        deadline = self.now + self.config.goodbye_drain_seconds
        while self.channel.playback_pending() > 0 and self.now < deadline:
            if self._next_frame(timeout=0.1) is None and not self._realtime:
                break
            self._check_hangup()

    def _transfer(self, action: fa.Transfer) -> None:
        """Hand the caller to the action's queue or URI. A transfer that fails (unknown queue, no agent
        reachable, SIP failure) is logged as an error and goes on to the fallback queue, then voicemail:
        the caller is never hung up on silently."""
        target = action.queue or action.uri or self.fallback_queue
        # Cards keep their last 4 digits and secrets are masked before anything leaves the bot.
        context = for_handoff({**self.interp.context(), **action.context, "call_id": self.call_id})
        self._store("set_context", self.call_id, context)
        self._drain_playback()
        failure = self._try_transfer(target, action.uri is not None, context)
        if failure is not None:
            self._transfer_failed(target, failure, context)
        raise _CallEnded

    def _transfer_failed(self, target: str, failure: str, context: dict[str, Any]) -> None:
        fallback = self.fallback_queue if self.fallback_queue != target else None
        log.error("call %s: transfer to %s failed (%s); %s", self.call_id, target, failure,
                  f"trying fallback queue {fallback}" if fallback else "taking a voicemail")
        self._notify("transfer_failed", {"target": target, "error": failure})
        self._store("add_event", self.call_id, time.time(), "transfer_failed", {"target": target, "error": failure})
        self.channel.stop_playback()
        self._say(fa.Say(self.prompts["transfer_failed"], barge_in=False))
        if fallback:
            context = {**context, "fallback_reason": f"transfer to {target} failed", "error": failure}
            again = self._try_transfer(fallback, False, context)
            if again is None:
                return
            log.error("call %s: transfer to fallback queue %s failed (%s); taking a voicemail",
                      self.call_id, fallback, again)
            self._notify("transfer_failed", {"target": fallback, "error": again})
        self._voicemail()

    def _try_transfer(self, target: str, is_uri: bool, context: dict[str, Any]) -> str | None:
        """Transfer once; None when the caller was handed on (or the call ended meanwhile), else why not."""
        self._notify("transfer", {"target": target, "queue": None if is_uri else target,
                                  "uri": target if is_uri else None, "context": context})
        self._result.transfer_target = target
        if not is_uri and self.queues is not None:
            if not self.queues.has_queue(target):
                return f"unknown queue '{target}'"
            return self._wait_in_queue(target, context)
        link = self.config.context_url(self.call_id) if self.config.context_url else ""
        try:
            accepted = self.channel.transfer(target, context_headers(context, context_url=link))
            failure = None if accepted else "the transfer was refused"
        except Exception as exc:  # a SIP stack error is one more way a transfer fails
            accepted, failure = False, f"the transfer raised {exc!r}"
        self._store("add_event", self.call_id, time.time(), "transfer", {"target": target, "accepted": accepted})
        self._result.outcome = "transferred" if accepted else "transfer_failed"
        return failure

    def _voicemail(self) -> None:
        """The last resort: take a message, thank the caller and hang up."""
        self._say(fa.Say(self.prompts["voicemail"], barge_in=False))
        try:
            self._record(fa.Record(max_seconds=120, end_silence=4.0))
        finally:
            self._result.outcome = "voicemail"  # hanging up is how most callers end a message
        self._say(fa.Say(self.prompts["voicemail_thanks"], barge_in=False))
        self._drain_playback()
        self.channel.hangup()

    def _wait_in_queue(self, queue: str, context: dict[str, Any]) -> str | None:
        """Hold the caller in an agent queue: music on hold, announcements, until an agent takes the call
        (the connector transfers or bridges it), the queue overflows, or the caller gives up. Returns why
        no agent could be reached, or None."""
        from ivr.queue.engine import Announce, Connected, Overflowed, Refused

        assert self.queues is not None
        try:
            ticket = self.queues.enqueue(self.call_id, queue, None, context)
        except Exception as exc:
            return f"the queue refused the call: {exc}"
        self._store("add_event", self.call_id, time.time(), "queued", {"queue": queue, "position": ticket.position})
        hold = self.services.load_prompt(ticket.music_on_hold, self.rate) if ticket.music_on_hold else None
        hold = hold or self.services.hold_music(self.rate)
        while True:
            try:
                self._next_frame(timeout=0.1)
                self._check_hangup()
            except _CallEnded:
                self.queues.abandon(self.call_id)
                self._result.outcome = "abandoned"
                raise
            if not self._channel_up():
                self.queues.call_finished(self.call_id)
                return None
            for update in self.queues.poll(self.call_id):
                if isinstance(update, Announce):
                    self.channel.stop_playback()
                    text = queue_announcement(self.prompts, update.template, update.position, update.wait,
                                              update.queue or queue)
                    self._say(fa.Say(text, barge_in=False))
                elif isinstance(update, Connected):
                    self.channel.stop_playback()
                    self._notify("agent", {"agent": update.agent, "uri": update.uri, "mode": update.mode})
                    self._store("add_event", self.call_id, time.time(), "agent_connected",
                                {"agent": update.agent, "mode": update.mode})
                    self._result.outcome = "transferred"
                    self._result.transfer_target = update.uri
                    self._stay_until_agent_call_ends(update.mode)
                    return None
                elif isinstance(update, Overflowed):
                    return self._overflow(update, context)
                elif isinstance(update, Refused):
                    self.channel.stop_playback()
                    return f"queue {update.queue} gave the call back: {update.detail}"
            if self.channel.playback_pending() < 0.2:
                self.channel.play(hold)

    def _stay_until_agent_call_ends(self, mode: str) -> None:
        """A bridged agent call keeps this session's channel up until either side hangs up."""
        if mode != "bridged":
            return
        try:
            while self._channel_up():
                self._next_frame(timeout=0.2)
                self._check_hangup()
        except _CallEnded:
            self._result.outcome = "transferred"  # either side hanging up ends a call an agent took
        finally:
            assert self.queues is not None
            self.queues.call_finished(self.call_id)

    def _channel_up(self) -> bool:
        return bool(getattr(self.channel, "connected", True))

    def _overflow(self, update: Any, context: dict[str, Any]) -> str | None:
        """Follow a queue's overflow rule; returns why no agent was reached when the rule leads nowhere."""
        self._store("add_event", self.call_id, time.time(), "overflow",
                    {"kind": update.kind, "target": update.target, "reason": update.reason})
        self._notify("overflow", {"kind": update.kind, "target": update.target, "reason": update.reason})
        self.channel.stop_playback()
        if update.kind == "queue":
            return self._wait_in_queue(update.target, context)
        if update.kind == "voicemail":
            self._voicemail()
            return None
        if update.kind == "node" and hasattr(self.interp, "resume_at"):
            self._result.outcome = "completed"
            self._run_actions(self.interp.resume_at(update.target))
            return None
        return f"no agent reachable in queue {update.target or 'the queue'} ({update.reason})"

    def _hangup(self, reason: str) -> None:
        self._drain_playback()
        self._notify("hangup", {"reason": reason})
        self.channel.hangup()
        self._result.outcome = reason or "completed"
        raise _CallEnded

    def _fallback(self) -> None:
        """After an unexpected error: apologise and transfer to the fallback queue (or hang up)."""
        try:
            self._say(fa.Say(text=self.prompts["error"], barge_in=False))
            self._transfer(fa.Transfer(queue=self.fallback_queue))
        except _CallEnded:
            pass
        except Exception:
            log.exception("call %s: fallback failed; hanging up", self.call_id)
            self._result.outcome = "error"
            try:
                self.channel.hangup()
            except Exception:
                log.exception("call %s: hangup failed", self.call_id)
        else:
            self._result.outcome = "error"

    def _finish(self) -> None:
        try:
            context = self.interp.context()
        except Exception:
            log.exception("call %s: reading the flow context failed", self.call_id)
            context = {}
        self._result.context = context
        self._store("set_context", self.call_id, for_handoff({**context, "call_id": self.call_id}))
        self._store("end_call", self.call_id, time.time(), self._result.outcome)
        self._notify("end", {"outcome": self._result.outcome, "context": for_handoff(context)})

    # -------------------------------------------------------------- helpers

    def _notify(self, kind: str, data: dict[str, Any]) -> None:
        if self.observer is None:
            return
        try:
            self.observer.on_event(kind, {"at": self.now, **data})
        except Exception:
            log.exception("call %s: observer failed on %s", self.call_id, kind)

    def _store(self, method: str, *args: Any) -> None:
        """Write to the store; a failing store is logged, never fatal to the call."""
        if self.store is None:
            return
        try:
            getattr(self.store, method)(*args)
        except Exception:
            log.exception("call %s: store.%s failed", self.call_id, method)
