"""Per-process services shared by every call: speech engines, prompt audio, webhooks, worker pools.

Speech models are heavy: one instance per process serves all calls; each call asks for its own
recognizer and endpointer. Work that may take a while runs off the thread that moves a call's audio, in
two pools that never wait on each other: recognition (final and speculative passes, CPU-bound, one
worker per core or so) and webhooks (network-bound, bounded, each with its own timeouts), so a slow
order API delays only the calls waiting on it, never anyone's recognition.
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
from ivr.speech.interfaces import AsrEngine, BargeInDetector, Endpointer, Synthesizer
from ivr.store.masking import mask_url

log = logging.getLogger(__name__)
T = TypeVar("T")

_ESPEAK_LANGUAGES = {"zh": "cmn"}
"""espeak-ng's names for flow languages it does not call by their ISO 639-1 code (Mandarin)."""


@dataclass
class SpeechServices:
    """The engines a call session uses. Build one per process with ``SpeechServices.create``."""

    asr: AsrEngine
    tts: Synthesizer
    workers: int = 4
    """Recognition workers."""
    webhook_workers: int = 16
    """Webhooks in flight at once (each waits on the network, not the CPU)."""
    max_webhook_backlog: int = 64
    """Webhooks queued or running beyond which a new one fails at once ("busy") instead of queueing behind
    a service that has stopped answering."""
    _pool: ThreadPoolExecutor = field(init=False, repr=False)
    _webhooks: ThreadPoolExecutor = field(init=False, repr=False)
    _webhook_backlog: int = field(init=False, repr=False, default=0)
    _http: requests.Session = field(init=False, repr=False)
    _voices: dict[str, Synthesizer] = field(init=False, repr=False)
    _backlog: int = field(init=False, repr=False, default=0)
    _backlog_lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ivr-asr")
        self._webhooks = ThreadPoolExecutor(max_workers=self.webhook_workers, thread_name_prefix="ivr-webhook")
        self._http = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_maxsize=self.webhook_workers)
        self._http.mount("http://", adapter)
        self._http.mount("https://", adapter)
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

            spoken = language.split("-")[0].lower()
            self._voices[language] = get_synthesizer(language=_ESPEAK_LANGUAGES.get(spoken, spoken))
        return self._voices[language]

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        """Run ``fn`` (recognition) in the recognition pool."""
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
        """Jobs submitted to the recognition pool and not finished (queued or running, cancelled ones
        excluded): how busy recognition is, so optional work (speculative recognition) can wait for a
        quieter moment. Webhooks do not count: they run in their own pool."""
        return self._backlog

    def submit_webhook(self, request: fa.HttpRequest) -> Future[HttpResult]:
        """Perform a flow's webhook in the webhook pool (see ``http``); when too many are already waiting
        on the network, the future holds a failed result at once (the flow's ``on_failure`` path)."""
        with self._backlog_lock:
            busy = self._webhook_backlog >= self.max_webhook_backlog
            if not busy:
                self._webhook_backlog += 1
        if busy:
            log.warning("webhook %s %s not sent: %d webhooks already waiting", request.method, request.url,
                        self.max_webhook_backlog)
            refused: Future[HttpResult] = Future()
            refused.set_result(HttpResult(ok=False, status=0, error="busy: too many webhooks waiting"))
            return refused
        future = self._webhooks.submit(self.http, request)
        future.add_done_callback(self._webhook_done)
        return future

    def _webhook_done(self, _: Future[Any]) -> None:
        with self._backlog_lock:
            self._webhook_backlog -= 1

    def shutdown(self) -> None:
        """Stop the worker pools: waits for running recognition; webhooks still waiting on the network are
        left to their timeouts (queued ones are dropped)."""
        self._pool.shutdown(wait=True)
        self._webhooks.shutdown(wait=False, cancel_futures=True)

    # ----------------------------------------------------------- endpointing

    def new_endpointer(self, sample_rate: int, listen: fa.Listen, start_at: float = 0.0) -> Endpointer:
        """A fresh endpointer configured from a Listen action's timeouts; its clock starts at ``start_at``."""
        from ivr.speech import vad

        config = vad.EndpointerConfig(
            end_silence=listen.end_silence,
            max_speech=listen.max_speech,
            no_input_timeout=listen.no_input_timeout,
        )
        return vad.Endpointer(sample_rate, config, start_at=start_at)

    def new_barge_in_detector(self, sample_rate: int, start_at: float = 0.0) -> BargeInDetector:
        """A fresh barge-in detector (speech over a playing prompt, ignoring short noises)."""
        from ivr.speech import vad

        return vad.BargeInDetector(sample_rate, start_at=start_at)

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

    @staticmethod
    def webhook_deadline(request: fa.HttpRequest) -> float:
        """The longest a webhook may take in all: every attempt's timeout and the pauses between them."""
        pauses = sum(min(0.25 * 2**attempt, 2.0) for attempt in range(request.retries))
        return request.timeout * (request.retries + 1) + pauses

    def http(self, request: fa.HttpRequest) -> HttpResult:
        """Perform a flow's webhook with timeout and retries (in the calling thread); never raises."""
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
