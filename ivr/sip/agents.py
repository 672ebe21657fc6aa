"""Ringing human agents over SIP: the ACD's :class:`~ivr.queue.connector.AgentConnector` for real calls.

Two connection modes, chosen per queue:

- **bridged**: the process that holds the caller's call places an outbound INVITE to the agent's URI with
  the offer's ``X-IVR-*`` context headers, rings it for the ring timeout (then CANCELs: no answer), and
  when the agent answers joins the two legs' audio in that process's conference bridge. When the caller
  hangs up, the agent leg is hung up too; when the agent hangs up, the caller stays on the line and the
  leg's result turns ``agent_left`` (the call session hears ``AgentLeft`` and goes on with the flow, a
  survey, or hangs up).
  Behind the edge the caller's call lives in a worker process: the server forwards the
  request there, so both legs always share one conference bridge.
- **refer**: a blind REFER of the caller's call to the agent's URI with the headers (``SipChannel.transfer``).

The pjsua2 wheel has 4 call slots per process and an agent leg takes one. When the caller's process has
no slot left, a bridged offer falls back to a blind REFER (logged), rather than failing the agent.

Threads: :class:`AgentLegs` lives on a SipServer's SIP thread (the only one touching pjsua2).
:class:`SipAgentConnector` is called by the ACD under its lock; it only queues requests, and hands every
result to its own reporter thread, so ``report`` never runs under a lock that ``offer``/``cancel`` take.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import pjsua2 as pj

from ivr.queue.connector import Offer, OfferResult, ReportOffer

if TYPE_CHECKING:
    from ivr.sip.channel import SipChannel

log = logging.getLogger("ivr.sip.agents")

LegResult = Callable[[str, str], None]
"""``on_result(request, result)``: result is an OfferResult value, or ``no_slot`` (no free call slot)."""

NO_SLOT = "no_slot"
AGENT_LEFT = "agent_left"
"""The leg's second result, after ``answered``: the agent hung up, the caller is still connected."""

_REJECTED_CODES = frozenset({403, 486, 600, 603})
_NO_ANSWER_CODES = frozenset({408, 480, 487})


def result_for_status(code: int) -> OfferResult:
    """How an unanswered agent INVITE's final status reads for the ACD (busy/decline, no answer, failure)."""
    if code in _REJECTED_CODES:
        return OfferResult.REJECTED
    if code in _NO_ANSWER_CODES:
        return OfferResult.NO_ANSWER
    return OfferResult.FAILED


# ------------------------------------------------------------------------------------ SIP thread (pjsua2)


class _AgentCall(pj.Call):
    def __init__(self, legs: AgentLegs, account: pj.Account) -> None:
        super().__init__(account)
        self.legs = legs
        self.leg: _Leg | None = None

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self.legs.guard(self.legs.on_state, self)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.legs.guard(self.legs.on_media, self)


class LegOwner(Protocol):
    """The call a leg belongs to (a caller's ``SipChannel``, or a callback's stand-in)."""

    call_id: str

    @property
    def connected(self) -> bool: ...

    def stop_playback(self) -> None: ...


@dataclass(eq=False)
class _Leg:
    request: str
    channel: LegOwner
    uri: str
    on_result: LegResult
    caller_audio: Callable[[], pj.AudioMedia | None]
    call: _AgentCall | None = None
    answered: bool = False
    bridged: bool = False
    reported: bool = False
    ending: str = ""  # why we hung up the agent leg: timeout, cancel, caller, lost, busy
    agent_audio: pj.AudioMedia | None = None
    joined_caller: pj.AudioMedia | None = None
    session_port: Callable[[], pj.AudioMedia | None] | None = None
    """The caller's session port: hears the agent too, so a recorded call holds both sides."""
    report_hangup: bool = False
    """Report ``agent_left`` when the answered far end hangs up, bridged or not (a callback's customer leg)."""


class AgentLegs:
    """Outbound agent calls of one pjsua2 process and their bridges to callers' calls (SIP thread only)."""

    def __init__(self, account: pj.Account, later: Callable[[float, Callable[[], None]], None],
                 guard: Callable[..., None], free_slots: Callable[[], int]) -> None:
        self.account = account
        self.later = later
        self.guard = guard
        self.free_slots = free_slots
        self._legs: dict[str, _Leg] = {}

    def __len__(self) -> int:
        return len(self._legs)

    def dial(self, request: str, channel: LegOwner, caller_audio: Callable[[], pj.AudioMedia | None],
             uri: str, headers: dict[str, str], ring_timeout: float, on_result: LegResult,
             session_port: Callable[[], pj.AudioMedia | None] | None = None, *, report_hangup: bool = False) -> None:
        """Ring ``uri`` with ``headers`` for the caller behind ``channel``; ``on_result`` once with how the
        offer went, and once more with ``agent_left`` if the agent answered and hangs up first (this thread).
        ``session_port``: the caller's media port, which then also hears the agent (call recording);
        ``report_hangup``: report ``agent_left`` when the answered far end hangs up even if not bridged."""
        if request in self._legs:
            return
        if self.free_slots() <= 0:
            on_result(request, NO_SLOT)
            return
        leg = _Leg(request, channel, uri, on_result, caller_audio, session_port=session_port,
                   report_hangup=report_hangup)
        call = _AgentCall(self, self.account)
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        for name, value in headers.items():
            header = pj.SipHeader()
            header.hName = name
            header.hValue = value
            prm.txOption.headers.append(header)
        try:
            call.makeCall(uri, prm)
        except pj.Error as exc:
            reason = str(exc.info())
            log.warning("agent call %s to %s failed: %s", request, uri, reason)
            on_result(request, NO_SLOT if "too many" in reason.lower() else OfferResult.FAILED.value)
            return
        call.leg = leg
        leg.call = call
        self._legs[request] = leg
        log.info("agent call %s: ringing %s", request, uri)
        self.later(ring_timeout, lambda: self._ring_timeout(leg))

    def cancel(self, request: str) -> None:
        """The ACD withdrew the offer: stop ringing (or drop a leg answered too late); no report."""
        leg = self._legs.get(request)
        if leg is not None and not leg.ending:
            leg.reported = True
            self._hangup(leg, "cancel")

    def far_audio(self, request: str) -> pj.AudioMedia | None:
        """The answered far end's audio of leg ``request`` (to join two outbound legs: a callback)."""
        leg = self._legs.get(request)
        return leg.agent_audio if leg is not None and leg.answered and not leg.ending else None

    def caller_ended(self, channel: LegOwner) -> None:
        """The caller's call is over: hang up every agent leg of it."""
        for leg in list(self._legs.values()):
            if leg.channel is channel and not leg.ending:
                leg.reported = True  # the session abandons the queue entry or finishes the call itself
                self._hangup(leg, "caller")

    def caller_media_changed(self, channel: SipChannel) -> None:
        """A re-INVITE moved the caller's stream to another bridge slot: join the agent to the new one."""
        for leg in self._legs.values():
            if leg.channel is channel and leg.bridged:
                leg.bridged = False
                self._bridge(leg)

    def shutdown(self) -> None:
        """Forget every leg (the endpoint is being destroyed; calls were hung up already)."""
        for leg in self._legs.values():
            if leg.call is not None:
                leg.call.leg = None
            leg.call = None
        self._legs.clear()

    # -- pjsua2 callbacks ----------------------------------------------------------------------------------

    def on_state(self, call: _AgentCall) -> None:
        leg = call.leg
        if leg is None:
            return
        info = call.getInfo()
        if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not leg.answered:
            leg.answered = True
            self._answered(leg)
        elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._disconnected(leg, int(info.lastStatusCode))

    def on_media(self, call: _AgentCall) -> None:
        leg = call.leg
        if leg is None:
            return
        info = call.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status in (pj.PJSUA_CALL_MEDIA_ACTIVE,
                                                                         pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                audio = call.getAudioMedia(index)
                if leg.bridged and leg.agent_audio is not None and audio.getPortId() != leg.agent_audio.getPortId():
                    leg.bridged = False  # a re-INVITE moved the agent's stream: join the new one
                leg.agent_audio = audio
                self._bridge(leg)
                return

    # -- internals -----------------------------------------------------------------------------------------

    def _report(self, leg: _Leg, result: OfferResult) -> None:
        if not leg.reported:
            leg.reported = True
            leg.on_result(leg.request, result.value)

    def _answered(self, leg: _Leg) -> None:
        log.info("agent call %s: %s answered", leg.request, leg.uri)
        if leg.ending:
            return
        if not leg.channel.connected:
            self._report(leg, OfferResult.FAILED)
            self._hangup(leg, "lost")
            return
        if any(other.bridged and other.channel is leg.channel for other in self._legs.values()):
            # ring-all: someone else took this caller first; the ACD drops this late answer
            self._report(leg, OfferResult.ANSWERED)
            self._hangup(leg, "cancel")
            return
        self._bridge(leg)
        self._report(leg, OfferResult.ANSWERED)

    def _bridge(self, leg: _Leg) -> None:
        if leg.bridged or not leg.answered or leg.ending or leg.agent_audio is None:
            return
        caller = leg.caller_audio()
        if caller is None:
            return
        leg.channel.stop_playback()  # no more hold music under the agent's voice
        caller.startTransmit(leg.agent_audio)
        leg.agent_audio.startTransmit(caller)
        port = leg.session_port() if leg.session_port is not None else None
        if port is not None:  # the session hears caller and agent mixed (what a call recording keeps)
            leg.agent_audio.startTransmit(port)
        leg.joined_caller = caller
        leg.bridged = True
        log.info("agent call %s: caller %s joined with %s", leg.request, leg.channel.call_id, leg.uri)

    def _ring_timeout(self, leg: _Leg) -> None:
        if leg.answered or leg.ending or self._legs.get(leg.request) is not leg:
            return
        self._report(leg, OfferResult.NO_ANSWER)
        self._hangup(leg, "timeout")

    def _hangup(self, leg: _Leg, why: str) -> None:
        leg.ending = why
        call = leg.call
        if call is None:
            return
        try:
            call.hangup(pj.CallOpParam(True))  # CANCEL while ringing, BYE once answered
        except pj.Error as exc:
            log.warning("agent call %s: hangup failed: %s", leg.request, exc.info())

    def _disconnected(self, leg: _Leg, code: int) -> None:
        # Drop the Call now: pjsua2 allows it in the DISCONNECTED callback, and a Call deleted later could
        # hang up a new call that reused its slot.
        if leg.call is not None:
            leg.call.leg = None
            leg.call = None
        self._legs.pop(leg.request, None)
        if leg.answered:
            log.info("agent call %s ended (%s)", leg.request, leg.ending or "agent hung up")
            if (leg.bridged or leg.report_hangup) and not leg.ending:  # the agent hung up: the caller stays
                leg.bridged = False
                leg.on_result(leg.request, AGENT_LEFT)
            return
        result = result_for_status(code)
        log.info("agent call %s: %s not answered (%d, %s)", leg.request, leg.uri, code, result.value)
        self._report(leg, result)


# ----------------------------------------------------------------------------------------- the connector


class AgentDialingChannel(Protocol):
    """What the connector needs of a caller's channel (``ivr.sip.channel.SipChannel`` has it)."""

    call_id: str

    @property
    def connected(self) -> bool: ...

    def transfer(self, target: str, headers: dict[str, str]) -> bool: ...

    def dial_agent(self, request: str, uri: str, headers: dict[str, str], ring_timeout: float,
                   on_result: LegResult) -> None: ...

    def cancel_agent(self, request: str) -> None: ...

    def agent_left(self) -> None: ...


class SipAgentConnector:
    """Offers waiting callers to agents over SIP: bridged (an agent leg joined to the caller) or REFER.

    ``attach(call_id, channel)`` makes a caller reachable while it waits; ``detach`` when the call ends.
    """

    def __init__(self, sip: Any = None, *, refer_workers: int = 4) -> None:
        self.sip = sip
        """The SipServer whose calls are offered (informational: requests go through each call's channel)."""
        self._channels: dict[str, AgentDialingChannel] = {}
        self._pending: dict[str, tuple[Offer, ReportOffer, AgentDialingChannel]] = {}  # ringing, not reported
        self._legs: dict[str, AgentDialingChannel] = {}  # every agent leg asked for, until its call ends
        self._lock = threading.Lock()
        self._reports: queue.SimpleQueue[tuple[ReportOffer, str, OfferResult] | None] = queue.SimpleQueue()
        self._reporter: threading.Thread | None = None
        self._refers = ThreadPoolExecutor(max_workers=refer_workers, thread_name_prefix="ivr-agent-refer")

    # -- calls ----------------------------------------------------------------------------------------------

    def attach(self, call_id: str, channel: AgentDialingChannel) -> None:
        """Make a call reachable for offers while its caller waits in a queue."""
        with self._lock:
            self._channels[call_id] = channel

    def detach(self, call_id: str) -> None:
        """The call ended."""
        with self._lock:
            channel = self._channels.pop(call_id, None)
            self._legs = {k: c for k, c in self._legs.items() if c is not channel}

    # -- AgentConnector --------------------------------------------------------------------------------------

    def offer(self, offer: Offer, report: ReportOffer) -> None:
        """Start ringing the agent (returns at once); the outcome reaches ``report`` from the reporter thread."""
        with self._lock:
            channel = self._channels.get(offer.call_id)
            if channel is not None and offer.mode != "refer":
                self._pending[offer.offer_id] = (offer, report, channel)
                self._legs[offer.offer_id] = channel
        if channel is None or not channel.connected:
            log.warning("offer %s: call %s is not connected here", offer.offer_id, offer.call_id)
            self._post(report, offer.offer_id, OfferResult.FAILED)
            return
        if offer.mode == "refer":
            self._refer(offer, report, channel)
            return
        try:
            channel.dial_agent(offer.offer_id, offer.uri, dict(offer.headers), offer.ring_timeout, self._leg_result)
        except Exception:
            log.exception("offer %s: cannot call agent %s", offer.offer_id, offer.uri)
            self._leg_result(offer.offer_id, OfferResult.FAILED.value)

    def cancel(self, offer_id: str) -> None:
        """Stop ringing (ring timeout, another agent answered, the caller hung up, the agent logged out)."""
        with self._lock:
            self._pending.pop(offer_id, None)
            channel = self._legs.pop(offer_id, None)
        if channel is not None:  # also drops a leg whose answer crossed the ACD's ring timeout
            channel.cancel_agent(offer_id)

    def close(self) -> None:
        """Stop the reporter thread and the REFER workers."""
        self._reports.put(None)
        self._refers.shutdown(wait=False, cancel_futures=True)

    # -- internals ---------------------------------------------------------------------------------------------

    def _leg_result(self, request: str, result: str) -> None:
        # Runs on the SIP thread (or a pool link's reader): never call the ACD from here.
        if result == AGENT_LEFT:
            with self._lock:
                channel = self._legs.pop(request, None)
            if channel is not None:
                channel.agent_left()
            return
        with self._lock:
            pending = self._pending.pop(request, None)
            if result != OfferResult.ANSWERED.value:
                self._legs.pop(request, None)
        if pending is None:
            return  # cancelled meanwhile: the ACD needs no report
        offer, report, channel = pending
        if result == NO_SLOT:
            log.warning("offer %s: no free call slot for a bridged agent leg in the caller's SIP process; "
                        "transferring by blind REFER instead (raise max_calls for a pool)", request)
            self._refer(offer, report, channel)
            return
        self._post(report, request, OfferResult(result))

    def _refer(self, offer: Offer, report: ReportOffer, channel: AgentDialingChannel) -> None:
        def run() -> None:
            try:
                accepted = channel.transfer(offer.uri, dict(offer.headers))
            except Exception:
                log.exception("REFER of call %s to %s failed", offer.call_id, offer.uri)
                accepted = False
            self._post(report, offer.offer_id, OfferResult.ANSWERED if accepted else OfferResult.FAILED)

        self._refers.submit(run)

    def _post(self, report: ReportOffer, offer_id: str, result: OfferResult) -> None:
        with self._lock:
            if self._reporter is None or not self._reporter.is_alive():
                self._reporter = threading.Thread(target=self._report_loop, name="ivr-agent-reports", daemon=True)
                self._reporter.start()
        self._reports.put((report, offer_id, result))

    def _report_loop(self) -> None:
        while True:
            item = self._reports.get()
            if item is None:
                return
            report, offer_id, result = item
            try:
                report(offer_id, result)
            except Exception:
                log.exception("reporting offer %s (%s) failed", offer_id, result.value)
