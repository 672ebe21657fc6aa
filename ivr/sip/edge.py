"""The SIP edge: Kamailio in front of the node's pjsua2 workers, its configuration and its supervision.

``render_config`` writes a Kamailio configuration from ``kamailio.cfg.j2`` (sanity, maxfwd, pike, per-source
rate limits in htable, the allow-list, dispatcher over the workers with OPTIONS probing and failover,
record_route, optional TLS). ``KamailioEdge`` runs that Kamailio as a child of ``ivr serve``: it restarts
it when it dies, keeps its dispatcher set equal to the live workers (``set_workers``) and reads what it
refused (``refusals``). Operators who run their own Kamailio get the same configuration from
``ivr edge config``.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from ivr.errors import SipError
from ivr.sip.admission import RETRY_AFTER_SECONDS
from ivr.sip.config import SipConfig
from ivr.sip.kamailio_rpc import KamailioRpc, KamailioRpcError, active_destinations, htable_values
from ivr.sip.workers import WorkerAddress, die_with_parent

log = logging.getLogger("ivr.edge")

WORKER_SET = 1
"""Dispatcher set of the node's workers."""
EDGE_MODES = ("auto", "kamailio", "external", "none")
KAMAILIO_BINARIES = ("kamailio", "/usr/sbin/kamailio", "/usr/local/sbin/kamailio")
MODULE_DIRS = ("/usr/lib/*/kamailio/modules", "/usr/lib/kamailio/modules", "/usr/lib64/kamailio/modules",
               "/usr/local/lib*/kamailio/modules")
REFUSALS = ("malformed", "too_large", "flood", "rate_limited", "forbidden", "no_worker", "full")
"""What the edge counts in its ``stats`` htable: requests it refused itself, by reason."""


class EdgeError(SipError):
    """The SIP edge (Kamailio) cannot be configured or started."""


@dataclass
class EdgeOptions:
    """How the node's SIP edge is run; the listening address and allow-list come from ``SipConfig``."""

    mode: str = "auto"
    """``kamailio`` (a child of ivr serve), ``external`` (the site's own Kamailio), ``none`` (one pjsua2
    endpoint straight on the port; at most 4 calls) or ``auto`` (kamailio when installed, else none)."""
    tls_port: int = 0
    """SIP over TLS on this port (0: no TLS); needs ``tls_cert`` and ``tls_key``."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    invite_rate: int = 20
    """New calls per second from one source address; more get 503 with Retry-After."""
    other_rate: int = 20
    """OPTIONS and other out-of-dialog requests per second from one source; more are dropped."""
    worker_host: str = "127.0.0.1"
    """Where the workers take SIP from the edge (loopback unless the edge runs elsewhere)."""
    worker_port_base: int = 0
    """Worker i listens on base + i (0: any free port; ``external`` needs fixed ports)."""
    addresses: tuple[str, ...] = ()
    """``external``: the address(es) the site's Kamailio sends to the workers from (``ip`` or ``ip:port``)."""
    var_dir: Path = field(default_factory=lambda: Path("var/edge"))

    def check(self) -> None:
        """Raise EdgeError listing every problem with these options."""
        problems = []
        if self.mode not in EDGE_MODES:
            problems.append(f"edge mode {self.mode!r} is not one of {', '.join(EDGE_MODES)}")
        if self.tls_port and (self.tls_cert is None or self.tls_key is None):
            problems.append("TLS needs a certificate and a private key (--tls-cert, --tls-key)")
        for path in (self.tls_cert, self.tls_key):
            if self.tls_port and path is not None and not path.is_file():
                problems.append(f"{path}: no such file (TLS certificate or key)")
        if self.mode == "external" and not self.addresses:
            problems.append("--edge external needs --edge-address: where your Kamailio sends calls from")
        if self.mode == "external" and not self.worker_port_base:
            problems.append("--edge external needs fixed worker ports (--worker-ports BASE) for your dispatcher list")
        if self.invite_rate < 1 or self.other_rate < 1:
            problems.append("rate limits must be at least 1 request per second")
        if problems:
            raise EdgeError("invalid SIP edge settings:\n  " + "\n  ".join(problems))


def find_kamailio() -> str | None:
    """The Kamailio binary, or None when it is not installed."""
    for candidate in KAMAILIO_BINARIES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def find_module_dir() -> str:
    """Kamailio's module folder on this machine (Debian's by default)."""
    for pattern in MODULE_DIRS:
        for folder in sorted(glob.glob(pattern)):
            if os.path.isfile(os.path.join(folder, "dispatcher.so")):
                return folder
    return "/usr/lib/x86_64-linux-gnu/kamailio/modules"


def internal_address(sip: SipConfig) -> str:
    """The edge's socket on the workers' side (``ip:port``): where workers accept INVITEs from."""
    return f"127.0.0.1:{sip.port}"


def register_contact(sip: SipConfig) -> str:
    """``host:port`` the edge registers for the node (the registrar sends its calls there)."""
    if sip.public_address:
        return f"{sip.public_address}:{sip.port}"
    if sip.host not in ("0.0.0.0", "", "::"):
        return f"{sip.host}:{sip.port}"
    host = "127.0.0.1"
    if sip.registration is not None:  # the address this machine reaches the registrar from
        target = re.sub(r"^sips?:", "", sip.registration.registrar).split(";")[0]
        name, _, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "5060")
        with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect((name or target, int(port or 5060)))
            host = probe.getsockname()[0]
    return f"{host}:{sip.port}"


@dataclass(frozen=True)
class EdgeFiles:
    """Where a running edge keeps its files: configuration in ``var_dir``, sockets in a short run folder."""

    var_dir: Path
    run_dir: Path

    @property
    def config(self) -> Path:
        return self.var_dir / "kamailio.cfg"

    @property
    def dispatcher(self) -> Path:
        return self.var_dir / "dispatcher.list"

    @property
    def tls_config(self) -> Path:
        return self.var_dir / "tls.cfg"

    @property
    def rpc_socket(self) -> Path:
        return self.run_dir / "rpc.sock"


def render_config(sip: SipConfig, options: EdgeOptions, files: EdgeFiles, *, written_by: str = "ivr serve",
                  module_dir: str | None = None, debug: int = 2, nodes: Sequence[str] = ()) -> str:
    """The Kamailio configuration of a node's edge, or of the site's edge in front of several ``nodes``
    (their names; a 503 from one node's worker then fails over to the next node)."""
    loopback = sip.host in ("127.0.0.1", "localhost")
    listen: list[str] = []
    if sip.host not in ("0.0.0.0", "", "::"):  # else Kamailio binds every local address itself
        host = "127.0.0.1" if sip.host == "localhost" else sip.host
        advertise = f" advertise {sip.public_address}:{{port}}" if sip.public_address else ""
        for transport in ("udp", *(t for t in sip.transports if t == "tcp")):
            listen.append(f"{transport}:{host}:{sip.port}{advertise.format(port=sip.port)}")
        if options.tls_port:
            listen.append(f"tls:{host}:{options.tls_port}{advertise.format(port=options.tls_port)}")
        if not loopback:
            listen.append(f"udp:127.0.0.1:{sip.port}")  # the workers' side
    template = jinja2.Environment(
        loader=jinja2.PackageLoader("ivr.sip", "."), trim_blocks=True, lstrip_blocks=True,
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
    ).get_template("kamailio.cfg.j2")
    return template.render(
        written_by=written_by, debug=debug, children=2, listen=listen, port=sip.port,
        advertised_address=sip.public_address if not listen else "", tcp="tcp" in sip.transports,
        tls=bool(options.tls_port), tls_port=options.tls_port, tls_config=files.tls_config,
        module_path=module_dir or find_module_dir(), rpc_socket=files.rpc_socket, dispatcher_file=files.dispatcher,
        worker_set=WORKER_SET, worker_timeout_ms=2000, flood_per_2s=4 * (options.invite_rate + options.other_rate),
        invite_rate=options.invite_rate, other_rate=options.other_rate, retry_after=RETRY_AFTER_SECONDS,
        max_message_bytes=3500, allow_from=list(sip.allow_from), refusals=REFUSALS,
        register_contact=register_contact(sip) if sip.registration is not None else "",
        nodes=list(nodes) if len(nodes) > 1 else [],
    )


def render_tls_config(options: EdgeOptions) -> str:
    """Kamailio's tls.cfg: TLS 1.2 or newer with the node's certificate; clients are not asked for one."""
    assert options.tls_cert is not None and options.tls_key is not None
    return (f"[server:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n"
            f"private_key = {options.tls_key.resolve()}\ncertificate = {options.tls_cert.resolve()}\n\n"
            f"[client:default]\nmethod = TLSv1.2+\nverify_certificate = no\nrequire_certificate = no\n")


def render_dispatcher_list(workers: Sequence[WorkerAddress], via: str | None) -> str:
    """The dispatcher list: one line per worker (sent through the ``via`` socket, e.g. ``udp:127.0.0.1:5060``)."""
    socket_attr = f";socket={via}" if via else ""
    lines = ["# setid destination flags priority attributes (written by ivr: the node's SIP workers)"]
    lines += [f"{WORKER_SET} {worker.uri} 0 0 duid=w{worker.index}{socket_attr}" for worker in workers]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    """Replace a file atomically (Kamailio may read it at any time)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


_LEVELS = (("CRITICAL", logging.CRITICAL), ("ALERT", logging.ERROR), ("BUG", logging.ERROR),
           ("ERROR", logging.ERROR), ("WARNING", logging.WARNING), ("NOTICE", logging.INFO),
           ("INFO", logging.INFO), ("DEBUG", logging.DEBUG))
_LINE = re.compile(r"^\s*\d+\(\d+\)\s+(\w+):\s*(.*)$")
_PEER_NOISE = ("parse_", "parsing", "bad via", "bad header", "bad message", "tcp_send failed", "tcpconn_1st_send",
               "msg_send_buffer", "receive_msg", "unable to parse", "failed to parse", "reparse_on_dns_failover")
"""Kamailio errors about what a peer sent or where it cannot be reached: counted as refusals, not logged loudly
(a flood of bad packets must not become a flood of error lines)."""


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill what is left of a Kamailio process group (children whose main process died)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(2)


class KamailioEdge:
    """Kamailio run as a child of the node: started, restarted when it dies, told which workers are up."""

    def __init__(self, sip: SipConfig, options: EdgeOptions, binary: str | None = None) -> None:
        found = binary or find_kamailio()
        if found is None:
            raise EdgeError("Kamailio is not installed (apt-get install kamailio); or run with --edge none "
                            "(at most 4 calls) or --edge external (your own Kamailio)")
        self.binary = found
        self.sip = sip
        self.options = options
        self.files = EdgeFiles(options.var_dir.resolve(), Path(tempfile.mkdtemp(prefix="ivr-edge-")))
        self.rpc = KamailioRpc(self.files.rpc_socket)
        self.restarts = 0
        self._listed: dict[int, WorkerAddress] = {}  # the dispatcher file: one destination per worker index
        self._ready: list[WorkerAddress] | None = None  # the latest set_workers, not yet applied
        self._changed = threading.Event()
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._counted: dict[str, int] = {}  # refusals of earlier Kamailio processes (their counters died with them)
        self._last_counts: dict[str, int] = {}  # the running process's counters when last read
        self._last_lines: list[str] = []
        self._supervisor: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------

    def start(self, workers: Sequence[WorkerAddress], timeout: float = 10.0) -> None:
        """Write the configuration, start Kamailio and wait until it answers; raises EdgeError."""
        self.files.var_dir.mkdir(parents=True, exist_ok=True)
        _write(self.files.config, render_config(self.sip, self.options, self.files))
        if self.options.tls_port:
            _write(self.files.tls_config, render_tls_config(self.options))
        self._listed = {worker.index: worker for worker in workers}
        self._write_list()
        self._check_config()
        self._spawn(timeout)
        self._supervisor = threading.Thread(target=self._supervise, name="ivr-edge", daemon=True)
        self._supervisor.start()
        log.info("SIP edge (Kamailio) on %s port %d (%s%s), %d worker(s)", self.sip.host, self.sip.port,
                 ",".join(self.sip.transports), f", tls {self.options.tls_port}" if self.options.tls_port else "",
                 len(self._listed))

    def stop(self) -> None:
        """Stop Kamailio (SIGTERM, then SIGKILL) and remove its run folder."""
        self._stopping.set()
        with self._lock:
            process = self._process
        if process is not None:
            if process.poll() is None:
                process.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)
            _kill_group(process)
        if self._supervisor is not None:
            self._supervisor.join(2)
        shutil.rmtree(self.files.run_dir, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        """Kamailio's main process id (None when not running)."""
        with self._lock:
            return self._process.pid if self._process is not None and self._process.poll() is None else None

    def set_workers(self, workers: Sequence[WorkerAddress]) -> None:
        """Route to exactly these (ready) workers from now on; returns at once, applied within ~0.1 s."""
        with self._lock:
            self._ready = list(workers)
        self._changed.set()

    def refusals(self) -> dict[str, int]:
        """Requests the edge refused itself since the node started, by reason (see REFUSALS)."""
        try:
            current = htable_values(self.rpc.call("htable.dump", "stats", timeout=1.0))
            # Requests so broken that Kamailio's parser drops them before the script sees them.
            for line in self.rpc.call("stats.get_statistics", "core:", timeout=1.0) or []:
                name, _, value = str(line).partition(" = ")
                if name in ("core:bad_msg_hdr", "core:err_requests"):
                    current["malformed"] = current.get("malformed", 0) + int(value or 0)
        except (KamailioRpcError, ValueError):
            current = dict(self._last_counts)
        with self._lock:
            self._last_counts = current
            return {reason: self._counted.get(reason, 0) + current.get(reason, 0) for reason in REFUSALS}

    def active_workers(self) -> list[str]:
        """URIs of the workers Kamailio currently routes to (active in its dispatcher set)."""
        return active_destinations(self.rpc.call("dispatcher.list"))

    # -- internals ----------------------------------------------------------------------------------------------

    def _via(self) -> str:
        return f"udp:{internal_address(self.sip)}"

    def _write_list(self) -> None:
        _write(self.files.dispatcher, render_dispatcher_list(sorted(self._listed.values(), key=lambda w: w.index),
                                                             self._via()))

    def _apply_workers(self) -> None:
        """Make Kamailio route to the ready workers: inactive for the others, reload only for a new address."""
        with self._lock:
            ready, self._ready = self._ready, None
        if ready is None:
            return
        moved = [w for w in ready if self._listed.get(w.index) != w]
        if moved:  # a replacement on a new port: the destination list itself changes
            self._listed.update({w.index: w for w in moved})
            self._write_list()
            self._rpc_retrying("dispatcher.reload")
        up = {w.index for w in ready}
        for index, worker in self._listed.items():
            self._rpc_retrying("dispatcher.set_state", "ap" if index in up else "ip", WORKER_SET, worker.uri)

    def _rpc_retrying(self, method: str, *params: object) -> None:
        for _ in range(20):  # "ongoing reload": the dispatcher allows one reload at a time
            try:
                self.rpc.call(method, *params)
                return
            except KamailioRpcError as exc:
                error = exc
            if self._stopping.wait(0.25):
                return
        log.warning("SIP edge: %s failed: %s", method, error)

    def _command(self) -> list[str]:
        return [self.binary, "-f", str(self.files.config), "-DD", "-E", "-Y", str(self.files.run_dir),
                "-P", str(self.files.run_dir / "kamailio.pid"), "-m", "64", "-M", "8"]

    def _check_config(self) -> None:
        check = subprocess.run([self.binary, "-c", "-f", str(self.files.config)], capture_output=True, text=True)
        if check.returncode != 0:
            errors = [line for line in check.stderr.splitlines() if "ERROR" in line or "error" in line][-8:]
            raise EdgeError(f"Kamailio refused the edge configuration {self.files.config}:\n  " +
                            "\n  ".join(errors or check.stderr.splitlines()[-8:]))

    def _spawn(self, timeout: float) -> None:
        self._last_lines = []
        # Its own process group: Kamailio's children outlive a main process that was killed, and must go
        # before a new one can bind the port. SIGTERM when the server dies lets Kamailio stop its children.
        process = subprocess.Popen(self._command(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   stdin=subprocess.DEVNULL, process_group=0,
                                   preexec_fn=die_with_parent(signal.SIGTERM))
        with self._lock:
            self._process = process
        threading.Thread(target=self._forward_log, args=(process,), name="ivr-edge-log", daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                _kill_group(process)
                lines = self._last_lines[-8:]
                hint = (f"\n  port {self.sip.port} is in use (another Kamailio? sudo systemctl disable --now kamailio);"
                        " pick another --sip-port" if any("in use" in line for line in lines) else "")
                raise EdgeError(f"Kamailio exited at start (status {process.returncode}):\n  " + "\n  ".join(lines)
                                + hint)
            try:
                self.rpc.call("core.version", timeout=0.5)
                return
            except KamailioRpcError:
                time.sleep(0.05)
        process.kill()
        raise EdgeError(f"Kamailio did not answer within {timeout:.0f} s of starting")

    def _forward_log(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stderr is not None
        for raw in process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._last_lines = [*self._last_lines[-19:], line]
            match = _LINE.match(line)
            level_name, text = (match.group(1), match.group(2)) if match else ("INFO", line)
            level = next((lvl for name, lvl in _LEVELS if level_name.startswith(name)), logging.INFO)
            if self._stopping.is_set() or any(noise in text for noise in _PEER_NOISE):
                level = min(level, logging.DEBUG)
            log.log(level, "kamailio: %s", text)

    def _supervise(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            with self._lock:
                process = self._process
            assert process is not None
            while process.poll() is None and not self._stopping.is_set():
                if self._changed.wait(0.1):
                    self._changed.clear()
                    self._apply_workers()
            if self._stopping.is_set():
                return
            started = time.monotonic()
            log.error("SIP edge: Kamailio exited (status %s); restarting it", process.returncode)
            _kill_group(process)
            with self._lock:  # its counters died with it
                for reason, value in self._last_counts.items():
                    self._counted[reason] = self._counted.get(reason, 0) + value
                self._last_counts = {}
            self.restarts += 1
            try:
                self._spawn(10.0)
                backoff = 0.5
                log.warning("SIP edge: Kamailio restarted in %.2f s", time.monotonic() - started)
                self._changed.set()  # the new process starts with every listed worker active
            except EdgeError as exc:
                log.error("SIP edge: restart failed: %s", exc)
                if self._stopping.wait(backoff):
                    return
                backoff = min(backoff * 2, 10.0)
