"""Call admission: the one place that decides whether a new call may start, and counts the calls up.

Calls the node places itself (``POST /api/calls/outbound``) take their ticket here too (``admit_outbound``),
so they count against the same capacity.

Every INVITE that reaches a pjsua2 endpoint (in this process, or in any worker process of the node) is
asked about here before it is answered. A decision takes a *ticket* for an admitted call; the ticket is
given back exactly once when that call ends, or for all of a worker's calls when the worker dies. Calls are
counted by ticket, never by Call-ID, so a retransmission or a second INVITE reusing a live Call-ID cannot
free or take a slot of another call.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass

from ivr.sip.config import SipConfig

Route = Callable[[str], bool]
"""``route(called_user)``: whether a dialled number reaches a flow that can run (False → 404)."""

RETRY_AFTER_SECONDS = 5
"""Sent with every 503, so well-behaved callers and carriers back off instead of retrying at once."""


@dataclass(frozen=True)
class IncomingCall:
    """What admission needs to know about a new INVITE."""

    call_id: str
    caller: str
    called: str
    source: str
    """The caller's address (``ip:port``), as the edge saw it."""


@dataclass(frozen=True)
class Verdict:
    """Admission's answer: a ticket (code 0) or a SIP refusal with the outcome it is counted as."""

    ticket: int = 0
    code: int = 0
    outcome: str = ""

    @property
    def admitted(self) -> bool:
        """True when the call may be answered."""
        return self.code == 0


class Admission:
    """Counts the calls of a node and refuses those it may not take (thread-safe).

    Refusals: 503 while stopping, 403 for sources outside ``allow_from``, 404 for numbers ``route``
    rejects, 482 for a second INVITE with the Call-ID of a call in progress, 503 beyond ``max_calls``.
    ``config.max_calls`` and ``config.allow_from`` are read for every call, so they can change at run time.
    """

    def __init__(self, config: SipConfig, route: Route | None = None) -> None:
        self.config = config
        self.route = route
        self.stopping = False
        self._lock = threading.Lock()
        self._tickets: dict[int, tuple[str, object]] = {}  # ticket -> (Call-ID, owner)
        self._numbers = itertools.count(1)

    @property
    def active_calls(self) -> int:
        """Admitted calls not yet released."""
        with self._lock:
            return len(self._tickets)

    def admit(self, call: IncomingCall, owner: object = None) -> Verdict:
        """Decide on a new call; an admitted call holds a ticket until ``release``."""
        if self.stopping:
            return Verdict(code=503, outcome="rejected_shutdown")
        if not self.config.is_allowed(call.source):
            return Verdict(code=403, outcome="rejected_forbidden")
        if self.route is not None and not self.route(call.called):
            return Verdict(code=404, outcome="rejected_unrouted")
        return self._take_ticket(call.call_id, owner)

    def admit_outbound(self, call_id: str) -> Verdict:
        """A ticket for a call the node places itself (``ivr.outbound``), counted against the same
        ``max_calls`` as incoming calls: 503 while stopping or when the node is full."""
        if self.stopping:
            return Verdict(code=503, outcome="rejected_shutdown")
        return self._take_ticket(call_id, None)

    def _take_ticket(self, call_id: str, owner: object) -> Verdict:
        """A ticket for ``call_id``, unless a call with that id holds one (482) or the node is full (503)."""
        with self._lock:
            if any(held == call_id for held, _ in self._tickets.values()):
                return Verdict(code=482, outcome="rejected_duplicate")
            if len(self._tickets) >= self.config.max_calls:
                return Verdict(code=503, outcome="rejected_capacity")
            ticket = next(self._numbers)
            self._tickets[ticket] = (call_id, owner)
        return Verdict(ticket=ticket)

    def release(self, ticket: int) -> bool:
        """The call holding ``ticket`` is over; False if the ticket was not held (0, or released before)."""
        with self._lock:
            return self._tickets.pop(ticket, None) is not None

    def release_owner(self, owner: object) -> list[str]:
        """Release every ticket of ``owner`` (a worker that died); returns their Call-IDs."""
        with self._lock:
            mine = [t for t, (_, o) in self._tickets.items() if o is owner]
            return [self._tickets.pop(t)[0] for t in mine]
