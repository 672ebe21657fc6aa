"""Callbacks (virtual hold): the boundary between the ACD and whoever places the call back.

A caller who chose a callback keeps their place as a callback entry. When its turn comes the ACD reserves
an agent and hands a :class:`CallbackAttempt` to a :class:`CallbackDialer`, which calls the customer,
then rings the reserved agent and joins them (``ivr.sip.callbacks`` over SIP, a fake in tests). The
dialer reports how the attempt went, then once more with :data:`ENDED` when the joined call is over.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

ANSWERED = "answered"
"""The customer and the agent answered and are joined."""
NO_ANSWER = "no_answer"
REJECTED = "rejected"
"""The customer was busy or declined."""
FAILED = "failed"
"""The customer could not be reached (bad number, no route, no free call slot)."""
AGENT_MISSED = "agent_missed"
"""The customer answered but the reserved agent did not (the customer heard an apology)."""
ENDED = "ended"
"""Second report after ``answered``: the joined call is over (either side hung up)."""

RESULTS = (ANSWERED, NO_ANSWER, REJECTED, FAILED, AGENT_MISSED, ENDED)

CallbackReport = Callable[[str, str], None]
"""``report(attempt_id, result)``: result is one of :data:`RESULTS` (any thread)."""


@dataclass(frozen=True)
class CallbackAttempt:
    """One try at calling a customer back and joining them to the reserved agent."""

    attempt_id: str
    call_id: str
    """The original call's id (the callback's records stay with it)."""
    queue: str
    number: str
    """The customer: a SIP URI, or a number/user the dialer routes (through the registrar)."""
    agent: str
    agent_uri: str
    ring_timeout: float
    """Seconds to ring the customer, and then the agent."""
    attempt: int
    """1 for the first try."""
    headers: Mapping[str, str] = field(default_factory=dict)
    """The context headers the agent's phone gets, as with a normal offer."""


class CallbackDialer(Protocol):
    """Places callbacks. ``call_back`` must return at once; results come through ``report`` (any thread,
    never while holding a lock that ``call_back`` or ``cancel`` take)."""

    def call_back(self, attempt: CallbackAttempt, report: CallbackReport) -> None:
        """Call ``attempt.number``; on answer ring ``attempt.agent_uri`` and join them; report the outcome."""
        ...

    def cancel(self, attempt_id: str) -> None:
        """Give the attempt up (hang up both legs); no report needed after."""
        ...
