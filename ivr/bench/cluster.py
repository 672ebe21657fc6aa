"""``ivr bench cluster``: several ``ivr serve`` nodes on one PostgreSQL behind one Kamailio, measured over real SIP.

Everything runs on loopback (``ivr.testing.cluster``): a throwaway PostgreSQL (fsync on), Kamailio configured
by ``ivr edge config``, node processes killed with -9 for real, SIPp callers. Every call waits in a queue
nobody staffs until the caller hangs up, so the nodes do SIP, RTP and the cluster ACD, and no speech work.

- ``failover``: kill -9 of a node with callers waiting on every node, until the leader marks it down (the
  ``nodes`` table), until its queue entries and call records are closed, and until Kamailio stops routing
  to it; the node is restarted between repeats, and the victims rotate (the leader among them);
- ``lost``: callers on every node, one node killed: calls that failed per node (only the dead node's should),
  and new calls placed once Kamailio took the dead node out;
- ``capacity``: the same SIPp load through Kamailio to 1 node and to 3 nodes (same total SIP workers): CPU of
  the nodes, Kamailio and PostgreSQL while every call is up, and calls per busy core.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ivr.bench.procs import cpu_seconds
from ivr.bench.sipp import SippResult, run_sipp_callers
from ivr.errors import IvrError
from ivr.testing.cluster import SiteCluster
from ivr.testing.postgres import TempPostgres

CALLERS = "127.0.0.61"
LATE_CALLERS = "127.0.0.63"  # SIPp's media port is fixed: a second SIPp at once needs its own address
AGENTS = {"ann": "sip:ann@127.0.0.1:9", "bob": "sip:bob@127.0.0.1:9"}  # nobody logs in: never dialled
POLL = 0.01


def _wait(predicate: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds until ``predicate`` holds (polled every 10 ms); raises IvrError after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise IvrError(f"benchmark: {what} did not happen within {timeout:.0f} s")
        time.sleep(POLL)
    return time.monotonic() - started


@contextmanager
def _site(postgres: TempPostgres, work: Path, names: tuple[str, ...], max_calls: int) -> Iterator[SiteCluster]:
    site = SiteCluster(postgres.new_database(), AGENTS, names=names, max_calls=max_calls, work=work)
    try:
        yield site.start()
    finally:
        site.stop()


def _callers(site: SiteCluster, work: Path, calls: int, seconds: float, bind: str = CALLERS,
             stagger: float = 0.2) -> SippResult:
    return run_sipp_callers(f"127.0.0.1:{site.sip_port}", "100", f"wait {seconds:g}", calls, stagger, work, bind,
                            timeout=seconds + 90)


class _Background:
    """SIPp callers in a thread."""

    def __init__(self, site: SiteCluster, work: Path, calls: int, seconds: float, stagger: float = 0.2) -> None:
        self.result: SippResult | None = None
        self._thread = threading.Thread(target=self._run, args=(site, work, calls, seconds, stagger), daemon=True)
        self._thread.start()

    def _run(self, site: SiteCluster, work: Path, calls: int, seconds: float, stagger: float) -> None:
        self.result = _callers(site, work, calls, seconds, stagger=stagger)

    def join(self, timeout: float) -> SippResult:
        self._thread.join(timeout)
        if self.result is None:
            raise IvrError("benchmark: the SIPp callers did not finish")
        return self.result


def _open_calls(store: Any, since: float) -> list[dict[str, Any]]:
    return [c for c in store.list_calls(since=since, limit=1000) if not c["ended_at"]]


def _callers_on_every_node(site: SiteCluster, store: Any, work: Path, calls: int,
                           seconds: float) -> tuple[float, _Background]:
    """Start ``calls`` SIPp callers; returns (when, the callers) once every one waits in the queue."""
    since = time.time()
    load = _Background(site, work, calls, seconds)

    def queued() -> bool:
        calls_up = _open_calls(store, since)
        entries = {e["call_id"] for e in store.open_queue_entries()}
        return (len(calls_up) == calls and {c["node"] for c in calls_up} == set(site.names)
                and all(c["id"] in entries for c in calls_up))

    _wait(queued, 30, "callers waiting on every node")
    return since, load


def _kill_and_time(site: SiteCluster, store: Any, victim: str, since: float) -> dict[str, Any]:
    """kill -9 ``victim``; seconds until it is marked down, its entries and calls closed, Kamailio unroutes it."""
    leader = site.leader()
    entries = sum(1 for e in store.open_queue_entries() if e["node"] == victim)
    site.kill(victim)
    killed = time.monotonic()

    def since_kill(predicate: Callable[[], object], what: str) -> float:
        _wait(predicate, 30, what)
        return round(time.monotonic() - killed, 3)

    return {
        "victim": victim, "victim_led": victim == leader, "entries": entries,
        "marked_down_s": since_kill(lambda: site.node_states()[victim]["state"] == "down", f"{victim} marked down"),
        "entries_closed_s": since_kill(lambda: not any(e["node"] == victim for e in store.open_queue_entries()),
                                       f"{victim}'s queue entries closed"),
        "calls_closed_s": since_kill(lambda: not [c for c in _open_calls(store, since) if c["node"] == victim],
                                     f"{victim}'s calls closed"),
        "kamailio_unrouted_s": since_kill(lambda: site.unrouted(victim), f"Kamailio unrouting {victim}"),
    }


def bench_failover(postgres: TempPostgres, work: Path, repeats: int = 3) -> dict[str, Any]:
    """Seconds from kill -9 of a node to: marked down, its queue entries and calls closed, Kamailio unrouting it."""
    rows: list[dict[str, Any]] = []
    with _site(postgres, work / "site", ("a", "b", "c"), 8) as site:
        store = site.open_store()
        for repeat in range(repeats):
            victim = site.names[repeat % len(site.names)]
            since, load = _callers_on_every_node(site, store, work / f"load{repeat}", 9, 15)
            rows.append(_kill_and_time(site, store, victim, since))
            load.join(120)
            site.start_node(victim)

    def median(key: str) -> float:
        return round(statistics.median(r[key] for r in rows), 3)

    return {"repeats": repeats, "nodes": 3, "heartbeat_s": 1.0, "dead_after_s": 6.0,
            "median": {k: median(k) for k in ("marked_down_s", "entries_closed_s", "calls_closed_s",
                                               "kamailio_unrouted_s")},
            "max_marked_down_s": max(r["marked_down_s"] for r in rows), "runs": rows}


def bench_lost(postgres: TempPostgres, work: Path, calls: int = 18, victim: str = "b",
               max_calls: int = 12) -> dict[str, Any]:
    """Calls up on 3 nodes, one killed with -9: failed calls per node, then new calls after detection (the
    two nodes left have room for them: ``max_calls`` each)."""
    with _site(postgres, work / "site", ("a", "b", "c"), max_calls) as site:
        store = site.open_store()
        since, load = _callers_on_every_node(site, store, work / "load", calls, 25)
        leader = site.leader()
        site.kill(victim)
        _wait(lambda: site.node_states()[victim]["state"] == "down", 30, f"{victim} marked down")
        detected = _wait(lambda: site.unrouted(victim), 30, f"Kamailio unrouting {victim}")
        after = time.time()
        late = _callers(site, work / "late", 9, 3, bind=LATE_CALLERS)
        first = load.join(120)
        _wait(lambda: not _open_calls(store, since), 30, "every call record closed")
        records = store.list_calls(since=since, until=after, limit=1000)
        late_records = store.list_calls(since=after, limit=1000)
    per_node: dict[str, dict[str, int]] = {}
    for name in site.names:
        outcomes = Counter(c["outcome"] for c in records if c["node"] == name)
        per_node[name] = {"calls": sum(outcomes.values()), "ran_to_the_end": outcomes["abandoned"],
                          "failed": sum(n for o, n in outcomes.items() if o != "abandoned")}
    return {"calls": calls, "call_seconds": 25, "max_calls_per_node": max_calls, "victim": victim,
            "victim_led": victim == leader,
            "per_node": per_node, "sipp": {"successful": first.successful, "failed": first.failed},
            "kamailio_unrouted_after_down_s": round(detected, 2),
            "after_detection": {"calls": 9, "successful": late.successful, "failed": late.failed,
                                "nodes": dict(Counter(c["node"] for c in late_records))},
            "ok": all(v["failed"] == 0 for k, v in per_node.items() if k != victim) and late.failed == 0}




def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(stat[1])
            except (OSError, ValueError, IndexError):
                continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += [child for child, parent in parents.items() if parent == pid]
    return found


def _load_cpu(postgres: TempPostgres, work: Path, names: tuple[str, ...], max_calls: int, calls: int,
              seconds: float, window: float) -> dict[str, Any]:
    with _site(postgres, work, names, max_calls) as site:
        store = site.open_store()
        since = time.time()
        load = _Background(site, work / "load", calls, seconds, stagger=0.1)
        _wait(lambda: len(_open_calls(store, since)) == calls, 30, "every caller up")
        time.sleep(1.0)
        groups = {"nodes": site.pids(), "kamailio": _descendants(site.edge_pid),
                  "postgres": _descendants(postgres.pid)}
        before = {k: cpu_seconds(v) for k, v in groups.items()}
        time.sleep(window)
        up = len(_open_calls(store, since))
        busy = {k: (cpu_seconds(v) - before[k]) / window for k, v in groups.items()}
        result = load.join(seconds + 120)
        per_node = dict(Counter(c["node"] for c in store.list_calls(since=since, limit=1000)))
    total = sum(busy.values())
    return {"nodes": len(names), "max_calls_per_node": max_calls, "calls_up": up,
            "cores_busy": {k: round(v, 3) for k, v in busy.items()}, "cores_busy_total": round(total, 3),
            "calls_per_core": round(up / total, 1) if total else None, "calls_per_node": per_node,
            "sipp": {"successful": result.successful, "failed": result.failed}}


def bench_capacity(postgres: TempPostgres, work: Path, calls: int = 24, window: float = 15.0) -> dict[str, Any]:
    """The same load (``calls`` callers up at once) through Kamailio to 1 node vs 3 nodes."""
    seconds = window + 12
    one = _load_cpu(postgres, work / "one", ("a",), calls, calls, seconds, window)
    three = _load_cpu(postgres, work / "three", ("a", "b", "c"), -(-calls // 3), calls, seconds, window)
    return {"load": f"{calls} SIPp callers (PCMU, 20 ms RTP both ways) waiting in a queue, measured over "
                    f"{window:g} s with all of them up", "one_node": one, "three_nodes": three}


def run_cluster_bench(parts: tuple[str, ...], repeats: int = 3) -> dict[str, Any]:
    """Run the chosen parts (failover, lost, capacity) on a throwaway PostgreSQL and return their figures."""
    load = os.getloadavg()
    runners: dict[str, Callable[[TempPostgres, Path], dict[str, Any]]] = {
        "failover": lambda pg, work: bench_failover(pg, work, repeats), "lost": bench_lost, "capacity": bench_capacity}
    result: dict[str, Any] = {}
    with TempPostgres(fsync=True) as postgres, tempfile.TemporaryDirectory(prefix="ivr-bench-cluster-") as tmp:
        for name in parts:
            result[name] = runners[name](postgres, Path(tmp) / name)
    result["load_average_before"] = [round(x, 2) for x in load]
    return result
