"""Small interfaces the rest of ivr uses to talk to speech engines.

One model instance per process is shared by all calls (an ``AsrEngine``); each call gets its own
``Recognizer`` from it. Engines are heavy to load and cheap to ask for a recognizer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from ivr.audio.frame import AudioFrame
from ivr.events import ControlEvent, Transcript


@dataclass(frozen=True)
class RecognizerCapabilities:
    """What a recognition engine (and each recognizer it makes) can do, declared so that a call asks the
    declaration instead of probing for methods (as livekit/agents' ``STTCapabilities``)."""

    streaming: bool = False
    """Results grow with the audio: ``peek`` is cheap and ``finish`` only flushes the decoder (Vosk). False:
    each ``peek``/``finish`` recognises the whole utterance again (Whisper), so a peek taken once the caller
    fell silent is as good as the final result."""
    partials: bool = False
    """``accept`` returns partial transcripts while the caller speaks."""
    grammars: bool = False
    """A recognizer can be limited to (or snapped to) a list of phrases."""
    word_confidences: bool = False
    """Final transcripts carry the words with their confidences."""
    peek: bool = False
    """``peek`` tells what was heard so far without ending the utterance (speculative end of turn)."""


class Recognizer(Protocol):
    """Recognition state for one utterance stream of one call."""

    capabilities: RecognizerCapabilities
    """Its engine's (see ``AsrEngine.capabilities``)."""

    def accept(self, frame: AudioFrame) -> Transcript | None:
        """Feed 20 ms of audio; may return a partial transcript."""
        ...

    def finish(self) -> Transcript:
        """The final transcript of the audio fed since the last finish/reset; resets the recognizer."""
        ...

    def reset(self) -> None:
        """Drop any audio fed so far."""
        ...

    def peek(self) -> Transcript:
        """What was heard so far, keeping the audio (only when ``capabilities.peek``)."""
        ...


class AsrEngine(Protocol):
    """A loaded speech-recognition model, shared by all calls of the process."""

    name: str
    capabilities: RecognizerCapabilities

    def new_recognizer(self, sample_rate: int, grammar: Sequence[str] | None = None) -> Recognizer:
        """A recognizer for one call at ``sample_rate``, optionally limited to (or biased towards) phrases."""
        ...


class Synthesizer(Protocol):
    """Turns text into PCM16 mono audio at the call's rate."""

    def synthesize(self, text: str, sample_rate: int) -> bytes:
        """Render the whole prompt."""
        ...

    def stream(self, text: str, sample_rate: int) -> Iterator[bytes]:
        """Render the prompt in chunks so playback can start before the whole prompt is ready."""
        ...


class Endpointer(Protocol):
    """Voice activity detection and endpointing for one call (``ivr.speech.vad.Endpointer``)."""

    def process(self, frame: AudioFrame) -> list[ControlEvent]:
        """Feed 20 ms of caller audio; returns SpeechStarted / SpeechEnded / NoInput events."""
        ...

    def force_speech(self, at: float | None = None) -> None:
        """The caller is speaking already (a barge-in detector heard them over a prompt)."""
        ...

    def preroll(self) -> list[AudioFrame]:
        """The audio of the utterance so far, from just before its onset (to start a recognizer with)."""
        ...

    @property
    def trailing_silence(self) -> float:
        """Seconds of silence since the caller last spoke in this utterance."""
        ...


class BargeInDetector(Protocol):
    """Hears the caller start speaking over a playing prompt (``ivr.speech.vad.BargeInDetector``)."""

    def process(self, frame: AudioFrame) -> bool:
        """Feed 20 ms of caller audio; True once the caller is taken to be speaking."""
        ...

    def preroll(self) -> list[AudioFrame]:
        """The audio since just before the caller started speaking."""
        ...
