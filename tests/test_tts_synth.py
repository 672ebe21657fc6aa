"""The synthesizer with real espeak-ng: speech at both rates, cache, voices, streaming, threads."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import webrtcvad

from ivr.errors import SynthesisError
from ivr.speech.interfaces import Synthesizer
from ivr.speech.tts import EspeakSynthesizer, PromptCache, SynthesizerConfig, get_synthesizer, shared_engine
from ivr.speech.tts import synthesizer as synth_module

pytestmark = pytest.mark.slow

GREETING = "Thanks for calling Acme, how can I help you today?"  # ten words


def make(tmp_path: Path | None = None, **config: object) -> EspeakSynthesizer:
    cache = PromptCache(tmp_path)  # memory-only unless a directory is given
    return EspeakSynthesizer(SynthesizerConfig(**config), cache)  # type: ignore[arg-type]


def seconds(pcm: bytes, rate: int) -> float:
    return len(pcm) / 2 / rate


def speech_fraction(pcm: bytes, rate: int) -> float:
    """Share of 30 ms frames webrtcvad hears as speech."""
    vad = webrtcvad.Vad(2)
    size = rate * 30 // 1000 * 2
    frames = [pcm[i : i + size] for i in range(0, len(pcm) - size + 1, size)]
    return sum(vad.is_speech(f, rate) for f in frames) / len(frames)


def median_pitch(pcm: bytes, rate: int) -> float:
    """Median fundamental frequency (Hz) of the loud 40 ms frames, by autocorrelation."""
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    size, lo, hi = rate * 40 // 1000, rate // 400, rate // 70
    pitches = []
    for start in range(0, len(x) - size, size):
        frame = x[start : start + size] - x[start : start + size].mean()
        if np.sqrt(np.mean(frame**2)) < 1500:
            continue
        ac = np.correlate(frame, frame, "full")[size - 1 :]
        lag = lo + int(np.argmax(ac[lo:hi]))
        if ac[lag] > 0.3 * ac[0]:
            pitches.append(rate / lag)
    assert len(pitches) > 10, "too few voiced frames to estimate the pitch"
    return float(np.median(pitches))


def test_it_is_a_synthesizer() -> None:
    synth: Synthesizer = make()
    assert synth.synthesize("", 8000) == b"" and list(synth.stream("   ", 16000)) == []


@pytest.mark.parametrize("rate", [8000, 16000])
def test_prompt_is_audible_speech_of_plausible_length(rate: int) -> None:
    pcm = make().synthesize(GREETING, rate)
    samples = np.frombuffer(pcm, dtype="<i2")
    assert 2.0 < seconds(pcm, rate) < 6.0  # ten words at 165 words/minute, plus a short end pause
    assert np.abs(samples).max() > 8000 and np.sqrt(np.mean(samples.astype(float) ** 2)) > 1000
    assert speech_fraction(pcm, rate) > 0.6


def test_both_rates_carry_the_same_speech() -> None:
    synth = make()
    narrow, wide = synth.synthesize(GREETING, 8000), synth.synthesize(GREETING, 16000)
    assert abs(seconds(narrow, 8000) - seconds(wide, 16000)) < 0.1
    assert abs(median_pitch(narrow, 8000) - median_pitch(wide, 16000)) < 15


def test_repeated_prompt_is_served_from_the_cache(tmp_path: Path) -> None:
    engine = shared_engine()
    synth = make(tmp_path)
    before = engine.renders
    first = synth.synthesize("Your order has shipped.", 8000)
    again = synth.synthesize("  Your order   has shipped. ", 8000)  # same words, other spacing
    assert again == first
    assert engine.renders == before + 1
    assert (synth.cache.stats.misses, synth.cache.stats.memory_hits) == (1, 1)
    # Another process (here: a fresh cache on the same directory) finds it on disk.
    other = make(tmp_path)
    assert other.synthesize("Your order has shipped.", 8000) == first
    assert other.cache.stats.disk_hits == 1 and engine.renders == before + 1
    # Another rate or voice is another prompt.
    other.synthesize("Your order has shipped.", 16000)
    make(tmp_path, voice="en-us+f3").synthesize("Your order has shipped.", 8000)
    assert engine.renders == before + 3


def test_a_prompt_the_caller_interrupted_is_still_cached() -> None:
    synth = make()
    chunks = synth.stream("Please listen carefully, as our menu options have changed recently. " * 3, 8000)
    next(chunks)
    del chunks  # barge-in: the caller stopped listening after the first chunk
    renders = shared_engine().renders
    synth.synthesize("Please listen carefully, as our menu options have changed recently. " * 3, 8000)
    assert shared_engine().renders == renders


def test_calls_asking_for_a_prompt_being_rendered_share_the_render(monkeypatch: pytest.MonkeyPatch) -> None:
    hold = hold_second_buffer(monkeypatch)
    synth = make()
    engine = shared_engine()
    before = engine.renders
    text = "All our agents are busy, please stay on the line. " * 3
    first = synth.stream(text, 8000)
    next(first)  # espeak-ng is now held mid-prompt
    late = [synth.stream(text, 8000) for _ in range(2)]  # two more calls ask for the same prompt
    hold.release()
    outputs = [b"".join(s) for s in late]
    assert engine.renders == before + 1 and synth.cache.stats.hits == 0
    assert outputs[0] == outputs[1] and seconds(outputs[0], 8000) > 5
    assert hold.released_in_time


def test_speed_changes_the_length() -> None:
    slow = make(speed=100).synthesize(GREETING, 8000)
    fast = make(speed=300).synthesize(GREETING, 8000)
    assert seconds(slow, 8000) > 2 * seconds(fast, 8000)


def test_voice_variant_and_pitch_change_how_it_sounds() -> None:
    male = median_pitch(make(voice="en-us").synthesize(GREETING, 16000), 16000)
    female = median_pitch(make(voice="en-us+f3").synthesize(GREETING, 16000), 16000)
    assert female > 1.4 * male
    low = median_pitch(make(pitch=20).synthesize(GREETING, 16000), 16000)
    high = median_pitch(make(pitch=80).synthesize(GREETING, 16000), 16000)
    assert high > 1.2 * low


def test_language_picks_a_voice_of_that_language() -> None:
    german = make(language="de")
    assert german.settings.voice == "gmw/de"
    assert make(language="en-US").settings.voice == "gmw/en-us"
    pcm = german.synthesize("Guten Tag, wie kann ich Ihnen helfen?", 8000)
    assert speech_fraction(pcm, 8000) > 0.6
    assert pcm != make().synthesize("Guten Tag, wie kann ich Ihnen helfen?", 8000)


def test_unknown_voice_and_bad_settings_are_clear_errors() -> None:
    with pytest.raises(SynthesisError, match=r"unknown voice or language 'nosuchvoice'.*en-us"):
        make(voice="nosuchvoice")
    with pytest.raises(SynthesisError, match=r"unknown voice variant 'zz9'.*f3"):
        make(voice="en-us+zz9")
    with pytest.raises(SynthesisError, match=r"speed 20 words/minute is out of range"):
        make(speed=20)
    with pytest.raises(ValueError, match="use 8000 or 16000"):
        make().synthesize("Hello.", 44100)


class _Hold:
    """Holds espeak-ng's thread on its second audio buffer of every prompt until released."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.waits: list[bool] = []

    def release(self) -> None:
        self.event.set()

    @property
    def released_in_time(self) -> bool:
        return bool(self.waits) and all(self.waits)


def hold_second_buffer(monkeypatch: pytest.MonkeyPatch) -> _Hold:
    hold = _Hold()
    counts: dict[int, int] = {}
    original = synth_module._Render.audio

    def held_audio(self: synth_module._Render, samples: np.ndarray) -> None:
        counts[id(self)] = counts.get(id(self), 0) + 1
        if counts[id(self)] == 2:
            hold.waits.append(hold.event.wait(5))
        original(self, samples)

    monkeypatch.setattr(synth_module._Render, "audio", held_audio)
    return hold


def test_stream_yields_first_audio_before_the_prompt_is_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    hold = hold_second_buffer(monkeypatch)
    text = "Our opening hours are nine to five, Monday to Friday, and ten to two on Saturdays. " * 2
    chunks = make().stream(text, 8000)
    first = next(chunks)  # espeak-ng cannot finish until this arrived and we release it
    hold.release()
    rest = b"".join(chunks)
    assert hold.released_in_time, "the first chunk only arrived after the whole prompt was rendered"
    assert 0 < len(first) < len(rest) / 3


def test_many_call_threads_share_the_engine() -> None:
    texts = ["Hello.", "Please hold while I transfer you.", GREETING,
             "Your account balance is one hundred and twenty three dollars and forty cents."]
    voices = ["en-us", "en-us+f3"]
    expected = {(t, v): seconds(make(voice=v).synthesize(t, 8000), 8000) for t in texts for v in voices}
    shared = {v: make(voice=v) for v in voices}  # fresh memory caches: every thread renders for real
    results: dict[tuple[int, str, str], float] = {}
    errors: list[BaseException] = []

    def call(n: int) -> None:
        try:
            for i, text in enumerate(texts):
                voice = voices[(n + i) % 2]
                rate = 8000 if n % 2 else 16000
                pcm = b"".join(shared[voice].with_config(speed=165).stream(text, rate))
                results[(n, text, voice)] = seconds(pcm, rate)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert len(results) == 6 * len(texts)
    for (_, text, voice), duration in results.items():
        assert duration == pytest.approx(expected[(text, voice)], abs=0.05), (text, voice)


def test_get_synthesizer_shares_one_instance_per_setting(tmp_path: Path) -> None:
    a = get_synthesizer(cache_dir=tmp_path)
    assert get_synthesizer(cache_dir=tmp_path) is a
    b = get_synthesizer("en-us+f3", cache_dir=tmp_path)
    assert b is not a and b.cache is a.cache and b.engine is a.engine
