"""Read and write WAV files, converting any common WAV to the internal PCM16 mono format."""

from __future__ import annotations

import os
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

from ivr.audio.frame import AudioFrame, check_rate, frames_from_pcm
from ivr.errors import AudioFormatError

_MAGIC_HINTS = {
    b"ID3": "an MP3 file (ID3 tag)",
    b"\xff\xfb": "an MP3 file",
    b"\xff\xf3": "an MP3 file",
    b"\xff\xf2": "an MP3 file",
    b"OggS": "an Ogg file",
    b"fLaC": "a FLAC file",
    b"<": "a text/HTML file",
    b"{": "a JSON/text file",
}


@dataclass(frozen=True)
class Audio:
    """Decoded mono PCM16 audio at one of the internal sample rates."""

    pcm: bytes
    sample_rate: int

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return len(self.pcm) / 2 / self.sample_rate

    def frames(self) -> list[AudioFrame]:
        """The audio as 20 ms frames (the last one zero-padded)."""
        return list(frames_from_pcm(self.pcm, self.sample_rate))

    def samples(self) -> np.ndarray:
        """The samples as an int16 array."""
        return np.frombuffer(self.pcm, dtype="<i2")


def _sniff(path: Path, head: bytes) -> None:
    if not head:
        raise AudioFormatError(path, "the file is empty; record or export the audio again")
    if head[:4] in (b"RIFF", b"RIFX", b"RF64"):
        if len(head) < 44 or head[8:12] != b"WAVE":
            raise AudioFormatError(path, "truncated or damaged WAV header; export the audio again as WAV")
        return
    for magic, what in _MAGIC_HINTS.items():
        if head.startswith(magic):
            raise AudioFormatError(
                path, f"not a WAV file: it looks like {what}; convert it, e.g. `sox IN -r 16000 -c 1 OUT.wav`"
            )
    raise AudioFormatError(path, "not a WAV file (no RIFF/WAVE header); convert it to WAV first")


def resample(samples: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Resample float or int16 mono samples with soxr (high quality); returns float32 in [-1, 1]."""
    data = samples.astype(np.float32) / 32768.0 if samples.dtype == np.int16 else samples.astype(np.float32)
    if from_rate == to_rate:
        return data
    return np.asarray(soxr.resample(data, from_rate, to_rate, quality="HQ"), dtype=np.float32)


def float_to_pcm16(samples: np.ndarray) -> bytes:
    """Convert float samples in [-1, 1] to PCM16 little-endian bytes (clipping out-of-range values)."""
    clipped = np.clip(samples, -1.0, 32767 / 32768)
    return (np.round(clipped * 32768.0)).astype("<i2").tobytes()


def read_wav(path: str | Path, sample_rate: int | None = None) -> Audio:
    """Read a WAV file of any common encoding, rate and channel count as PCM16 mono.

    With ``sample_rate`` (8000 or 16000) the audio is resampled to it; without, files at 8 or 16 kHz keep
    their rate and anything else is resampled to 16 kHz. Raises AudioFormatError with a clear message for
    empty, truncated, mislabelled or unsupported files.
    """
    path = Path(path)
    if sample_rate is not None:
        check_rate(sample_rate)
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except FileNotFoundError:
        raise AudioFormatError(path, "no such file") from None
    except IsADirectoryError:
        raise AudioFormatError(path, "is a directory, not a WAV file") from None
    except OSError as exc:
        raise AudioFormatError(path, f"cannot be read ({exc.strerror or exc}); check its permissions") from None
    _sniff(path, head)
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise AudioFormatError(path, f"cannot decode this WAV ({exc}); re-export it as 16-bit PCM WAV") from None
    if data.shape[0] == 0:
        raise AudioFormatError(path, "the WAV file has no audio samples (truncated?)")
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    target = sample_rate or (rate if rate in (8000, 16000) else 16000)
    return Audio(float_to_pcm16(resample(mono, rate, target)), target)


def write_wav(path: str | Path, pcm: bytes, sample_rate: int, *, private: bool = False) -> None:
    """Write PCM16 mono bytes to a WAV file; ``private`` creates it readable by its owner only (mode 600,
    in a folder of mode 700 when it makes one): callers' recordings and voicemail."""
    path = Path(path)
    if private and not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(path, flags, 0o600 if private else 0o666)
    if private:
        os.fchmod(fd, 0o600)  # an existing file keeps its old mode otherwise
    with os.fdopen(fd, "wb") as raw, wave.open(raw, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate)
        out.writeframes(pcm)
