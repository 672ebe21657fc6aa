"""``SipService``: the SIP side of a node as ``ivr serve`` runs it — an edge, workers, one admission.

Three ways to run, chosen by ``EdgeOptions.mode``:

- ``kamailio``: Kamailio (a supervised child) owns the public port; ``ceil(max_calls / 4)`` pjsua2 worker
  processes listen on loopback and take calls only from it. The default where Kamailio is installed.
- ``external``: the same workers on fixed ports, behind a Kamailio the site runs itself
  (``ivr edge config`` writes its configuration).
- ``none``: one pjsua2 endpoint in this process straight on the port (pjsip's own parser faces the
  network); only for at most 4 calls, and said so at start-up.

Every answered call reaches ``on_call(channel)`` in this process; every new INVITE is decided by the one
``Admission`` here, whichever worker it reached.
"""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import replace

from ivr.errors import SipError
from ivr.sip.admission import Admission, Route
from ivr.sip.channel import SipChannel
from ivr.sip.config import PJSUA_MAX_CALLS, RegistrationState, SipConfig
from ivr.sip.edge import EdgeOptions, KamailioEdge, find_kamailio, internal_address
from ivr.sip.server import SipServer, SipStats
from ivr.sip.workers import WorkerPool, workers_needed

log = logging.getLogger("ivr.sip")

EDGE_REASONS = {"full": "capacity"}
"""Edge refusals counted under admission's name for the same reason (every worker full is capacity)."""


def resolve_mode(config: SipConfig, options: EdgeOptions) -> str:
    """The edge mode to run: ``auto`` picks kamailio when installed, else none (at most 4 calls)."""
    if options.mode != "auto":
        return options.mode
    if find_kamailio() is not None:
        return "kamailio"
    if config.max_calls <= PJSUA_MAX_CALLS:
        return "none"
    raise SipError(f"--max-calls {config.max_calls} needs Kamailio in front of the SIP workers, and it is not "
                   "installed: apt-get install kamailio (or --max-calls 4 to run one endpoint without it)")


def free_port(host: str) -> int:
    """A port free for both UDP and TCP on ``host`` right now."""
    bind_host = "" if host in ("0.0.0.0", "::") else host
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((bind_host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((bind_host, port))
                except OSError:
                    continue
                return port
    raise SipError(f"no free SIP port on {host}")


class SipService:
    """Starts and stops the node's SIP edge and endpoints; ``stats`` and ``admission`` tell what is up."""

    def __init__(self, config: SipConfig, options: EdgeOptions | None = None,
                 on_call: Callable[[SipChannel], None] | None = None, route: Route | None = None) -> None:
        config.check()
        self.options = options or EdgeOptions()
        self.options.check()
        self.mode = resolve_mode(config, self.options)
        if self.mode == "kamailio" and config.port == 0:  # Kamailio needs a number: take a free one now
            config = replace(config, port=free_port(config.host))
        self.config = config
        if self.mode == "none" and config.max_calls > PJSUA_MAX_CALLS:
            raise SipError(f"--edge none runs one pjsua2 endpoint: at most {PJSUA_MAX_CALLS} calls "
                           f"(--max-calls {config.max_calls}); use --edge kamailio for more")
        self.on_call = on_call
        self.admission = Admission(config, route)
        self.on_outcome: Callable[[str], None] | None = None
        """Told how each SIP call ended or why it was refused (on a SIP or pipe thread; keep it quick)."""
        self.endpoint: SipServer | None = None
        self.pool: WorkerPool | None = None
        self.edge: KamailioEdge | None = None
        self.registration = RegistrationState()
        self._stats = SipStats()

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the endpoint(s) and the edge; raises SipError (or EdgeError) when they cannot start."""
        if self.mode == "none":
            log.warning("SIP: no edge proxy in front (--edge none): pjsip's parser faces the network directly, "
                        "with at most %d calls; install Kamailio for a hardened edge", PJSUA_MAX_CALLS)
            self.endpoint = SipServer(self.config, on_call=self._run_call, admission=self.admission)
            self.endpoint.on_outcome = self._outcome
            self.endpoint.registration = self.registration
            self.endpoint.start()
            return
        pool = WorkerPool(workers_needed(self.config.max_calls), self._worker_config, self.admission,
                          self._stats, self._run_call)
        pool.on_outcome = self._outcome
        pool.on_registration = self.registration.record
        pool.start()
        self.pool = pool
        if self.mode == "external":
            log.info("SIP workers wait for your Kamailio at %s: %s", ", ".join(self.options.addresses),
                     " ".join(a.uri for a in pool.ready_addresses()))
            return
        try:
            self.edge = KamailioEdge(self.config, self.options)
            self.edge.start(pool.ready_addresses())
        except SipError:
            pool.stop()
            self.pool = None
            raise
        pool.on_change = self.edge.set_workers

    def stop(self, grace_seconds: float = 0.0) -> None:
        """Refuse new calls (503), let current calls run up to ``grace_seconds``, then stop everything."""
        self.admission.stopping = True
        if self.endpoint is not None:
            self.endpoint.stop(grace_seconds)
            self.endpoint = None
        if self.pool is not None:
            self.pool.stop(grace_seconds)
            self.pool = None
        if self.edge is not None:
            self.edge.stop()
            self.edge = None

    # -- callbacks ----------------------------------------------------------------------------------------------

    def place_callback(self, request: str, customer_uri: str, agent_uri: str, headers: dict[str, str],
                       ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        """Call a customer back and join them to an agent (in a worker, or this process's endpoint)."""
        if self.pool is not None:
            self.pool.place_callback(request, customer_uri, agent_uri, headers, ring_timeout, on_result)
        elif self.endpoint is not None:
            self.endpoint.request_callback(request, customer_uri, agent_uri, headers, ring_timeout, on_result)
        else:
            on_result(request, "failed")

    def cancel_callback(self, request: str) -> None:
        """Hang up a callback's legs."""
        if self.pool is not None:
            self.pool.cancel_callback(request)
        elif self.endpoint is not None:
            self.endpoint.cancel_callback(request)

    def place_outbound(self, request: str, uri: str, caller: str, called: str, ring_timeout: float,
                       on_result: Callable[[str, str], None]) -> None:
        """Call ``uri`` (from a worker, or this process's endpoint); answered, the call reaches ``on_call`` like
        an incoming one (see ``SipServer.request_outbound``). ``on_result(request, result)`` once, and once more
        (``ended``, or ``failed`` for a lost worker) after ``answered`` when the call is over."""
        if self.pool is not None:
            self.pool.place_outbound(request, uri, caller, called, ring_timeout, on_result)
        elif self.endpoint is not None:
            self.endpoint.request_outbound(request, uri, caller, called, ring_timeout, on_result)
        else:
            on_result(request, "failed")

    @property
    def running(self) -> bool:
        """Whether SIP is up (an endpoint or workers) and not stopping."""
        return (self.endpoint is not None or self.pool is not None) and not self.admission.stopping

    # -- what is up ---------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The public SIP port."""
        return self.endpoint.port if self.endpoint is not None else self.config.port

    @property
    def stats(self) -> SipStats:
        """Active calls (admitted, not yet over), outcomes and set-up times."""
        if self.endpoint is not None:
            return self.endpoint.stats
        self._stats.active_calls = self.admission.active_calls
        return self._stats

    def refusals(self) -> dict[str, int]:
        """Requests refused by the edge before reaching a worker, by reason (empty without our own edge)."""
        return self.edge.refusals() if self.edge is not None else {}

    def rejections(self) -> dict[str, int]:
        """Calls and requests refused, by reason: by admission and the workers, and by the edge itself."""
        counts: dict[str, int] = {}
        for outcome, n in list(self.stats.outcomes.items()):
            if outcome.startswith("rejected_"):
                reason = outcome.removeprefix("rejected_")
                counts[reason] = counts.get(reason, 0) + n
        for reason, n in self.refusals().items():
            reason = EDGE_REASONS.get(reason, reason)
            counts[reason] = counts.get(reason, 0) + n
        return counts

    def call_threads(self) -> list[threading.Thread]:
        """Threads still running calls (for leak checks)."""
        if self.endpoint is not None:
            return self.endpoint.call_threads()
        return self.pool.call_threads() if self.pool is not None else []

    def describe(self) -> str:
        """One line for the start-up banner."""
        transports = ",".join(self.config.transports)
        if self.mode == "none":
            return f"sip:{self.config.host}:{self.port} ({transports}; one endpoint, no edge proxy)"
        workers = self.pool.count if self.pool is not None else 0
        tls = f", tls {self.options.tls_port}" if self.options.tls_port else ""
        if self.mode == "external":
            return f"{workers} SIP worker(s) behind your Kamailio ({', '.join(self.options.addresses)})"
        return f"sip:{self.config.host}:{self.port} ({transports}{tls}; Kamailio edge, {workers} worker(s))"

    def wait_registered(self, timeout: float) -> bool:
        """Block until the registrar accepted our registration (True) or ``timeout`` seconds passed (False)."""
        return self.registration.wait(timeout)

    # -- internals ----------------------------------------------------------------------------------------------

    def _worker_config(self, index: int) -> SipConfig:
        cfg = self.config
        if self.mode == "external":
            edge = self.options.addresses
            proxy = f"sip:{edge[0]};lr"
        else:
            edge = (internal_address(cfg),)
            proxy = f"sip:{edge[0]};lr"
        port = self.options.worker_port_base + index if self.options.worker_port_base else 0
        return replace(cfg, host=self.options.worker_host, port=port, tcp_port=0, transports=("udp",),
                       max_calls=PJSUA_MAX_CALLS, allow_from=(), edge=edge, outbound_proxy=proxy,
                       media_host=cfg.media_host or cfg.host,
                       registration=cfg.registration if index == 0 else None)

    def _run_call(self, channel: SipChannel) -> None:
        if self.on_call is not None:
            self.on_call(channel)

    def _outcome(self, outcome: str) -> None:
        if self.on_outcome is not None:
            self.on_outcome(outcome)
