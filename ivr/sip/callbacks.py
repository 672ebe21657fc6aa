"""Calling customers back over SIP: the ACD's :class:`~ivr.queue.callbacks.CallbackDialer` for real calls.

A callback is two outbound legs of one pjsua2 process, both placed with :class:`~ivr.sip.agents.AgentLegs`
(the code that rings agents for waiting callers): first the customer; once they answer, the reserved
agent with the context headers; when the agent answers the two legs are joined in that process's
conference bridge. Either side hanging up ends the other. Behind the edge the callback runs in a worker
process (``DialCallback`` on its pipe); with ``--edge none`` in the server's own endpoint.

Where a callback goes: a SIP URI as is; a plain number through the registrar when the server registers
(``sip:NUMBER@registrar-host``), else it cannot be routed (the attempt fails, said in the log).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import pjsua2 as pj

from ivr.queue import callbacks as cb
from ivr.queue.callbacks import CallbackAttempt, CallbackReport
from ivr.queue.connector import OfferResult
from ivr.sip.agents import AGENT_LEFT, NO_SLOT, AgentLegs
from ivr.sip.config import SipConfig

log = logging.getLogger("ivr.sip.callbacks")

LegResult = Callable[[str, str], None]


# ------------------------------------------------------------------------------------ SIP thread (pjsua2)


@dataclass(eq=False)
class _Callback:
    """One callback in progress: its stand-in 'call' for AgentLegs, and how far it got."""

    call_id: str
    request: str
    agent_uri: str
    headers: dict[str, str]
    ring_timeout: float
    on_result: LegResult
    customer_audio: pj.AudioMedia | None = None
    customer_answered: bool = False
    agent_answered: bool = False
    done: bool = False

    @property
    def connected(self) -> bool:
        return not self.done

    def stop_playback(self) -> None:
        """Nothing plays on a callback (AgentLegs asks before joining a caller to an agent)."""


class CallbackCalls:
    """The callbacks of one pjsua2 process (SIP thread only)."""

    def __init__(self, legs: AgentLegs) -> None:
        self.legs = legs
        self._calls: dict[str, _Callback] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def start(self, request: str, customer_uri: str, agent_uri: str, headers: dict[str, str],
              ring_timeout: float, on_result: LegResult) -> None:
        """Call the customer; on answer ring the agent and join them. ``on_result(request, result)`` with a
        :mod:`ivr.queue.callbacks` result, then ``ended`` after ``answered``."""
        call = _Callback(headers.get("X-IVR-Call-Id", request), request, agent_uri, headers, ring_timeout,
                         on_result)
        self._calls[request] = call
        log.info("callback %s: calling %s", request, customer_uri)
        self.legs.dial(f"{request}~customer", call, lambda: None, customer_uri, {}, ring_timeout,
                       lambda _leg, result: self._customer(call, result), report_hangup=True)

    def cancel(self, request: str) -> None:
        """Give the callback up: hang up both legs (no report)."""
        call = self._calls.pop(request, None)
        if call is not None:
            call.done = True
            self.legs.cancel(f"{request}~customer")
            self.legs.cancel(f"{request}~agent")

    def _customer(self, call: _Callback, result: str) -> None:
        if call.done:
            return
        if result == OfferResult.ANSWERED.value:
            call.customer_answered = True
            log.info("callback %s: the customer answered; ringing %s", call.request, call.agent_uri)
            self.legs.dial(f"{call.request}~agent", call, lambda: self.legs.far_audio(f"{call.request}~customer"),
                           call.agent_uri, call.headers, call.ring_timeout,
                           lambda _leg, result: self._agent(call, result))
        elif result == AGENT_LEFT:  # the customer hung up
            self._end(call, cb.ENDED if call.agent_answered else cb.NO_ANSWER)
        else:
            self._end(call, cb.FAILED if result == NO_SLOT else result)

    def _agent(self, call: _Callback, result: str) -> None:
        if call.done:
            return
        if result == OfferResult.ANSWERED.value:
            call.agent_answered = True
            call.on_result(call.request, cb.ANSWERED)
        elif result == AGENT_LEFT:
            self._end(call, cb.ENDED)
        else:
            self._end(call, cb.AGENT_MISSED)

    def _end(self, call: _Callback, result: str) -> None:
        log.info("callback %s: %s", call.request, result)
        self.cancel(call.request)
        call.on_result(call.request, result)


# ----------------------------------------------------------------------------------------- the dialer


class CallbackPlacer(Protocol):
    """Where callbacks are placed: ``ivr.sip.service.SipService`` (a worker, or its own endpoint)."""

    def place_callback(self, request: str, customer_uri: str, agent_uri: str, headers: dict[str, str],
                       ring_timeout: float, on_result: LegResult) -> None: ...

    def cancel_callback(self, request: str) -> None: ...


def callback_uri(number: str, config: SipConfig | None) -> str | None:
    """The SIP URI that reaches ``number``: itself when it is one, through the registrar when the server
    registers, else None."""
    if number.startswith(("sip:", "sips:")):
        return number
    user = number.removeprefix("tel:").strip()
    if not user:
        return None
    registration = config.registration if config is not None else None
    if registration is None:
        return None
    host = registration.registrar.split(":", 1)[1].split(";", 1)[0]
    return f"sip:{user}@{host}"


class SipCallbackDialer:
    """Places the ACD's callbacks through ``sip``; reports from a thread of its own (never under a lock
    the SIP side holds)."""

    def __init__(self, sip: CallbackPlacer, config: SipConfig | None = None) -> None:
        self.sip = sip
        self.config = config
        self._reports: queue.SimpleQueue[tuple[CallbackReport, str, str] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._live: dict[str, CallbackReport] = {}
        self._reporter = threading.Thread(target=self._report_loop, name="ivr-callback-reports", daemon=True)
        self._reporter.start()

    def call_back(self, attempt: CallbackAttempt, report: CallbackReport) -> None:
        """Start the attempt (returns at once)."""
        uri = callback_uri(attempt.number, self.config)
        if uri is None:
            log.error("callback %s: cannot route %r: give a SIP URI, or configure registration so numbers "
                      "are called through the registrar", attempt.attempt_id, attempt.number)
            self._reports.put((report, attempt.attempt_id, cb.FAILED))
            return
        with self._lock:
            self._live[attempt.attempt_id] = report
        try:
            self.sip.place_callback(attempt.attempt_id, uri, attempt.agent_uri, dict(attempt.headers),
                                    attempt.ring_timeout, self._result)
        except Exception:
            log.exception("callback %s: cannot place the call to %s", attempt.attempt_id, uri)
            self._result(attempt.attempt_id, cb.FAILED)

    def cancel(self, attempt_id: str) -> None:
        """Hang up the attempt's legs."""
        with self._lock:
            self._live.pop(attempt_id, None)
        self.sip.cancel_callback(attempt_id)

    def close(self) -> None:
        """Stop the reporter thread."""
        self._reports.put(None)

    def _result(self, attempt_id: str, result: str) -> None:
        with self._lock:
            report = self._live.get(attempt_id) if result == cb.ANSWERED else self._live.pop(attempt_id, None)
        if report is not None:
            self._reports.put((report, attempt_id, result if result in cb.RESULTS else cb.FAILED))

    def _report_loop(self) -> None:
        while (item := self._reports.get()) is not None:
            report, attempt_id, result = item
            try:
                report(attempt_id, result)
            except Exception:
                log.exception("reporting callback %s (%s) failed", attempt_id, result)
