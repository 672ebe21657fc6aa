"""The ``Synthesizer`` ivr speaks with: espeak-ng audio at the call's rate, streamed, cached."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import soxr

from ivr.audio.frame import check_rate
from ivr.audio.wavfile import float_to_pcm16
from ivr.errors import SynthesisError
from ivr.speech.tts.cache import PromptCache, default_cache_dir, prompt_key
from ivr.speech.tts.config import SynthesizerConfig
from ivr.speech.tts.espeak import ESPEAK_RATE, EspeakEngine, VoiceSettings, shared_engine

_CHUNK_SECONDS = 1.0  # size of the pieces a cached prompt is streamed in (what espeak-ng produces too)
# espeak-ng's closing pause varies with what it spoke before; a fixed short one makes a prompt sound the
# same every time and lets the caller's turn start sooner.
_END_PAUSE_SECONDS = 0.1
_QUIET = 100  # sample magnitude (about -50 dBFS) below which audio counts as silence


class EspeakSynthesizer:
    """Text to PCM16 mono at 8 or 16 kHz with pyttsx3/espeak-ng, through a prompt cache.

    All synthesizers of a process share one espeak-ng engine, which renders one prompt at a time; they are
    safe to use from any number of call threads. ``stream`` starts rendering at once and yields audio as it
    is produced (the first second of speech within a few milliseconds); a prompt rendered once is served
    from the cache afterwards, also when the caller stopped listening half-way (barge-in).
    """

    def __init__(self, config: SynthesizerConfig | None = None, cache: PromptCache | None = None,
                 engine: EspeakEngine | None = None) -> None:
        self.config = config or SynthesizerConfig()
        self.engine = engine or shared_engine()
        self.cache = cache if cache is not None else PromptCache(default_cache_dir())
        self.settings = VoiceSettings(
            voice=self.engine.resolve_voice(self.config.voice_request),
            speed=self.config.speed,
            pitch=self.config.pitch,
            volume=self.config.volume,
        )

    def with_config(self, **changes: object) -> EspeakSynthesizer:
        """A synthesizer with some settings changed (``voice=``, ``speed=``…), sharing engine and cache."""
        return EspeakSynthesizer(replace(self.config, **changes), self.cache, self.engine)  # type: ignore[arg-type]

    def cache_key(self, text: str, sample_rate: int) -> str:
        """The cache key of ``text`` spoken with this synthesizer's settings at ``sample_rate``."""
        return prompt_key(
            _clean(text), sample_rate, voice=self.settings.voice, language=self.config.language,
            speed=self.settings.speed, pitch=self.settings.pitch, volume=self.settings.volume,
            engine=f"espeak-ng {self.engine.version}",
        )

    def synthesize(self, text: str, sample_rate: int) -> bytes:
        """The whole prompt as PCM16 mono at ``sample_rate`` (8000 or 16000)."""
        return b"".join(self.stream(text, sample_rate))

    def stream(self, text: str, sample_rate: int) -> Iterator[bytes]:
        """The prompt as PCM16 chunks (up to a second each); rendering starts before the first ``next``."""
        check_rate(sample_rate)
        text = _clean(text)
        if not text:
            return iter(())
        key = self.cache_key(text, sample_rate)
        pcm = self.cache.get(key, sample_rate)
        if pcm is not None:
            return _chunks(pcm, sample_rate)
        with _in_flight_lock:
            render = _in_flight.get(key)
            started = render is None
            if render is None:
                render = _in_flight[key] = _Render(key, sample_rate, self.cache)
        if started:
            try:
                self.engine.render(text, self.settings, render)
            except SynthesisError as exc:
                render.finished(exc)  # wakes and fails anyone who joined, and forgets the render
                raise
        return render.chunks()


class _Render:
    """One prompt being rendered: resamples espeak-ng's buffers for any number of listeners.

    Calls asking for a prompt that is still being rendered listen to the same render (from its start), so a
    burst of calls hearing the same greeting costs one render.
    """

    def __init__(self, key: str, sample_rate: int, cache: PromptCache) -> None:
        self.key = key
        self.sample_rate = sample_rate
        self._cache = cache
        self._resampler: soxr.ResampleStream | None = soxr.ResampleStream(
            ESPEAK_RATE, sample_rate, 1, dtype="float32", quality="HQ")
        self._parts: list[bytes] = []
        self._quiet_tail = b""
        self._done = False
        self._error: SynthesisError | None = None
        self._changed = threading.Condition()

    def audio(self, samples: np.ndarray) -> None:
        """Called by the engine with int16 samples at espeak-ng's rate."""
        if self._resampler is not None:
            self._emit(self._resampler.resample_chunk(samples.astype(np.float32) / 32768.0))

    def finished(self, error: SynthesisError | None) -> None:
        """Called by the engine when the prompt is done."""
        resampler, self._resampler = self._resampler, None
        try:
            if error is None and resampler is not None:
                tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
                del resampler  # release the native resampler before listeners see the end (and may exit)
                self._emit(tail)
                self._publish(self._quiet_tail[: int(self.sample_rate * _END_PAUSE_SECONDS) * 2])
                # Cached before anyone sees the end: a repeat right after is a hit.
                self._cache.put(self.key, b"".join(self._parts), self.sample_rate)
        finally:
            with _in_flight_lock:
                if _in_flight.get(self.key) is self:
                    del _in_flight[self.key]
            with self._changed:
                self._error = error
                self._done = True
                self._changed.notify_all()

    def _emit(self, samples: np.ndarray) -> None:
        """Publish audio up to its last sound; quiet audio after it waits to see if more sound follows."""
        if not len(samples):
            return
        pcm = float_to_pcm16(samples)
        values = np.frombuffer(pcm, dtype="<i2")
        loud = np.flatnonzero((values >= _QUIET) | (values <= -_QUIET))
        if not len(loud):
            self._quiet_tail += pcm
            return
        cut = (int(loud[-1]) + 1) * 2
        self._publish(self._quiet_tail + pcm[:cut])
        self._quiet_tail = pcm[cut:]

    def _publish(self, pcm: bytes) -> None:
        if pcm:
            with self._changed:
                self._parts.append(pcm)
                self._changed.notify_all()

    def chunks(self) -> Iterator[bytes]:
        """Yield the audio from its start as it arrives; raise the engine's error if rendering failed."""
        index = 0
        while True:
            with self._changed:
                while index >= len(self._parts) and not self._done:
                    if not self._changed.wait(timeout=60.0):
                        raise SynthesisError("speech synthesis produced nothing for 60 s; is espeak-ng stuck?")
                if index < len(self._parts):
                    chunk = self._parts[index]
                elif self._error is not None:
                    raise self._error
                else:
                    return
            index += 1
            yield chunk


def _clean(text: str) -> str:
    return " ".join(text.replace("\x00", " ").split())


def _chunks(pcm: bytes, sample_rate: int) -> Iterator[bytes]:
    size = int(sample_rate * _CHUNK_SECONDS) * 2
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


_in_flight: dict[str, _Render] = {}  # renders not finished yet, by cache key
_in_flight_lock = threading.Lock()
_synthesizers: dict[tuple[SynthesizerConfig, Path | None], EspeakSynthesizer] = {}
_synthesizers_lock = threading.Lock()


def get_synthesizer(voice: str | None = None, *, language: str | None = None, speed: int | None = None,
                    cache_dir: str | Path | None = None) -> EspeakSynthesizer:
    """The process's synthesizer for these settings (created once, then shared by every call).

    ``cache_dir`` defaults to ``$IVR_TTS_CACHE`` or ``var/tts-cache``. Raises SynthesisError for an unknown
    voice or language or an out-of-range speed.
    """
    config = SynthesizerConfig()
    if voice is not None:
        config = replace(config, voice=voice)
    if language is not None:
        config = replace(config, language=language)
    if speed is not None:
        config = replace(config, speed=speed)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    with _synthesizers_lock:
        synth = _synthesizers.get((config, directory))
        if synth is None:
            caches = {s.cache.directory: s.cache for s in _synthesizers.values()}
            cache = caches.get(directory) or PromptCache(directory)
            synth = _synthesizers[(config, directory)] = EspeakSynthesizer(config, cache)
        return synth
