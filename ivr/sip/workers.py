"""pjsua2 worker processes of a node: started, watched, replaced; their calls run here as channels.

The pjsua2 wheel is compiled with PJSUA_MAX_CALLS = 4 and pjsua allows one endpoint per process, so a
node runs ``ceil(max_calls / 4)`` workers (``ivr.sip.worker``), each an endpoint on its own port where the
edge sends calls. Every answered call comes back into this process as a ``RemoteSipChannel``, so
``on_call`` runs here with the shared speech models, and every INVITE is admitted here (one count).

A worker that exits, or stops sending its heartbeat, is killed and replaced at once: its calls end as
interrupted (their sessions stop, records close), its admission tickets are released, and ``on_change``
tells the edge which workers are up so it stops routing to the dead one until the new one is ready.
Calls on other workers are untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import logging
import math
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

from ivr.errors import SipError
from ivr.queue.connector import OfferResult
from ivr.sip import wire
from ivr.sip.admission import Admission
from ivr.sip.channel import SipChannel, run_call
from ivr.sip.config import PJSUA_MAX_CALLS, SipConfig
from ivr.sip.server import SipStats

log = logging.getLogger("ivr.sip.workers")

HEARTBEAT_TIMEOUT = 3.0
"""Seconds without any message from a worker before it is taken for hung, killed and replaced."""
START_TIMEOUT = 20.0


def workers_needed(max_calls: int) -> int:
    """Worker processes for ``max_calls`` concurrent calls."""
    return max(1, math.ceil(max_calls / PJSUA_MAX_CALLS))


@dataclass(frozen=True)
class WorkerAddress:
    """Where a ready worker takes SIP (what the edge's dispatcher set lists)."""

    index: int
    host: str
    port: int

    @property
    def uri(self) -> str:
        """The worker as a SIP URI."""
        return f"sip:{self.host}:{self.port}"


_LIBC = ctypes.CDLL(None, use_errno=True)


def die_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` for children of the server: the kernel sends them ``sig`` when the server dies (Linux;
    the signal follows the *thread* that started the child, so start children from long-lived threads)."""

    def arm() -> None:
        _LIBC.prctl(1, sig)  # PR_SET_PDEATHSIG

    return arm


class RemoteSipChannel(SipChannel):
    """A SipChannel whose call lives in a worker process: prompt audio is shipped there as it is queued."""

    def __init__(self, link: WorkerLink, started: wire.CallStarted, transfer_timeout: float) -> None:
        super().__init__(link, call_id=started.call_id, caller=started.caller, called=started.called,
                         sample_rate=started.sample_rate, codec=started.codec, remote=started.remote,
                         headers=started.headers, transfer_timeout=transfer_timeout, contact=started.contact)
        self.key = started.key
        self._link = link
        self._seq = 0
        self._unacked: list[tuple[int, int]] = []  # (seq, bytes) of plays the worker has not reported yet
        self._reported_pending = 0
        self._reported_seq = 0
        self._state_lock = threading.Lock()

    def play(self, pcm: bytes) -> None:
        """Queue PCM16 audio (sent to the worker at once; it paces it out as RTP)."""
        if len(pcm) % 2:
            pcm = pcm[:-1]
        if not pcm or not self.connected:
            return
        with self._state_lock:
            self._seq += 1
            self._unacked.append((self._seq, len(pcm)))
            seq = self._seq
        self._link.pipe.send(wire.Play(self.key, seq, pcm))

    def stop_playback(self) -> None:
        """Drop queued prompt audio here and in the worker."""
        with self._state_lock:
            self._seq += 1
            self._unacked.clear()
            self._reported_pending = 0
            self._reported_seq = self._seq
            seq = self._seq
        self._link.pipe.send(wire.StopPlayback(self.key, seq))

    def playback_pending(self) -> float:
        """Seconds of prompt audio not yet sent to the caller (worker's last report plus plays in flight)."""
        with self._state_lock:
            pending = self._reported_pending + sum(n for _, n in self._unacked)
        return pending / 2 / self.sample_rate

    def worker_report(self, seq: int, pending_bytes: int) -> None:
        """The worker applied everything up to ``seq`` and has ``pending_bytes`` queued."""
        with self._state_lock:
            if seq < self._reported_seq:
                return  # from before a stop_playback
            self._reported_seq = seq
            self._reported_pending = pending_bytes
            self._unacked = [(s, n) for s, n in self._unacked if s > seq]


class WorkerLink:
    """The server's end of one worker: its process, pipe, and the calls it carries (CallControl for them)."""

    def __init__(self, pool: WorkerPool, index: int, config: SipConfig) -> None:
        self.pool = pool
        self.index = index
        self.config = config
        # A plain child interpreter (not multiprocessing's spawn, which would re-import the parent's
        # __main__), talking over a socketpair wrapped as a multiprocessing Connection.
        parent_sock, child_sock = socket.socketpair()
        # stdout is dropped: pjlib prints a banner there before its logging is set up (logs go to stderr).
        self.process = subprocess.Popen([sys.executable, "-m", "ivr.sip.worker", str(child_sock.fileno())],
                                        pass_fds=[child_sock.fileno()], preexec_fn=die_with_parent(),
                                        stdout=subprocess.DEVNULL)
        child_sock.close()
        self.pipe = wire.server_end(Connection(parent_sock.detach()))
        self.started_at = time.monotonic()
        self.last_seen = self.started_at
        self.port = 0
        self.ready = threading.Event()
        self.error = ""
        self.gone = False
        """The pipe closed or the worker was taken down: nothing more comes from it."""
        self.lost_calls: list[str] = []
        """Call-IDs of the calls that were up when the worker was lost."""
        self.channels: dict[int, RemoteSipChannel] = {}
        self.transfers: dict[int, Future[bool]] = {}
        self.agent_calls: dict[str, tuple[int, Callable[[str, str], None]]] = {}  # request → (call key, result)
        self.outbound_calls: dict[str, Callable[[str, str], None]] = {}  # outbound calls not over: request → result
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.pipe.send(wire.Setup(config))
        if pool.draining:  # a replacement started while the node stops
            self.pipe.send(wire.Drain())
        self.reader = threading.Thread(target=self._read, name=f"ivr-sip-worker-{index}", daemon=True)
        self.reader.start()

    @property
    def address(self) -> WorkerAddress:
        """Where this worker takes SIP."""
        return WorkerAddress(self.index, self.config.host, self.port)

    # -- CallControl for RemoteSipChannel -------------------------------------------------------------------

    def request_hangup(self, channel: SipChannel) -> None:
        """Hang up the call in the worker."""
        self.pipe.send(wire.HangUp(_key(channel)))

    def request_transfer(self, channel: SipChannel, target: str, headers: dict[str, str]) -> Future[bool]:
        """REFER the call in the worker."""
        future: Future[bool] = Future()
        request = next(self._ids)
        with self._lock:
            if self.gone:
                future.set_result(False)
                return future
            self.transfers[request] = future
        self.pipe.send(wire.Transfer(_key(channel), request, target, dict(headers)))
        return future

    def request_agent_call(self, channel: SipChannel, request: str, uri: str, headers: dict[str, str],
                           ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        """Ring the agent from the worker holding the caller, so both legs share its conference bridge."""
        with self._lock:
            if self.gone:
                on_result(request, "failed")
                return
            self.agent_calls[request] = (_key(channel), on_result)
        self.pipe.send(wire.DialAgent(_key(channel), request, uri, dict(headers), ring_timeout))

    def request_callback(self, request: str, customer_uri: str, agent_uri: str, headers: dict[str, str],
                         ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        """Call a customer back from this worker and join them to the agent there."""
        with self._lock:
            if self.gone:
                on_result(request, "failed")
                return
            self.agent_calls[request] = (0, on_result)  # key 0: no caller's call ends it
        self.pipe.send(wire.DialCallback(request, customer_uri, agent_uri, dict(headers), ring_timeout))

    def cancel_callback(self, request: str) -> None:
        """Hang up a callback's legs."""
        with self._lock:
            self.agent_calls.pop(request, None)
        self.pipe.send(wire.CancelCallback(request))

    def request_outbound(self, request: str, uri: str, caller: str, called: str, ring_timeout: float,
                         on_result: Callable[[str, str], None]) -> None:
        """Place an outbound call from this worker; answered, it comes back as a call like any other."""
        with self._lock:
            if self.gone:
                on_result(request, "failed")
                return
            self.outbound_calls[request] = on_result
        if not self.pipe.send(wire.DialOutbound(request, uri, caller, called, ring_timeout)):
            with self._lock:
                self.outbound_calls.pop(request, None)
            on_result(request, "failed")

    def cancel_agent_call(self, request: str) -> None:
        """Stop ringing (or hang up) an agent leg."""
        with self._lock:
            self.agent_calls.pop(request, None)
        self.pipe.send(wire.CancelAgent(request))

    # -- reading ------------------------------------------------------------------------------------------------

    def _read(self) -> None:
        while True:
            try:
                message = self.pipe.receive()
            except (EOFError, OSError):
                break
            except wire.WireError:
                log.exception("SIP worker %d sent a message this server cannot read", self.index)
                continue
            self.last_seen = time.monotonic()
            try:
                self._dispatch(message)
            except Exception:
                log.exception("SIP worker %d: handling %s failed", self.index, type(message).__name__)
        self.take_down()

    def _dispatch(self, message: wire.FromWorker) -> None:
        if isinstance(message, wire.Frames):
            for audio in message.calls:
                channel = self.channels.get(audio.key)
                if channel is not None:
                    channel.worker_report(audio.seq, audio.pending_bytes)
                    for pcm in audio.frames:
                        channel.push_inbound(pcm)
        elif isinstance(message, wire.AdmitRequest):
            verdict = self.pool.admission.admit(message.call, owner=self)
            if not self.pipe.send(wire.AdmitReply(message.request, verdict)):
                self.pool.admission.release(verdict.ticket)
            self.pool.stats.active_calls = self.pool.admission.active_calls
        elif isinstance(message, wire.Dtmf):
            channel = self.channels.get(message.key)
            if channel is not None:
                channel.push_dtmf(message.digit)
        elif isinstance(message, wire.CallStarted):
            if message.setup_ms is not None:
                self.pool.stats.setup_ms.append(message.setup_ms)
            channel = RemoteSipChannel(self, message, self.config.transfer_timeout)
            self.channels[message.key] = channel
            self.pool.start_call(channel)
        elif isinstance(message, wire.CallEnded):
            ended = self.channels.pop(message.key, None)
            with self._lock:  # its agent legs end with it
                self.agent_calls = {r: leg for r, leg in self.agent_calls.items() if leg[0] != message.key}
            if ended is not None:
                ended.mark_ended(by_caller=message.by_caller)
        elif isinstance(message, wire.CallFinished):
            self.pool.call_finished(message.ticket, message.outcome)
        elif isinstance(message, wire.AgentResult):
            with self._lock:  # an answered leg reports once more if the agent hangs up first (agent_left)
                answered = message.result == OfferResult.ANSWERED.value
                leg = (self.agent_calls.get if answered else self.agent_calls.pop)(message.request, None)
            if leg is not None:
                leg[1](message.request, message.result)
        elif isinstance(message, wire.OutboundResult):
            with self._lock:  # an answered call reports once more (ended) when it is over
                answered = message.result == "answered"
                outbound = (self.outbound_calls.get if answered else self.outbound_calls.pop)(message.request, None)
            if outbound is not None:
                outbound(message.request, message.result)
        elif isinstance(message, wire.TransferResult):
            with self._lock:
                future = self.transfers.pop(message.request, None)
            if future is not None and not future.done():
                future.set_result(message.accepted)
        elif isinstance(message, wire.Registration):
            self.pool.registration(message)
        elif isinstance(message, wire.Ready):
            self.port = message.port
            self.ready.set()
            self.pool.worker_ready(self)
        elif isinstance(message, wire.StartFailed):
            self.error = message.error
            self.ready.set()

    def take_down(self) -> None:
        """The worker is gone (or being killed): end its calls as interrupted, release their tickets."""
        with self._lock:
            if self.gone:
                return
            self.gone = True
            channels, self.channels = list(self.channels.values()), {}
            transfers, self.transfers = list(self.transfers.values()), {}
            agent_calls, self.agent_calls = list(self.agent_calls.items()), {}
            outbound_calls, self.outbound_calls = list(self.outbound_calls.items()), {}
        for channel in channels:
            channel.mark_ended(by_caller=False, interrupted=True)
        for future in transfers:
            if not future.done():
                future.set_result(False)
        for request, (_, on_result) in agent_calls:
            on_result(request, "failed")
        for request, outbound in outbound_calls:
            outbound(request, "failed")
        self.ready.set()
        self.lost_calls = self.pool.admission.release_owner(self)
        self.pool.stats.active_calls = self.pool.admission.active_calls

    def kill(self) -> None:
        """Kill the process (SIGKILL) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def _key(channel: SipChannel) -> int:
    return channel.key if isinstance(channel, RemoteSipChannel) else 0


class WorkerPool:
    """Runs, watches and replaces the node's worker processes; counts their calls through ``admission``.

    ``worker_config(index)`` gives each worker's endpoint settings. ``on_call(channel)`` runs each answered
    call (on a thread of its own), ``on_change(addresses)`` is told whenever the set of ready workers
    changes, ``on_outcome(outcome)`` is told how each SIP call ended.
    """

    def __init__(self, count: int, worker_config: Callable[[int], SipConfig], admission: Admission,
                 stats: SipStats, on_call: Callable[[SipChannel], None]) -> None:
        self.count = count
        self.worker_config = worker_config
        self.admission = admission
        self.stats = stats
        self.on_call = on_call
        self.on_change: Callable[[list[WorkerAddress]], None] = lambda addresses: None
        self.on_outcome: Callable[[str], None] = lambda outcome: None
        self.on_registration: Callable[[int, str, bool], None] = lambda code, reason, registered: None
        self.replacements = 0
        self.last_replacement: float | None = None
        """Seconds from noticing a dead worker to its replacement being ready (the latest)."""
        self.links: list[WorkerLink] = []
        self._lock = threading.Lock()
        self._call_threads: list[threading.Thread] = []
        self._callback_links: dict[str, WorkerLink] = {}
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="ivr-sip-supervisor", daemon=True)
        self._noticed_at: dict[int, float] = {}
        self.draining = False
        """Stopping: the workers refuse new calls and answer the edge's OPTIONS probes 503 (see ``drain``)."""

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start every worker and wait until all are ready; raises SipError if one cannot start."""
        self.links = [WorkerLink(self, index, self.worker_config(index)) for index in range(self.count)]
        deadline = time.monotonic() + timeout
        for link in self.links:
            if not link.ready.wait(max(0.1, deadline - time.monotonic())) or not link.port:
                error = link.error or "it did not report ready in time"
                self.stop()
                raise SipError(f"SIP worker {link.index} did not start: {error}")
        self._supervisor.start()
        log.info("SIP workers ready: %s", ", ".join(a.uri for a in self.ready_addresses()))

    def drain(self) -> None:
        """Refuse new calls and make every worker answer OPTIONS 503, so an edge's probes take the node out;
        calls in progress go on."""
        self.admission.stopping = True
        self.draining = True
        for link in list(self.links):
            link.pipe.send(wire.Drain())

    def stop(self, grace_seconds: float = 0.0) -> None:
        """Drain, let current calls run up to ``grace_seconds``, then stop every worker."""
        self.drain()
        deadline = time.monotonic() + grace_seconds
        while self.admission.active_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        for link in self.links:
            link.pipe.send(wire.Quit())
        for link in self.links:
            try:
                link.process.wait(10)
            except subprocess.TimeoutExpired:
                link.kill()
            link.reader.join(2)
            link.pipe.close()
        if self._supervisor.is_alive():
            self._supervisor.join(2)
        for thread in self.call_threads():
            thread.join(2)

    def ready_addresses(self) -> list[WorkerAddress]:
        """Workers up and taking calls."""
        return [link.address for link in list(self.links)
                if link.ready.is_set() and link.port and not link.gone]

    def call_threads(self) -> list[threading.Thread]:
        """Threads still running calls (for leak checks)."""
        with self._lock:
            return [t for t in self._call_threads if t.is_alive()]

    def place_callback(self, request: str, customer_uri: str, agent_uri: str, headers: dict[str, str],
                       ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        """Place a callback from the ready worker with the fewest calls."""
        links = [link for link in list(self.links) if link.ready.is_set() and link.port and not link.gone]
        if not links:
            on_result(request, "failed")
            return
        link = min(links, key=lambda lk: len(lk.channels) + len(lk.agent_calls))
        with self._lock:
            self._callback_links[request] = link

        def result(req: str, outcome: str) -> None:
            if outcome != "answered":
                with self._lock:
                    self._callback_links.pop(req, None)
            on_result(req, outcome)

        link.request_callback(request, customer_uri, agent_uri, headers, ring_timeout, result)

    def place_outbound(self, request: str, uri: str, caller: str, called: str, ring_timeout: float,
                       on_result: Callable[[str, str], None]) -> None:
        """Place an outbound call from the ready worker with the fewest calls."""
        links = [link for link in list(self.links) if link.ready.is_set() and link.port and not link.gone]
        if not links:
            on_result(request, "failed")
            return
        link = min(links, key=lambda lk: len(lk.channels) + len(lk.agent_calls) + len(lk.outbound_calls))
        link.request_outbound(request, uri, caller, called, ring_timeout, on_result)

    def cancel_callback(self, request: str) -> None:
        """Hang up a callback's legs, in the worker placing it."""
        with self._lock:
            link = self._callback_links.pop(request, None)
        if link is not None:
            link.cancel_callback(request)

    def worker_pids(self) -> list[int]:
        """Process ids of the current workers, by index."""
        return [link.process.pid for link in self.links]

    # -- events from links ----------------------------------------------------------------------------------

    def start_call(self, channel: RemoteSipChannel) -> None:
        """Run an answered call on a thread of its own."""
        thread = threading.Thread(target=run_call, args=(self.on_call, channel), name=f"ivr-call-{channel.call_id}",
                                  daemon=True)
        with self._lock:
            self._call_threads = [t for t in self._call_threads if t.is_alive()]
            self._call_threads.append(thread)
        thread.start()


    def call_finished(self, ticket: int, outcome: str) -> None:
        """A worker's SIP call is over: free its ticket and count its outcome."""
        self.admission.release(ticket)
        if outcome:
            with self._lock:
                self.stats.outcomes[outcome] += 1
            self.on_outcome(outcome)
        self.stats.active_calls = self.admission.active_calls

    def registration(self, message: wire.Registration) -> None:
        """A worker's registrar answer."""
        self.on_registration(message.code, message.reason, message.registered)

    def worker_ready(self, link: WorkerLink) -> None:
        """A (new) worker reported ready: the edge may route to it."""
        noticed = self._noticed_at.pop(link.index, None)
        if noticed is not None:
            self.last_replacement = time.monotonic() - noticed
            log.warning("SIP worker %d replaced (pid %d, port %d) %.2f s after its predecessor was lost",
                        link.index, link.process.pid, link.port, self.last_replacement)
        if self._supervisor.is_alive() or noticed is not None:
            self.on_change(self.ready_addresses())

    # -- supervision ------------------------------------------------------------------------------------------

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            now = time.monotonic()
            for link in list(self.links):
                if self._stop.is_set():
                    return
                exited = link.process.poll() is not None
                silent = link.ready.is_set() and now - link.last_seen > HEARTBEAT_TIMEOUT
                if link.gone or exited or silent:
                    try:
                        self._replace(link, "exited" if exited or link.gone else "stopped answering")
                    except Exception:
                        log.exception("replacing SIP worker %d failed", link.index)

    def _replace(self, link: WorkerLink, why: str) -> None:
        self._noticed_at[link.index] = time.monotonic()
        link.kill()
        link.take_down()
        call_ids = link.lost_calls
        code = link.process.returncode
        log.error("SIP worker %d (pid %d) %s (exit status %s); %d call(s) on it ended as interrupted%s; "
                  "starting a replacement", link.index, link.process.pid, why, code, len(call_ids),
                  f" ({', '.join(call_ids)})" if call_ids else "")
        self.on_change(self.ready_addresses())  # the edge stops routing to it now
        link.pipe.close()
        # The replacement takes the same port, so the edge's destination list stays put; after a failed
        # start (the port taken meanwhile, say) any free port.
        config = replace(link.config, port=link.port)
        if time.monotonic() - link.started_at < 2.0:
            time.sleep(1.0)  # a worker that dies as it starts must not make the supervisor spin
        try:
            replacement = WorkerLink(self, link.index, config)
        except OSError as exc:
            log.error("cannot start a replacement for SIP worker %d: %s", link.index, exc)
            return
        self.links[link.index] = replacement
        self.replacements += 1

