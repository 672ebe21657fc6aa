"""Outbound calls for CRMs (``POST /api/calls/outbound``): call a number and run a flow on the call.

The server places the call (through a SIP worker behind the edge, or its own endpoint with ``--edge none``).
Once answered, the call is run exactly as an incoming one: a call session with the named flow, whose
variables get the request's ``variables`` plus ``outbound: true``. The call is recorded at once, while it
rings: ``caller`` is the server (its registered user, else ``ivr``), ``called`` the number called, an
``outbound`` event with the number and flow; a call that is not answered ends with outcome ``no_answer``,
``busy`` or ``failed``.

Where a number goes is the callbacks' rule (:func:`ivr.sip.callbacks.callback_uri`): a SIP URI as is, a plain
number through the registrar when the server registers, else it cannot be routed (400).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ivr.errors import IvrError
from ivr.sip.callbacks import callback_uri
from ivr.sip.config import SipConfig

log = logging.getLogger("ivr.outbound")

RING_TIMEOUT = 30.0
"""Seconds an outbound call rings before it is given up as ``no_answer``."""
UNANSWERED = ("no_answer", "busy", "failed")
"""Outcomes of outbound calls nobody answered."""
MAX_VARIABLES_CHARS = 8000


class OutboundRefused(IvrError):
    """The request cannot be placed: ``status`` 400 (fix the request) or 503 (the server cannot call now)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class OutboundPlacer(Protocol):
    """Where outbound calls are placed: ``ivr.sip.service.SipService``."""

    @property
    def running(self) -> bool: ...

    def place_outbound(self, request: str, uri: str, caller: str, called: str, ring_timeout: float,
                       on_result: Callable[[str, str], None]) -> None: ...


@dataclass
class OutboundRequest:
    """One outbound call asked for, until its call is answered (then the session takes it) or given up."""

    call_id: str
    number: str
    uri: str
    flow: str
    variables: dict[str, Any] = field(default_factory=dict)


class OutboundCalls:
    """Validates and places outbound calls, records them, and hands answered ones their flow and variables.

    ``flows()``: the names of the flows calls can run; ``store``: the call store (``start_call``,
    ``add_event``, ``end_call``)."""

    def __init__(self, sip: OutboundPlacer, config: SipConfig | None, flows: Callable[[], list[str]], store: Any,
                 ring_timeout: float = RING_TIMEOUT, clock: Callable[[], float] = time.time) -> None:
        self.sip = sip
        self.config = config
        self.flows = flows
        self.store = store
        self.ring_timeout = ring_timeout
        self.clock = clock
        self._lock = threading.Lock()
        self._pending: dict[str, OutboundRequest] = {}

    @property
    def identity(self) -> str:
        """Who the calls come from (the ``caller`` of their records): the registered user, else ``ivr``."""
        registration = self.config.registration if self.config is not None else None
        return registration.username if registration is not None and registration.username else "ivr"

    def place(self, number: Any, flow: Any, variables: Any = None) -> OutboundRequest:
        """Check the request, record the call and start dialling (returns at once); raises OutboundRefused."""
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
        uri = callback_uri(number, self.config)
        if uri is None:
            raise OutboundRefused(400, f"cannot route {number!r}: give a SIP URI (sip:user@host), or configure "
                                  "registration so numbers are called through the registrar")
        if not self.sip.running:
            raise OutboundRefused(503, "SIP is not running on this server: no outbound call can be placed")
        request = OutboundRequest(f"outbound-{secrets.token_hex(8)}", number, uri, flow, dict(variables))
        now = self.clock()
        if self.store is not None:
            self.store.start_call(request.call_id, self.identity, number, flow, now)
            self.store.add_event(request.call_id, now, "outbound", {"number": number, "uri": uri, "flow": flow})
        with self._lock:
            self._pending[request.call_id] = request
        log.info("outbound call %s: calling %s for flow '%s'", request.call_id, uri, flow)
        try:
            self.sip.place_outbound(request.call_id, uri, self.identity, number, self.ring_timeout, self._result)
        except Exception:
            log.exception("outbound call %s: cannot place the call to %s", request.call_id, uri)
            self._result(request.call_id, "failed")
        return request

    def take(self, call_id: str) -> OutboundRequest | None:
        """The answered call ``call_id``'s request (once): its flow and variables; None if unknown."""
        with self._lock:
            return self._pending.pop(call_id, None)

    def _result(self, call_id: str, result: str) -> None:
        # On a SIP or pipe thread: keep it short. ``answered``: the call session records the rest.
        if result == "answered":
            return
        with self._lock:
            request = self._pending.pop(call_id, None)
        if request is None:
            return
        outcome = result if result in UNANSWERED else "failed"
        log.info("outbound call %s to %s: %s", call_id, request.uri, outcome)
        if self.store is not None:  # not on the SIP thread: a store write may wait
            threading.Thread(target=self._record_end, args=(call_id, outcome), name="ivr-outbound-result",
                             daemon=True).start()

    def _record_end(self, call_id: str, outcome: str) -> None:
        try:
            now = self.clock()
            self.store.add_event(call_id, now, "outbound_result", {"result": outcome})
            self.store.end_call(call_id, now, outcome)
        except Exception:
            log.exception("recording outbound call %s (%s) failed", call_id, outcome)
