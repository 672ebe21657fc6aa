"""Small interfaces the rest of ivr uses to talk to speech engines.

One model instance per process is shared by all calls (an ``AsrEngine``); each call gets its own
``Recognizer`` from it. Engines are heavy to load and cheap to ask for a recognizer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from ivr.audio.frame import AudioFrame
from ivr.events import ControlEvent, Transcript


class Recognizer(Protocol):
    """Recognition state for one utterance stream of one call."""

    def accept(self, frame: AudioFrame) -> Transcript | None:
        """Feed 20 ms of audio; may return a partial transcript."""
        ...

    def finish(self) -> Transcript:
        """The final transcript of the audio fed since the last finish/reset; resets the recognizer."""
        ...

    def reset(self) -> None:
        """Drop any audio fed so far."""
        ...


class AsrEngine(Protocol):
    """A loaded speech-recognition model, shared by all calls of the process."""

    name: str

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
    """Voice activity detection and endpointing for one call."""

    def process(self, frame: AudioFrame) -> list[ControlEvent]:
        """Feed 20 ms of caller audio; returns SpeechStarted / SpeechEnded / NoInput events."""
        ...
