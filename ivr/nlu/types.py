"""What intent detection returns, shared by the classifier and the flow engine."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class IntentMatch:
    """The top intent (None when below the threshold: a no-match), its confidence and the runners-up."""

    intent: str | None
    confidence: float
    ranked: tuple[tuple[str, float], ...] = field(default_factory=tuple)


class IntentClassifier(Protocol):
    """Built once per flow from its intents' examples; classify is called per caller turn."""

    def classify(self, text: str) -> IntentMatch:
        """Classify one utterance (already transcribed)."""
        ...
