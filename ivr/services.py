"""Per-process services shared by every call: speech engines, prompt audio, webhooks, a worker pool.

Speech models are heavy: one instance per process serves all calls; each call asks for its own
recognizer and endpointer. CPU-heavy work (final recognition, webhooks) runs in a worker pool, off the
thread that moves a call's audio.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, TypeVar

import numpy as np
import requests

from ivr.events import HttpResult
from ivr.flow import actions as fa
from ivr.speech.interfaces import AsrEngine, Synthesizer
from ivr.store.masking import mask_url

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class SpeechServices:
    """The engines a call session uses. Build one per process with ``SpeechServices.create``."""

    asr: AsrEngine
    tts: Synthesizer
    workers: int = 4
    _pool: ThreadPoolExecutor = field(init=False, repr=False)
    _http: requests.Session = field(init=False, repr=False)
    _voices: dict[str, Synthesizer] = field(init=False, repr=False)
    _backlog: int = field(init=False, repr=False, default=0)
    _backlog_lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ivr-work")
        self._http = requests.Session()
        self._voices = {}

    @classmethod
    def create(
        cls, engine: str = "whisper", model: str | None = None, voice: str | None = None, workers: int = 4,
        language: str | None = None,
    ) -> SpeechServices:
        """Load the speech engines once (the recognizer model and the synthesizer); ``language`` (``ko``)
        is what a multilingual whisper model listens for."""
        from ivr.speech.asr import load_engine
        from ivr.speech.tts import get_synthesizer

        return cls(asr=load_engine(engine, model, language), tts=get_synthesizer(voice=voice), workers=workers)

    def tts_for(self, language: str | None) -> Synthesizer:
        """The synthesizer for a flow's language (English uses the default voice)."""
        if not language or language.lower().startswith("en"):
            return self.tts
        if language not in self._voices:
            from ivr.speech.tts import get_synthesizer

            self._voices[language] = get_synthesizer(language=language.split("-")[0].lower())
        return self._voices[language]

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` in the worker pool."""
        with self._backlog_lock:
            self._backlog += 1
        future = self._pool.submit(fn)
        future.add_done_callback(self._job_done)
        return future

    def _job_done(self, _: Future[Any]) -> None:
        with self._backlog_lock:
            self._backlog -= 1

    @property
    def backlog(self) -> int:
        """Jobs submitted to the worker pool and not finished (queued or running, cancelled ones excluded):
        how busy recognition is, so optional work (speculative recognition) can wait for a quieter moment."""
        return self._backlog

    def shutdown(self) -> None:
        """Stop the worker pool (waits for running work)."""
        self._pool.shutdown(wait=True)

    # ----------------------------------------------------------- endpointing

    def new_endpointer(self, sample_rate: int, listen: fa.Listen, start_at: float = 0.0) -> Any:
        """A fresh endpointer configured from a Listen action's timeouts; its clock starts at ``start_at``."""
        from ivr.speech.vad import Endpointer, EndpointerConfig

        config = EndpointerConfig(
            end_silence=listen.end_silence,
            max_speech=listen.max_speech,
            no_input_timeout=listen.no_input_timeout,
        )
        return Endpointer(sample_rate, config, start_at=start_at)

    def new_barge_in_detector(self, sample_rate: int, start_at: float = 0.0) -> Any:
        """A fresh barge-in detector (speech over a playing prompt, ignoring short noises)."""
        from ivr.speech.vad import BargeInDetector

        return BargeInDetector(sample_rate, start_at=start_at)

    # --------------------------------------------------------------- audio

    def load_prompt(self, path: str, sample_rate: int) -> bytes:
        """A WAV prompt file as PCM16 at ``sample_rate`` (cached; reloaded when the file changes)."""
        from ivr.speech.tts import load_wav_prompt

        return load_wav_prompt(path, sample_rate)

    def hold_music(self, sample_rate: int) -> bytes:
        """A gentle default music-on-hold loop (used when a queue has no WAV of its own)."""
        return _hold_music(sample_rate)

    def comfort_noise(self, sample_rate: int) -> bytes:
        """100 ms of soft noise (about -60 dBFS) that tells the caller the line is still open."""
        return _comfort_noise(sample_rate)

    def beep(self, sample_rate: int) -> bytes:
        """A short 1 kHz beep (before recording a message)."""
        return _beep(sample_rate)

    # ---------------------------------------------------------------- http

    def http(self, request: fa.HttpRequest) -> HttpResult:
        """Perform a flow's webhook with timeout and retries; never raises."""
        attempts = request.retries + 1
        error = ""
        status = 0
        for attempt in range(attempts):
            try:
                response = self._http.request(
                    request.method.upper(),
                    request.url,
                    headers=request.headers,
                    json=request.json,  # type: ignore[arg-type]
                    timeout=request.timeout,
                )
                status = response.status_code
                data: object
                try:
                    data = response.json()
                except ValueError:
                    data = response.text
                if response.ok:
                    return HttpResult(ok=True, status=status, data=data)
                error = f"HTTP {status}"
                if status < 500:
                    break  # a client error will not get better by retrying
            except requests.RequestException as exc:
                error = type(exc).__name__ + (": timed out" if isinstance(exc, requests.Timeout) else "")
            if attempt + 1 < attempts:
                time.sleep(min(0.25 * 2**attempt, 2.0))
        log.warning("webhook %s %s failed: %s", request.method, mask_url(request.url), error)
        return HttpResult(ok=False, status=status, error=error)


@lru_cache(maxsize=4)
def _comfort_noise(sample_rate: int) -> bytes:
    noise = np.random.default_rng(7).normal(0.0, 0.001, sample_rate // 10)
    return (noise * 32767).astype("<i2").tobytes()


@lru_cache(maxsize=4)
def _beep(sample_rate: int) -> bytes:
    t = np.arange(int(sample_rate * 0.25)) / sample_rate
    tone = 0.3 * np.sin(2 * np.pi * 1000 * t)
    return (tone * 32767).astype("<i2").tobytes()


@lru_cache(maxsize=4)
def _hold_music(sample_rate: int) -> bytes:
    # a slow arpeggio of soft sine notes with a fade on each: recognisably "please hold", never silence
    notes = (392.0, 493.9, 587.3, 493.9)
    pieces = []
    for freq in notes:
        t = np.arange(int(sample_rate * 0.6)) / sample_rate
        envelope = np.minimum(1.0, t / 0.05) * np.exp(-2.5 * t)
        pieces.append(0.15 * envelope * np.sin(2 * np.pi * freq * t))
    return (np.concatenate(pieces) * 32767).astype("<i2").tobytes()
