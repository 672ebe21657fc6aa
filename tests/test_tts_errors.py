"""How the synthesizer behaves when the engine fails (with a small fake engine)."""

from __future__ import annotations

import numpy as np
import pytest

from ivr.errors import SynthesisError
from ivr.speech.tts import EspeakSynthesizer, PromptCache, SynthesizerConfig
from ivr.speech.tts.espeak import ESPEAK_RATE, RenderSink, VoiceSettings


class FakeEngine:
    """Renders a 440 Hz tone per character, or fails half-way when the text says so."""

    version = "fake"

    def __init__(self) -> None:
        self.renders = 0

    def resolve_voice(self, request: str) -> str:
        return f"fake/{request}"

    def render(self, text: str, settings: VoiceSettings, sink: RenderSink) -> None:
        self.renders += 1
        t = np.arange(ESPEAK_RATE // 10) / ESPEAK_RATE
        tone = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        for _ in text:
            sink.audio(tone)
            if "fail" in text:
                sink.finished(SynthesisError("espeak-ng refused the text (status 2)"))
                return
        sink.finished(None)


def make(engine: FakeEngine) -> EspeakSynthesizer:
    return EspeakSynthesizer(SynthesizerConfig(), PromptCache(None), engine)  # type: ignore[arg-type]


def test_engine_failure_reaches_the_caller_and_nothing_is_cached() -> None:
    engine = FakeEngine()
    synth = make(engine)
    with pytest.raises(SynthesisError, match="status 2"):
        synth.synthesize("please fail", 8000)
    assert synth.cache.stats.stores == 0
    with pytest.raises(SynthesisError):  # tried again, not served from a broken render
        synth.synthesize("please fail", 8000)
    assert engine.renders == 2


def test_rendered_audio_is_resampled_to_the_call_rate() -> None:
    engine = FakeEngine()
    pcm = make(engine).synthesize("abcd", 16000)  # 4 × 100 ms of tone
    assert len(pcm) / 2 / 16000 == pytest.approx(0.4, abs=0.01)
    samples = np.frombuffer(pcm, dtype="<i2")
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.argmax(spectrum) * 16000 / len(samples) == pytest.approx(440, abs=5)
    assert make(engine).synthesize("abcd", 16000) == pcm and engine.renders == 2
