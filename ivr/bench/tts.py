"""Speech synthesis speed: time to first audio for new and cached prompts, and full-render real-time factor."""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from ivr.speech.tts import EspeakSynthesizer, PromptCache, SynthesizerConfig, shared_engine

# 8 × 8 five-word halves make 64 different ten-word prompts, so no new prompt repeats within a run.
_FIRST_HALVES = (
    "Thanks for calling Acme support,", "Your order has been shipped,", "Please listen carefully to these",
    "I can help you with", "Our offices are closed today,", "You have reached the billing",
    "Say the name of the", "Your package will arrive soon,",
)
_SECOND_HALVES = (
    "how can I help you?", "please stay on the line.", "options, they have recently changed.",
    "orders, returns and account questions.", "please call again after nine.", "team, how may we help?",
    "person you want to reach.", "thank you for your patience.",
)


def ten_word_prompts() -> Iterator[str]:
    """Distinct ten-word prompts, as a caller would hear them."""
    for second in _SECOND_HALVES:
        for first in _FIRST_HALVES:
            yield f"{first} {second}"


def _first_audio(synth: EspeakSynthesizer, text: str, rate: int) -> tuple[float, int]:
    """Seconds from asking for ``text`` to holding its first audio chunk, and the whole prompt's bytes."""
    started = time.perf_counter()
    chunks = synth.stream(text, rate)
    first = next(chunks)
    elapsed = time.perf_counter() - started
    return elapsed, len(first) + sum(len(c) for c in chunks)


def _ms(values: list[float]) -> float:
    return round(statistics.median(values) * 1000, 2)


def run_tts_bench(repeats: int = 7, sample_rate: int = 8000) -> dict[str, Any]:
    """Medians over ``repeats`` prompts: time to first audio (new, cached in memory, cached on disk, and
    new while four calls ask at once) and the full-render real-time factor, at ``sample_rate``."""
    started = time.perf_counter()
    engine = shared_engine()
    engine_start = time.perf_counter() - started
    texts = ten_word_prompts()
    with tempfile.TemporaryDirectory(prefix="ivr-tts-bench-") as cache_dir:
        synth = EspeakSynthesizer(SynthesizerConfig(), PromptCache(cache_dir), engine)
        synth.synthesize("Warming up the speech engine.", sample_rate)
        prompts = [next(texts) for _ in range(repeats)]

        new = [_first_audio(synth, text, sample_rate)[0] for text in prompts]
        render, audio_seconds = [], []
        misses = synth.cache.stats.misses
        for text in (next(texts) for _ in range(repeats)):
            t0 = time.perf_counter()
            pcm = synth.synthesize(text, sample_rate)
            render.append(time.perf_counter() - t0)
            audio_seconds.append(len(pcm) / 2 / sample_rate)
        memory = [_first_audio(synth, text, sample_rate)[0] for text in prompts]
        from_disk = EspeakSynthesizer(SynthesizerConfig(), PromptCache(cache_dir), engine)
        disk = [_first_audio(from_disk, text, sample_rate)[0] for text in prompts]
        if misses != repeats + 1 or from_disk.cache.stats.disk_hits != repeats:
            raise RuntimeError(f"cache use was not as planned: {synth.cache.stats}, {from_disk.cache.stats}")
        concurrent = _concurrent_first_audio(synth, texts, sample_rate, calls=4, rounds=max(1, repeats // 2))

    rtf = [r / a for r, a in zip(render, audio_seconds, strict=True)]
    return {
        "engine": f"pyttsx3 + espeak-ng {engine.version}",
        "sample_rate": sample_rate,
        "repeats": repeats,
        "engine_start_ms": round(engine_start * 1000, 1),  # 0 when an earlier caller started it
        "first_audio_new_10_words_ms": _ms(new),
        "first_audio_new_10_words_max_ms": round(max(new) * 1000, 2),
        "first_audio_new_4_concurrent_calls_ms": _ms(concurrent),
        "first_audio_cached_memory_ms": _ms(memory),
        "first_audio_cached_disk_ms": _ms(disk),
        "full_render_ms": _ms(render),
        "prompt_seconds": round(statistics.median(audio_seconds), 2),
        "real_time_factor": round(statistics.median(rtf), 4),
    }


def _concurrent_first_audio(synth: EspeakSynthesizer, texts: Iterator[str], rate: int, calls: int,
                            rounds: int) -> list[float]:
    """Time to first audio of new prompts when ``calls`` threads ask at the same moment."""
    results: list[float] = []
    lock = threading.Lock()
    for _ in range(rounds):
        batch = [next(texts) for _ in range(calls)]
        barrier = threading.Barrier(calls)

        def call(text: str, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            elapsed, _ = _first_audio(synth, text, rate)
            with lock:
                results.append(elapsed)

        threads = [threading.Thread(target=call, args=(text,)) for text in batch]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return results
