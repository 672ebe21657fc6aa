"""Per-server settings of call handling, and what a finished call reports back."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ivr.store.sealed_audio import AudioVault


@dataclass
class SessionConfig:
    """Per-server settings of call handling."""

    fallback_queue: str = "support"
    recordings_dir: str = "var/recordings"
    vault: AudioVault | None = None
    """Where recordings and voicemail are sealed under the data key (``ivr serve`` sets it from the store);
    None: messages are plain private WAV files in ``recordings_dir`` (replays) and calls are not recorded."""
    max_call_seconds: float = 3600.0
    goodbye_drain_seconds: float = 30.0
    comfort_noise_after: float = 1.0
    """Seconds of waiting on recognition without a filler prompt before soft comfort noise plays."""
    speculate_after: float = 0.15
    """A pause this long starts recognising speculatively (on a live call, while the pause goes on)."""
    early_silence_phrase: float = 0.2
    """A pause this long after speech that already spells one of the prompt's grammar phrases ends the turn
    (before the full end-of-speech silence)."""
    early_silence_sentence: float = 0.3
    """A pause this long after free speech that the recognizer closes as a sentence (., ?, !) ends the
    turn. Longer than for phrases: people pause mid-sentence ("Yes, … that's right")."""
    context_url: Callable[[str], str] | None = None
    """Makes the signed ``X-IVR-Context-Url`` link for a call id (None: no link is sent)."""
    speculate_max_backlog: int = 2
    """On a live call, no speculative recognition starts while this many recognitions (or other jobs) are
    already queued or running: under load the extra passes would delay everyone's final results."""


@dataclass
class CallResult:
    """How a call ended and what the bot learned."""

    call_id: str
    outcome: str
    context: dict[str, Any] = field(default_factory=dict)
    transfer_target: str | None = None
    turn_latencies: list[float] = field(default_factory=list)
