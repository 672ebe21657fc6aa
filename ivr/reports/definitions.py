"""What counts as what: the outcomes a call ends with and the thresholds of each figure (docs/reports.md)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

TRANSFER_OUTCOMES = frozenset({"transferred", "transfer", "transfer_failed", "voicemail"})
"""Outcomes of a call the bot handed, or tried to hand, to a person (voicemail follows a failed transfer or a
queue's overflow)."""

NOT_SERVED_OUTCOMES = frozenset({
    "caller_hangup",  # the caller hung up while the bot was still talking or asking (a menu hang-up)
    "abandoned",  # hung up waiting in a queue
    "interrupted",  # the line or the server was lost
    "error",  # the flow failed and no fallback queue took the call
    "fallback",  # the flow gave up and sent the caller to its fallback queue
    "no_match",  # a flow's own "not understood" ending
    "no_input",
    "no_answer",  # an outbound call (POST /api/calls/outbound) nobody answered
    "busy",
    "failed",
})  # fmt: skip
"""Outcomes that never count as contained, on top of :data:`TRANSFER_OUTCOMES`. Any other outcome is a flow's
own ending (``completed``, or the ``reason`` of a ``hangup`` node)."""

OPEN_ENTRY_STATES = ("waiting", "offering", "connected", "callback", "calling_back")


@dataclass(frozen=True)
class ReportOptions:
    """Thresholds of the figures. ``wrap_up`` gives each queue's after-call work in seconds (queues.yaml's
    ``wrap_up``); queues it does not name use ``default_wrap_up``."""

    service_level_seconds: float = 20.0
    short_abandon_seconds: float = 5.0
    fcr_days: float = 7.0
    wrap_up: Mapping[str, float] = field(default_factory=dict)
    default_wrap_up: float = 0.0
    not_served_outcomes: frozenset[str] = NOT_SERVED_OUTCOMES
    top: int = 10
    examples: int = 3

    def __hash__(self) -> int:
        return hash((self.service_level_seconds, self.short_abandon_seconds, self.fcr_days,
                     tuple(sorted(self.wrap_up.items())), self.default_wrap_up, self.not_served_outcomes,
                     self.top, self.examples))  # fmt: skip

    def key(self) -> str:
        """A stable digest of the options (the same in every process), for stored figures."""
        text = json.dumps([self.service_level_seconds, self.short_abandon_seconds, self.fcr_days,
                           sorted(self.wrap_up.items()), self.default_wrap_up, sorted(self.not_served_outcomes)])
        return hashlib.sha256(text.encode()).hexdigest()[:32]

    @classmethod
    def from_queues(cls, queues: object | None, **overrides: object) -> ReportOptions:
        """Options with the service level and wrap-up times of an ``AcdConfig`` (None: the defaults)."""
        from ivr.queue.config import AcdConfig

        values: dict[str, object] = {}
        if isinstance(queues, AcdConfig):
            values["service_level_seconds"] = queues.service_level_seconds
            values["wrap_up"] = {name: q.wrap_up for name, q in queues.queues.items()}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
