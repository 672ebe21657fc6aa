"""The one audio unit that moves through ivr: 20 ms of 16-bit mono PCM."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

SUPPORTED_RATES = (8000, 16000)
FRAME_MS = 20


def samples_per_frame(sample_rate: int) -> int:
    """Number of samples in one 20 ms frame at ``sample_rate``."""
    return sample_rate * FRAME_MS // 1000


def check_rate(sample_rate: int) -> None:
    """Raise ValueError unless ``sample_rate`` is one of the internal rates."""
    if sample_rate not in SUPPORTED_RATES:
        raise ValueError(f"sample rate {sample_rate} Hz is not supported; use 8000 or 16000")


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """Immutable 20 ms of PCM16 little-endian mono audio at 8 or 16 kHz."""

    pcm: bytes
    sample_rate: int

    def __post_init__(self) -> None:
        check_rate(self.sample_rate)
        expected = samples_per_frame(self.sample_rate) * 2
        if len(self.pcm) != expected:
            raise ValueError(f"a 20 ms frame at {self.sample_rate} Hz has {expected} bytes, got {len(self.pcm)}")

    @classmethod
    def silence(cls, sample_rate: int) -> AudioFrame:
        """A frame of digital silence."""
        return cls(bytes(samples_per_frame(sample_rate) * 2), sample_rate)

    def samples(self) -> np.ndarray:
        """The samples as an int16 array (a read-only view)."""
        return np.frombuffer(self.pcm, dtype="<i2")


def frames_from_pcm(pcm: bytes, sample_rate: int, pad: bool = True) -> Iterator[AudioFrame]:
    """Split PCM16 bytes into 20 ms frames; the last partial frame is zero-padded (or dropped)."""
    size = samples_per_frame(sample_rate) * 2
    for start in range(0, len(pcm), size):
        chunk = pcm[start : start + size]
        if len(chunk) < size:
            if not pad:
                return
            chunk = chunk + bytes(size - len(chunk))
        yield AudioFrame(chunk, sample_rate)


def pcm_from_frames(frames: list[AudioFrame]) -> bytes:
    """Join frames back into one PCM16 byte string."""
    return b"".join(f.pcm for f in frames)
