"""Endpointing and barge-in on real speech (espeak-ng), real noise (sox) and synthetic impacts.

Speech is padded with known silence, so where it really starts and ends is measured on the clean audio;
noise is mixed in with ``sox -m`` at a measured signal-to-noise ratio.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ivr.audio.frame import AudioFrame, frames_from_pcm
from ivr.audio.wavfile import read_wav
from ivr.events import NoInput, SpeechEnded, SpeechStarted
from ivr.speech.vad import (
    BargeInConfig,
    BargeInDetector,
    Endpointer,
    EndpointerConfig,
    VadConfigError,
)

pytestmark = pytest.mark.slow

RATES = (8000, 16000)
SENTENCE = "I would like to check the status of my order"
LEAD = 0.8  # seconds of silence espeak_wav puts before the speech


def _sox(*args: str | Path) -> None:
    sox = shutil.which("sox")
    if sox is None:
        pytest.fail("sox is not installed; run the README's test command (it installs it)")
    subprocess.run([sox, *map(str, args)], check=True, capture_output=True)


def _speech_bounds(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """Where the speech in clean audio starts and ends: 10 ms windows above -45 dBFS."""
    hop = rate // 100
    x = samples[: samples.size // hop * hop].astype(np.float64).reshape(-1, hop)
    level = 10 * np.log10((x**2).mean(axis=1) / 32768.0**2 + 1e-12)
    loud = np.nonzero(level > -45)[0]
    return loud[0] / 100, (loud[-1] + 1) / 100


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def _noisy(clean: Path, kind: str, snr_db: float, tmp: Path) -> Path:
    """``clean`` with sox-made ``kind`` noise (white/pink/brown) mixed in at ``snr_db`` over the speech."""
    audio = read_wav(clean)
    start, end = _speech_bounds(audio.samples(), audio.sample_rate)
    speech = audio.samples()[int(start * audio.sample_rate) : int(end * audio.sample_rate)]
    noise = tmp / f"{kind}-{audio.sample_rate}.wav"
    _sox("-R", "-n", "-r", audio.sample_rate, "-b", "16", "-c", "1", noise, "synth", audio.duration + 0.1,
         f"{kind}noise", "vol", "0.3")
    gain = _rms(speech) / _rms(read_wav(noise).samples()) / 10 ** (snr_db / 20)
    out = tmp / f"{clean.stem}-{kind}-{snr_db}.wav"
    _sox("-m", "-v", "1", clean, "-v", f"{gain:.5f}", noise, out, "trim", "0", audio.duration)
    return out


def _frames(path: Path, rate: int) -> list[AudioFrame]:
    return read_wav(path, rate).frames()


def _events(endpointer: Endpointer, frames: list[AudioFrame]) -> list[tuple[float, object]]:
    """(time the event was reported, event) for every event."""
    out: list[tuple[float, object]] = []
    for frame in frames:
        out.extend((endpointer.position, e) for e in endpointer.process(frame))
    return out


def _barge_in_time(frames: list[AudioFrame], rate: int) -> float | None:
    detector = BargeInDetector(rate)
    for frame in frames:
        if detector.process(frame):
            return detector.position
    return None


@pytest.fixture(scope="module")
def sentence(espeak_wav: Callable[..., Path]) -> Callable[[int], Path]:
    return lambda rate: espeak_wav(SENTENCE, rate=rate, lead=LEAD, tail=1.5)


# ------------------------------------------------------------------------------------------ endpointer


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("noise", [None, "white", "pink", "brown"])
def test_utterance_start_and_end_match_the_speech(
    rate: int, noise: str | None, sentence: Callable[[int], Path], tmp_path: Path
) -> None:
    clean = sentence(rate)
    true_start, true_end = _speech_bounds(read_wav(clean).samples(), rate)
    path = clean if noise is None else _noisy(clean, noise, 10, tmp_path)
    config = EndpointerConfig(end_silence=0.5, no_input_timeout=0)
    events = _events(Endpointer(rate, config), _frames(path, rate))

    kinds = [type(e).__name__ for _, e in events]
    assert kinds == ["SpeechStarted", "SpeechEnded"], events
    (said_at, started), (ended_at, ended) = events
    assert isinstance(started, SpeechStarted) and isinstance(ended, SpeechEnded)
    assert abs(started.at - true_start) <= 0.1
    assert said_at <= true_start + 0.25  # min_speech plus a little: the recognizer starts promptly
    assert ended.reason == "silence"
    assert true_end - 0.25 <= ended.at <= true_end + 0.1
    # the caller waits at most the hangover (plus a few frames) after they stop talking
    assert ended_at <= true_end + 0.5 + 0.06


@pytest.mark.parametrize("hangover", [0.3, 0.5, 1.0])
def test_end_of_utterance_follows_the_configured_hangover(
    hangover: float, sentence: Callable[[int], Path]
) -> None:
    path = sentence(8000)
    _, true_end = _speech_bounds(read_wav(path).samples(), 8000)
    events = _events(Endpointer(8000, EndpointerConfig(end_silence=hangover)), _frames(path, 8000))
    ended_at = next(t for t, e in events if isinstance(e, SpeechEnded))
    assert true_end + hangover - 0.1 <= ended_at <= true_end + hangover + 0.06


def test_a_pause_shorter_than_the_hangover_does_not_end_the_utterance(
    espeak_wav: Callable[..., Path]
) -> None:
    def spoken(text: str) -> np.ndarray:
        audio = read_wav(espeak_wav(text, rate=16000))
        start, end = _speech_bounds(audio.samples(), 16000)
        return audio.samples()[int(start * 16000) : int(end * 16000)]

    first, second = spoken("one two three"), spoken("four five six")
    silence = np.zeros(int(0.35 * 16000), dtype=np.int16)
    lead, tail = np.zeros(8000, dtype=np.int16), np.zeros(24000, dtype=np.int16)
    pcm = np.concatenate([lead, first, silence, second, tail]).astype("<i2").tobytes()
    frames = list(frames_from_pcm(pcm, 16000))
    first_end = 0.5 + first.size / 16000

    long_hangover = _events(Endpointer(16000, EndpointerConfig(end_silence=0.6)), frames)
    ends = [e for _, e in long_hangover if isinstance(e, SpeechEnded)]
    assert len(ends) == 1 and ends[0].at > first_end + 0.3  # one utterance across the pause

    short_hangover = _events(Endpointer(16000, EndpointerConfig(end_silence=0.2)), frames)
    ends = [e for _, e in short_hangover if isinstance(e, SpeechEnded)]
    assert len(ends) == 1 and ends[0].at <= first_end + 0.05  # cut at the pause


@pytest.mark.parametrize("rate", RATES)
def test_long_speech_is_cut_at_the_maximum_length(rate: int, sentence: Callable[[int], Path]) -> None:
    config = EndpointerConfig(max_speech=1.0)
    events = _events(Endpointer(rate, config), _frames(sentence(rate), rate))
    started = next(e for _, e in events if isinstance(e, SpeechStarted))
    ended_at, ended = next((t, e) for t, e in events if isinstance(e, SpeechEnded))
    assert isinstance(ended, SpeechEnded)
    assert ended.reason == "max_length"
    assert ended.at == pytest.approx(started.at + 1.0, abs=0.021)
    assert ended_at == pytest.approx(ended.at, abs=0.001)


@pytest.mark.parametrize("rate", RATES)
def test_no_input_fires_once_at_the_timeout_on_silence_and_on_noise(rate: int, tmp_path: Path) -> None:
    noise = tmp_path / "noise.wav"
    _sox("-R", "-n", "-r", rate, "-b", "16", "-c", "1", noise, "synth", "3", "pinknoise", "vol", "0.05")
    silence = [AudioFrame.silence(rate)] * 150
    for frames in (silence, _frames(noise, rate)):
        events = _events(Endpointer(rate, EndpointerConfig(no_input_timeout=2.0)), frames)
        assert [(round(t, 2), e) for t, e in events] == [(2.0, NoInput())]


def test_a_cough_or_a_noise_burst_does_not_start_an_utterance(tmp_path: Path) -> None:
    rate = 16000
    frames = _line_with(rate, [_cough(rate, tmp_path), _white_burst(rate, tmp_path)], tmp_path)
    events = _events(Endpointer(rate, EndpointerConfig(no_input_timeout=0)), frames)
    assert events == []


def test_preroll_hands_over_the_audio_from_just_before_the_speech(sentence: Callable[[int], Path]) -> None:
    rate = 16000
    frames = _frames(sentence(rate), rate)
    true_start, _ = _speech_bounds(read_wav(sentence(rate)).samples(), rate)
    endpointer = Endpointer(rate, EndpointerConfig(pre_roll=0.3))
    i = next(i for i, f in enumerate(frames) if any(isinstance(e, SpeechStarted) for e in endpointer.process(f)))
    preroll = endpointer.preroll()
    first_index = i + 1 - len(preroll)
    assert preroll[-1] is frames[i]  # up to the frame that reported the start, nothing missing
    assert preroll == frames[first_index : i + 1]
    assert true_start - 0.42 <= first_index * 0.02 <= true_start - 0.25
    assert endpointer.in_utterance and endpointer.voice_active
    assert endpointer.utterance_start == pytest.approx(true_start, abs=0.1)


def test_reset_rearms_for_the_next_prompt_with_new_settings(sentence: Callable[[int], Path]) -> None:
    rate = 8000
    frames = _frames(sentence(rate), rate)
    endpointer = Endpointer(rate, EndpointerConfig(end_silence=0.5))
    first = _events(endpointer, frames)
    assert [type(e) for _, e in first] == [SpeechStarted, SpeechEnded]
    assert not endpointer.listening
    assert _events(endpointer, frames[:20]) == []  # disarmed until reset

    endpointer.reset(end_silence=1.0, no_input_timeout=0.5)
    assert endpointer.listening and endpointer.config.end_silence == 1.0
    second = _events(endpointer, frames)
    first_pass = len(frames) * 0.02 + 0.4
    assert [(round(t - first_pass, 2), e) for t, e in second] == [(0.5, NoInput())]

    endpointer.reset(no_input_timeout=0)
    third = _events(endpointer, frames)
    true_start, _ = _speech_bounds(read_wav(sentence(rate)).samples(), rate)
    started = third[0][1]
    assert isinstance(started, SpeechStarted)  # times keep counting across prompts
    assert started.at == pytest.approx(first_pass + len(frames) * 0.02 + true_start, abs=0.1)


def test_force_speech_after_barge_in_only_looks_for_the_end(sentence: Callable[[int], Path]) -> None:
    rate = 16000
    frames = _frames(sentence(rate), rate)
    endpointer = Endpointer(rate)
    for frame in frames[:60]:  # the caller is talking over the prompt
        endpointer.process(frame)
    endpointer.reset()
    endpointer.force_speech(at=999.0)  # a time from another clock is clamped to now
    assert endpointer.in_utterance and endpointer.utterance_start == pytest.approx(1.2)
    events = _events(endpointer, frames[60:])
    assert [type(e) for _, e in events] == [SpeechEnded]


def test_bad_settings_and_frames_get_clear_errors() -> None:
    with pytest.raises(VadConfigError, match="end_silence"):
        EndpointerConfig(end_silence=0.0)
    with pytest.raises(VadConfigError, match="aggressiveness"):
        EndpointerConfig(aggressiveness=5)
    with pytest.raises(VadConfigError, match="max_speech"):
        EndpointerConfig(max_speech=0.1)
    with pytest.raises(VadConfigError, match="min_voiced"):
        BargeInConfig(min_voiced=0.0)
    with pytest.raises(ValueError, match="8000 or 16000"):
        Endpointer(44100)
    with pytest.raises(VadConfigError, match="one detector per call"):
        Endpointer(8000).process(AudioFrame.silence(16000))


# -------------------------------------------------------------------------------------------- barge-in

BARGE_PHRASES = ["I want to speak to an agent", "no", "operator please", "my account number is four"]


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("noise", [None, "white", "pink", "brown"])
def test_speech_barges_in_within_200_ms_of_its_onset(
    rate: int, noise: str | None, espeak_wav: Callable[..., Path], tmp_path: Path
) -> None:
    for text in BARGE_PHRASES:
        clean = espeak_wav(text, rate=rate, lead=0.6, tail=0.2)
        onset, _ = _speech_bounds(read_wav(clean).samples(), rate)
        path = clean if noise is None else _noisy(clean, noise, 10, tmp_path)
        decided = _barge_in_time(_frames(path, rate), rate)
        assert decided is not None, f"{text!r} did not barge in"
        assert onset < decided <= onset + 0.2, f"{text!r}: onset {onset:.2f} s, barge-in at {decided:.2f} s"


def test_barge_in_reports_the_onset_and_keeps_a_preroll(espeak_wav: Callable[..., Path]) -> None:
    rate = 8000
    path = espeak_wav("operator please", rate=rate, lead=0.6)
    frames = _frames(path, rate)
    onset, _ = _speech_bounds(read_wav(path).samples(), rate)
    detector = BargeInDetector(rate, BargeInConfig(pre_roll=0.3))
    decided = [i for i, f in enumerate(frames) if detector.process(f)]
    assert len(decided) == 1  # reported once
    assert detector.triggered and detector.onset_at == pytest.approx(onset, abs=0.06)

    detector = BargeInDetector(rate, BargeInConfig(pre_roll=0.3))
    i = next(i for i, f in enumerate(frames) if detector.process(f))
    preroll = detector.preroll()
    assert preroll[-1] is frames[i]
    assert preroll == frames[i + 1 - len(preroll) : i + 1]
    assert onset - 0.4 <= (i + 1 - len(preroll)) * 0.02 <= onset - 0.25
    detector.reset()
    assert not detector.triggered


def _line_with(rate: int, sounds: list[np.ndarray], tmp: Path, gap: float = 0.7) -> list[AudioFrame]:
    """A quiet phone line (-60 dBFS pink noise from sox) with ``sounds`` dropped in ``gap`` s apart."""
    seconds = 0.5 + sum(s.size / rate + gap for s in sounds)
    bed = tmp / f"bed-{rate}.wav"
    _sox("-R", "-n", "-r", rate, "-b", "16", "-c", "1", bed, "synth", seconds, "pinknoise", "vol", "0.001")
    x = read_wav(bed).samples().astype(np.float64)
    at = int(0.5 * rate)
    for sound in sounds:
        x[at : at + sound.size] += sound[: x.size - at]
        at += sound.size + int(gap * rate)
    pcm = np.clip(x, -32768, 32767).astype("<i2").tobytes()
    return list(frames_from_pcm(pcm, rate))


def _from_sox(rate: int, tmp: Path, name: str, *effects: str) -> np.ndarray:
    out = tmp / f"{name}-{rate}.wav"
    _sox("-R", "-n", "-r", rate, "-b", "16", "-c", "1", out, "synth", *effects)
    return read_wav(out).samples().astype(np.float64)


def _white_burst(rate: int, tmp: Path) -> np.ndarray:
    """100 ms of loud white noise."""
    return _from_sox(rate, tmp, "burst", "0.1", "whitenoise", "vol", "0.5")


def _cough(rate: int, tmp: Path) -> np.ndarray:
    """Band-passed noise with a 10 ms attack and a 250 ms decay, about as loud as speech."""
    return _from_sox(rate, tmp, "cough", "0.35", "pinknoise", "sinc", "300-3000", "fade", "q", "0.01", "0.35",
                     "0.25", "vol", "3")


def _clicks(rate: int) -> np.ndarray:
    """Four full-scale clicks of three samples, 150 ms apart."""
    x = np.zeros(int(0.6 * rate))
    for k in range(4):
        x[int(k * 0.15 * rate) : int(k * 0.15 * rate) + 3] = 32767 * (-1) ** k
    return x


def _knock(rate: int, pitch: float, decay: float, offset: float) -> np.ndarray:
    """Three knocks on a door: an impact plus a body resonance at ``pitch`` ringing down with time
    constant ``decay``; ``offset`` shifts the knocks within a 20 ms frame."""
    rng = np.random.default_rng(7)
    x = np.zeros(int((0.7 + offset) * rate))
    n = int(0.15 * rate)
    t = np.arange(n) / rate
    hit = np.sin(2 * np.pi * pitch * t) * np.exp(-t / decay) * 20000 + rng.normal(0, 8000, n) * np.exp(-t / 0.005)
    for k in range(3):
        start = int((offset + k * 0.22) * rate)
        x[start : start + n] += hit[: x.size - start]
    return x


@pytest.mark.parametrize("rate", RATES)
def test_short_noises_do_not_barge_in(rate: int, tmp_path: Path) -> None:
    noises = {
        "100 ms white-noise burst": _white_burst(rate, tmp_path),
        "clicks": _clicks(rate),
        "cough": _cough(rate, tmp_path),
    }
    for pitch in (120, 200, 320):
        for decay in (0.02, 0.05, 0.08):
            for offset in (0.0, 0.007, 0.013):
                noises[f"knock {pitch} Hz, {decay * 1000:.0f} ms, +{offset * 1000:.0f} ms"] = _knock(
                    rate, pitch, decay, offset
                )
    for name, sound in noises.items():
        frames = _line_with(rate, [sound], tmp_path)
        assert _barge_in_time(frames, rate) is None, f"{name} barged in"


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_steady_background_noise_does_not_barge_in(kind: str, tmp_path: Path) -> None:
    rate = 8000
    noise = tmp_path / f"{kind}.wav"
    _sox("-R", "-n", "-r", rate, "-b", "16", "-c", "1", noise, "synth", "4", f"{kind}noise", "vol", "0.3")
    assert _barge_in_time(_frames(noise, rate), rate) is None


def test_a_noise_burst_right_before_speech_does_not_delay_barge_in(
    espeak_wav: Callable[..., Path], tmp_path: Path
) -> None:
    rate = 16000
    speech = read_wav(espeak_wav("no", rate=rate, lead=0.0, tail=0.3)).samples().astype(np.float64)
    frames = _line_with(rate, [_white_burst(rate, tmp_path), speech], tmp_path, gap=0.1)
    onset = 0.5 + 0.1 + 0.1
    decided = _barge_in_time(frames, rate)
    assert decided is not None and onset < decided <= onset + 0.2


# ------------------------------------------------------------------------------------------------ cost


def _median_us_per_frame(process: Callable[[AudioFrame], object], frames: list[AudioFrame]) -> float:
    costs = []
    for frame in frames:
        start = time.thread_time_ns()
        process(frame)
        costs.append(time.thread_time_ns() - start)
    return statistics.median(costs) / 1000


@pytest.mark.parametrize("rate", RATES)
def test_per_frame_cost_is_small(
    rate: int, sentence: Callable[[int], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    frames = _frames(_noisy(sentence(rate), "pink", 10, tmp_path), rate)
    endpointer = Endpointer(rate, EndpointerConfig(no_input_timeout=0, max_speech=600))
    detector = BargeInDetector(rate)

    def barge(frame: AudioFrame) -> None:
        if detector.process(frame):
            detector.reset()

    ep_us = _median_us_per_frame(endpointer.process, frames * 3)
    bi_us = _median_us_per_frame(barge, frames * 3)
    with capsys.disabled():
        print(f"\n{rate} Hz: endpointer {ep_us:.0f} µs/frame, barge-in {bi_us:.0f} µs/frame (median CPU time)")
    # a 20 ms frame arrives every 20 000 µs; one call must cost well under 5 % of a core
    assert ep_us < 1000 and bi_us < 1000
