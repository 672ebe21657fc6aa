"""``ivr say`` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ivr.audio.wavfile import read_wav

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]


def ivr(*args: str, cache: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    code = "import sys; sys.argv[0] = 'ivr'; from ivr.cli.main import main; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, input=stdin,
                          cwd=ROOT, env={"IVR_TTS_CACHE": str(cache), "PATH": "/usr/bin:/bin"}, timeout=60)


def test_say_writes_speech_at_the_asked_rate_and_caches_it(tmp_path: Path) -> None:
    out = tmp_path / "out" / "greeting.wav"
    cache = tmp_path / "cache"
    done = ivr("say", "Thanks for calling Acme.", "-o", str(out), "--rate", "16000", "--voice", "en-us+f3",
               "--speed", "150", cache=cache)
    assert done.returncode == 0, done.stderr
    assert "rendered" in done.stdout and "gmw/en-us+f3" in done.stdout
    audio = read_wav(out)
    assert audio.sample_rate == 16000 and 1.0 < audio.duration < 3.5
    assert len(list(cache.rglob("*.wav"))) == 1
    again = ivr("say", "Thanks for calling Acme.", "-o", str(out), "--rate", "16000", "--voice", "en-us+f3",
                "--speed", "150", cache=cache)
    assert again.returncode == 0 and "(cache)" in again.stdout
    assert read_wav(out).pcm == audio.pcm


def test_say_reads_text_from_stdin_at_telephone_rate(tmp_path: Path) -> None:
    out = tmp_path / "hold.wav"
    done = ivr("say", "-", "-o", str(out), cache=tmp_path, stdin="Please hold.\n")
    assert done.returncode == 0, done.stderr
    assert read_wav(out).sample_rate == 8000


def test_unknown_voice_lists_valid_ones(tmp_path: Path) -> None:
    done = ivr("say", "Hello.", "-o", str(tmp_path / "x.wav"), "--voice", "nosuchvoice", cache=tmp_path)
    assert done.returncode == 1
    assert "error: unknown voice or language 'nosuchvoice'; try one of: en-us" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x.wav").exists()


def test_unwritable_output_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "notadir"
    blocker.write_text("")
    done = ivr("say", "Hello.", "-o", str(blocker / "x.wav"), cache=tmp_path)
    assert done.returncode == 1
    assert f"error: cannot write {blocker / 'x.wav'}" in done.stderr and "choose a writable path" in done.stderr
    assert "Traceback" not in done.stderr


def test_list_voices(tmp_path: Path) -> None:
    done = ivr("say", "--list-voices", cache=tmp_path)
    assert done.returncode == 0
    assert any(line.split()[:2] == ["en-us", "en-us"] for line in done.stdout.splitlines())
    assert "f3" in done.stdout.split("variants")[-1]
