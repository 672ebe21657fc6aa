"""Queue benchmark over real SIP: from a flow's transfer action to the agent's phone ringing with the headers.

An ``IvrServer`` (pooled by default, as in production past 4 calls) runs a one-node flow per queue that
transfers straight to that queue. 50 callers wait across 5 unstaffed "backlog" queues (ACD entries without
a SIP leg: they load the ACD's dispatch and the store), while pjsua2 callers (one process each) dial the 5
staffed queues one after another. Each staffed queue has an agent phone (a pjsua2 process) that answers and
hangs up at once. Latency = the phone's wall-clock time of receiving the INVITE (``X-IVR-Call-Id`` header)
minus the wall-clock time the call's session entered its transfer action.

Run: ``python -m ivr.bench.queue_sip [--calls 25] [--waiting 50] [--max-calls 8]`` (about a minute).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

QUEUES = 5


def _files(root: Path, phone_ports: list[int]) -> tuple[Path, Path]:
    flows = root / "flows"
    flows.mkdir()
    nodes = ["  route:", "    branch:"]
    for q in range(QUEUES):
        nodes.append(f"      - {{if: \"called == 'q{q}'\", goto: to_q{q}}}")
    nodes.append("    otherwise: to_q0")
    for q in range(QUEUES):
        nodes += [f"  to_q{q}:", f"    transfer: {{queue: q{q}, context: {{intent: bench_q{q}}}}}"]
    names = ", ".join([f"q{q}" for q in range(QUEUES)] + [f"backlog{q}" for q in range(QUEUES)])
    (flows / "bench.yaml").write_text("version: 1\nname: queue_bench\nlanguage: en-US\n"
                                      f"queues: [{names}]\nstart: route\nnodes:\n" + "\n".join(nodes) + "\n")
    lines = ["max_missed_offers: 100", "agents:"]
    for q, port in enumerate(phone_ports):
        lines.append(f"  agent{q}: {{uri: 'sip:agent{q}@127.0.0.1:{port}', skills: [s{q}]}}")
        lines.append(f"  backup{q}: {{uri: 'sip:backup{q}@127.0.0.1:{port}', skills: [b{q}]}}")
    lines.append("queues:")
    for q in range(QUEUES):
        lines.append(f"  q{q}: {{skills: [s{q}], ring_timeout: 10, wrap_up: 0}}")
        lines.append(f"  backlog{q}: {{skills: [b{q}], ring_timeout: 10, announce: {{every: 60, first_after: 60}}}}")
    queues = root / "queues.yaml"
    queues.write_text("\n".join(lines) + "\n")
    return flows, queues


def bench_transfer_to_ring(calls: int = 25, waiting: int = 50, max_calls: int = 8) -> dict[str, Any]:
    """Milliseconds from the transfer action to the agent phone's INVITE, over ``calls`` real SIP calls."""
    from ivr.call.transfer import Transfers
    from ivr.flow.actions import Transfer
    from ivr.server import IvrServer, ServerConfig
    from ivr.sip.config import SipConfig
    from ivr.testing.sip_agent import AgentPhone
    from ivr.testing.sip_caller import place_call

    phones = [AgentPhone() for _ in range(QUEUES)]
    transfer_at: dict[str, float] = {}
    original = Transfers.transfer

    def timed_transfer(transfers: Transfers, action: Transfer) -> None:
        transfer_at.setdefault(transfers.line.call_id, time.time())
        original(transfers, action)

    Transfers.transfer = timed_transfer  # type: ignore[method-assign,assignment]
    server = None
    try:
        with tempfile.TemporaryDirectory(prefix="ivr-queue-sip-bench-") as tmp:
            flows, queues = _files(Path(tmp), [p.port for p in phones])
            config = ServerConfig(flows_dir=flows, sip=SipConfig(port=0, max_calls=max_calls, log_level=0),
                                  web_port=0, database=str(Path(tmp) / "ivr.db"), queues_file=queues)
            server = IvrServer(config)
            server.start()
            acd = server.acd
            for i in range(waiting):  # callers waiting in unstaffed queues (no SIP leg)
                server.store.start_call(f"waiting-{i}", f"+1555{i:07d}", "100", "queue_bench", time.time())
                acd.enqueue(f"waiting-{i}", f"backlog{i % QUEUES}",
                            context={"intent": "billing", "slots": {"order": str(i)}})
            for q, phone in enumerate(phones):
                phone.set_mode("answer", after=0.05, hangup_after=0.1)
                acd.set_agent_state(f"agent{q}", "available")
            for i in range(calls):
                result = place_call(f"sip:q{i % QUEUES}@127.0.0.1:{server.sip.port}", "wait 2")
                if not result.connected:
                    raise RuntimeError(f"bench call {i} was not answered: {result.status} {result.error}")
            time.sleep(0.5)
            rings = {e["headers"].get("X-IVR-Call-Id"): e["at"] for p in phones for e in p.seen("incoming")}
            latencies = sorted((rings[c] - t) * 1000 for c, t in transfer_at.items() if c in rings)
            still_waiting = sum(len(v) for k, v in acd.snapshot()["queues"].items() if k.startswith("backlog"))
            mode = server.sip.describe()
    finally:
        Transfers.transfer = original  # type: ignore[method-assign]
        if server is not None:
            server.stop(2)
        for phone in phones:
            phone.close()
    if not latencies:
        raise RuntimeError("no agent phone rang; run with -v to see the server log")
    return {"calls": len(latencies), "waiting": still_waiting, "queues": QUEUES, "sip": mode,
            "median_ms": round(statistics.median(latencies), 1),
            "p95_ms": round(latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
            "max_ms": round(latencies[-1], 1), "target_median_ms": 100,
            "ok": statistics.median(latencies) <= 100}


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m ivr.bench.queue_sip", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=25, help="measured SIP calls (spread over 5 queues)")
    parser.add_argument("--waiting", type=int, default=50, help="callers waiting across 5 backlog queues")
    parser.add_argument("--max-calls", type=int, default=8, help="server max_calls (above 4: a worker pool)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the server")
    args = parser.parse_args(argv)
    if args.verbose:
        import logging

        logging.basicConfig(level=logging.INFO)
    print(json.dumps(bench_transfer_to_ring(args.calls, args.waiting, args.max_calls)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
