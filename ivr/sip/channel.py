"""``SipChannel``: one answered SIP call seen through the ``ivr.channel.Channel`` protocol.

The channel itself holds only Python buffers. Audio moves between them and pjmedia in
``ivr.sip.media.CallAudioPort`` (on pjmedia's clock thread); hangup and transfer are handed to the SIP
thread through ``CallControl``. So any thread may use a channel, and none of them touches pjsua2.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Protocol

from ivr.audio.frame import AudioFrame, samples_per_frame
from ivr.channel import ChannelCapabilities
from ivr.events import AgentLeft, CallInterrupted, ControlEvent, DtmfDigit, Hangup

log = logging.getLogger("ivr.sip")

INBOUND_BUFFER_FRAMES = 500
"""Caller audio kept while nobody reads it (10 s); older frames are dropped first."""

DTMF_DIGITS = frozenset("0123456789*#ABCD")


class CallControl(Protocol):
    """What a channel asks of the SIP server; both run the request on the SIP thread."""

    def request_hangup(self, channel: SipChannel) -> None:
        """End the call (returns at once)."""
        ...

    def request_transfer(self, channel: SipChannel, target: str, headers: dict[str, str]) -> Future[bool]:
        """Send a blind REFER; the future says whether the peer accepted it."""
        ...

    def request_agent_call(self, channel: SipChannel, request: str, uri: str, headers: dict[str, str],
                           ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        """Ring an agent for the caller behind ``channel`` and bridge them on answer (see ivr.sip.agents)."""
        ...

    def cancel_agent_call(self, request: str) -> None:
        """Stop ringing, or hang up, the agent leg of ``request_agent_call(request)``."""
        ...


def run_call(on_call: Callable[[SipChannel], None], channel: SipChannel) -> None:
    """Run ``on_call`` for one answered call (on its own thread); a failure is logged, never raised, and the
    call is hung up when ``on_call`` returns with it still up."""
    try:
        on_call(channel)
    except Exception:
        log.exception("call %s: on_call failed", channel.call_id)
    finally:
        if channel.connected:
            channel.hangup()


class SipChannel:
    """An answered SIP call: caller audio in, prompt audio out, DTMF and hangup as control events.

    Attributes beyond the Channel protocol: ``codec`` (e.g. ``PCMU/8000``), ``remote`` (the caller's SIP
    source address), ``headers`` (the INVITE's ``X-*`` headers, e.g. context from a transfer), and
    ``connected`` (False once either side hung up).
    """

    capabilities = ChannelCapabilities(realtime=True, agent_dialling=True)

    def __init__(
        self,
        control: CallControl,
        *,
        call_id: str,
        caller: str,
        called: str,
        sample_rate: int,
        codec: str = "",
        remote: str = "",
        headers: dict[str, str] | None = None,
        transfer_timeout: float = 5.0,
        contact: str = "",
    ) -> None:
        self.sample_rate = sample_rate
        self.caller = caller
        self.called = called
        self.call_id = call_id
        self.codec = codec
        self.remote = remote
        self.headers = dict(headers or {})
        self.contact = contact
        """The caller's Contact URI (where the caller can be called back), if the INVITE had one."""
        self.transfer_timeout = transfer_timeout
        self.transferred_to = ""
        self._control = control
        self._frame_bytes = samples_per_frame(sample_rate) * 2
        self._silence = AudioFrame.silence(sample_rate)
        self._inbound: deque[AudioFrame] = deque(maxlen=INBOUND_BUFFER_FRAMES)
        self._inbound_ready = threading.Condition()
        self._outbound = bytearray()
        self._outbound_lock = threading.Lock()
        self._events: list[ControlEvent] = []
        self._events_lock = threading.Lock()
        self._ended = threading.Event()
        self.frames_received = 0
        self.frames_sent = 0

    # -- Channel protocol -------------------------------------------------------------------------------

    def receive_audio(self, timeout: float) -> AudioFrame | None:
        """The next 20 ms of caller audio (silence while the caller sends none); None on timeout or end."""
        deadline = time.monotonic() + timeout
        with self._inbound_ready:
            while not self._inbound:
                if self._ended.is_set():
                    return None
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._inbound_ready.wait(remaining)
            return self._inbound.popleft()

    def drain_inbound(self) -> list[AudioFrame]:
        """Every buffered caller frame at once, without waiting (for a reader that polls many calls)."""
        with self._inbound_ready:
            frames = list(self._inbound)
            self._inbound.clear()
        return frames

    def poll_control(self) -> list[ControlEvent]:
        """DtmfDigit and Hangup events since the last poll."""
        with self._events_lock:
            events, self._events = self._events, []
        return events

    def play(self, pcm: bytes) -> None:
        """Queue PCM16 audio at ``sample_rate``; it is sent as RTP paced by pjmedia's clock."""
        if len(pcm) % 2:
            pcm = pcm[:-1]
        with self._outbound_lock:
            self._outbound += pcm

    def stop_playback(self) -> None:
        """Drop queued prompt audio (barge-in); the caller hears silence from the next frame on."""
        with self._outbound_lock:
            self._outbound.clear()

    def playback_pending(self) -> float:
        """Seconds of prompt audio still queued."""
        with self._outbound_lock:
            return len(self._outbound) / 2 / self.sample_rate

    def transfer(self, target: str, headers: dict[str, str]) -> bool:
        """Blind-transfer to a SIP URI by REFER, with ``headers`` on the REFER and in the Refer-To URI.

        Returns True once the peer accepted the REFER (202); the channel then hangs up by itself when the
        peer reports the transfer's outcome (or after a few seconds). Returns False for targets that are
        not SIP URIs (queue names are the session's business), a rejected REFER, or a call already over.
        """
        if not target.startswith(("sip:", "sips:")) or self._ended.is_set():
            return False
        future = self._control.request_transfer(self, target, headers)
        try:
            accepted = future.result(timeout=self.transfer_timeout + 1.0)
        except FutureTimeout:
            return False
        if accepted:
            self.transferred_to = target
        return accepted

    def hangup(self) -> None:
        """End the call from our side (returns at once; ``connected`` turns False when it is over)."""
        if not self._ended.is_set():
            self._control.request_hangup(self)

    def dial_agent(self, request: str, uri: str, headers: dict[str, str], ring_timeout: float,
                   on_result: Callable[[str, str], None]) -> None:
        """Ring an agent from the process holding this call and join both legs' audio when they answer.

        Returns at once; ``on_result(request, result)`` follows once on the SIP side (see ``ivr.sip.agents``):
        an ``OfferResult`` value, or ``no_slot`` when that process has no free call slot. When either leg
        hangs up later, the other does too and ``connected`` turns False.
        """
        if self._ended.is_set():
            on_result(request, "failed")
            return
        self._control.request_agent_call(self, request, uri, headers, ring_timeout, on_result)

    def cancel_agent(self, request: str) -> None:
        """Stop ringing the agent of ``dial_agent(request, ...)``, or hang up its leg (no result follows)."""
        self._control.cancel_agent_call(request)

    # -- extras -------------------------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True until the call ended, whoever hung up."""
        return not self._ended.is_set()

    # -- fed by the media port (pjmedia clock thread) and the SIP thread ------------------------------------

    def take_outbound(self, nbytes: int) -> bytes:
        """Next ``nbytes`` of prompt audio, padded with silence (media thread; never blocks for long)."""
        with self._outbound_lock:
            chunk = bytes(self._outbound[:nbytes])
            del self._outbound[:nbytes]
        if chunk:
            self.frames_sent += 1
        if len(chunk) < nbytes:
            chunk += bytes(nbytes - len(chunk))
        return chunk

    def push_inbound(self, pcm: bytes | None) -> None:
        """Store one frame of caller audio (None or a wrong size counts as silence)."""
        if self._ended.is_set():
            return
        frame = AudioFrame(pcm, self.sample_rate) if pcm and len(pcm) == self._frame_bytes else self._silence
        self.frames_received += 1
        with self._inbound_ready:
            self._inbound.append(frame)
            self._inbound_ready.notify()

    def push_dtmf(self, digit: str) -> None:
        """Record a key press (RFC 4733 or SIP INFO)."""
        digit = digit.strip().upper()
        if digit in DTMF_DIGITS:
            with self._events_lock:
                self._events.append(DtmfDigit(digit))

    def agent_left(self) -> None:
        """The agent of a bridged call hung up: the caller is still here (queues an AgentLeft event)."""
        with self._events_lock:
            self._events.append(AgentLeft())

    def mark_ended(self, by_caller: bool, interrupted: bool = False) -> None:
        """The call is over; a Hangup event is queued when the caller hung up, CallInterrupted when the line
        was lost without a hangup (the call's SIP worker died, or the server stopped with the call up)."""
        if self._ended.is_set():
            return
        if by_caller or interrupted:
            with self._events_lock:
                self._events.append(Hangup() if by_caller else CallInterrupted())
        self._ended.set()
        with self._inbound_ready:
            self._inbound_ready.notify_all()
