"""The way a caller reaches a flow: a SIP call, an audio-fixture replay, or a local microphone.

The call session (``ivr.call``) drives a call only through this interface, so everything above it is
the same for all three. Audio and control events travel separately.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ivr.audio.frame import AudioFrame
from ivr.events import ControlEvent


@dataclass(frozen=True)
class ChannelCapabilities:
    """What a channel can do beyond moving audio, declared so that a call asks the declaration instead of
    probing for attributes."""

    realtime: bool = True
    """Caller frames arrive at the pace of a phone line (SIP, a microphone). False: a replay hands them
    over as fast as they are asked for, so waiting on work must not run the call clock."""
    agent_dialling: bool = False
    """The channel can ring an agent and join the caller to them (``dial_agent``/``cancel_agent``, see
    ``ivr.sip.agents``): a queue may connect its calls bridged rather than by REFER."""


class Channel(Protocol):
    """One caller connection.

    Time on a channel is measured in 20 ms frames of caller audio: the session advances its clock by one
    frame for each frame it receives, so a replay can run faster than real time with identical timing.
    """

    sample_rate: int
    caller: str
    called: str
    call_id: str
    capabilities: ChannelCapabilities

    @property
    def connected(self) -> bool:
        """True until the call is over (either side hung up, or it was transferred away)."""
        ...

    def receive_audio(self, timeout: float) -> AudioFrame | None:
        """The next 20 ms of caller audio, or None if none arrived within ``timeout`` seconds (or the call
        ended). A channel delivers silence frames rather than nothing while the caller is connected."""
        ...

    def poll_control(self) -> list[ControlEvent]:
        """Control events since the last poll (DtmfDigit, Hangup)."""
        ...

    def play(self, pcm: bytes) -> None:
        """Append PCM16 audio at ``sample_rate`` to the outbound queue (returns at once)."""
        ...

    def stop_playback(self) -> None:
        """Drop everything still queued for playback (barge-in)."""
        ...

    def playback_pending(self) -> float:
        """Seconds of queued outbound audio not yet sent to the caller."""
        ...

    def transfer(self, target: str, headers: dict[str, str]) -> bool:
        """Hand the call to ``target`` (a queue name or SIP URI); True if the channel accepted it."""
        ...

    def hangup(self) -> None:
        """End the call from our side."""
        ...
