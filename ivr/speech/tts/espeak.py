"""The process's one espeak-ng instance, driven through pyttsx3's espeak driver.

pyttsx3 initialises libespeak-ng once per process in retrieval mode: espeak-ng renders on its own thread and
hands audio to a callback in buffers of up to a second. libespeak-ng keeps global state and is not
thread-safe, so one worker thread here owns it and renders one prompt at a time, in order of request; the
audio of each prompt streams to its sink as espeak-ng produces it, so playback can start within
milliseconds. Calls from any number of threads are safe.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ivr.errors import SynthesisError

log = logging.getLogger(__name__)

ESPEAK_RATE = 22050  # Hz: the rate libespeak-ng renders its own voices at (what pyttsx3 assumes too)
_RENDER_TIMEOUT_BASE = 10.0  # seconds before a render counts as hung, plus a little per character
_RENDER_TIMEOUT_PER_CHAR = 0.01
_SUGGESTED_VARIANTS = ("f1", "f2", "f3", "f4", "m1", "m2", "m3", "klatt", "whisper")
_SUGGESTED_VOICES = ("en-us", "en", "en-gb-x-rp", "de", "fr-fr", "es", "it", "nl", "pt-br", "cmn")


@dataclass(frozen=True)
class Voice:
    """One espeak-ng voice: ``id`` (``gmw/en-us``) is what ``SynthesizerConfig.voice`` accepts."""

    id: str
    name: str
    languages: tuple[str, ...]
    gender: str | None

    @property
    def short_id(self) -> str:
        """The id without its language family (``en-us`` for ``gmw/en-us``)."""
        return self.id.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class VoiceSettings:
    """Exactly what the engine applies before rendering a prompt."""

    voice: str  # a resolved espeak-ng voice name, e.g. "gmw/en-us+f3"
    speed: int
    pitch: int
    volume: float


class RenderSink(Protocol):
    """Receives one prompt's audio from the engine (on espeak-ng's thread)."""

    def audio(self, samples: np.ndarray) -> None:
        """A buffer of int16 samples at ``ESPEAK_RATE``."""
        ...

    def finished(self, error: SynthesisError | None) -> None:
        """Rendering ended: completely (``error`` is None) or not."""
        ...


@dataclass
class _Job:
    text: bytes
    settings: VoiceSettings
    sink: RenderSink
    done: threading.Event
    error: SynthesisError | None = None


class EspeakEngine:
    """libespeak-ng behind a single worker thread. Get the process's instance with ``shared_engine()``."""

    def __init__(self) -> None:
        try:
            import pyttsx3
            from pyttsx3.drivers import _espeak
            from pyttsx3.drivers.espeak import EspeakDriver
        except (ImportError, OSError, RuntimeError) as exc:
            raise SynthesisError(
                f"cannot load espeak-ng through pyttsx3 ({exc}); install it with `apt-get install espeak-ng`"
            ) from None
        self._espeak: Any = _espeak
        self._driver: Any = EspeakDriver
        try:
            # Keep the engine referenced for the life of the process: dropping it would unhook the callback.
            self._pyttsx3 = pyttsx3.init("espeak")
        except RuntimeError as exc:
            raise SynthesisError(f"espeak-ng failed to start ({exc}); check `espeak-ng --version` works") from None
        self.version = _espeak.Info(None).decode("ascii", "replace")
        self.voices = self._list_voices()
        self.variants = self._list_variants()
        self._pid = os.getpid()
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._current: _Job | None = None
        self._applied: VoiceSettings | None = None
        self._finish_lock = threading.Lock()
        self.renders = 0
        _espeak.SetSynthCallback(self._on_synth)
        self._worker = threading.Thread(target=self._run, name="espeak-ng", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ voices

    def _list_voices(self) -> list[Voice]:
        voices = []
        for v in self._pyttsx3.getProperty("voices"):
            languages = tuple(lang.lower() for lang in (v.languages or []) if lang)
            voices.append(Voice(id=v.id, name=v.name, languages=languages, gender=v.gender))
        return sorted(voices, key=lambda v: v.id)

    def _list_variants(self) -> dict[str, str]:
        spec = self._espeak.VOICE()
        spec.languages = b"variant"
        found = {}
        for v in self._espeak.ListVoices(ctypes.byref(spec)):
            file_name = v.identifier.decode("utf-8", "replace").rsplit("/", 1)[-1]
            found[file_name.lower()] = file_name
        return found

    def resolve_voice(self, request: str) -> str:
        """The espeak-ng voice name for ``request`` (an id, short id, language or voice name, with an
        optional ``+variant``); raises SynthesisError listing valid choices when nothing matches."""
        base, _, variant = request.strip().partition("+")
        wanted = base.strip().lower().replace("_", " ")
        voice = _match_voice(self.voices, wanted)
        if voice is None:
            known = {v.short_id for v in self.voices}
            some = [name for name in _SUGGESTED_VOICES if name in known] or sorted(known)[:8]
            raise SynthesisError(
                f"unknown voice or language {request!r}; try one of: {', '.join(some)}, … "
                "(`ivr say --list-voices` lists all)"
            )
        if not variant:
            return voice.id
        file_name = self.variants.get(variant.strip().lower())
        if file_name is None:
            choices = [v for v in _SUGGESTED_VARIANTS if v in self.variants] or sorted(self.variants)[:10]
            raise SynthesisError(
                f"unknown voice variant {variant!r} in {request!r}; try one of: {', '.join(choices)}, … "
                "(`ivr say --list-voices` lists all)"
            )
        return f"{voice.id}+{file_name}"

    # --------------------------------------------------------------- rendering

    def render(self, text: str, settings: VoiceSettings, sink: RenderSink) -> None:
        """Queue ``text`` for rendering with ``settings``; its audio and end go to ``sink``."""
        if os.getpid() != self._pid:
            raise SynthesisError("espeak-ng was started before this process forked; create the synthesizer "
                                 "in the process that uses it")
        self._jobs.put(_Job(text.encode("utf-8"), settings, sink, threading.Event()))

    def _run(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                self._render(job)
            except Exception as exc:  # never let one prompt kill the worker that serves every call
                log.exception("espeak-ng worker: rendering failed")
                self._finish(job, SynthesisError(f"speech synthesis failed: {exc}"))
            del job  # do not keep the last prompt's buffers alive while idle

    def _render(self, job: _Job) -> None:
        try:
            self._apply(job.settings)
        except ValueError as exc:
            self._applied = None
            self._finish(job, SynthesisError(f"espeak-ng rejected the settings {job.settings}: {exc}"))
            return
        self.renders += 1
        self._current = job
        espeak = self._espeak
        # pyttsx3's Synth() wrapper claims a buffer 10× the text's size; pass the real size to the C call.
        status = espeak.cSynth(job.text, len(job.text) + 1, 0, espeak.POS_CHARACTER, 0,
                               espeak.CHARS_UTF8 | espeak.ENDPAUSE, None, None)
        if status != 0:
            self._current = None
            self._finish(job, SynthesisError(f"espeak-ng refused the text (status {status})"))
            return
        timeout = _RENDER_TIMEOUT_BASE + _RENDER_TIMEOUT_PER_CHAR * len(job.text)
        if not job.done.wait(timeout):
            self._current = None
            espeak.Cancel()
            self._applied = None
            self._finish(job, SynthesisError(f"espeak-ng did not finish a prompt within {timeout:.0f} s"))

    def _apply(self, settings: VoiceSettings) -> None:
        if settings == self._applied:
            return
        driver = self._driver
        if self._applied is None or settings.voice != self._applied.voice:
            # A voice change is immediate, not queued: let espeak-ng's thread finish the last prompt first.
            deadline = time.monotonic() + 1.0
            while self._espeak.IsPlaying() and time.monotonic() < deadline:
                time.sleep(0.0005)
            driver.setProperty("voice", settings.voice)
        # Parameters go through espeak-ng's command queue, so they take effect before the next text.
        driver.setProperty("rate", settings.speed)
        driver.setProperty("pitch", settings.pitch)
        driver.setProperty("volume", settings.volume)
        self._applied = settings

    def _on_synth(self, wav: Any, numsamples: int, events: Any) -> int:
        """libespeak-ng's synth callback (runs on espeak-ng's thread): pass audio on, spot the end."""
        job = self._current
        if job is None:
            return 0
        try:
            if numsamples > 0 and job.error is None:
                samples = np.frombuffer(ctypes.string_at(wav, numsamples * 2), dtype=np.int16)
                job.sink.audio(samples)
        except Exception as exc:
            log.exception("prompt audio sink failed")
            job.error = SynthesisError(f"handling synthesized audio failed: {exc}")
        i = 0
        while events[i].type != self._espeak.EVENT_LIST_TERMINATED:
            if events[i].type == self._espeak.EVENT_MSG_TERMINATED:
                self._current = None
                self._finish(job, job.error)
                break
            i += 1
        return 0

    def _finish(self, job: _Job, error: SynthesisError | None) -> None:
        with self._finish_lock:  # the worker (on timeout) and the callback may race to end a job
            if job.done.is_set():
                return
            job.done.set()
        try:
            job.sink.finished(error)
        except Exception:
            log.exception("prompt audio sink failed at the end of a prompt")


def _match_voice(voices: Sequence[Voice], wanted: str) -> Voice | None:
    for matches in (
        lambda v: v.id == wanted,
        lambda v: v.short_id == wanted,
        lambda v: wanted in v.languages,
        lambda v: v.name.lower() == wanted,
    ):
        for voice in voices:
            if matches(voice):
                return voice
    return None


_shared: EspeakEngine | None = None
_shared_lock = threading.Lock()


def shared_engine() -> EspeakEngine:
    """The process's espeak-ng engine, started on first use (about 50 ms)."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = EspeakEngine()
        return _shared
