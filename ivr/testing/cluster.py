"""A cluster on loopback for tests and benchmarks: ``ivr serve`` node processes sharing one PostgreSQL, one
Kamailio in front (its configuration written by ``ivr edge config``), so a node killed with -9 dies for real.

:class:`SiteCluster` writes a small test line (``cluster_test``: every call goes straight to a queue, so a
node loads no model beyond whisper's smallest and no call recognises or synthesises speech), starts the
edge and the nodes, kills and restarts nodes, and reads what the cluster recorded (the ``nodes`` table, the
calls, Kamailio's active dispatcher destinations). Agents are phones on loopback
(:class:`ivr.testing.sip_agent.AgentPhone`); callers dial :meth:`SiteCluster.uri`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ivr.errors import IvrError
from ivr.sip.edge import find_kamailio
from ivr.sip.kamailio_rpc import KamailioRpc, KamailioRpcError, active_destinations
from ivr.sip.workers import workers_needed
from ivr.testing.waiting import wait_for

FLOW = """\
# The line of ivr.testing.cluster: "agent" rings the support queue's agents; any other number waits in the
# hold queue (nobody staffs it, nothing is said) until the caller hangs up.
version: 1
name: cluster_test
language: en-US
queues: [support, hold]
start: route
nodes:
  route:
    branch:
      - {if: "called == 'agent'", goto: to_support}
    otherwise: to_hold
  to_support:
    transfer: {queue: support, context: {intent: agent}}
  to_hold:
    transfer: {queue: hold, context: {intent: hold}}
"""

QUEUES = """\
max_missed_offers: 5
agents:
  ann: {{uri: "{ann}", skills: [support]}}
  bob: {{uri: "{bob}", skills: [hold]}}
queues:
  support: {{skills: [support], ring_timeout: 5, wrap_up: 0, no_agents_grace: 60}}
  hold: {{skills: [hold], max_wait: 600, no_agents_grace: 600}}
"""

NODE_READY = "ivr: serving"
"""What ``ivr serve`` prints once it answers calls."""
LEADS = "leads the cluster's ACD"
"""What a node logs when it becomes the ACD's leader."""


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_ports(count: int, start: int = 21000) -> int:
    """The first of ``count`` consecutive free loopback ports (UDP and TCP) at or above ``start``."""
    port = start
    while port < 60000:
        if all(_port_free(port + i) for i in range(count)):
            return port
        port += count + 7
    raise IvrError("no free loopback ports for the cluster")


def _kill_group(process: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


@dataclass
class ClusterNode:
    """One ``ivr serve --node NAME`` process (and its SIP worker processes, in its process group)."""

    name: str
    worker_base: int
    web_port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def run_log(self) -> str:
        """What the node's current run logged so far."""
        text = self.log.read_text(errors="replace")
        return text[text.rfind(f"==== start {self.starts} ===="):]

    def pids(self) -> list[int]:
        """The node's processes (its server and SIP workers)."""
        if not self.running:
            return []
        assert self.process is not None
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getpgid(int(entry.name)) == self.process.pid:
                        pids.append(int(entry.name))
        return pids


@dataclass
class SiteCluster:
    """Nodes ``names`` behind one Kamailio on ``127.0.0.1:sip_port``, sharing ``database`` (PostgreSQL)."""

    database: str
    agents: dict[str, str]
    """Agent name (``ann``, ``bob``) → SIP URI of their phone."""
    names: tuple[str, ...] = ("a", "b", "c")
    max_calls: int = 8
    work: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="ivr-cluster-")))
    data_key: str = "ivr-cluster-test-data-key"
    secret_key: str = "ivr-cluster-test-secret-key"
    nodes: dict[str, ClusterNode] = field(default_factory=dict)
    sip_port: int = 0
    _edge: subprocess.Popen[bytes] | None = None

    # -------------------------------------------------------------------------------------------- lifecycle
    def start(self, timeout: float = 90.0) -> SiteCluster:
        """Write the line, start Kamailio and every node; returns once each answers calls through the edge."""
        if find_kamailio() is None:
            raise IvrError("Kamailio is not installed (apt-get install kamailio)")
        (self.work / "flows").mkdir(parents=True, exist_ok=True)
        (self.work / "flows" / "cluster_test.yaml").write_text(FLOW)
        (self.work / "queues.yaml").write_text(QUEUES.format(**self.agents))
        per_node = workers_needed(self.max_calls)
        port = 21000
        for name in self.names:
            base = free_ports(per_node, port)
            self.nodes[name] = ClusterNode(name, base, free_ports(1, base + per_node), self.work / f"node-{name}.log")
            port = self.nodes[name].web_port + 1
        self.sip_port = free_ports(1, port)
        self._start_edge()
        for name in self.names:
            self.start_node(name, wait=False)
        for name in self.names:
            self.wait_ready(name, timeout)
        return self

    def stop(self) -> None:
        """Stop every node (SIGTERM: they drain) and Kamailio."""
        for node in self.nodes.values():
            if node.running:
                assert node.process is not None
                node.process.terminate()
        for node in self.nodes.values():
            if node.process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    node.process.wait(20)
                _kill_group(node.process, signal.SIGKILL)
        if self._edge is not None:
            self._edge.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._edge.wait(5)
            _kill_group(self._edge, signal.SIGKILL)

    def __enter__(self) -> SiteCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------------------------------------- the edge
    def _start_edge(self) -> None:
        folder, run = self.work / "edge", self.work / "edge-run"
        run.mkdir(parents=True, exist_ok=True)
        per_node = workers_needed(self.max_calls)
        nodes = [f"--node={n.name}=127.0.0.1:{n.worker_base}:{self.max_calls}" for n in self.nodes.values()]
        subprocess.run(
            [*self.ivr_command(), "edge", "config", "--sip-host", "127.0.0.1", "--sip-port", str(self.sip_port),
             "--transport", "udp", "--invite-rate", "200", *nodes, "-o", str(folder), "--run-dir", str(run)],
            check=True, capture_output=True, env=self.env())
        listed = (folder / "dispatcher.list").read_text()
        missing = [n for n in self.nodes.values() if f":{n.worker_base + per_node - 1}" not in listed]
        if missing:
            raise IvrError(f"ivr edge config left out the workers of {', '.join(n.name for n in missing)}")
        self.rpc = KamailioRpc(run / "rpc.sock")
        kamailio = find_kamailio()
        assert kamailio is not None
        with (self.work / "kamailio.log").open("ab") as log:
            self._edge = subprocess.Popen(
                [kamailio, "-f", str(folder / "kamailio.cfg"), "-DD", "-E", "-Y", str(run), "-P",
                 str(run / "kamailio.pid"), "-m", "64", "-M", "8"],
                stdout=subprocess.DEVNULL, stderr=log, stdin=subprocess.DEVNULL, process_group=0)
        if not wait_for(self._edge_answers, 10):
            raise IvrError(f"Kamailio did not start; see {self.work / 'kamailio.log'}")

    @property
    def edge_pid(self) -> int:
        """Kamailio's main process id."""
        assert self._edge is not None
        return self._edge.pid

    def _edge_answers(self) -> bool:
        try:
            self.rpc.call("core.version", timeout=0.5)
            return True
        except KamailioRpcError:
            return False

    def active_workers(self) -> list[str]:
        """URIs of the workers Kamailio routes to now (active in its dispatcher set)."""
        try:
            return active_destinations(self.rpc.call("dispatcher.list", timeout=2.0))
        except KamailioRpcError:
            return []

    def routed(self, name: str) -> bool:
        """Whether Kamailio routes to every worker of node ``name``."""
        node = self.nodes[name]
        active = self.active_workers()
        return all(any(uri.endswith(f":{node.worker_base + i}") for uri in active)
                   for i in range(workers_needed(self.max_calls)))

    def unrouted(self, name: str) -> bool:
        """Whether Kamailio routes to none of node ``name``'s workers."""
        node = self.nodes[name]
        ports = {f":{node.worker_base + i}" for i in range(workers_needed(self.max_calls))}
        return not any(uri.endswith(port) for uri in self.active_workers() for port in ports)

    def uri(self, number: str) -> str:
        """The SIP URI that dials ``number`` on the site (through Kamailio)."""
        return f"sip:{number}@127.0.0.1:{self.sip_port}"

    # -------------------------------------------------------------------------------------------- the nodes
    @staticmethod
    def base_env() -> dict[str, str]:
        """This environment, with this checkout first on the Python path."""
        path = [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}

    def env(self) -> dict[str, str]:
        """The environment of every node: the same data key and secret key."""
        return {**self.base_env(), "IVR_DATA_KEY": self.data_key, "IVR_SECRET_KEY": self.secret_key}

    @staticmethod
    def ivr_command() -> list[str]:
        """How to run the ``ivr`` command of this checkout."""
        return [sys.executable, "-c", "from ivr.cli.main import main; main()"]

    def start_node(self, name: str, wait: bool = True, timeout: float = 90.0) -> None:
        """Start (or restart) node ``name``; with ``wait``, return once it serves calls and is routed to."""
        node = self.nodes[name]
        if node.running:
            raise IvrError(f"node {name} is running")
        command = [
            *self.ivr_command(), "serve", "--node", name, "--flows", str(self.work / "flows"),
            "--queues", str(self.work / "queues.yaml"), "--database", self.database, "--edge", "external",
            "--edge-address", f"127.0.0.1:{self.sip_port}", "--worker-host", "127.0.0.1",
            "--worker-ports", str(node.worker_base), "--max-calls", str(self.max_calls), "--sip-host", "127.0.0.1",
            "--sip-port", str(self.sip_port), "--transport", "udp", "--web-host", "127.0.0.1",
            "--web-port", str(node.web_port), "--no-demo-api", "--grace", "5"]
        node.starts += 1
        with node.log.open("ab") as log:
            log.write(f"\n==== start {node.starts} ====\n".encode())
            log.flush()
            node.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            cwd=self.work, env=self.env(), process_group=0)
        if wait:
            self.wait_ready(name, timeout)

    def wait_ready(self, name: str, timeout: float = 90.0) -> None:
        """Wait until node ``name`` serves calls (its banner) and Kamailio routes to all its workers."""
        node = self.nodes[name]

        def ready() -> bool:
            if not node.running:
                raise IvrError(f"node {name} exited; see {node.log}:\n" + node.run_log()[-3000:])
            return NODE_READY in node.run_log()

        if not wait_for(ready, timeout, interval=0.2):
            raise IvrError(f"node {name} did not start within {timeout:.0f} s; see {node.log}")
        if not wait_for(lambda: self.routed(name), 15, interval=0.2):
            raise IvrError(f"Kamailio does not route to node {name}'s workers: {self.active_workers()}")

    def kill(self, name: str) -> float:
        """kill -9 node ``name`` (its server and workers at once, as a machine dying); returns when (time.time)."""
        node = self.nodes[name]
        assert node.process is not None
        at = time.time()
        _kill_group(node.process, signal.SIGKILL)
        node.process.wait(10)
        return at

    def leader(self) -> str | None:
        """The running node that leads the ACD (the one whose current run logged it; None while unclear)."""
        leaders = [n.name for n in self.nodes.values() if n.running and LEADS in n.run_log()]
        return leaders[0] if len(leaders) == 1 else None

    def pids(self, names: Iterable[str] | None = None) -> list[int]:
        """Processes of the given nodes (default: all)."""
        return [pid for n in (names or self.names) for pid in self.nodes[n].pids()]

    # ------------------------------------------------------------------------------------------ the records
    def node_states(self) -> dict[str, dict[str, Any]]:
        """The ``nodes`` table: name → state, seen_at."""
        import psycopg

        dsn = self.database.replace("postgresql+psycopg://", "postgresql://", 1)
        with psycopg.connect(dsn, autocommit=True) as conn:
            rows = conn.execute("SELECT name, state, seen_at FROM nodes").fetchall()
        return {r[0]: {"state": r[1], "seen_at": r[2]} for r in rows}

    def open_store(self) -> Any:
        """The cluster's store, opened in this process (with the nodes' data key)."""
        from ivr.store import open_store

        before = os.environ.get("IVR_DATA_KEY")
        os.environ["IVR_DATA_KEY"] = self.data_key
        try:
            return open_store(self.database)
        finally:
            if before is None:
                del os.environ["IVR_DATA_KEY"]
            else:
                os.environ["IVR_DATA_KEY"] = before
