"""The media bridge between pjmedia's conference clock and a call's Python audio queues.

pjmedia's clock thread calls ``onFrameRequested`` (audio to send) and ``onFrameReceived`` (audio the
caller sent) every 20 ms for each call. Both only touch the channel's in-memory buffers and return at
once: they never block, log, or call back into pjsua2.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Callable
from typing import Protocol

import pjsua2 as pj


class FrameSink(Protocol):
    """What a call's media port feeds: the SipChannel's audio buffers."""

    def take_outbound(self, nbytes: int) -> bytes:
        """Up to ``nbytes`` of queued prompt audio (silence-padded to ``nbytes``)."""
        ...

    def push_inbound(self, pcm: bytes | None) -> None:
        """One 20 ms frame from the caller, or None when the bridge had no audio (silence)."""
        ...


def _read_vector_ctypes(vector: pj.ByteVector) -> bytes:
    # A SWIG ByteVector wraps a libstdc++ std::vector<unsigned char>: {begin, end, capacity} pointers.
    # Reading them directly is ~40x faster than iterating the vector element by element through SWIG,
    # which matters because this runs for every call every 20 ms.
    begin, end = ctypes.cast(int(vector.this), ctypes.POINTER(ctypes.c_void_p * 2)).contents
    if not begin or not end or end < begin:
        return b""
    return ctypes.string_at(begin, end - begin)


def _read_vector_slow(vector: pj.ByteVector) -> bytes:
    return bytes(vector)


def _pick_reader() -> Callable[[pj.ByteVector], bytes]:
    probe = bytes(range(256)) * 2
    try:
        if _read_vector_ctypes(pj.ByteVector(probe)) == probe and _read_vector_ctypes(pj.ByteVector(b"")) == b"":
            return _read_vector_ctypes
    except (TypeError, ValueError, AttributeError, OSError):
        pass
    return _read_vector_slow


read_byte_vector = _pick_reader()
"""Copy a pjsua2 ByteVector into ``bytes`` (fast path checked once at import, slow fallback)."""


MEDIA_THREAD_NICE = -10
"""Scheduling priority asked for pjmedia's clock thread (needs root or CAP_SYS_NICE; else left as is)."""

_boosted_threads: set[int] = set()


def boost_media_thread() -> None:
    """Raise the calling thread's CPU priority, once per thread.

    pjmedia's clock thread sends every call's RTP each 20 ms; when the machine is busy (speech
    recognition, other processes), a late wake-up is a hole in every caller's audio. It uses little CPU
    itself, so letting it run first costs the rest next to nothing. Linux applies a thread id given to
    setpriority to that thread only.
    """
    tid = threading.get_native_id()
    if tid in _boosted_threads:
        return
    _boosted_threads.add(tid)
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, tid, MEDIA_THREAD_NICE)


class FrameWriter:
    """Fills a MediaFrame from ``bytes`` of one fixed size.

    Building ``pj.ByteVector(pcm)`` converts element by element through SWIG; instead one vector is
    allocated up front, the audio copied into its storage with ``memmove`` and the vector assigned to
    the frame (a C++ copy). Falls back to the plain conversion if the vector layout check failed.
    """

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        self._vector = pj.ByteVector(nbytes)
        self._data = 0
        if read_byte_vector is _read_vector_ctypes:
            begin, _ = ctypes.cast(int(self._vector.this), ctypes.POINTER(ctypes.c_void_p * 2)).contents
            self._data = begin or 0

    def fill(self, frame: pj.MediaFrame, pcm: bytes) -> None:
        """Put ``pcm`` (``nbytes`` long) into ``frame`` as audio."""
        if self._data and len(pcm) == self.nbytes:
            ctypes.memmove(self._data, pcm, self.nbytes)
            frame.buf = self._vector
        else:
            frame.buf = pj.ByteVector(pcm)
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.size = len(pcm)


class IdleSink:
    """What a port between calls feeds: silence out, nothing in."""

    def take_outbound(self, nbytes: int) -> bytes:
        """Silence."""
        return bytes(nbytes)

    def push_inbound(self, pcm: bytes | None) -> None:
        """Dropped."""


IDLE_SINK = IdleSink()


class CallAudioPort(pj.AudioMediaPort):
    """A conference-bridge port at the call's codec rate that moves 20 ms PCM16 frames to/from a sink."""

    def __init__(self, sink: FrameSink, sample_rate: int) -> None:
        super().__init__()
        self.sink = sink
        self.sample_rate = sample_rate
        self.frame_bytes = sample_rate // 50 * 2
        self.connected_slot = -1
        self._writer = FrameWriter(self.frame_bytes)

    def create(self, name: str) -> None:
        """Register the port with the conference bridge (call on the SIP thread)."""
        fmt = pj.MediaFormatAudio()
        fmt.init(pj.PJMEDIA_FORMAT_PCM, self.sample_rate, 1, 20000, 16)
        self.createPort(name, fmt)

    def onFrameRequested(self, frame: pj.MediaFrame) -> None:
        """The bridge wants the next 20 ms to send to the caller."""
        try:
            boost_media_thread()
            self._writer.fill(frame, self.sink.take_outbound(self.frame_bytes))
        except Exception:  # an exception must never unwind into the media thread
            frame.type = pj.PJMEDIA_FRAME_TYPE_NONE
            frame.size = 0

    def onFrameReceived(self, frame: pj.MediaFrame) -> None:
        """The bridge delivers 20 ms of the caller's audio."""
        try:
            if frame.type == pj.PJMEDIA_FRAME_TYPE_AUDIO and frame.size > 0:
                self.sink.push_inbound(read_byte_vector(frame.buf))
            else:
                self.sink.push_inbound(None)
        except Exception:
            pass
