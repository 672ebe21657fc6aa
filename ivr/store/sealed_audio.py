"""Recordings and voicemail encrypted at rest: files of Fernet tokens under the data key.

A sealed audio file is a first line ``IVR-SEALED-AUDIO 1`` and then one token per line: the first holds
the format (JSON: sample rate), every other one a chunk of PCM16 mono. Chunks are written as the call goes
on, so a crash keeps what was recorded so far; nothing on disk is readable without the data key. The
console decrypts a file into a WAV in memory to play it (:meth:`AudioVault.wav`).
"""

from __future__ import annotations

import io
import json
import os
import time
import wave
from pathlib import Path

from ivr.errors import IvrError
from ivr.store.crypto import Sealer

MAGIC = b"IVR-SEALED-AUDIO 1\n"
SUFFIX = ".sealed"
CHUNK_SECONDS = 5.0
"""Caller audio kept in memory before it is sealed and written (what a crash of the process can lose)."""


class SealedAudioError(IvrError):
    """A sealed audio file is missing, damaged or not a sealed audio file."""


def is_sealed_audio(path: str | Path) -> bool:
    """Whether ``path`` is a sealed audio file (else, e.g., a plain WAV from an older version)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


class SealedAudioWriter:
    """Appends PCM16 mono audio to a new sealed file (mode 600) in chunks; ``close`` seals the rest."""

    def __init__(self, path: Path, sealer: Sealer, sample_rate: int) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.samples = 0
        self._sealer = sealer
        self._pending = bytearray()
        self._chunk = int(sample_rate * CHUNK_SECONDS) * 2
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._file.write(MAGIC)
        self._line(json.dumps({"rate": sample_rate, "channels": 1, "sample_width": 2}).encode())

    @property
    def duration(self) -> float:
        """Seconds written so far."""
        return self.samples / self.sample_rate

    def write(self, pcm: bytes) -> None:
        """Append audio (sealed and written once a chunk is full)."""
        self._pending += pcm
        self.samples += len(pcm) // 2
        if len(self._pending) >= self._chunk:
            self._flush()

    def close(self) -> None:
        """Seal what is left and close the file (idempotent)."""
        if self._file.closed:
            return
        self._flush()
        self._file.close()

    def _flush(self) -> None:
        if self._pending:
            self._line(bytes(self._pending))
            self._pending.clear()
        self._file.flush()

    def _line(self, data: bytes) -> None:
        self._file.write(self._sealer.seal_bytes(data) + b"\n")


def read_sealed_audio(path: str | Path, sealer: Sealer) -> tuple[bytes, int]:
    """The PCM16 mono audio of a sealed file and its sample rate."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SealedAudioError(f"cannot read the recording {path}: {exc}") from exc
    if not data.startswith(MAGIC):
        raise SealedAudioError(f"{path} is not a sealed recording (no '{MAGIC.decode().strip()}' header)")
    lines = [line for line in data[len(MAGIC):].split(b"\n") if line]
    if not lines:
        raise SealedAudioError(f"the recording {path} is damaged: it has no format line")
    header = json.loads(sealer.open_bytes(lines[0]))
    return b"".join(sealer.open_bytes(line) for line in lines[1:]), int(header["rate"])


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """A WAV file (PCM16 mono) of ``pcm`` in memory."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


class AudioVault:
    """Where a node keeps its recordings: sealed files in ``directory`` under the store's data key."""

    def __init__(self, directory: str | Path, sealer: Sealer) -> None:
        self.directory = Path(directory)
        self.sealer = sealer

    def new_file(self, call_id: str, kind: str, sample_rate: int) -> SealedAudioWriter:
        """A writer for a new recording of ``kind`` ('call', 'voicemail', 'message') of call ``call_id``."""
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in call_id)[:100]
        stamp = f"{time.time():.6f}".replace(".", "")
        return SealedAudioWriter(self.directory / f"{safe}-{kind}-{stamp}{SUFFIX}", self.sealer, sample_rate)

    def wav(self, path: str | Path) -> bytes:
        """A sealed recording decrypted into a WAV file (in memory)."""
        pcm, rate = read_sealed_audio(path, self.sealer)
        return wav_bytes(pcm, rate)
