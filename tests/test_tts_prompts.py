"""WAV prompt files played instead of synthesized text."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from ivr.errors import AudioFormatError
from ivr.speech.tts import EspeakSynthesizer, PromptCache, load_wav_prompt, prompt_audio

pytestmark = pytest.mark.slow


def test_wav_prompt_is_converted_to_the_call_rate_and_kept(espeak_wav: Callable[..., Path],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "welcome.wav"
    shutil.copy(espeak_wav("Welcome to the hotline.", rate=16000, lead=0.2, tail=0.2), path)
    wide = load_wav_prompt(path, 16000)
    narrow = load_wav_prompt(path, 8000)
    assert abs(len(wide) / 2 / 16000 - len(narrow) / 2 / 8000) < 0.01
    assert load_wav_prompt(str(path), 8000) is narrow  # converted once
    # An edited prompt file is picked up.
    shutil.copy(espeak_wav("Welcome to the hotline, we are open.", rate=16000, lead=0.2, tail=0.2), path)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    assert len(load_wav_prompt(path, 8000)) > len(narrow)


def test_bad_prompt_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(AudioFormatError, match=r"missing\.wav: no such prompt file"):
        load_wav_prompt(tmp_path / "missing.wav", 8000)
    fake = tmp_path / "song.wav"
    fake.write_bytes(b"ID3\x04\x00" + bytes(200))
    with pytest.raises(AudioFormatError, match=r"song\.wav: not a WAV file: it looks like an MP3"):
        load_wav_prompt(fake, 8000)


def test_prompt_audio_plays_the_file_when_given(espeak_wav: Callable[..., Path]) -> None:
    synth = EspeakSynthesizer(cache=PromptCache(None))
    path = espeak_wav("Goodbye.", rate=8000)
    assert b"".join(prompt_audio(synth, 8000, text="ignored", audio=path)) == load_wav_prompt(path, 8000)
    spoken = b"".join(prompt_audio(synth, 8000, text="Goodbye."))
    assert spoken == synth.synthesize("Goodbye.", 8000)
