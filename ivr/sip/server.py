"""``SipServer``: a pjsua2 user agent that answers calls and hands each one to ``on_call`` as a SipChannel.

Thread model (kept deliberately simple):

- **SIP thread** (``ivr-sip``): creates the pjsua2 Endpoint and is the only thread that calls pjsua2.
  It runs with ``threadCnt = 0`` and polls ``libHandleEvents``, so every SIP callback (incoming call,
  call state, transfer status, registration) also runs here. Other threads ask it to act (hang up,
  transfer) through a command queue; nothing else ever needs ``libRegisterThread``.
- **pjmedia threads** (created by pjlib): the conference clock calls each call's ``CallAudioPort`` every
  20 ms, and RFC 4733 digits arrive on the media worker. Both only touch the channel's buffers.
- **call workers** (``ivr-call-N``): one Python thread per answered call runs ``on_call(channel)``; when it
  returns the call is hung up if still connected. Blocking there is fine.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import pjsua2 as pj

from ivr.errors import SipError
from ivr.sip.admission import RETRY_AFTER_SECONDS, Admission, IncomingCall, Route, Verdict
from ivr.sip.channel import SipChannel, run_call
from ivr.sip.config import PJSUA_MAX_CALLS, RegistrationState, SipConfig
from ivr.sip.media import IDLE_SINK, CallAudioPort
from ivr.sip.probe_guard import ProbeGuard
from ivr.sip.sipmsg import extension_headers, refer_target, request_uri, uri_user

if TYPE_CHECKING:
    from ivr.sip.agents import AgentLegs
    from ivr.sip.callbacks import CallbackCalls

log = logging.getLogger("ivr.sip")
pjsip_log = logging.getLogger("ivr.sip.pjsip")

OnCall = Callable[[SipChannel], None]

# Codec priorities: wideband first so a caller offering G.722 gets it; everything else is disabled so an
# offer with only, say, speex or G.729 is refused with 488.
CODEC_PRIORITIES = {"G722/16000/1": 130, "PCMU/8000/1": 129, "PCMA/8000/1": 128}

SOURCE_HEADER = "X-IVR-Source"
"""Header the edge (Kamailio) adds to INVITEs with the caller's address (trusted only from ``config.edge``)."""

OUTBOUND_HEADER = "X-IVR-Outbound"
"""Set (in the channel's headers, never sent) on calls the server placed itself (``request_outbound``): the
request's id. Stripped from incoming INVITEs, so no caller can pose as one."""

OUTBOUND_RESULTS = ("answered", "no_answer", "busy", "failed", "ended")
"""How an outbound call (``request_outbound``) went; ``answered`` then runs ``on_call`` like any call, and is
followed by ``ended`` when that call is over."""

_BUSY_CODES = frozenset({486, 600, 603})
_NO_ANSWER_CODES = frozenset({408, 480, 487})


def outbound_result(code: int) -> str:
    """How an unanswered outbound INVITE's final status reads (busy/declined, no answer, failed)."""
    if code in _BUSY_CODES:
        return "busy"
    if code in _NO_ANSWER_CODES:
        return "no_answer"
    return "failed"


REJECT_DELAY = 0.1
"""Seconds a refused INVITE waits for its final response (see _on_incoming)."""

OUTCOMES = (
    "completed",
    "transferred",
    "cancelled",
    "failed",
    "rejected_capacity",
    "rejected_forbidden",
    "rejected_unrouted",
    "rejected_shutdown",
    "rejected_duplicate",
    "outbound_unanswered",
)
"""Every outcome counted in ``SipStats.outcomes``."""


@dataclass
class SipStats:
    """Counters for metrics; written on the SIP thread, safe to read from anywhere."""

    active_calls: int = 0
    """Calls ringing or answered right now."""
    outcomes: Counter[str] = field(default_factory=Counter)
    """Finished or rejected calls by outcome (see OUTCOMES)."""
    setup_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    """Time from receiving an INVITE to sending 200 OK, for recent answered calls."""


def contact_uri(contact: str) -> str:
    """The URI of a Contact header value (``"Amy" <sip:amy@10.0.0.9:5062;ob>`` → ``sip:amy@10.0.0.9:5062``;
    the outbound flag dropped, other parameters such as ``transport`` kept)."""
    inner = contact.split("<", 1)[1].split(">", 1)[0] if "<" in contact else contact
    return ";".join(part for part in inner.strip().split(";") if part != "ob")


class CallAdmission(Protocol):
    """Decides on new calls and counts them: ``ivr.sip.admission.Admission``, or a worker's remote one."""

    def admit(self, call: IncomingCall) -> Verdict:
        """A ticket for the call, or the refusal to answer with."""
        ...

    def release(self, ticket: int) -> object:
        """The call holding ``ticket`` is over."""
        ...


@dataclass
class _CallEntry:
    call: _ServerCall | None
    sip_call_id: str
    caller: str
    called: str
    remote: str
    headers: dict[str, str]
    received_at: float
    contact: str = ""
    answered: bool = False
    confirmed: bool = False
    counted: bool = False
    local_hangup: bool = False
    outcome: str = ""
    channel: SipChannel | None = None
    port: CallAudioPort | None = None
    worker: threading.Thread | None = None
    transfer_future: Future[bool] | None = None
    transfer_accepted: bool = False
    ticket: int = 0
    interrupted: bool = False
    """Ended by the server stopping with the call up, not by either party."""
    outbound: Callable[[str, str], None] | None = None
    """A call we placed (``request_outbound``): told (request, result) once, answered or not, and ``ended``
    after ``answered``."""
    outbound_result: str = ""
    """How a call we placed and nobody answered went (reported when it is finished)."""
    ring_timed_out: bool = False


class _LogWriter(pj.LogWriter):
    """Forwards pjsip's log to Python logging (called from any pjlib thread; never blocks)."""

    def write(self, entry: pj.LogEntry) -> None:
        level = logging.ERROR if entry.level <= 1 else logging.WARNING if entry.level == 2 else logging.DEBUG
        pjsip_log.log(level, "%s", entry.msg.rstrip())


class _ServerAccount(pj.Account):
    def __init__(self, server: SipServer) -> None:
        super().__init__()
        self.server = server

    def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
        self.server._guard(self.server._on_incoming, self, prm)

    def onRegState(self, prm: pj.OnRegStateParam) -> None:
        self.server._guard(self.server._on_reg_state, prm)


class _ServerCall(pj.Call):
    def __init__(self, server: SipServer, account: pj.Account, call_id: int) -> None:
        super().__init__(account, call_id)
        self.server = server
        self.entry: _CallEntry | None = None

    def onCallState(self, prm: pj.OnCallStateParam) -> None:
        self.server._guard(self.server._on_call_state, self)

    def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
        self.server._guard(self.server._on_media_state, self)

    def onDtmfDigit(self, prm: pj.OnDtmfDigitParam) -> None:
        # RFC 4733 digits arrive on a media thread, SIP INFO digits on the SIP thread: only buffer them.
        entry = self.entry
        if entry is not None and entry.channel is not None:
            entry.channel.push_dtmf(str(prm.digit))

    def onCallTransferStatus(self, prm: pj.OnCallTransferStatusParam) -> None:
        self.server._guard(self.server._on_transfer_status, self, prm)


class SipServer:
    """One pjsua2 endpoint: answers the calls admission lets in and runs ``on_call(channel)`` for each.

    ``admission`` decides on every new call (default: an ``Admission`` of this endpoint alone, with
    ``route(called_user)`` deciding whether a dialled user exists, False → 404). Other refusals: 403 for
    INVITEs that did not come through ``config.edge`` when one is set, 488 (by pjsua) for offers without
    PCMU, PCMA or G.722. OPTIONS are answered by pjsua (503 once draining). One process holds one endpoint of at most
    ``PJSUA_MAX_CALLS`` calls; ``ivr.sip.service.SipService`` runs more in worker processes.
    """

    def __init__(self, config: SipConfig, on_call: OnCall | None = None, route: Route | None = None,
                 admission: CallAdmission | None = None) -> None:
        config.check()
        if config.max_calls > PJSUA_MAX_CALLS:
            raise SipError(f"one pjsua2 endpoint takes at most {PJSUA_MAX_CALLS} calls (max_calls "
                           f"{config.max_calls}); run more through ivr.sip.service.SipService (ivr serve does)")
        self.config = config
        self.on_call = on_call
        self.admission: CallAdmission = admission or Admission(config, route)
        self.stats = SipStats()
        self.on_outcome: Callable[[str], None] | None = None
        """Called (on the SIP thread) with each call's outcome; keep it quick."""
        self.on_call_finished: Callable[[int, str, str], None] | None = None
        """Called (on the SIP thread) with (admission ticket, SIP Call-ID, outcome) when a call is over."""
        self.port = config.port
        """The SIP port actually bound (differs from config.port when that is 0)."""
        self.registration = RegistrationState()
        self.on_registration: Callable[[int, str, bool], None] | None = None
        """Called (on the SIP thread) with each registration response code and reason."""
        self._commands: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._entries: dict[int, _CallEntry] = {}
        self._by_channel: dict[int, _CallEntry] = {}
        self._graveyard: list[tuple[float, CallAudioPort]] = []
        # Media ports are reused, never freed while pjmedia's clock runs: the clock thread calls every port
        # every 20 ms (idle ones too, until 1 s after the last call) and can enter one whose Python object
        # is being freed, freeing it twice (a segfault later, anywhere). _shutdown_calls stops the clock.
        self._spare_ports: dict[int, list[CallAudioPort]] = {}
        self._workers: list[threading.Thread] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._quit = threading.Event()
        self._stopping = False
        self._ep: pj.Endpoint | None = None
        self._account: _ServerAccount | None = None
        self._log_writer: _LogWriter | None = None
        self._loop_at = time.monotonic()
        self._agent_legs: AgentLegs | None = None
        self._callbacks: CallbackCalls | None = None
        self._probe_guard: ProbeGuard | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Bind the transports and start taking calls; raises SipError if the stack cannot start."""
        if self._thread is not None:
            raise SipError("the SIP server is already running; stop() it before starting again")
        self._thread = threading.Thread(target=self._run, name="ivr-sip", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise SipError(f"the SIP stack did not start within {timeout:.0f} s; check the logs (-vv)")
        if self._start_error is not None:
            self._thread.join(5)
            self._thread = None
            error = self._start_error
            reason = error.info() if isinstance(error, pj.Error) else str(error)
            raise SipError(f"cannot start SIP on {self.config.host}:{self.config.port}: {reason}; "
                           "is the port in use? pick another one")

    def drain(self) -> None:
        """Refuse new calls and answer OPTIONS probes with 503 from now on (an edge's dispatcher then takes this
        endpoint out); calls in progress go on."""
        self._stopping = True

    def stop(self, grace_seconds: float = 0.0) -> None:
        """Drain, let current calls run up to ``grace_seconds``, then hang up and shut down."""
        if self._thread is None:
            return
        self.drain()
        deadline = time.monotonic() + grace_seconds
        while self.stats.active_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        self._quit.set()
        self._thread.join(15)
        self._thread = None
        for worker in self._workers:
            worker.join(2)
        self._workers = [w for w in self._workers if w.is_alive()]

    def __enter__(self) -> SipServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def registration_status(self) -> tuple[int, str]:
        """The registrar's latest answer (code, reason)."""
        return self.registration.status

    def wait_registered(self, timeout: float) -> bool:
        """Block until registered (True) or ``timeout`` seconds passed (False)."""
        return self.registration.wait(timeout)

    @property
    def responsive(self) -> bool:
        """True while the SIP thread keeps turning (a worker's heartbeat reports it)."""
        return self._thread is not None and time.monotonic() - self._loop_at < 2.0

    def call_threads(self) -> list[threading.Thread]:
        """Call worker threads still running (for leak checks)."""
        return [w for w in self._workers if w.is_alive()]

    # -- requests from other threads (CallControl) -------------------------------------------------------------

    def request_hangup(self, channel: SipChannel) -> None:
        """End the call behind ``channel`` (runs on the SIP thread)."""
        self._commands.put(lambda: self._hangup_channel(channel))

    def request_transfer(self, channel: SipChannel, target: str, headers: dict[str, str]) -> Future[bool]:
        """Blind-transfer the call behind ``channel``; the future resolves when the peer answers the REFER."""
        future: Future[bool] = Future()
        if self._thread is None:
            future.set_result(False)
            return future
        self._commands.put(lambda: self._start_transfer(channel, target, headers, future))
        return future

    def request_agent_call(self, channel: SipChannel, request: str, uri: str, headers: dict[str, str],
                           ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        """Ring an agent for the caller behind ``channel`` and bridge them on answer (see ivr.sip.agents)."""
        if self._thread is None:
            on_result(request, "failed")
            return
        self._commands.put(lambda: self._dial_agent(channel, request, uri, headers, ring_timeout, on_result))

    def cancel_agent_call(self, request: str) -> None:
        """Stop ringing, or hang up, the agent leg of ``request_agent_call(request)``."""
        self._commands.put(lambda: self._agent_legs.cancel(request) if self._agent_legs is not None else None)

    def request_callback(self, request: str, customer_uri: str, agent_uri: str, headers: dict[str, str],
                         ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        """Call a customer back and join them to the agent (see ivr.sip.callbacks); results on the SIP thread."""
        if self._thread is None:
            on_result(request, "failed")
            return
        self._commands.put(lambda: self._dial_callback(request, customer_uri, agent_uri, headers, ring_timeout,
                                                       on_result))

    def cancel_callback(self, request: str) -> None:
        """Hang up both legs of ``request_callback(request)``."""
        self._commands.put(lambda: self._callbacks.cancel(request) if self._callbacks is not None else None)

    def request_outbound(self, request: str, uri: str, caller: str, called: str, ring_timeout: float,
                         on_result: Callable[[str, str], None]) -> None:
        """Call ``uri``; once answered the call is run by ``on_call`` like an incoming one, its channel with
        ``call_id`` ``request``, ``caller``/``called`` as given and the header ``X-IVR-Outbound: request``.
        ``on_result(request, result)`` on the SIP thread: a value of OUTBOUND_RESULTS, once, then ``ended`` once
        more after ``answered`` when the call is over (so every placed call is reported as over exactly once)."""
        if self._thread is None:
            on_result(request, "failed")
            return
        self._commands.put(lambda: self._dial_outbound(request, uri, caller, called, ring_timeout, on_result))

    # -- SIP thread --------------------------------------------------------------------------------------------

    def _legs(self) -> AgentLegs:
        from ivr.sip.agents import AgentLegs

        assert self._account is not None
        if self._agent_legs is None:
            self._agent_legs = AgentLegs(
                self._account, self._later, self._guard,
                free_slots=lambda: PJSUA_MAX_CALLS - len(self._entries) - len(self._agent_legs or ()),
            )
        return self._agent_legs

    def _dial_callback(self, request: str, customer_uri: str, agent_uri: str, headers: dict[str, str],
                       ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        from ivr.sip.callbacks import CallbackCalls

        if self._account is None:
            on_result(request, "failed")
            return
        if self._callbacks is None:
            self._callbacks = CallbackCalls(self._legs())
        self._callbacks.start(request, customer_uri, agent_uri, headers, ring_timeout, on_result)

    def _dial_outbound(self, request: str, uri: str, caller: str, called: str, ring_timeout: float,
                       on_result: Callable[[str, str], None]) -> None:
        if self._account is None or self._stopping:
            on_result(request, "failed")
            return
        if PJSUA_MAX_CALLS - len(self._entries) - len(self._agent_legs or ()) <= 0:
            log.warning("outbound call %s to %s: no free call slot in this SIP process", request, uri)
            on_result(request, "failed")
            return
        call = _ServerCall(self, self._account, pj.PJSUA_INVALID_ID)
        entry = _CallEntry(call=call, sip_call_id=request, caller=caller, called=called, remote=uri,
                           headers={OUTBOUND_HEADER: request}, received_at=time.monotonic(), contact=uri,
                           outbound=on_result)
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        try:
            call.makeCall(uri, prm)
        except pj.Error as exc:
            log.warning("outbound call %s to %s failed: %s", request, uri, exc.info())
            on_result(request, "failed")
            return
        call.entry = entry
        self._entries[call.getId()] = entry
        self.stats.active_calls += 1
        log.info("outbound call %s: ringing %s", request, uri)

        def ring_timeout_passed() -> None:
            if not entry.answered and not entry.counted and entry.call is not None:
                entry.ring_timed_out = True
                try:
                    entry.call.hangup(pj.CallOpParam(True))  # CANCEL
                except pj.Error as exc:
                    log.warning("outbound call %s: cancel failed: %s", request, exc.info())

        self._later(ring_timeout, ring_timeout_passed)

    def _dial_agent(self, channel: SipChannel, request: str, uri: str, headers: dict[str, str],
                    ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        entry = self._by_channel.get(id(channel))
        if entry is None or entry.counted or entry.call is None or self._account is None:
            on_result(request, "failed")
            return
        legs = self._legs()

        def caller_audio() -> pj.AudioMedia | None:
            if entry.counted or entry.call is None:
                return None
            try:
                return entry.call.getAudioMedia(-1)
            except pj.Error:
                return None

        legs.dial(request, channel, caller_audio, uri, headers, ring_timeout, on_result,
                              session_port=lambda: entry.port)

    def _run(self) -> None:
        try:
            self._init_stack()
        except Exception as exc:
            self._start_error = exc
            self._teardown_stack()
            self._ready.set()
            return
        self._ready.set()
        ep = self._ep
        assert ep is not None
        try:
            while not self._quit.is_set():
                self._loop_at = time.monotonic()
                self._drain_commands()
                # Poll often while calls are up (commands such as hangup wait for the next turn), rarely idle.
                ep.libHandleEvents(5 if self._entries or self._timers else 50)
                self._fire_timers()
                self._bury()
        finally:
            self._shutdown_calls()
            self._teardown_stack()

    def _init_stack(self) -> None:
        cfg = self.config
        ep = pj.Endpoint()
        self._ep = ep
        ep.libCreate()
        ep_cfg = pj.EpConfig()
        ep_cfg.uaConfig.threadCnt = 0
        ep_cfg.uaConfig.mainThreadOnly = False
        # Calls past pjsua's slots are refused statelessly (486) before any RTP socket is opened.
        ep_cfg.uaConfig.maxCalls = min(cfg.max_calls, PJSUA_MAX_CALLS)
        ep_cfg.uaConfig.userAgent = cfg.user_agent
        ep_cfg.medConfig.noVad = True  # continuous RTP: no silence suppression
        ep_cfg.medConfig.ecTailLen = 0
        ep_cfg.medConfig.clockRate = 16000
        ep_cfg.medConfig.sndClockRate = 16000
        ep_cfg.medConfig.maxMediaPorts = 2 * PJSUA_MAX_CALLS + 8  # a stream port and our port per call
        ep_cfg.medConfig.audioFramePtime = 20
        ep_cfg.medConfig.ptime = 20
        self._log_writer = _LogWriter()
        ep_cfg.logConfig.writer = self._log_writer
        ep_cfg.logConfig.level = cfg.log_level
        ep_cfg.logConfig.consoleLevel = cfg.log_level
        ep_cfg.logConfig.msgLogging = cfg.log_level >= 4
        ep.libInit(ep_cfg)
        self._probe_guard = ProbeGuard(lambda: self._stopping)
        self._probe_guard.install()
        ep.audDevManager().setNullDev()  # the conference clock: a null device ticking every 20 ms
        for codec in ep.codecEnum2():
            ep.codecSetPriority(codec.codecId, CODEC_PRIORITIES.get(codec.codecId, 0))

        transport_ids = []
        port = cfg.port
        for name in cfg.transports:
            tcfg = pj.TransportConfig()
            tcfg.port = cfg.tcp_port if name == "tcp" and cfg.tcp_port else port
            tcfg.boundAddress = cfg.host
            if cfg.public_address:
                tcfg.publicAddress = cfg.public_address
            kind = pj.PJSIP_TRANSPORT_UDP if name == "udp" else pj.PJSIP_TRANSPORT_TCP
            tid = ep.transportCreate(kind, tcfg)
            transport_ids.append(tid)
            if port == 0 and tcfg.port == 0:  # later transports share the port the OS gave the first one
                port = int(ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])
        self.port = port
        ep.libStart()

        acfg = pj.AccountConfig()
        host = cfg.public_address or cfg.host
        reg = cfg.registration
        acfg.idUri = reg.address_of_record() if reg else f"sip:ivr@{host}:{port}"
        if reg is not None:
            acfg.regConfig.registrarUri = reg.registrar
            acfg.regConfig.timeoutSec = reg.expires
            acfg.regConfig.registerOnAdd = True
            acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", reg.realm, reg.username, 0, reg.password))
        if cfg.outbound_proxy:  # agent calls and registration leave through the edge, like the calls came in
            acfg.sipConfig.proxies.append(cfg.outbound_proxy)
        acfg.mediaConfig.transportConfig.port = cfg.rtp_port
        acfg.mediaConfig.transportConfig.portRange = cfg.rtp_port_range
        acfg.mediaConfig.transportConfig.boundAddress = cfg.media_host or cfg.host
        if cfg.public_address:
            acfg.mediaConfig.transportConfig.publicAddress = cfg.public_address
        self._account = _ServerAccount(self)
        self._account.create(acfg, True)
        log.info("SIP listening on %s:%d (%s)", cfg.host, port, ",".join(cfg.transports))


    def _teardown_stack(self) -> None:
        # Every Call and port object must be gone before libDestroy (the clock is stopped: _shutdown_calls).
        self._timers.clear()
        self._graveyard.clear()
        self._spare_ports.clear()
        self._entries.clear()
        self._by_channel.clear()
        if self._agent_legs is not None:
            self._agent_legs.shutdown()
            self._agent_legs = None
        self._callbacks = None
        if self._account is not None:
            with contextlib.suppress(pj.Error):
                self._account.shutdown()
            self._account = None
        if self._ep is not None:
            try:
                self._ep.libDestroy()
            except pj.Error as exc:
                log.warning("pjsua2 shutdown: %s", exc.info())
            self._ep = None

    def _shutdown_calls(self) -> None:
        ep = self._ep
        if ep is None:
            return
        if self._entries or self._agent_legs:
            for entry in self._entries.values():
                entry.interrupted = True
            ep.hangupAllCalls()
            deadline = time.monotonic() + 3.0
            while (self._entries or self._agent_legs) and time.monotonic() < deadline:
                ep.libHandleEvents(10)
                self._drain_commands()
            for entry in list(self._entries.values()):  # calls the peer never confirmed ending
                self._finish(entry, by_caller=False)
        self._drain_commands()
        with contextlib.suppress(pj.Error):  # no port may be freed while the clock runs (see _spare_ports)
            ep.audDevManager().setNoDev()

    def _guard(self, fn: Callable[..., None], *args: object) -> None:
        # A Python exception must not unwind into pjsua2's C++ callback machinery.
        try:
            fn(*args)
        except Exception:
            log.exception("error in SIP callback %s", getattr(fn, "__name__", fn))

    def _drain_commands(self) -> None:
        while True:
            try:
                command = self._commands.get_nowait()
            except queue.Empty:
                return
            self._guard(command)

    def _later(self, delay: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), fn))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, fn = heapq.heappop(self._timers)
            self._guard(fn)

    def _bury(self) -> None:
        # A call's media port rests a moment after its call ended, then waits for the next call at its rate.
        if self._graveyard:
            now = time.monotonic()
            for _, port in (item for item in self._graveyard if item[0] <= now):
                self._spare_ports.setdefault(port.sample_rate, []).append(port)
            self._graveyard = [item for item in self._graveyard if item[0] > now]

    # -- callbacks (SIP thread) -------------------------------------------------------------------------

    def _on_incoming(self, account: pj.Account, prm: pj.OnIncomingCallParam) -> None:
        started = time.monotonic()
        call = _ServerCall(self, account, prm.callId)
        info = call.getInfo()
        message = prm.rdata.wholeMsg
        called = uri_user(request_uri(message)) or uri_user(info.localUri)
        headers = extension_headers(message)
        sender = str(prm.rdata.srcAddress)
        claimed = headers.pop(SOURCE_HEADER, "")
        headers.pop(OUTBOUND_HEADER, None)  # only calls we placed carry it
        entry = _CallEntry(
            call=call,
            sip_call_id=info.callIdString,
            caller=uri_user(info.remoteUri),
            called=called,
            remote=claimed if self.config.edge and claimed else sender,
            headers=headers,
            received_at=started,
            contact=contact_uri(info.remoteContact),
        )
        call.entry = entry
        self._entries[info.id] = entry
        self.stats.active_calls += 1

        if self._stopping:
            verdict = Verdict(code=503, outcome="rejected_shutdown")
        elif self.config.edge and not self.config.is_edge(sender):
            # Behind an edge, an INVITE from anywhere else went around its allow-list and rate limits.
            verdict = Verdict(code=403, outcome="rejected_forbidden")
        else:
            verdict = self.admission.admit(IncomingCall(entry.sip_call_id, entry.caller, called, entry.remote))
        entry.ticket = verdict.ticket
        if not verdict.admitted:
            entry.outcome = verdict.outcome
            log.info("rejecting call %s from %s to %r: %d %s", entry.sip_call_id, entry.remote, called,
                     verdict.code, entry.outcome)
            # pjsua has already opened RTP sockets for this call, and closed sockets stay reserved in the
            # ioqueue (64 handles) for 500 ms. Holding the call slot briefly before refusing bounds how
            # fast a flood can churn sockets; meanwhile further INVITEs get pjsua's stateless 486.
            self._later(REJECT_DELAY, lambda: self._reject(entry, verdict.code))
            return
        log.info("incoming call %s from %s (%s) to %r", entry.sip_call_id, entry.caller, entry.remote, called)
        if self.config.ring_seconds > 0:
            self._reply(call, 180)
            self._later(self.config.ring_seconds, lambda: self._answer(entry))
        else:
            self._answer(entry)

    def _reject(self, entry: _CallEntry, code: int) -> None:
        if not entry.counted and entry.call is not None:
            self._reply(entry.call, code)

    def _reply(self, call: pj.Call, code: int) -> None:
        prm = pj.CallOpParam()
        prm.statusCode = code
        if code == 503:
            header = pj.SipHeader()
            header.hName = "Retry-After"
            header.hValue = str(RETRY_AFTER_SECONDS)
            prm.txOption.headers.append(header)
        if code >= 300:
            call.hangup(prm)
        else:
            call.answer(prm)

    def _answer(self, entry: _CallEntry) -> None:
        if entry.counted or entry.call is None:  # cancelled while ringing
            return
        self._reply(entry.call, 200)
        entry.answered = True
        self.stats.setup_ms.append((time.monotonic() - entry.received_at) * 1000.0)

    def _on_call_state(self, call: _ServerCall) -> None:
        entry = call.entry
        if entry is None:
            return
        info = call.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            if entry.outbound is not None and not entry.answered:
                result = "no_answer" if entry.ring_timed_out else outbound_result(int(info.lastStatusCode))
                entry.outcome = entry.outcome or "outbound_unanswered"
                entry.outbound_result = result
                log.info("outbound call %s: %s (%d)", entry.sip_call_id, result, int(info.lastStatusCode))
            if not entry.outcome:
                if not entry.answered:
                    entry.outcome = "cancelled" if info.lastStatusCode in (487, 0) else "failed"
                elif entry.transfer_accepted:
                    entry.outcome = "transferred"
                elif entry.channel is None:
                    entry.outcome = "failed"
                else:
                    entry.outcome = "completed"
            self._finish(entry, by_caller=not entry.local_hangup)
        elif info.state == pj.PJSIP_INV_STATE_CONFIRMED and not entry.confirmed:
            entry.confirmed = True
            if entry.outbound is not None and not entry.answered:
                entry.answered = True
                log.info("outbound call %s answered", entry.sip_call_id)
                self._guard(entry.outbound, entry.sip_call_id, "answered")
            self._maybe_start_worker(entry)

    def _finish(self, entry: _CallEntry, by_caller: bool) -> None:
        if entry.counted:
            return
        entry.counted = True
        # Drop the Call object now: pjsua2 allows deleting it in its DISCONNECTED callback, and a Call
        # deleted later would hang up whichever new call has meanwhile reused its slot id (603).
        if entry.call is not None:
            entry.call.entry = None
            entry.call = None
        self._entries = {k: v for k, v in self._entries.items() if v is not entry}
        if entry.channel is not None:
            self._by_channel.pop(id(entry.channel), None)
            entry.channel.mark_ended(by_caller=by_caller and not entry.interrupted, interrupted=entry.interrupted)
            if self._agent_legs is not None:
                self._agent_legs.caller_ended(entry.channel)
        if entry.transfer_future is not None and not entry.transfer_future.done():
            entry.transfer_future.set_result(False)
        outcome = entry.outcome or "failed"
        self.admission.release(entry.ticket)
        if entry.outbound is not None:  # the one report that a placed call is over, however it ended
            self._guard(entry.outbound, entry.sip_call_id,
                        "ended" if entry.answered else entry.outbound_result or "failed")
        self.stats.active_calls -= 1
        self.stats.outcomes[outcome] += 1
        log.info("call %s ended: %s", entry.sip_call_id, outcome)
        if self.on_outcome is not None:
            self._guard(self.on_outcome, outcome)
        if self.on_call_finished is not None:
            self._guard(self.on_call_finished, entry.ticket, entry.sip_call_id, outcome)
        if entry.port is not None:
            entry.port.sink = IDLE_SINK
            entry.port.connected_slot = -1
            self._graveyard.append((time.monotonic() + 0.5, entry.port))
        entry.port = None

    def _on_media_state(self, call: _ServerCall) -> None:
        entry = call.entry
        if entry is None:
            return
        info = call.getInfo()
        for index, media in enumerate(info.media):
            if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status not in (
                pj.PJSUA_CALL_MEDIA_ACTIVE,
                pj.PJSUA_CALL_MEDIA_REMOTE_HOLD,
            ):
                continue
            audio = call.getAudioMedia(index)
            if entry.port is None:
                stream = call.getStreamInfo(index)
                rate = 16000 if stream.codecClockRate >= 16000 else 8000
                codec = f"{stream.codecName}/{stream.codecClockRate}"
                entry.channel = SipChannel(
                    self,
                    call_id=entry.sip_call_id,
                    caller=entry.caller,
                    called=entry.called,
                    sample_rate=rate,
                    codec=codec,
                    remote=entry.remote,
                    headers=entry.headers,
                    transfer_timeout=self.config.transfer_timeout,
                    contact=entry.contact,
                )
                self._by_channel[id(entry.channel)] = entry
                spares = self._spare_ports.get(rate)
                if spares:
                    entry.port = spares.pop()
                    entry.port.sink = entry.channel
                else:
                    entry.port = CallAudioPort(entry.channel, rate)
                    entry.port.create(f"ivr-{id(entry.port):x}")
                log.info("call %s media up: %s", entry.sip_call_id, codec)
                self._maybe_start_worker(entry)
            port = entry.port
            slot = audio.getPortId()
            if port.connected_slot != slot:  # first time, or a re-INVITE moved the stream
                port.startTransmit(audio)
                audio.startTransmit(port)
                port.connected_slot = slot
                if self._agent_legs is not None and entry.channel is not None:
                    self._agent_legs.caller_media_changed(entry.channel)
            break

    def _maybe_start_worker(self, entry: _CallEntry) -> None:
        # The flow starts once the caller acknowledged the answer (ACK) and media is up, so the caller's
        # side is listening when the first prompt frame goes out.
        channel = entry.channel
        if channel is None or not entry.confirmed or entry.worker is not None:
            return
        worker = threading.Thread(target=self._run_call, args=(channel,), name=f"ivr-call-{channel.call_id}",
                                  daemon=True)
        self._workers = [w for w in self._workers if w.is_alive()]
        self._workers.append(worker)
        entry.worker = worker
        worker.start()

    def _run_call(self, channel: SipChannel) -> None:
        if self.on_call is not None:
            run_call(self.on_call, channel)

    def _hangup_channel(self, channel: SipChannel) -> None:
        entry = self._by_channel.get(id(channel))
        if entry is None or entry.counted or entry.call is None:
            return
        entry.local_hangup = True
        try:
            entry.call.hangup(pj.CallOpParam())
        except pj.Error as exc:
            log.warning("call %s: hangup failed: %s", entry.sip_call_id, exc.info())
            self._finish(entry, by_caller=False)

    def _start_transfer(self, channel: SipChannel, target: str, headers: dict[str, str],
                        future: Future[bool]) -> None:
        entry = self._by_channel.get(id(channel))
        if entry is None or entry.counted or entry.call is None or entry.transfer_future is not None:
            future.set_result(False)
            return
        prm = pj.CallOpParam(True)
        for name, value in headers.items():
            header = pj.SipHeader()
            header.hName = name
            header.hValue = value
            prm.txOption.headers.append(header)
        try:
            entry.call.xfer(refer_target(target, headers), prm)
        except pj.Error as exc:
            log.warning("call %s: REFER to %s failed: %s", entry.sip_call_id, target, exc.info())
            future.set_result(False)
            return
        entry.transfer_future = future
        log.info("call %s: REFER to %s sent", entry.sip_call_id, target)

        def give_up() -> None:
            if not future.done():
                future.set_result(False)

        self._later(self.config.transfer_timeout, give_up)

    def _on_transfer_status(self, call: _ServerCall, prm: pj.OnCallTransferStatusParam) -> None:
        entry = call.entry
        if entry is None or entry.transfer_future is None:
            return
        code = int(prm.statusCode)
        future = entry.transfer_future
        if not future.done():
            accepted = 100 <= code < 300  # 202 to the REFER, or a NOTIFY saying the transferee is trying
            if accepted or code >= 300:
                future.set_result(accepted)
                entry.transfer_accepted = accepted
                if accepted:
                    # Blind transfer: we leave once the peer reports the outcome, or soon anyway.
                    self._later(3.0, lambda: self._hangup_if_live(entry))
        if prm.finalNotify and entry.transfer_accepted:
            prm.cont = False
            self._later(0.0, lambda: self._hangup_if_live(entry))

    def _hangup_if_live(self, entry: _CallEntry) -> None:
        if not entry.counted and entry.channel is not None:
            self._hangup_channel(entry.channel)

    def _on_reg_state(self, prm: pj.OnRegStateParam) -> None:
        registered = 200 <= prm.code < 300 and prm.expiration > 0
        self.registration.record(int(prm.code), str(prm.reason), registered)
        if self.on_registration is not None:
            self._guard(self.on_registration, int(prm.code), str(prm.reason), registered)
