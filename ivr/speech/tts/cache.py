"""Rendered prompts kept on disk (and in memory) so a repeated prompt costs nothing.

Files are named by a SHA-256 of everything that changes the audio (text, voice, speed, pitch, volume,
language, sample rate, engine version), written to a temporary file and renamed into place, so several
processes can share one cache directory: a reader sees a whole file or none.
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
DEFAULT_CACHE_DIR = Path("var/tts-cache")
FORMAT_VERSION = 1  # bump when the rendering changes in a way the key does not capture


def default_cache_dir() -> Path:
    """``$IVR_TTS_CACHE`` if set, else ``var/tts-cache`` under the current directory."""
    return Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE_DIR)


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
    never fail a call: the prompt is simply rendered again next time.
    """

    def __init__(self, directory: str | Path | None, memory_bytes: int = 32 * 1024 * 1024) -> None:
        self.directory = Path(directory) if directory is not None else None
        self.memory = LruBytes(memory_bytes)
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
        except OSError as exc:
            if not self._warned:
                self._warned = True
                log.warning("cannot write the prompt cache in %s (%s); prompts will be re-rendered. "
                            "Point $%s at a writable directory.", self.directory, exc, CACHE_ENV)

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
