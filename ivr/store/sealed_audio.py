"""Recordings and voicemail encrypted at rest, written as the call goes on and read back a piece at a time.

A sealed audio file (format 2, what :class:`SealedAudioWriter` writes) is

- a first line ``IVR-SEALED-AUDIO 2``;
- a line holding a Fernet token under the data key (``ivr.store.crypto``) of its header, JSON: sample rate,
  chunk size, and a random AES-256-GCM key of this file alone;
- then the PCM16 mono audio in chunks of :data:`CHUNK_BYTES` (the last one shorter, possibly empty), each
  sealed with AES-GCM on its own: 16 bytes longer than its audio, its nonce the chunk's index and whether it
  is the last one. A chunk moved, copied from elsewhere or changed fails its check, and a file that does not
  end with its last chunk (truncated, or cut off by a crash) is refused as incomplete.

Fixed-size chunks put every moment of the audio at a known place in the file, so the console streams a
recording and serves byte ranges (seeking) holding one chunk in memory (:func:`open_sealed_audio`).
Files of format 1 (older versions: a Fernet token per line, the first the format, the others about 5 s of
audio each) still play; they have no protection against lines removed or reordered.
"""

from __future__ import annotations

import base64
import bisect
import json
import os
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ivr.errors import IvrError
from ivr.store.crypto import Sealer

MAGIC = b"IVR-SEALED-AUDIO 2\n"
MAGIC_V1 = b"IVR-SEALED-AUDIO 1\n"
SUFFIX = ".sealed"
CHUNK_BYTES = 65536
"""Audio per sealed chunk (about 4 s at 8 kHz, 2 s at 16 kHz): what a crash of the process can lose, and
what playing a recording holds in memory."""
TAG_BYTES = 16
"""What AES-GCM adds to each chunk."""
MAX_HEADER_LINE = 4096
MAX_V1_LINE = 16 * 1024 * 1024
WAV_HEADER_BYTES = 44


class SealedAudioError(IvrError):
    """A sealed audio file is missing, damaged, incomplete, changed, or not a sealed audio file."""


def is_sealed_audio(path: str | Path) -> bool:
    """Whether ``path`` is a sealed audio file of any format (else, e.g., a plain WAV from an older version)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) in (MAGIC, MAGIC_V1)
    except OSError:
        return False


def _nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(8, "big") + b"\0\0\0" + (b"\1" if last else b"\0")


class SealedAudioWriter:
    """Appends PCM16 mono audio to a new sealed file (mode 600), a chunk at a time as soon as it is full;
    ``close`` seals the rest as the last chunk."""

    def __init__(self, path: Path, sealer: Sealer, sample_rate: int, chunk_bytes: int = CHUNK_BYTES) -> None:
        if chunk_bytes <= 0 or chunk_bytes % 2:
            raise ValueError("chunk_bytes must be a positive even number (whole PCM16 samples)")
        self.path = path
        self.sample_rate = sample_rate
        self.samples = 0
        self._chunk = chunk_bytes
        self._index = 0
        self._pending = bytearray()
        key = AESGCM.generate_key(bit_length=256)
        self._aead = AESGCM(key)
        header = {"rate": sample_rate, "channels": 1, "sample_width": 2, "chunk_bytes": chunk_bytes,
                  "cipher": "AES-256-GCM", "key": base64.b64encode(key).decode()}  # fmt: skip
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file = os.fdopen(fd, "wb")
        self._file.write(MAGIC + sealer.seal_bytes(json.dumps(header).encode()) + b"\n")
        self._file.flush()

    @property
    def duration(self) -> float:
        """Seconds written so far."""
        return self.samples / self.sample_rate

    def write(self, pcm: bytes) -> None:
        """Append audio (each full chunk is sealed and written at once)."""
        self._pending += pcm
        self.samples += len(pcm) // 2
        if len(self._pending) < self._chunk:
            return
        while len(self._pending) >= self._chunk:
            self._seal(bytes(self._pending[: self._chunk]), last=False)
            del self._pending[: self._chunk]
        self._file.flush()

    def close(self) -> None:
        """Seal what is left as the last chunk and close the file (idempotent)."""
        if self._file.closed:
            return
        try:
            self._seal(bytes(self._pending), last=True)
            self._pending.clear()
        finally:
            self._file.close()

    def _seal(self, data: bytes, last: bool) -> None:
        self._file.write(self._aead.encrypt(_nonce(self._index, last), data, MAGIC))
        self._index += 1


class SealedAudio(ABC):
    """An open sealed recording: its sample rate, the size of its audio, and any byte range of that audio,
    decrypted a chunk at a time. Close it (or use ``with``) to close the file."""

    rate: int
    pcm_size: int
    """Bytes of PCM16 mono audio."""

    def __init__(self, file: BinaryIO, path: Path) -> None:
        self._file = file
        self.path = path

    def pcm(self, start: int = 0, stop: int | None = None) -> Iterator[bytes]:
        """The audio bytes [start, stop) in pieces of at most a chunk (every chunk checked as it is read;
        :class:`SealedAudioError` when one fails)."""
        stop = self.pcm_size if stop is None else min(stop, self.pcm_size)
        while start < stop:
            piece_start, data = self._piece_at(start)
            piece = data[start - piece_start : stop - piece_start]
            if not piece:
                raise SealedAudioError(f"the recording {self.path} is damaged: no audio at byte {start}")
            yield piece
            start += len(piece)

    @abstractmethod
    def _piece_at(self, offset: int) -> tuple[int, bytes]:
        """The decrypted piece that holds audio byte ``offset``, and where it starts."""

    def _read(self, at: int, size: int) -> bytes:
        self._file.seek(at)
        data = self._file.read(size)
        if len(data) != size:
            raise SealedAudioError(f"the recording {self.path} changed while it was read (it is shorter now)")
        return data

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def __enter__(self) -> SealedAudio:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _ChunkedAudio(SealedAudio):
    """Format 2: fixed-size AES-GCM chunks after a sealed header."""

    def __init__(self, file: BinaryIO, path: Path, sealer: Sealer) -> None:
        super().__init__(file, path)
        line = file.readline(MAX_HEADER_LINE)
        if not line.endswith(b"\n"):
            raise SealedAudioError(f"the recording {path} is damaged: its header line is cut off")
        try:
            header = json.loads(sealer.open_bytes(line.rstrip(b"\n")))
            self.rate, self._chunk = int(header["rate"]), int(header["chunk_bytes"])
            self._aead = AESGCM(base64.b64decode(header["key"]))
        except (ValueError, KeyError, TypeError) as exc:
            raise SealedAudioError(f"the recording {path} is damaged: its header does not say how to read it "
                                   f"({exc})") from exc  # fmt: skip
        if self._chunk <= 0:
            raise SealedAudioError(f"the recording {path} is damaged: chunk size {self._chunk}")
        self._body = file.tell()
        record = self._chunk + TAG_BYTES
        full, rest = divmod(os.fstat(file.fileno()).st_size - self._body, record)
        if full == 0 and rest == 0:
            raise SealedAudioError(f"the recording {path} is incomplete: it has no audio, not even its last chunk "
                                   "(cut off by a crash, a full disk, or truncated)")  # fmt: skip
        if 0 < rest < TAG_BYTES:
            raise SealedAudioError(f"the recording {path} is damaged: it ends in the middle of a chunk")
        self._count = full + (1 if rest else 0)
        self._last_size = rest or record
        self.pcm_size = (self._count - 1) * self._chunk + self._last_size - TAG_BYTES
        try:
            self._chunk_data(self._count - 1)
        except SealedAudioError as exc:
            raise SealedAudioError(f"the recording {path} is incomplete or changed: it does not end with its last "
                                   "chunk (cut off by a crash or a full disk, truncated, or tampered with)") from exc

    def _chunk_data(self, index: int) -> bytes:
        last = index == self._count - 1
        sealed = self._read(self._body + index * (self._chunk + TAG_BYTES),
                            self._last_size if last else self._chunk + TAG_BYTES)  # fmt: skip
        try:
            return self._aead.decrypt(_nonce(index, last), sealed, MAGIC)
        except InvalidTag as exc:
            raise SealedAudioError(f"the recording {self.path} is damaged or was tampered with: chunk {index + 1} "
                                   f"of {self._count} fails its check") from exc  # fmt: skip

    def _piece_at(self, offset: int) -> tuple[int, bytes]:
        index = offset // self._chunk
        return index * self._chunk, self._chunk_data(index)


class _LineAudio(SealedAudio):
    """Format 1 (older versions): one Fernet token per line. Opening it reads every line once to learn where
    each piece of audio is (one line in memory at a time)."""

    def __init__(self, file: BinaryIO, path: Path, sealer: Sealer) -> None:
        super().__init__(file, path)
        self._sealer = sealer
        lines = self._lines()
        if not lines:
            raise SealedAudioError(f"the recording {path} is damaged: it has no format line")
        at, size = lines[0]
        try:
            self.rate = int(json.loads(sealer.open_bytes(self._read(at, size)))["rate"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SealedAudioError(f"the recording {path} is damaged: its format line has no rate ({exc})") from exc
        self._places: list[tuple[int, int]] = []  # (file offset, token size) of each audio line
        self._starts: list[int] = []  # the audio byte each line starts at
        total = 0
        for at, size in lines[1:]:
            length = len(sealer.open_bytes(self._read(at, size)))
            if length:
                self._places.append((at, size))
                self._starts.append(total)
                total += length
        self.pcm_size = total

    def _lines(self) -> list[tuple[int, int]]:
        self._file.seek(len(MAGIC_V1))
        found, at = [], len(MAGIC_V1)
        while line := self._file.readline(MAX_V1_LINE):
            size = len(line.rstrip(b"\n"))
            if size:
                found.append((at, size))
            at += len(line)
        return found

    def _piece_at(self, offset: int) -> tuple[int, bytes]:
        i = bisect.bisect_right(self._starts, offset) - 1
        at, size = self._places[i]
        return self._starts[i], self._sealer.open_bytes(self._read(at, size))


def open_sealed_audio(path: str | Path, sealer: Sealer) -> SealedAudio:
    """Open a sealed recording of either format to read it a piece at a time (the file stays open until
    :meth:`SealedAudio.close`). A format-2 file is checked to end with its last chunk."""
    path = Path(path)
    try:
        file = open(path, "rb")  # noqa: SIM115 - the reader owns it until closed
    except OSError as exc:
        raise SealedAudioError(f"cannot read the recording {path}: {exc}") from exc
    try:
        magic = file.read(len(MAGIC))
        if magic == MAGIC:
            return _ChunkedAudio(file, path, sealer)
        if magic == MAGIC_V1:
            return _LineAudio(file, path, sealer)
        raise SealedAudioError(f"{path} is not a sealed recording (no '{MAGIC.decode().strip()}' header)")
    except BaseException:
        file.close()
        raise


def read_sealed_audio(path: str | Path, sealer: Sealer) -> tuple[bytes, int]:
    """The whole PCM16 mono audio of a sealed file (either format) and its sample rate, in memory."""
    with open_sealed_audio(path, sealer) as audio:
        return b"".join(audio.pcm()), audio.rate


def wav_header(pcm_size: int, sample_rate: int) -> bytes:
    """The 44-byte header of a WAV file (PCM16 mono) whose audio is ``pcm_size`` bytes."""
    if pcm_size + 36 > 0xFFFFFFFF:
        raise SealedAudioError(f"{pcm_size} bytes of audio are too many for one WAV file (4 GiB at most)")
    return struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + pcm_size, b"WAVE", b"fmt ", 16, 1, 1, sample_rate,
                       sample_rate * 2, 2, 16, b"data", pcm_size)  # fmt: skip


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """A WAV file (PCM16 mono) of ``pcm`` in memory."""
    return wav_header(len(pcm), sample_rate) + pcm


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
        """A sealed recording decrypted into a WAV file (in memory: for tests and tools; the console streams)."""
        pcm, rate = read_sealed_audio(path, self.sealer)
        return wav_bytes(pcm, rate)
