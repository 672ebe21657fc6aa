"""Call recording: what the caller said and heard (the bot's prompts, hold music, a bridged agent) mixed
into one mono track at the call's rate, sealed on disk as it goes (``ivr.store.sealed_audio``).

The tape follows the call clock: each caller frame the session receives is mixed with the next 20 ms of
the audio queued for the caller, which is what the caller heard at that moment. While paused (a
``recording: pause`` node, or automatically while a ``card`` or ``secret`` answer is listened to) the tape
records silence, so the recording keeps its timeline and holds nothing of the answer, spoken or keyed.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import numpy as np

from ivr.audio.frame import AudioFrame, samples_per_frame
from ivr.store.sealed_audio import AudioVault, SealedAudioWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecordingPolicy:
    """How a call is recorded (a flow's ``recording:`` or a queue's ``record:``): ``announce`` is said to
    the caller before recording starts ('' says nothing)."""

    announce: str = ""


class CallTape:
    """One call's recording. ``start`` opens a sealed file; ``heard``/``played``/``dropped`` feed it;
    ``close`` ends it. A failing disk is logged and the recording stops; the call goes on."""

    def __init__(self, vault: AudioVault, call_id: str, sample_rate: int) -> None:
        self.vault = vault
        self.call_id = call_id
        self.rate = sample_rate
        self.writer: SealedAudioWriter | None = None
        self.paused_by: set[str] = set()
        """Why the tape is paused: 'flow' (a ``recording: pause`` node), 'sensitive' (a card or secret)."""
        self.queue = ""
        """The queue whose ``record:`` started the tape ('' when the flow did)."""
        self._outbound = bytearray()
        self._frame_bytes = samples_per_frame(sample_rate) * 2

    @property
    def recording(self) -> bool:
        """The tape runs (started, not closed)."""
        return self.writer is not None

    @property
    def paused(self) -> bool:
        """The tape runs but records silence."""
        return bool(self.paused_by)

    def start(self, queue: str = "") -> None:
        """Start recording (no-op when already recording)."""
        if self.writer is not None:
            return
        try:
            self.writer = self.vault.new_file(self.call_id, "call", self.rate)
            self.queue = queue
        except OSError:
            log.exception("call %s: cannot start the call recording in %s", self.call_id, self.vault.directory)

    def pause(self, why: str) -> None:
        """Record silence until every reason given is resumed."""
        self.paused_by.add(why)

    def resume(self, why: str) -> None:
        """Take back one reason for pausing."""
        self.paused_by.discard(why)

    def played(self, pcm: bytes) -> None:
        """Audio was queued for the caller (mirrors the channel's outbound queue)."""
        if self.writer is not None:
            self._outbound += pcm

    def dropped(self) -> None:
        """The channel dropped its queued audio (barge-in)."""
        self._outbound.clear()

    def heard(self, frame: AudioFrame) -> None:
        """One frame of the call clock: the caller's frame mixed with what they heard meanwhile."""
        if self.writer is None:
            return
        out = bytes(self._outbound[: self._frame_bytes])
        del self._outbound[: self._frame_bytes]
        if self.paused_by:
            pcm = bytes(len(frame.pcm))
        elif out:
            mixed = frame.samples().astype(np.int32)
            played = np.frombuffer(out.ljust(len(frame.pcm), b"\0")[: len(frame.pcm)], dtype="<i2")
            pcm = np.clip(mixed + played, -32768, 32767).astype("<i2").tobytes()
        else:
            pcm = frame.pcm
        try:
            self.writer.write(pcm)
        except OSError:
            log.exception("call %s: writing the call recording failed; recording stopped", self.call_id)
            self._abandon()

    def close(self) -> SealedAudioWriter | None:
        """Stop recording; the writer of the finished file (None when nothing was recorded)."""
        writer, self.writer = self.writer, None
        self._outbound.clear()
        if writer is None:
            return None
        try:
            writer.close()
        except OSError:
            log.exception("call %s: closing the call recording failed", self.call_id)
        return writer

    def _abandon(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            with contextlib.suppress(OSError):
                writer.close()
