"""The prompt cache: keys, atomic files shared by processes, damaged files, the in-memory LRU."""

from __future__ import annotations

import multiprocessing
import os
import wave
from pathlib import Path

import pytest

from ivr.speech.tts.cache import LruBytes, PromptCache, default_cache_dir, prompt_key


def test_key_changes_with_everything_that_changes_the_audio() -> None:
    base = {"voice": "gmw/en-us", "language": "en-us", "speed": 165, "pitch": 50, "volume": 1.0}
    key = prompt_key("Hello.", 8000, **base)
    assert key == prompt_key("Hello.", 8000, **base)
    variants = [
        prompt_key("Hello!", 8000, **base),
        prompt_key("Hello.", 16000, **base),
        *(prompt_key("Hello.", 8000, **{**base, name: value})
          for name, value in [("voice", "gmw/en-us+f3"), ("language", "de"), ("speed", 166), ("pitch", 51),
                              ("volume", 0.5)]),
    ]
    assert key not in variants and len(set(variants)) == len(variants)
    assert len(key) == 64 and all(c in "0123456789abcdef" for c in key)


def test_stored_prompt_comes_back_from_disk_in_another_cache(tmp_path: Path) -> None:
    pcm = bytes(range(256)) * 40
    PromptCache(tmp_path).put("ab" * 32, pcm, 8000)
    other = PromptCache(tmp_path)
    assert other.get("ab" * 32, 8000) == pcm
    assert other.get("ab" * 32, 8000) == pcm
    assert (other.stats.disk_hits, other.stats.memory_hits, other.stats.misses) == (1, 1, 0)
    assert other.get("cd" * 32, 8000) is None and other.stats.misses == 1
    files = list(tmp_path.rglob("*"))
    assert [f.name for f in files if f.is_file()] == ["ab" * 32 + ".wav"]  # no temporary files left behind
    with wave.open(str(next(f for f in files if f.is_file())), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 8000)


def test_damaged_or_mismatched_file_is_a_miss_and_removed(tmp_path: Path) -> None:
    cache = PromptCache(tmp_path)
    cache.put("ef" * 32, b"\x01\x02" * 1000, 16000)
    path = cache.path_for("ef" * 32)
    assert path is not None
    assert PromptCache(tmp_path).get("ef" * 32, 8000) is None  # a file that does not match its key
    assert not path.exists()
    cache.put("ef" * 32, b"\x01\x02" * 1000, 16000)
    path.write_bytes(path.read_bytes()[:1000])  # truncated, as by a full disk
    fresh = PromptCache(tmp_path)
    assert fresh.get("ef" * 32, 16000) is None and fresh.stats.misses == 1
    assert not path.exists()


def test_unwritable_directory_does_not_fail_the_call(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cache = PromptCache(blocker / "cache")
    cache.put("12" * 32, b"\x00\x01" * 10, 8000)  # logged, not raised
    assert cache.get("12" * 32, 8000) == b"\x00\x01" * 10  # still served from memory


def test_memory_lru_evicts_least_recently_used_by_size() -> None:
    lru = LruBytes(max_bytes=10)
    lru.put("a", b"1234")
    lru.put("b", b"5678")
    assert lru.get("a") == b"1234"  # "a" is now the most recent
    lru.put("c", b"90ab")
    assert lru.get("b") is None and lru.get("a") == b"1234" and lru.get("c") == b"90ab"
    lru.put("huge", b"x" * 11)
    assert lru.get("huge") is None and len(lru) == 2


def test_default_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IVR_TTS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path
    monkeypatch.delenv("IVR_TTS_CACHE")
    assert default_cache_dir() == Path("var/tts-cache")


def _hammer(directory: str, worker: int, results: multiprocessing.Queue) -> None:
    cache = PromptCache(directory, memory_bytes=0)
    bad = 0
    for i in range(150):
        key = f"{i % 5:02d}" * 32
        pcm = bytes([i % 5]) * 4000  # every process writes the same audio for a key, as real renders would
        if i % 2 == worker % 2:
            cache.put(key, pcm, 8000)
        got = cache.get(key, 8000)
        if got is not None and got != pcm:
            bad += 1
    results.put(bad)


def test_processes_sharing_a_directory_never_read_partial_files(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    results: multiprocessing.Queue = ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(str(tmp_path), n, results)) for n in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    assert sum(results.get(timeout=5) for _ in procs) == 0
    assert sorted(f.name[:2] for f in tmp_path.rglob("*.wav")) == ["00", "01", "02", "03", "04"]
    assert not list(tmp_path.rglob(".tmp-*"))


def test_disk_cache_keeps_to_its_limit_removing_the_least_recently_used(tmp_path: Path) -> None:
    pcm = b"\x00\x01" * 5000  # 10 kB of audio, 10,044 bytes on disk
    cache = PromptCache(tmp_path, disk_bytes=50_000)
    keys = [f"{i:02x}" * 32 for i in range(4)]
    for age, key in enumerate(keys):
        cache.put(key, pcm, 8000)
        path = cache.path_for(key)
        assert path is not None
        os.utime(path, (1000 + age, 1000 + age))  # written in this order, a second apart
    assert PromptCache(tmp_path).get(keys[0], 8000) == pcm  # reading the oldest makes it the newest
    being_written = tmp_path / "00" / ".tmp-other-process.wav"
    being_written.write_bytes(b"\x00" * 100)
    os.utime(being_written, (1, 1))  # the oldest file there: pruning would take it first
    cache.put("04" * 32, pcm, 8000)  # 5 files, over 50 kB: pruned to 90 % of it (4 files)
    assert being_written.exists()
    being_written.unlink()
    assert {f.stem for f in tmp_path.rglob("*.wav")} == {keys[0], keys[2], keys[3], "04" * 32}
    cache.put("05" * 32, pcm, 8000)
    assert {f.stem for f in tmp_path.rglob("*.wav")} == {keys[0], keys[3], "04" * 32, "05" * 32}


def test_disk_limit_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IVR_TTS_CACHE_MAX_MB", "0.5")
    assert PromptCache(tmp_path).disk_bytes == 512 * 1024
    monkeypatch.setenv("IVR_TTS_CACHE_MAX_MB", "0")
    cache = PromptCache(tmp_path)
    for i in range(3):
        cache.put(f"{i:02x}" * 32, b"\x00" * 4000, 8000)
    assert len(list(tmp_path.rglob("*.wav"))) == 3  # 0: unlimited
    monkeypatch.setenv("IVR_TTS_CACHE_MAX_MB", "lots")
    assert PromptCache(tmp_path).disk_bytes == 512 * 1024 * 1024
