"""Control events that flow beside (never inside) the audio stream of a call."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SpeechStarted:
    """The caller started speaking (after the minimum speech length); ``at`` is seconds into the call."""

    at: float


@dataclass(frozen=True)
class SpeechEnded:
    """The end of the caller's utterance was detected; ``reason`` is 'silence' or 'max_length'."""

    at: float
    reason: str = "silence"


@dataclass(frozen=True)
class Word:
    """One recognised word with its confidence (0..1) and times in seconds from utterance start."""

    text: str
    confidence: float
    start: float = 0.0
    end: float = 0.0


@dataclass(frozen=True)
class Transcript:
    """A recognition result: final (after the endpoint) or partial (while the caller speaks)."""

    text: str
    confidence: float
    words: tuple[Word, ...] = ()
    final: bool = True
    engine: str = ""
    # Set when a grammar was given and the speech matched none of its phrases: ``text`` is then empty,
    # ``confidence`` 0, and ``heard`` holds what the engine made of the speech (for logs, not for routing).
    rejected: bool = False
    heard: str = ""


@dataclass(frozen=True)
class DtmfDigit:
    """A key the caller pressed (0-9, *, #, A-D)."""

    digit: str


@dataclass(frozen=True)
class NoInput:
    """The caller said nothing before the no-input timeout."""


@dataclass(frozen=True)
class PlaybackFinished:
    """A prompt finished playing (or was stopped by barge-in when ``interrupted``)."""

    interrupted: bool = False


@dataclass(frozen=True)
class Hangup:
    """The caller hung up."""


@dataclass(frozen=True)
class AgentLeft:
    """The agent of a bridged call hung up; the caller is still on the line (the flow may go on: a survey)."""


@dataclass(frozen=True)
class CallInterrupted:
    """The line went away without the caller hanging up (its SIP worker died, or the server stopped)."""


@dataclass(frozen=True)
class TimerFired:
    """A timer the flow asked for expired."""

    name: str


@dataclass(frozen=True)
class HttpResult:
    """The outcome of an HTTP request the flow asked for."""

    ok: bool
    status: int = 0
    data: object = None
    error: str = ""
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordingFinished:
    """A Record action ended; ``path`` is the WAV written, ``duration`` in seconds."""

    path: str
    duration: float


ControlEvent = (
    SpeechStarted
    | SpeechEnded
    | Transcript
    | DtmfDigit
    | NoInput
    | PlaybackFinished
    | Hangup
    | AgentLeft
    | CallInterrupted
    | TimerFired
    | HttpResult
    | RecordingFinished
)
