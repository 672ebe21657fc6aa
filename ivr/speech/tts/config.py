"""Settings of a synthesizer: which voice speaks, how fast, at what pitch and volume."""

from __future__ import annotations

from dataclasses import dataclass

from ivr.errors import SynthesisError

MIN_SPEED, MAX_SPEED = 80, 450  # words per minute espeak-ng can render
DEFAULT_SPEED = 165  # a little slower than espeak's 175: easier to follow over the phone


@dataclass(frozen=True)
class SynthesizerConfig:
    """How prompts are spoken.

    ``voice`` is an espeak-ng voice (``en-us``, ``gmw/en-gb-x-rp``, ``English (America)``), optionally with a
    variant (``en-us+f3``); when it is not set, the best voice for ``language`` (``en-US``, ``de``…) speaks.
    ``speed`` is in words per minute, ``pitch`` 0–99 (50 normal), ``volume`` 0.0–2.0 (1.0 normal).
    """

    voice: str | None = None
    language: str = "en-us"
    speed: int = DEFAULT_SPEED
    pitch: int = 50
    volume: float = 1.0

    def __post_init__(self) -> None:
        problems = []
        if not MIN_SPEED <= self.speed <= MAX_SPEED:
            problems.append(f"speed {self.speed} words/minute is out of range; use {MIN_SPEED}–{MAX_SPEED}")
        if not 0 <= self.pitch <= 99:
            problems.append(f"pitch {self.pitch} is out of range; use 0–99 (50 is normal)")
        if not 0.0 <= self.volume <= 2.0:
            problems.append(f"volume {self.volume} is out of range; use 0.0–2.0 (1.0 is normal)")
        if not (self.voice or self.language).strip():
            problems.append("neither a voice nor a language is set; set e.g. language='en-us'")
        if problems:
            raise SynthesisError("; ".join(problems))

    @property
    def voice_request(self) -> str:
        """What to look up among espeak-ng's voices: the voice if set, else the language."""
        return (self.voice or self.language).strip()
