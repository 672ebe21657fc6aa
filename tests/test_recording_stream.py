"""Recordings sealed in fixed-size authenticated chunks and played by streaming: byte ranges (seeking),
bounded memory for a long recording, files changed on disk refused, and older files still playing."""

from __future__ import annotations

import hashlib
import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from cryptography.fernet import Fernet
from test_web import Env  # tests/ is on sys.path (pytest's default import mode)

from ivr.store.crypto import Sealer
from ivr.store.sealed_audio import (
    CHUNK_BYTES,
    MAGIC_V1,
    TAG_BYTES,
    AudioVault,
    SealedAudioError,
    SealedAudioWriter,
    is_sealed_audio,
    open_sealed_audio,
    read_sealed_audio,
    wav_bytes,
    wav_header,
)

RATE = 8000
RECORD = CHUNK_BYTES + TAG_BYTES


def noise(size: int, seed: int = 1) -> bytes:
    """``size`` bytes of random PCM16 (every byte differs from its neighbours: a misplaced byte shows)."""
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


@pytest.fixture
def sealer() -> Sealer:
    return Sealer(Fernet.generate_key())


def sealed_file(tmp_path: Path, sealer: Sealer, pcm: bytes, pieces: int = 7) -> Path:
    writer = AudioVault(tmp_path / "rec", sealer).new_file("c1", "call", RATE)
    step = max(1, len(pcm) // pieces)
    for at in range(0, len(pcm), step):
        writer.write(pcm[at : at + step])
    writer.close()
    return writer.path


def v1_file(path: Path, sealer: Sealer, pcm: bytes, line_bytes: int = 80000) -> Path:
    """A recording as versions before format 2 wrote it: a Fernet token per line."""
    lines = [sealer.seal_bytes(json.dumps({"rate": RATE, "channels": 1, "sample_width": 2}).encode())]
    lines += [sealer.seal_bytes(pcm[at : at + line_bytes]) for at in range(0, len(pcm), line_bytes)]
    path.write_bytes(MAGIC_V1 + b"".join(line + b"\n" for line in lines))
    return path


@pytest.mark.parametrize("size", [0, 2, CHUNK_BYTES - 2, CHUNK_BYTES, CHUNK_BYTES + 2, 3 * CHUNK_BYTES + 1000])
def test_any_length_reads_back_whole_and_in_any_slice(tmp_path: Path, sealer: Sealer, size: int) -> None:
    pcm = noise(size)
    path = sealed_file(tmp_path, sealer, pcm)
    assert is_sealed_audio(path) and read_sealed_audio(path, sealer) == (pcm, RATE)
    assert pcm[:64] not in path.read_bytes() or size == 0
    with open_sealed_audio(path, sealer) as audio:
        assert audio.pcm_size == size
        for start, stop in ((0, 1), (1, size), (CHUNK_BYTES - 1, CHUNK_BYTES + 3), (size - 5, size + 100)):
            start = max(0, min(start, size))
            pieces = list(audio.pcm(start, stop))
            assert b"".join(pieces) == pcm[start:stop]
            assert all(len(p) <= CHUNK_BYTES for p in pieces)


def test_a_chunk_is_written_as_soon_as_it_is_full(tmp_path: Path, sealer: Sealer) -> None:
    writer = SealedAudioWriter(tmp_path / "a.sealed", sealer, RATE)
    header = writer.path.stat().st_size
    writer.write(noise(CHUNK_BYTES + 10))
    assert writer.path.stat().st_size == header + RECORD  # what a crash now would keep
    writer.close()
    assert writer.path.stat().st_size == header + RECORD + 10 + TAG_BYTES


@pytest.fixture
def env(tmp_path: Path) -> Env:
    return Env(tmp_path)


def recorded(env: Env, tmp_path: Path, pcm: bytes, path: Path | None = None) -> Path:
    """A call c1 with a recording of ``pcm`` (sealed now, or the file at ``path``)."""
    env.store.start_call("c1", "+15550100", "100", "support", time.time() - 60)
    path = path or sealed_file(tmp_path, env.store.sealer, pcm)
    env.store.add_recording("c1", time.time(), "call", str(path), len(pcm) / 2 / RATE, "support")
    return path


URL = "/calls/c1/recordings/0"


@pytest.mark.parametrize("old", [False, True], ids=["chunked", "format-1"])
def test_ranges_are_served_as_a_browser_seeks(env: Env, tmp_path: Path, old: bool) -> None:
    pcm = noise(3 * CHUNK_BYTES + 5000)
    path = v1_file(tmp_path / "old.sealed", env.store.sealer, pcm) if old else None
    recorded(env, tmp_path, pcm, path)
    wav = wav_bytes(pcm, RATE)
    sue = env.client("sue")
    whole = sue.get(URL)
    assert whole.status_code == 200 and whole.data == wav and whole.headers["Accept-Ranges"] == "bytes"
    assert int(whole.headers["Content-Length"]) == len(wav) and whole.headers["Cache-Control"] == "no-store"
    for asked, start, stop in (("0-43", 0, 44), ("0-", 0, len(wav)), ("100-70000", 100, 70001),
                               (f"{CHUNK_BYTES + 44}-{2 * CHUNK_BYTES + 43}", CHUNK_BYTES + 44, 2 * CHUNK_BYTES + 44),
                               ("-1000", len(wav) - 1000, len(wav)), ("150000-", 150000, len(wav)),
                               (f"30-{len(wav) + 999}", 30, len(wav))):  # fmt: skip
        part = sue.get(URL, headers={"Range": f"bytes={asked}"})
        assert part.status_code == 206, asked
        assert part.data == wav[start:stop], asked
        assert part.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(wav)}", asked
        assert int(part.headers["Content-Length"]) == stop - start
    head = sue.head(URL)
    assert head.status_code == 200 and int(head.headers["Content-Length"]) == len(wav) and not head.data
    beyond = sue.get(URL, headers={"Range": f"bytes={len(wav)}-"})
    assert beyond.status_code == 416 and beyond.headers["Content-Range"] == f"bytes */{len(wav)}"
    for headers in ({"Range": "bytes=0-10,20-30"}, {"Range": "lines=1-2"}, {"Range": "bytes=0-10", "If-Range": "x"}):
        full = sue.get(URL, headers=headers)  # the whole file is a correct answer to what cannot be served
        assert full.status_code == 200 and full.data == wav, headers
    assert env.client("ben").get(URL, headers={"Range": "bytes=0-10"}).status_code == 404  # not their call
    assert env.client().get(URL, headers={"Range": "bytes=0-10"}).status_code == 302  # sign in first


def test_a_long_recording_plays_in_bounded_memory(env: Env, tmp_path: Path) -> None:
    size, piece = 50 * 1024 * 1024, 1024 * 1024  # 50 MB: about 55 minutes at 8 kHz
    writer = AudioVault(tmp_path / "rec", env.store.sealer).new_file("c1", "call", RATE)
    expected = hashlib.sha256(wav_header(size, RATE))
    for i in range(size // piece):
        data = noise(piece, seed=i)
        expected.update(data)
        writer.write(data)
    writer.close()
    recorded(env, tmp_path, b"", writer.path)
    sue = env.client("sue")

    def played(headers: dict[str, str]) -> tuple[str, int, int]:
        """The SHA-256 of the answer, its length, and the peak memory playing it took."""
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            resp = sue.get(URL, headers=headers, buffered=False)
            digest, length = hashlib.sha256(), 0
            for chunk in resp.response:
                digest.update(chunk)
                length += len(chunk)
            resp.close()
            return digest.hexdigest(), length, tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()

    digest, length, peak = played({})
    assert length == 44 + size and digest == expected.hexdigest()
    assert peak < 2 * 1024 * 1024, f"playing 50 MB took {peak / 1e6:.1f} MB of memory"
    _, length, peak = played({"Range": f"bytes={size // 2}-"})  # seeking to the middle reads only the end
    assert length == 44 + size - size // 2 and peak < 2 * 1024 * 1024


def test_changed_files_are_refused(env: Env, tmp_path: Path) -> None:
    pcm = noise(4 * CHUNK_BYTES + 300)
    path = recorded(env, tmp_path, pcm)
    original = path.read_bytes()
    body = len(original) - (4 * RECORD + 300 + TAG_BYTES)  # where the chunks start
    wav = wav_bytes(pcm, RATE)
    sue = env.client("sue")

    # one bit of the second chunk flipped: the chunks before it still play; reaching it ends the answer
    flipped = bytearray(original)
    flipped[body + RECORD + 1000] ^= 1
    path.write_bytes(bytes(flipped))
    assert sue.get(URL, headers={"Range": f"bytes=0-{CHUNK_BYTES + 43}"}).data == wav[: CHUNK_BYTES + 44]
    with pytest.raises(SealedAudioError, match="chunk 2 of 5 fails its check"):
        sue.get(URL).get_data()
    with pytest.raises(SealedAudioError, match="tampered"):
        read_sealed_audio(path, env.store.sealer)

    # two chunks swapped: each is authentic, but not at that place
    chunks = [original[body + i * RECORD : body + (i + 1) * RECORD] for i in range(4)]
    path.write_bytes(original[:body] + chunks[1] + chunks[0] + b"".join(chunks[2:]) + original[body + 4 * RECORD :])
    with pytest.raises(SealedAudioError, match="chunk 1 of 5"):
        sue.get(URL, headers={"Range": "bytes=44-100"}).get_data()

    # the end cut off, at a chunk boundary or inside a chunk: refused before a byte is sent
    for cut in (body + 4 * RECORD, body + 3 * RECORD + 500, len(original) - 1):
        path.write_bytes(original[:cut])
        refused = sue.get(URL)
        assert refused.status_code == 500 and b"incomplete" in refused.data, cut

    # a chunk copied from another recording, at the same place
    other = sealed_file(tmp_path / "other", env.store.sealer, noise(4 * CHUNK_BYTES + 300, seed=9))
    foreign = other.read_bytes()
    foreign_body = len(foreign) - (4 * RECORD + 300 + TAG_BYTES)
    path.write_bytes(original[:body] + foreign[foreign_body : foreign_body + RECORD] + original[body + RECORD :])
    with pytest.raises(SealedAudioError, match="chunk 1 of 5"):
        sue.get(URL, headers={"Range": "bytes=44-100"}).get_data()

    path.write_bytes(original)  # the untouched file plays
    assert sue.get(URL).data == wav


def test_a_recording_under_another_data_key_says_so(env: Env, tmp_path: Path) -> None:
    other = Sealer(Fernet.generate_key())
    recorded(env, tmp_path, b"", sealed_file(tmp_path, other, noise(1000)))
    refused = env.client("sue").get(URL)
    assert refused.status_code == 500 and b"IVR_DATA_KEY" in refused.data
