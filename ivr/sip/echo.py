"""A tiny stand-in bot for checking the SIP edge: greet, echo key presses, remember what the caller sent.

Useful before any flow is loaded (``SipServer(config, on_call=EchoBot(greeting))``) and in tests.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ivr.events import CallInterrupted, DtmfDigit, Hangup
from ivr.sip.channel import SipChannel

_DTMF_FREQS = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}


def dtmf_tone(digit: str, sample_rate: int, seconds: float = 0.2) -> bytes:
    """PCM16 of the DTMF tone pair for ``digit`` (an audible echo of a key press)."""
    low, high = _DTMF_FREQS[digit]
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    wave = 0.35 * (np.sin(2 * np.pi * low * t) + np.sin(2 * np.pi * high * t))
    return (wave * 16000).astype("<i2").tobytes()


@dataclass
class EchoCall:
    """What one call to the EchoBot looked like."""

    call_id: str
    caller: str
    called: str
    codec: str
    sample_rate: int
    headers: dict[str, str]
    remote: str = ""
    """The caller's SIP source address."""
    digits: str = ""
    frames: int = 0
    voiced_frames: int = 0
    """Frames of caller audio louder than near-silence."""
    max_gap: float = 0.0
    """Longest wait (s) between two frames from receive_audio while connected."""
    hung_up_by_caller: bool = False
    interrupted: bool = False
    """The line was lost without a hangup (its SIP worker died)."""
    transfer_accepted: bool | None = None


@dataclass
class EchoBot:
    """on_call handler: plays ``greeting`` (PCM16 per sample rate), echoes each digit, records the call.

    ``digit_prompts`` maps a digit to PCM16 (keyed by sample rate) to play instead of the tone pair.
    ``transfer_on`` maps a digit to (SIP URI, headers): pressing it blind-transfers the call.
    """

    greeting: dict[int, bytes] = field(default_factory=dict)
    digit_prompts: dict[str, dict[int, bytes]] = field(default_factory=dict)
    transfer_on: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    hangup_after: float = 0.0
    """Hang up from our side after this many seconds (0: wait for the caller)."""
    calls: list[EchoCall] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, channel: SipChannel) -> None:
        """Run one call until it ends."""
        rate = channel.sample_rate
        record = EchoCall(channel.call_id, channel.caller, channel.called, channel.codec, rate,
                          dict(channel.headers), channel.remote)
        with self._lock:
            self.calls.append(record)
        if rate in self.greeting:
            channel.play(self.greeting[rate])
        started = last = time.monotonic()
        while channel.connected:
            frame = channel.receive_audio(0.5)
            now = time.monotonic()
            if frame is not None:
                record.frames += 1
                record.max_gap = max(record.max_gap, now - last)
                last = now
                if int(np.abs(frame.samples()).max()) > 500:
                    record.voiced_frames += 1
            for event in channel.poll_control():
                if isinstance(event, Hangup):
                    record.hung_up_by_caller = True
                elif isinstance(event, CallInterrupted):
                    record.interrupted = True
                elif isinstance(event, DtmfDigit):
                    record.digits += event.digit
                    if event.digit in self.transfer_on:
                        target, headers = self.transfer_on[event.digit]
                        record.transfer_accepted = channel.transfer(target, headers)
                        continue
                    prompt = self.digit_prompts.get(event.digit, {}).get(rate)
                    channel.play(prompt if prompt is not None else dtmf_tone(event.digit, rate))
            if self.hangup_after and now - started >= self.hangup_after:
                channel.hangup()
                break
        for event in channel.poll_control():  # ended between two polls
            record.hung_up_by_caller = record.hung_up_by_caller or isinstance(event, Hangup)
            record.interrupted = record.interrupted or isinstance(event, CallInterrupted)
