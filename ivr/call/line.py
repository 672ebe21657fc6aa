"""The line of one call: its channel, the call clock, the caller's control events, waiting on work while
the line stays alive, and telling the observer what happens.

Time for caller-facing timers (no-input, end of speech, DTMF gaps) is counted in 20 ms frames received
from the channel, so a replay can run faster than real time with the same behaviour; waits on work
(recognition, webhooks) are measured on the wall clock.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import NoReturn, Protocol, TypeVar

from ivr.audio.frame import FRAME_MS, AudioFrame
from ivr.call.config import CallResult, SessionConfig
from ivr.call.events import CallEvent
from ivr.call.taping import CallTape
from ivr.channel import Channel
from ivr.events import AgentLeft, CallInterrupted, ControlEvent, DtmfDigit, Hangup
from ivr.services import SpeechServices

log = logging.getLogger(__name__)

FRAME_SECONDS = FRAME_MS / 1000
T = TypeVar("T")


class CallObserver(Protocol):
    """Who wants to know what happens in a call (replay runner, metrics, the talk screen, the console)."""

    def on_event(self, event: CallEvent) -> None:
        """One event of the call (see ``ivr.call.events``); called on the call's thread."""
        ...


class CallEnded(Exception):
    """The caller hung up (or the channel died): unwinds the session loop."""


class CallLine:
    """One call's line, shared by the parts of a session: the channel, the call clock (``now``: seconds
    of caller audio received), control events set aside while waiting for audio, and the call's result."""

    def __init__(self, channel: Channel, call_id: str, services: SpeechServices, config: SessionConfig,
                 observer: CallObserver | None) -> None:
        self.channel = channel
        self.call_id = call_id
        self.services = services
        self.config = config
        self.observer = observer
        self.rate = channel.sample_rate
        self.now = 0.0
        self.result = CallResult(call_id, "completed")
        self._control: deque[ControlEvent] = deque()
        self.tape: CallTape | None = None
        """The call's recording, when the flow or a queue records it (fed by ``next_frame`` and ``play``)."""

    # --------------------------------------------------------------- frames

    def next_frame(self, timeout: float = 0.2) -> AudioFrame | None:
        """One step of the call clock: the next caller frame (control events are queued aside)."""
        for event in self.channel.poll_control():
            self._control.append(event)
        frame = self.channel.receive_audio(timeout)
        if frame is not None:
            self.now += FRAME_SECONDS
            if self.tape is not None:
                self.tape.heard(frame)
            if self.now > self.config.max_call_seconds:
                log.warning("call %s: maximum call length reached", self.call_id)
                self._control.append(Hangup())
        for event in self.channel.poll_control():
            self._control.append(event)
        if any(isinstance(event, CallInterrupted) for event in self._control):
            log.warning("call %s: the line was lost (interrupted)", self.call_id)
            self.end("interrupted")
        return frame

    def take_control(self) -> ControlEvent | None:
        """The oldest control event set aside (DTMF, hangup), if any."""
        return self._control.popleft() if self._control else None

    def take_agent_left(self) -> bool:
        """Whether a bridged agent hung up (the event is taken: the caller is still on the line)."""
        left = [e for e in self._control if isinstance(e, AgentLeft)]
        for event in left:
            self._control.remove(event)
        return bool(left)

    def take_digits(self) -> str:
        """The keys pressed since last asked (the DTMF events are taken; a hangup stays)."""
        digits = [e for e in self._control if isinstance(e, DtmfDigit)]
        for event in digits:
            self._control.remove(event)
        return "".join(e.digit for e in digits)

    def check_hangup(self) -> None:
        """Ends the call if the caller hung up."""
        if any(isinstance(e, Hangup) for e in self._control):
            self.end("caller_hangup")

    def end(self, outcome: str) -> NoReturn:
        """Ends the call with ``outcome`` (a call an agent took stays 'transferred' through a survey after the
        agent, unless it ends in an error or the line is lost)."""
        if self.result.outcome != "transferred" or outcome in ("interrupted", "error"):
            self.result.outcome = outcome
        raise CallEnded

    def play(self, pcm: bytes, hidden: bool = False) -> None:
        """Queue audio for the caller (and for the call recording, if any: as silence when ``hidden``)."""
        self.channel.play(pcm)
        if self.tape is not None:
            self.tape.played(bytes(len(pcm)) if hidden else pcm)

    def stop_playback(self) -> None:
        """Drop the audio queued for the caller (barge-in)."""
        self.channel.stop_playback()
        if self.tape is not None:
            self.tape.dropped()

    @property
    def realtime(self) -> bool:
        """Frames arrive at the pace of a phone line (not a replay as fast as the machine goes)."""
        return self.channel.capabilities.realtime

    @property
    def connected(self) -> bool:
        """The channel is still up (a bridged agent call keeps it up after the bot's part is done)."""
        return self.channel.connected

    def drain_playback(self) -> None:
        """Let queued prompts finish playing (the caller should hear the last words before we act)."""
        deadline = self.now + self.config.goodbye_drain_seconds
        while self.channel.playback_pending() > 0 and self.now < deadline:
            if self.next_frame(timeout=0.1) is None and not self.realtime:
                break
            self.check_hangup()

    # -------------------------------------------------------------- waiting

    def wait(self, future: Future[T], filler: Callable[[], None] | None = None, filler_after: float = 0.0,
             give_up_after: float | None = None) -> T:
        """Wait for background work while keeping the call alive (caller audio flowing, hang-up noticed).
        After ``filler_after`` seconds ``filler`` plays (a prompt), or, without one, soft comfort noise
        (after ``comfort_noise_after``) so the line never goes dead; the noise stops when the work is done.
        Raises TimeoutError after ``give_up_after`` seconds (the work is left to finish on its own)."""
        started = time.perf_counter()
        filler_played = comfort = False
        realtime = self.realtime
        while True:
            try:
                result = future.result(timeout=0.0 if realtime else 0.05)
            except TimeoutError:
                pass
            else:
                if comfort:
                    self.stop_playback()
                return result
            if realtime:
                self.next_frame(timeout=0.02)
                self.check_hangup()
            waited = time.perf_counter() - started
            if give_up_after is not None and waited >= give_up_after:
                future.cancel()
                if comfort:
                    self.stop_playback()
                raise TimeoutError
            if filler is not None and not filler_played and waited >= filler_after:
                filler_played = True
                filler()
            elif (filler is None and realtime and waited >= self.config.comfort_noise_after
                  and self.channel.playback_pending() < 0.05):
                comfort = True
                self.play(self.services.comfort_noise(self.rate))

    # ------------------------------------------------------------- reports

    def notify(self, event: CallEvent) -> None:
        """Tell the observer (if any) what happened; an observer's error is logged, never fatal."""
        if self.observer is None:
            return
        try:
            self.observer.on_event(event)
        except Exception:
            log.exception("call %s: observer failed on %s", self.call_id, event.name)
