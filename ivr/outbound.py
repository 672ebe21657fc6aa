"""Outbound calls for CRMs (``POST /api/calls/outbound``): call a number and run a flow on the call.

The server places the call (through a SIP worker behind the edge, or its own endpoint with ``--edge none``).
Once answered, the call is run exactly as an incoming one: a call session with the named flow, whose
variables get the request's ``variables`` plus ``outbound: true``. The call is recorded at once, while it
rings: ``caller`` is the server (its registered user, else ``ivr``), ``called`` the number called, an
``outbound`` event with the number, flow and retry rule; each try that ends unanswered, and the answered one,
adds an ``outbound_attempt`` event; a call that is never answered ends with outcome ``no_answer``, ``busy`` or
``failed`` (its last try's result) and an ``outbound_result`` event.

Every try holds an admission ticket (:meth:`ivr.sip.admission.Admission.admit_outbound`) while it rings and,
answered, until the call is over, so outbound calls count against the node's ``max_calls`` like incoming ones;
a request made while the node is full is refused (503). An unanswered try is tried again ``retries`` times,
``retry_after`` seconds apart, and a number gets at most ``max_per_number_per_day`` outbound calls a day
(429): the callbacks' rules (:mod:`ivr.redial`).

Where a number goes is the callbacks' rule (:func:`ivr.sip.callbacks.callback_uri`): a SIP URI as is, a plain
number through the registrar when the server registers, else it cannot be routed (400).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ivr.errors import IvrError
from ivr.redial import DAY, OUTBOUND_CALLS_PER_DAY, DailyCounts, RetryPolicy
from ivr.sip.admission import RETRY_AFTER_SECONDS, Verdict
from ivr.sip.callbacks import callback_uri
from ivr.sip.config import SipConfig

log = logging.getLogger("ivr.outbound")

RING_TIMEOUT = 30.0
"""Seconds an outbound call rings before it is given up as ``no_answer``."""
UNANSWERED = ("no_answer", "busy", "failed")
"""Outcomes of outbound calls nobody answered."""
MAX_VARIABLES_CHARS = 8000
MAX_RETRIES = 5
"""At most this many retries per request (so at most 6 tries)."""
RETRY_AFTER = 60.0
"""Seconds between tries when the request gives ``retries`` but no ``retry_after``."""
MIN_RETRY_AFTER = 2.0
MAX_RETRY_AFTER = 3600.0


class OutboundRefused(IvrError):
    """The request cannot be placed: ``status`` 400 (fix the request), 429 (the number had its calls for
    today) or 503 (the server cannot call now; ``retry_after`` seconds is a fair wait)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class OutboundAdmission(Protocol):
    """The node's call admission (``ivr.sip.admission.Admission``)."""

    def admit_outbound(self, call_id: str) -> Verdict: ...

    def release(self, ticket: int) -> bool: ...


class OutboundPlacer(Protocol):
    """Where outbound calls are placed: ``ivr.sip.service.SipService``.

    ``place_outbound`` reports ``on_result(request, result)``: ``no_answer``, ``busy`` or ``failed`` once for a
    try nobody answered; ``answered``, then any result once more when that call is over (``ended``, or
    ``failed`` when its SIP worker was lost)."""

    @property
    def running(self) -> bool: ...

    @property
    def admission(self) -> OutboundAdmission: ...

    def place_outbound(self, request: str, uri: str, caller: str, called: str, ring_timeout: float,
                       on_result: Callable[[str, str], None]) -> None: ...


@dataclass
class OutboundRequest:
    """One outbound call asked for, from the request until its last try is over."""

    call_id: str
    number: str
    uri: str
    flow: str
    variables: dict[str, Any] = field(default_factory=dict)
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    attempt: int = 0
    """Tries started so far (1 for the first)."""
    state: str = "ringing"
    """``ringing``, ``waiting_retry`` (until ``next_attempt_at``), ``answered`` (its flow runs) or ``over``."""
    next_attempt_at: float | None = None
    last_result: str = ""
    ticket: int = 0
    taken: bool = False
    timer: threading.Timer | None = None


class OutboundCalls:
    """Validates, places and retries outbound calls, records them, and hands answered ones their flow and
    variables (``take``).

    ``flows()``: the names of the flows calls can run; ``store``: the call store (``start_call``,
    ``add_event``, ``end_call``, ``get_call``). Results are handled, and tries retried, on a thread of its own
    (never on the SIP thread)."""

    def __init__(self, sip: OutboundPlacer, config: SipConfig | None, flows: Callable[[], list[str]], store: Any,
                 ring_timeout: float = RING_TIMEOUT, clock: Callable[[], float] = time.time,
                 max_per_number_per_day: int = OUTBOUND_CALLS_PER_DAY) -> None:
        self.sip = sip
        self.config = config
        self.flows = flows
        self.store = store
        self.ring_timeout = ring_timeout
        self.clock = clock
        self.max_per_number_per_day = max_per_number_per_day
        self._lock = threading.Lock()
        self._live: dict[str, OutboundRequest] = {}
        self._per_day = DailyCounts(clock)
        self._work = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ivr-outbound")
        self._closed = False

    @property
    def identity(self) -> str:
        """Who the calls come from (the ``caller`` of their records): the registered user, else ``ivr``."""
        registration = self.config.registration if self.config is not None else None
        return registration.username if registration is not None and registration.username else "ivr"

    def place(self, number: Any, flow: Any, variables: Any = None, retries: Any = None,
              retry_after: Any = None) -> OutboundRequest:
        """Check the request, take a ticket, record the call and start dialling (returns at once); raises
        OutboundRefused."""
        names = self.flows()
        if not isinstance(flow, str) or flow not in names:
            raise OutboundRefused(400, f"flow must be one of: {', '.join(names) or '(no flow can run)'}")
        if not isinstance(number, str) or not number.strip():
            raise OutboundRefused(400, "number must be a SIP URI (sip:user@host) or a phone number such as +15550100")
        number = number.strip()
        if variables is None:
            variables = {}
        if not isinstance(variables, dict) or any(not isinstance(k, str) for k in variables):
            raise OutboundRefused(400, "variables must be a JSON object (name → value)")
        if len(repr(variables)) > MAX_VARIABLES_CHARS:
            raise OutboundRefused(400, f"variables must be at most {MAX_VARIABLES_CHARS} characters")
        retry = retry_policy(retries, retry_after)
        uri = callback_uri(number, self.config)
        if uri is None:
            raise OutboundRefused(400, f"cannot route {number!r}: give a SIP URI (sip:user@host), or configure "
                                  "registration so numbers are called through the registrar")
        if not self.sip.running or self._closed:
            raise OutboundRefused(503, "SIP is not running on this server: no outbound call can be placed")
        request = OutboundRequest(f"outbound-{secrets.token_hex(8)}", number, uri, flow, dict(variables), retry)
        with self._lock:
            if not self._per_day.allows(number, self.max_per_number_per_day):
                raise OutboundRefused(429, f"{number} has had its {self.max_per_number_per_day} outbound calls for "
                                      "today; try again tomorrow")
            verdict = self.sip.admission.admit_outbound(request.call_id)
            if not verdict.admitted:
                if verdict.outcome == "rejected_shutdown":
                    raise OutboundRefused(503, "this server is stopping: place the call on another node",
                                          RETRY_AFTER_SECONDS)
                raise OutboundRefused(503, "this server is at its call capacity (max_calls): try again in a "
                                      "moment, or place the call on another node", RETRY_AFTER_SECONDS)
            self._per_day.add(number)
            request.ticket, request.attempt = verdict.ticket, 1
            self._live[request.call_id] = request
        try:
            now = self.clock()
            if self.store is not None:
                self.store.start_call(request.call_id, self.identity, number, flow, now)
                self.store.add_event(request.call_id, now, "outbound",
                                     {"number": number, "uri": uri, "flow": flow, "retries": retry.retries,
                                      "retry_after": retry.retry_after})
        except Exception:
            with self._lock:
                self._live.pop(request.call_id, None)
            self._release(request)
            raise
        self._dial(request)
        return request

    def attach_store(self, store: Any) -> None:
        """Record the calls in ``store`` from now on, and count today's outbound calls already in it against
        the numbers' daily limit (so a restart does not start the count again)."""
        self.store = store
        now = self.clock()
        counts = store.outbound_counts_since(now - now % DAY)
        with self._lock:
            self._per_day.load(counts)

    def take(self, call_id: str) -> OutboundRequest | None:
        """The answered call ``call_id``'s request (once): its flow and variables; None if unknown."""
        with self._lock:
            request = self._live.get(call_id)
            if request is None or request.taken or request.state == "waiting_retry":
                return None
            request.taken = True
            return request

    def status(self, call_id: str) -> dict[str, Any] | None:
        """What the API shows of outbound call ``call_id``: its state, tries and final result (None: no such
        outbound call). Read from the call's record, so it outlives the call and the server."""
        call = self.store.get_call(call_id) if self.store is not None else None
        placed = next((e for e in (call or {}).get("events", []) if e["kind"] == "outbound"), None)
        if call is None or placed is None:
            return None
        data = placed["data"]
        attempts = [{"attempt": e["data"].get("attempt"), "at": e["at"], "result": e["data"].get("result")}
                    for e in call["events"] if e["kind"] == "outbound_attempt"]
        with self._lock:
            live = self._live.get(call_id)
            state = live.state if live is not None else "over"
            next_at = live.next_attempt_at if live is not None and live.state == "waiting_retry" else None
            tries = live.attempt if live is not None else len(attempts)
        if state == "over" and not call.get("ended_at"):
            state = "answered" if call.get("answered_at") else "over"
        return {"call_id": call_id, "number": data.get("number"), "flow": data.get("flow"),
                "retries": data.get("retries", 0), "retry_after": data.get("retry_after"), "state": state,
                "attempts": attempts, "tries": max(tries, len(attempts)), "next_attempt_at": next_at,
                "result": call.get("outcome") if call.get("ended_at") else None}

    def close(self) -> None:
        """Stop retrying: calls waiting for their next try end with their last result."""
        with self._lock:
            self._closed = True
            waiting = [r for r in self._live.values() if r.state == "waiting_retry"]
        for request in waiting:
            if request.timer is not None:
                request.timer.cancel()
            self._work.submit(self._give_up, request)
        self._work.shutdown(wait=True, cancel_futures=False)

    # -- tries (the work thread, except the first) ---------------------------------------------------------

    def _dial(self, request: OutboundRequest) -> None:
        log.info("outbound call %s: calling %s for flow '%s' (try %d of %d)", request.call_id, request.uri,
                 request.flow, request.attempt, request.retry.attempts)
        try:
            self.sip.place_outbound(request.call_id, request.uri, self.identity, request.number, self.ring_timeout,
                                    self._result)
        except Exception:
            log.exception("outbound call %s: cannot place the call to %s", request.call_id, request.uri)
            self._result(request.call_id, "failed")

    def _retry(self, request: OutboundRequest) -> None:
        with self._lock:
            if self._closed or request.state != "waiting_retry":
                return
            verdict = self.sip.admission.admit_outbound(request.call_id)
            request.attempt += 1
            request.next_attempt_at = None
            request.timer = None
            if verdict.admitted:
                request.state, request.ticket = "ringing", verdict.ticket
        if not verdict.admitted:
            log.warning("outbound call %s: try %d not placed: the node is full or stopping", request.call_id,
                        request.attempt)
            self._attempt_over(request, "failed")
            return
        self._dial(request)

    def _result(self, call_id: str, result: str) -> None:
        # On a SIP or pipe thread: hand over to the work thread at once.
        try:
            self._work.submit(self._handle, call_id, result)
        except RuntimeError:  # closed: still give the ticket back
            self._handle(call_id, result)

    def _handle(self, call_id: str, result: str) -> None:
        with self._lock:
            request = self._live.get(call_id)
            if request is None or request.state not in ("ringing", "answered"):
                return
            if request.state == "answered":  # the answered call is over (its session records how)
                self._live.pop(call_id, None)
                request.state = "over"
            elif result == "answered":
                request.state = "answered"
        if request.state == "over":
            self._release(request)
            return
        if result == "answered":
            log.info("outbound call %s answered (try %d)", call_id, request.attempt)
            self._record_event(request, "outbound_attempt", {"attempt": request.attempt, "result": "answered"})
            return
        self._release(request)
        self._attempt_over(request, result if result in UNANSWERED else "failed")

    def _attempt_over(self, request: OutboundRequest, result: str) -> None:
        """A try ended unanswered: try again after ``retry_after``, or give the call up."""
        now = self.clock()
        request.last_result = result
        due = request.retry.next_attempt_at(request.attempt, now)
        with self._lock:
            if self._closed:
                due = None
            if due is not None:
                request.state, request.next_attempt_at = "waiting_retry", due
                request.timer = threading.Timer(max(0.0, due - now), self._schedule_retry, args=(request,))
                request.timer.daemon = True
        log.info("outbound call %s to %s: try %d %s%s", request.call_id, request.uri, request.attempt, result,
                 f"; next try in {due - now:.0f} s" if due is not None else "")
        self._record_event(request, "outbound_attempt", {"attempt": request.attempt, "result": result,
                                                         "next_attempt_at": due})
        if due is None:
            self._give_up(request)
        elif request.timer is not None:
            request.timer.start()

    def _schedule_retry(self, request: OutboundRequest) -> None:
        with contextlib.suppress(RuntimeError):  # closed meanwhile: close gives it up
            self._work.submit(self._retry, request)

    def _give_up(self, request: OutboundRequest) -> None:
        with self._lock:
            self._live.pop(request.call_id, None)
            request.state = "over"
        outcome = request.last_result or "failed"
        log.info("outbound call %s to %s: %s after %d tries", request.call_id, request.uri, outcome, request.attempt)
        if self.store is None:
            return
        try:
            now = self.clock()
            self.store.add_event(request.call_id, now, "outbound_result",
                                 {"result": outcome, "attempts": request.attempt})
            self.store.end_call(request.call_id, now, outcome)
        except Exception:
            log.exception("recording outbound call %s (%s) failed", request.call_id, outcome)

    def _record_event(self, request: OutboundRequest, kind: str, data: dict[str, Any]) -> None:
        if self.store is None:
            return
        try:
            self.store.add_event(request.call_id, self.clock(), kind, data)
        except Exception:
            log.exception("recording outbound call %s (%s) failed", request.call_id, kind)

    def _release(self, request: OutboundRequest) -> None:
        with self._lock:
            ticket, request.ticket = request.ticket, 0
        if ticket:
            self.sip.admission.release(ticket)


def retry_policy(retries: Any, retry_after: Any) -> RetryPolicy:
    """The retry rule a request asks for (``retries`` default 0, ``retry_after`` default RETRY_AFTER);
    raises OutboundRefused (400) saying what to send instead."""
    if retries is None:
        retries = 0
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= MAX_RETRIES:
        raise OutboundRefused(400, f"retries must be a whole number from 0 to {MAX_RETRIES} (tries after the "
                              "first one that nobody answered)")
    if retry_after is None:
        retry_after = RETRY_AFTER
    if (isinstance(retry_after, bool) or not isinstance(retry_after, int | float)
            or not MIN_RETRY_AFTER <= retry_after <= MAX_RETRY_AFTER):
        raise OutboundRefused(400, f"retry_after must be a number of seconds from {MIN_RETRY_AFTER:g} to "
                              f"{MAX_RETRY_AFTER:g} (the wait between tries)")
    return RetryPolicy(retries, float(retry_after))
