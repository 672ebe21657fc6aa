"""The nodes behind one site Kamailio: ``--node NAME=HOST:BASE[:MAXCALLS]`` and their dispatcher list.

Each node is an ``ivr serve --edge external --worker-host HOST --worker-ports BASE --max-calls MAXCALLS``;
its workers listen on ``HOST:BASE`` … ``HOST:BASE+workers-1`` (``workers_needed(MAXCALLS)``). All of them are
destinations of the one dispatcher set, so the edge recognises traffic from any node's workers and takes
out (OPTIONS probes) a worker, or a whole node, that stops answering or is draining.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import zip_longest

from ivr.node import NodeNameError, check_node_name
from ivr.sip.edge import WORKER_SET, EdgeError
from ivr.sip.workers import WorkerAddress, workers_needed

_SPEC = re.compile(r"(?P<name>[^=]*)=(?P<host>[^:]*):(?P<base>[^:]*)(?::(?P<max>[^:]*))?")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")
NODE_SYNTAX = "NAME=HOST:BASE[:MAXCALLS] (e.g. a=10.0.0.11:5100:30)"


@dataclass(frozen=True)
class EdgeNode:
    """One node as the site's Kamailio sees it: where its workers listen, and how many there are."""

    name: str
    host: str
    port_base: int
    max_calls: int

    @property
    def worker_count(self) -> int:
        """Worker processes the node runs for its ``--max-calls`` (as ``ivr serve`` derives it)."""
        return workers_needed(self.max_calls)

    @property
    def ports(self) -> range:
        """The node's worker ports."""
        return range(self.port_base, self.port_base + self.worker_count)

    def workers(self) -> list[WorkerAddress]:
        """The node's workers, by index."""
        return [WorkerAddress(i, self.host, port) for i, port in enumerate(self.ports)]


def parse_node(text: str, default_max_calls: int) -> EdgeNode:
    """One ``NAME=HOST:BASE[:MAXCALLS]``; raises EdgeError naming what is wrong."""
    match = _SPEC.fullmatch(text.strip())
    if match is None:
        raise EdgeError(f"--node {text!r}: expected {NODE_SYNTAX}")
    name, host, base, max_calls = match.group("name", "host", "base", "max")
    try:
        check_node_name(name)
    except NodeNameError as exc:
        raise EdgeError(f"--node {text!r}: {exc}") from None
    if not _HOST.fullmatch(host) or host == "0.0.0.0":
        raise EdgeError(f"--node {text!r}: {host!r} is not a host the workers can be reached at "
                        "(an IPv4 address or host name, the node's --worker-host)")
    if not base.isdigit() or not 1 <= int(base) <= 65535:
        raise EdgeError(f"--node {text!r}: BASE {base!r} must be a port (1-65535), the node's --worker-ports")
    if max_calls is not None and (not max_calls.isdigit() or int(max_calls) < 1):
        raise EdgeError(f"--node {text!r}: MAXCALLS {max_calls!r} must be a whole number of at least 1, "
                        "the node's --max-calls")
    node = EdgeNode(name, host, int(base), int(max_calls) if max_calls is not None else default_max_calls)
    if node.ports.stop - 1 > 65535:
        raise EdgeError(f"--node {text!r}: its {node.worker_count} workers need ports {node.port_base}-"
                        f"{node.ports.stop - 1}, past 65535; use a lower BASE")
    return node


def parse_nodes(items: Iterable[str], default_max_calls: int) -> list[EdgeNode]:
    """Every node of ``--node``/``--nodes`` values (each may be a comma-separated list); checks them together."""
    nodes = [parse_node(part, default_max_calls) for item in items for part in item.split(",") if part.strip()]
    check_nodes(nodes)
    return nodes


def check_nodes(nodes: Sequence[EdgeNode]) -> None:
    """Raise EdgeError listing duplicate names and nodes whose worker ports overlap on one host."""
    problems: list[str] = []
    seen: set[str] = set()
    for node in nodes:
        if node.name in seen:
            problems.append(f"node {node.name!r} is given twice: every node needs its own name")
        seen.add(node.name)
    for i, first in enumerate(nodes):
        for second in nodes[i + 1:]:
            if first.host.lower() == second.host.lower() and set(first.ports) & set(second.ports):
                problems.append(
                    f"nodes {first.name!r} and {second.name!r} overlap on {first.host}: ports "
                    f"{first.port_base}-{first.ports.stop - 1} and {second.port_base}-{second.ports.stop - 1}; "
                    "give one of them a BASE past the other's last port")
    if problems:
        raise EdgeError("invalid --node list:\n  " + "\n  ".join(problems))


def site_workers(nodes: Sequence[EdgeNode]) -> list[tuple[EdgeNode, WorkerAddress]]:
    """Every node's workers, interleaved (a0, b0, c0, a1 …): failing over from a full or draining node's worker
    goes to another node first."""
    rounds = zip_longest(*(node.workers() for node in nodes))
    return [(node, worker) for row in rounds for node, worker in zip(nodes, row, strict=True) if worker]


def render_site_dispatcher_list(nodes: Sequence[EdgeNode]) -> str:
    """The dispatcher list of several nodes: one line per worker, interleaved by node, highest priority first."""
    workers = site_workers(nodes)
    lines = ["# setid destination flags priority attributes (written by ivr: the SIP workers of nodes "
             + ", ".join(node.name for node in nodes) + ")"]
    for position, (node, worker) in enumerate(workers):
        priority = len(workers) - position  # keeps this order in Kamailio's set
        lines.append(f"{WORKER_SET} {worker.uri} 0 {priority} duid={node.name}-w{worker.index}")
    return "\n".join(lines) + "\n"

