"""Rendered prompts kept on disk (and in memory) so a repeated prompt costs nothing.

Files are named by a SHA-256 of everything that changes the audio (text, voice, speed, pitch, volume,
language, sample rate, engine version), written to a temporary file and renamed into place, so several
processes can share one cache directory: a reader sees a whole file or none. The directory is kept
under a size limit (``$IVR_TTS_CACHE_MAX_MB``, 512 MB by default): beyond it, the prompts used least
recently are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import wave
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE_ENV = "IVR_TTS_CACHE"
CACHE_LIMIT_ENV = "IVR_TTS_CACHE_MAX_MB"
DEFAULT_CACHE_DIR = Path("var/tts-cache")
DEFAULT_DISK_MB = 512
_PRUNE_TO = 0.9  # after pruning, the directory holds at most this fraction of its limit
FORMAT_VERSION = 1  # bump when the rendering changes in a way the key does not capture


def default_cache_dir() -> Path:
    """``$IVR_TTS_CACHE`` if set, else ``var/tts-cache`` under the current directory."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


def default_disk_bytes() -> int:
    """``$IVR_TTS_CACHE_MAX_MB`` (megabytes, 0 = unlimited) in bytes, else 512 MB."""
    raw = os.environ.get(CACHE_LIMIT_ENV, "").strip()
    try:
        megabytes = float(raw) if raw else DEFAULT_DISK_MB
    except ValueError:
        log.warning("$%s=%r is not a number of megabytes; using %d", CACHE_LIMIT_ENV, raw, DEFAULT_DISK_MB)
        megabytes = DEFAULT_DISK_MB
    return max(0, int(megabytes * 1024 * 1024))


def prompt_key(text: str, sample_rate: int, **settings: object) -> str:
    """The content hash naming a rendered prompt: text, rate and every setting that changes the audio."""
    blob = json.dumps({"format": FORMAT_VERSION, "text": text, "rate": sample_rate, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class LruBytes:
    """A thread-safe in-memory LRU of byte strings, bounded by their total size."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[object, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: object) -> bytes | None:
        """The value for ``key`` (marking it recently used), or None."""
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: object, value: bytes) -> None:
        """Store ``value``, evicting the least recently used entries beyond ``max_bytes``."""
        if len(value) > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= len(old)
            self._items[key] = value
            self._size += len(value)
            while self._size > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._size -= len(evicted)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._items.clear()
            self._size = 0

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class CacheStats:
    """Counters of cache use since the cache was created."""

    memory_hits: int = 0
    disk_hits: int = 0
    misses: int = 0
    stores: int = 0

    @property
    def hits(self) -> int:
        """Lookups answered from memory or disk."""
        return self.memory_hits + self.disk_hits


class PromptCache:
    """Rendered prompts by key: an in-memory LRU in front of a directory of WAV files.

    ``directory=None`` keeps prompts in memory only. Disk problems (read-only or full disk) are logged and
    never fail a call: the prompt is simply rendered again next time. ``disk_bytes`` bounds the directory
    (None: ``default_disk_bytes()``; 0: unlimited); a file's modification time is its last use.
    """

    def __init__(self, directory: str | Path | None, memory_bytes: int = 32 * 1024 * 1024,
                 disk_bytes: int | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.memory = LruBytes(memory_bytes)
        self.disk_bytes = default_disk_bytes() if disk_bytes is None else disk_bytes
        self._disk_used: int | None = None  # bytes on disk as last counted, None until the first write
        self.stats = CacheStats()
        self._lock = threading.Lock()
        self._warned = False

    def path_for(self, key: str) -> Path | None:
        """Where the prompt with ``key`` lives on disk (None for a memory-only cache)."""
        if self.directory is None:
            return None
        return self.directory / key[:2] / f"{key}.wav"

    def get(self, key: str, sample_rate: int) -> bytes | None:
        """The PCM16 audio stored under ``key`` at ``sample_rate``, or None."""
        pcm = self.memory.get(key)
        if pcm is not None:
            self._count("memory_hits")
            return pcm
        pcm = self._read(key, sample_rate)
        if pcm is None:
            self._count("misses")
            return None
        self._touch(key)
        self.memory.put(key, pcm)
        self._count("disk_hits")
        return pcm

    def put(self, key: str, pcm: bytes, sample_rate: int) -> None:
        """Keep ``pcm`` under ``key`` in memory and (atomically) on disk."""
        self.memory.put(key, pcm)
        self._count("stores")
        path = self.path_for(key)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".wav")
            try:
                with os.fdopen(fd, "wb") as fh, wave.open(fh, "wb") as out:
                    out.setnchannels(1)
                    out.setsampwidth(2)
                    out.setframerate(sample_rate)
                    out.writeframes(pcm)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._account(path.stat().st_size)
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot write the prompt cache in %s (%s); prompts will be re-rendered. "
                            "Point $%s at a writable directory.", self.directory, exc, CACHE_ENV)

    def _touch(self, key: str) -> None:
        """Mark the file of ``key`` as just used, so pruning keeps it longest."""
        path = self.path_for(key)
        if path is not None:
            with contextlib.suppress(OSError):
                os.utime(path)

    def _account(self, written: int) -> None:
        """Count a newly written file and prune the directory when it has grown past its limit."""
        if not self.disk_bytes:
            return
        with self._lock:
            if self._disk_used is None:
                self._disk_used = sum(size for _, size, _ in self._files())
            else:
                self._disk_used += written
            if self._disk_used > self.disk_bytes:
                self._disk_used = self._prune()

    def _files(self) -> list[tuple[float, int, Path]]:
        """(last use, size, path) of every prompt file in the directory."""
        assert self.directory is not None
        found = []
        for path in self.directory.glob("??/*.wav"):
            if path.name.startswith("."):
                continue  # another process's file being written
            with contextlib.suppress(OSError):
                stat = path.stat()
                found.append((stat.st_mtime, stat.st_size, path))
        return found

    def _prune(self) -> int:
        """Remove the least recently used files down to 90 % of the limit; return the bytes left.

        Counting the directory again (not trusting our running total) keeps several processes that share
        it honest: each sees the others' files.
        """
        files = sorted(self._files())
        used = sum(size for _, size, _ in files)
        target = int(self.disk_bytes * _PRUNE_TO)
        removed = 0
        for _, size, path in files:
            if used <= target:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                used -= size
                removed += 1
        log.info("prompt cache %s over %d MB: removed %d least recently used prompts",
                 self.directory, self.disk_bytes // (1024 * 1024), removed)
        return used

    def _read(self, key: str, sample_rate: int) -> bytes | None:
        path = self.path_for(key)
        if path is None:
            return None
        try:
            with wave.open(str(path), "rb") as wav:
                ok = (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, sample_rate)
                frames = wav.getnframes()
                pcm = wav.readframes(frames)
        except FileNotFoundError:
            return None
        except (OSError, EOFError, wave.Error):
            ok, pcm, frames = False, b"", 0
        if not ok or len(pcm) != frames * 2:
            log.warning("discarding damaged prompt cache file %s", path)
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)
            return None
        return pcm

    def _count(self, field: str) -> None:
        with self._lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)
