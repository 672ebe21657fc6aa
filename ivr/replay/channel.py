"""A Channel that plays a scripted caller from recorded audio, faster than real time by default."""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ivr.audio.frame import AudioFrame, frames_from_pcm, samples_per_frame
from ivr.call.events import CallEvent, Listening, PromptPlayed
from ivr.channel import ChannelCapabilities
from ivr.events import ControlEvent, DtmfDigit, Hangup
from ivr.replay.scenario import CallerStep

FRAME = 0.02
REACTION_GAP = 0.4  # a caller answers this long after the prompt ends


@dataclass
class StepLog:
    """What the caller did and the bot prompts heard just before, for checks and the transcript."""

    step: CallerStep
    at: float
    prompts_before: list[str] = field(default_factory=list)


class ReplayChannel:
    """Feeds the scripted caller's audio and keys to a call session and records what the bot plays.

    The caller waits for the bot to listen and finish its prompt (plus a short reaction gap) before each
    step, or speaks over the prompt for ``barge_in`` steps. Call time advances 20 ms per frame received;
    with ``realtime`` the frames are paced on the wall clock as on a phone line. ``on_frame`` runs after each
    frame: a replay's ACD, clocked by :attr:`now`, ticks there as the server's ticker does on the wall clock.
    """

    def __init__(
        self,
        steps: list[CallerStep],
        audio: dict[str, bytes],
        sample_rate: int,
        *,
        caller: str = "+15550100",
        called: str = "",
        realtime: bool = False,
        max_seconds: float = 600.0,
        on_frame: Callable[[], None] | None = None,
    ) -> None:
        self.sample_rate = sample_rate
        self.caller = caller
        self.called = called
        self.call_id = uuid.uuid4().hex[:16]
        self.capabilities = ChannelCapabilities(realtime=realtime)
        self.max_seconds = max_seconds
        self.on_frame = on_frame
        self._steps = deque(steps)
        self._audio = audio
        self._frame_bytes = samples_per_frame(sample_rate) * 2
        self._inbound: deque[AudioFrame] = deque()
        self._outbound = bytearray()
        self._control: deque[tuple[float, ControlEvent]] = deque()
        self._now = 0.0
        self._started_wall = time.perf_counter()
        self._listening_since: float | None = None
        self._idle_since: float | None = None
        self._wait_until = 0.0
        self._step_done_at: float | None = None
        self._prompts: list[str] = []
        self.ended = False
        self.hung_up_by_caller = False
        self.transfers: list[tuple[str, dict[str, str]]] = []
        self.log: list[StepLog] = []
        self.caller_audio = bytearray()
        self.bot_audio = bytearray()
        self.first_reply_at: list[float] = []

    # ------------------------------------------------------------- observer

    def on_event(self, event: CallEvent) -> None:
        """Session events tell the scripted caller when the bot listens and what it said."""
        if isinstance(event, Listening):
            self._listening_since = self._now
        elif isinstance(event, PromptPlayed):
            self._prompts.append(event.text or f"[audio {event.audio}]")

    # -------------------------------------------------------------- channel

    def receive_audio(self, timeout: float) -> AudioFrame | None:
        """Advance the call by 20 ms: the bot's audio plays, the caller acts, one caller frame returns."""
        if self.ended:
            return None
        if self._now >= self.max_seconds:
            self._control.append((self._now, Hangup()))
            self.ended = True
            return None
        if self.capabilities.realtime:
            delay = self._started_wall + self._now - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        self._play_one_frame()
        self._advance_script()
        frame = self._inbound.popleft() if self._inbound else AudioFrame.silence(self.sample_rate)
        self.caller_audio += frame.pcm
        self._now += FRAME
        if self.on_frame is not None:
            self.on_frame()
        return frame

    def poll_control(self) -> list[ControlEvent]:
        """Keys and hang-ups whose time has come."""
        due: list[ControlEvent] = []
        while self._control and self._control[0][0] <= self._now:
            due.append(self._control.popleft()[1])
        return due

    def play(self, pcm: bytes) -> None:
        """Queue the bot's audio; it is 'heard' at 20 ms per frame received."""
        self._outbound += pcm

    def stop_playback(self) -> None:
        """Barge-in: drop the rest of the prompt."""
        self._outbound.clear()

    def playback_pending(self) -> float:
        """Seconds of bot audio not yet played."""
        return len(self._outbound) / 2 / self.sample_rate

    def transfer(self, target: str, headers: dict[str, str]) -> bool:
        """Record the transfer; the replayed call ends there."""
        self.transfers.append((target, headers))
        self.ended = True
        return True

    def hangup(self) -> None:
        """The bot hung up."""
        self.ended = True

    # --------------------------------------------------------------- script

    @property
    def connected(self) -> bool:
        """False once the bot hung up or transferred the call."""
        return not self.ended

    @property
    def now(self) -> float:
        """Call time in seconds."""
        return self._now

    @property
    def steps_left(self) -> list[CallerStep]:
        """Caller steps not performed (a scenario that ends early leaves some)."""
        return list(self._steps)

    def _play_one_frame(self) -> None:
        if self._outbound:
            chunk = bytes(self._outbound[: self._frame_bytes])
            del self._outbound[: self._frame_bytes]
            self.bot_audio += chunk.ljust(self._frame_bytes, b"\0")
        else:
            self.bot_audio += bytes(self._frame_bytes)

    def _advance_script(self) -> None:
        if self._inbound or self._control or self._now < self._wait_until:
            return  # the caller is still speaking, keying or pausing
        if self._step_done_at is None:
            self._step_done_at = self._now
        step = self._steps[0] if self._steps else None
        if step is not None and step.barge_in:
            # speaking over the bot: `after` seconds into its listening (or, while it records or
            # waits for something else, after the caller's previous step)
            since = self._listening_since if self._listening_since is not None else self._step_done_at
            if self._now - since < step.after:
                return
            self._steps.popleft()
            self._perform(step)
            return
        if self._listening_since is None:
            return
        if self._outbound:  # the bot is still speaking
            self._idle_since = None
            return
        if self._idle_since is None:
            self._idle_since = self._now
        if self._now - self._idle_since < (step.after if step is not None else REACTION_GAP):
            return
        if step is None:
            # Nothing more to say: the caller hangs up, as a tester's script would end.
            self._control.append((self._now, Hangup()))
            self.hung_up_by_caller = True
            self._listening_since = None
            return
        self._steps.popleft()
        self._perform(step)

    def _perform(self, step: CallerStep) -> None:
        self.log.append(StepLog(step, self._now, self._prompts))
        self._prompts = []
        self._listening_since = None
        self._idle_since = None
        self._step_done_at = None
        if step.audio is not None:
            self._inbound.extend(frames_from_pcm(self._audio[step.audio], self.sample_rate))
        if step.dtmf:
            for index, key in enumerate(step.dtmf):
                self._control.append((self._now + index * 0.15, DtmfDigit(key)))
        if step.silence:
            self._wait_until = self._now + step.silence
            self._listening_since = self._now  # keep the turn: silence is an answer too
        if step.hangup:
            self._control.append((self._now, Hangup()))
            self.hung_up_by_caller = True

    @property
    def prompts_since_last_step(self) -> list[str]:
        """Bot prompts after the caller's last step (checked at the end of the call)."""
        return list(self._prompts)
