"""``ivr transcribe`` end to end: real models, real WAV files, bad files reported cleanly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli.asr import transcribe

pytestmark = pytest.mark.slow


def lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def test_transcribe_default_whisper_8k_and_16k(espeak_wav: Callable[..., Path]) -> None:
    files = [espeak_wav("Please send me a new password by email", rate=r) for r in (8000, 16000)]
    result = CliRunner().invoke(transcribe, [str(f) for f in files])
    assert result.exit_code == 0, result.output
    out = lines(result.stdout)
    assert [o["file"] for o in out] == [str(f) for f in files]
    for o in out:
        assert set(o) == {"file", "text", "confidence", "engine"}
        assert o["engine"] == "whisper"
        assert "password" in str(o["text"]).lower()
        assert isinstance(o["confidence"], float) and 0 < o["confidence"] <= 1


def test_bad_files_are_reported_and_the_others_still_transcribed(
    espeak_wav: Callable[..., Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    mp3 = tmp_path / "song.wav"
    mp3.write_bytes(b"ID3\x03\x00" + bytes(200))
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(espeak_wav("hello", rate=8000).read_bytes()[:30])
    good = espeak_wav("My name is Sarah Johnson and I live in Boston", rate=8000)
    args = [str(empty), str(good), str(mp3), str(truncated), str(tmp_path / "nope.wav")]
    result = CliRunner().invoke(transcribe, args)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    err = result.stderr
    assert f"{empty}: the file is empty" in err
    assert f"{mp3}: not a WAV file: it looks like an MP3" in err
    assert f"{truncated}: truncated or damaged WAV header" in err
    assert "nope.wav: no such file" in err
    out = lines(result.stdout)
    assert len(out) == 1 and out[0]["file"] == str(good) and "boston" in str(out[0]["text"]).lower()


def test_transcribe_vosk_korean_with_grammar(espeak_wav: Callable[..., Path]) -> None:
    said = espeak_wav("아니요", rate=8000, voice="ko")
    other = espeak_wav("오늘 날씨가 정말 좋네요", rate=16000, voice="ko")
    result = CliRunner().invoke(
        transcribe, ["--engine", "vosk", "--grammar", "감사합니다", "--grammar", "아니요", str(said), str(other)]
    )
    assert result.exit_code == 0, result.output
    first, second = lines(result.stdout)
    assert first["text"] == "아니요" and first["rejected"] is False and first["engine"] == "vosk"
    assert second["text"] == "" and second["rejected"] is True and second["confidence"] == 0.0


def test_wrong_model_for_engine_is_a_clear_error(tmp_path: Path) -> None:
    from ivr.cli.main import IvrGroup

    group = IvrGroup(commands={"transcribe": transcribe})
    wav = tmp_path / "x.wav"
    wav.write_bytes(b"")
    result = CliRunner().invoke(group, ["transcribe", "--engine", "vosk", "--model", str(tmp_path), str(wav)])
    assert result.exit_code == 1
    assert "not a Vosk model directory" in result.stderr and "Traceback" not in result.output
