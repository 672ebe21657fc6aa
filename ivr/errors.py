"""One flat error hierarchy for the whole project.

Every error says what went wrong and what to do next. Errors about a file carry its path (and line and
column where known) so the CLI can print them as ``file:line:col: message``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class IvrError(Exception):
    """Base class of every error ivr raises on purpose; the CLI prints these without a traceback."""


@dataclass(frozen=True)
class Diagnostic:
    """One problem found in a file, with its position (1-based line and column; 0 when unknown)."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        if self.line:
            return f"{self.path}:{self.line}:{self.column}: {self.message}"
        return f"{self.path}: {self.message}"


class AudioFormatError(IvrError):
    """An audio file or stream is not in a format ivr can read."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class ModelError(IvrError):
    """A speech or intent model is missing, corrupt or cannot be loaded."""


class ConfigError(IvrError):
    """A configuration or flow file has one or more problems; all of them are listed."""

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = diagnostics
        super().__init__("\n".join(str(d) for d in diagnostics))


class FlowError(ConfigError):
    """A call flow file is invalid."""


class AudioDeviceError(IvrError):
    """No usable local audio device (microphone or speaker)."""


class SipError(IvrError):
    """The SIP endpoint could not start or a SIP operation failed."""


class SynthesisError(IvrError):
    """Speech synthesis failed: unknown voice, bad setting, or the espeak-ng engine misbehaved."""
