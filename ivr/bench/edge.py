"""``ivr bench edge``: what the Kamailio edge costs and what it withstands, measured with real SIP on loopback.

- ``setup``: INVITE → 200 OK through Kamailio and a worker process, against one pjsua2 endpoint answering on
  the port itself (pjsua2 callers, one call at a time; the bot answers at once): the added latency.
- ``flood``: calls up with the bot talking, while an INVITE flood from another address grows; how many
  INVITEs per second the edge refuses, and the bot's RTP on the wire (gaps over 40 ms).
- ``failover``: kill -9 of a worker until its replacement is ready and routed to; kill -9 of Kamailio until it
  answers again.
- ``idle``: CPU of a server with no calls (server process, workers, Kamailio).

Callers and the flood use SIPp; the RTP capture needs root (CAP_NET_RAW).
"""

from __future__ import annotations

import itertools
import os
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ivr.bench.calls import CALLER_ADDRESS
from ivr.bench.procs import cpu_seconds
from ivr.errors import IvrError
from ivr.sip.config import SipConfig
from ivr.sip.echo import EchoBot, dtmf_tone
from ivr.sip.edge import EdgeOptions
from ivr.sip.service import SipService

FLOOD_ADDRESS = "127.0.0.62"


def _service(work: Path, mode: str, max_calls: int, bot: Callable[..., None], **options: Any) -> SipService:
    service = SipService(SipConfig(host="127.0.0.1", port=0, max_calls=max_calls, log_level=0),
                         EdgeOptions(mode=mode, var_dir=work / "edge", **options), on_call=bot)
    service.start()
    return service


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bench_setup(calls: int = 20) -> dict[str, Any]:
    """Median INVITE → 200 OK, one endpoint on the port vs. through Kamailio and a worker (pjsua2 callers)."""
    from ivr.testing.sip_caller import place_call

    result: dict[str, Any] = {"calls": calls}
    with tempfile.TemporaryDirectory(prefix="ivr-bench-edge-") as tmp:
        for mode in ("none", "kamailio"):
            service = _service(Path(tmp) / mode, mode, 4, EchoBot())
            try:
                setups = [place_call(f"sip:100@127.0.0.1:{service.port}", "wait 0.1", bind=CALLER_ADDRESS).setup_ms
                          for _ in range(calls + 1)][1:]  # the first call warms up both sides
            finally:
                service.stop()
            if not all(setups):
                raise IvrError(f"a benchmark call was not answered ({mode})")
            result[mode] = {"median_ms": round(statistics.median(setups), 2),
                            "p95_ms": round(_percentile(setups, 0.95), 2)}
    result["added_median_ms"] = round(result["kamailio"]["median_ms"] - result["none"]["median_ms"], 2)
    result["target_added_ms"] = 5
    result["ok"] = result["added_median_ms"] <= 5
    return result


def bench_flood(calls: int = 20, rates: tuple[int, ...] = (200, 500, 1000), seconds: float = 5.0) -> dict[str, Any]:
    """INVITEs per second refused while ``calls`` calls hear the bot without RTP gaps over 40 ms."""
    from ivr.bench.sipp import run_sipp_callers
    from ivr.bench.wire import RtpCapture

    talk = {rate: dtmf_tone("5", rate, 0.1) * 600 for rate in (8000, 16000)}  # a minute of sound
    bot = EchoBot(greeting=talk)

    def answer(channel: Any) -> None:  # what the flood gets through is hung up at once
        if channel.remote.startswith(FLOOD_ADDRESS + ":"):
            channel.hangup()
        else:
            bot(channel)

    result: dict[str, Any] = {"calls": calls, "flood_seconds": seconds}
    with tempfile.TemporaryDirectory(prefix="ivr-bench-flood-") as tmp:
        work = Path(tmp)
        service = _service(work, "kamailio", calls + 8, answer)
        callers: dict[str, Any] = {}
        try:
            with RtpCapture(CALLER_ADDRESS) as capture:
                hold = seconds * len(rates) + 12
                thread = threading.Thread(target=lambda: callers.update(result=run_sipp_callers(
                    f"127.0.0.1:{service.port}", "100", f"wait {hold:.0f}", calls, 0.1, work / "callers",
                    CALLER_ADDRESS)), daemon=True)
                thread.start()
                deadline = time.monotonic() + 20
                while len(bot.calls) < calls and time.monotonic() < deadline:
                    time.sleep(0.1)
                time.sleep(2.0)
                windows = []
                for rate in rates:
                    before = service.rejections()
                    started = time.time()
                    subprocess.run(
                        ["sipp", "-sn", "uac", f"127.0.0.1:{service.port}", "-i", FLOOD_ADDRESS, "-p", "0",
                         "-r", str(rate), "-m", str(int(rate * seconds)), "-nr", "-recv_timeout", "500",
                         "-timeout", f"{seconds + 5:.0f}s", "-nostdin", "-s", "100"],
                        capture_output=True, cwd=work, timeout=seconds + 30)
                    ended = time.time()
                    after = service.rejections()
                    refused = sum(after.get(k, 0) - before.get(k, 0) for k in ("rate_limited", "flood", "capacity"))
                    windows.append((rate, started, ended, refused))
                    time.sleep(1.0)
                thread.join(hold + 60)
        finally:
            service.stop()
        wire = capture.calls()
        bot_streams = [call.bot for call in wire if call.bot.packets]
        for rate, started, ended, refused in windows:
            gaps = 0
            longest = 0.0
            for stream in bot_streams:
                times = [p.at for p in stream.packets if started <= p.at <= ended]
                steps = [b - a for a, b in itertools.pairwise(times)]
                gaps += sum(1 for step in steps if step > 0.04)
                longest = max([longest, *steps])
            result[f"flood_{rate}_per_s"] = {
                "refused_per_s": round(refused / (ended - started), 1), "seconds": round(ended - started, 1),
                "bot_rtp_gaps_over_40ms": gaps, "bot_rtp_longest_gap_ms": round(longest * 1000, 1)}
        sipp_result = callers.get("result")
        result["calls_answered"] = sipp_result.successful if sipp_result is not None else 0
        result["bot_streams"] = len(bot_streams)
    return result


def bench_failover(repeats: int = 5) -> dict[str, Any]:
    """Seconds from kill -9 to a routed replacement worker, and to a Kamailio that answers again."""
    worker_times: list[float] = []
    edge_times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="ivr-bench-failover-") as tmp:
        service = _service(Path(tmp), "kamailio", 8, EchoBot())
        try:
            assert service.pool is not None and service.edge is not None
            for _ in range(repeats):
                victim = service.pool.links[0]
                killed = time.monotonic()
                os.kill(victim.process.pid, signal.SIGKILL)
                while time.monotonic() - killed < 20:
                    link = service.pool.links[0]
                    if link is not victim and link.ready.is_set() and len(service.edge.active_workers()) == 2:
                        break
                    time.sleep(0.02)
                worker_times.append(time.monotonic() - killed)
                time.sleep(1.0)
            for _ in range(repeats):
                pid = service.edge.pid
                assert pid is not None
                killed = time.monotonic()
                os.kill(pid, signal.SIGKILL)
                while time.monotonic() - killed < 20:
                    if service.edge.pid not in (None, pid):
                        try:
                            service.edge.rpc.call("core.version", timeout=0.2)
                            break
                        except IvrError:
                            pass
                    time.sleep(0.02)
                edge_times.append(time.monotonic() - killed)
                time.sleep(1.0)
        finally:
            service.stop()
    return {"worker_replaced_s": {"median": round(statistics.median(worker_times), 2),
                                  "max": round(max(worker_times), 2)},
            "kamailio_restarted_s": {"median": round(statistics.median(edge_times), 2),
                                     "max": round(max(edge_times), 2)},
            "repeats": repeats, "target_worker_s": 5}




def _group_pids(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def bench_idle(seconds: float = 30.0, max_calls: int = 30) -> dict[str, Any]:
    """Percent of one core used by a server with no calls: this process, the workers, Kamailio."""
    with tempfile.TemporaryDirectory(prefix="ivr-bench-idle-") as tmp:
        service = _service(Path(tmp), "kamailio", max_calls, EchoBot())
        try:
            assert service.pool is not None and service.edge is not None
            time.sleep(3.0)  # start-up done
            workers = service.pool.worker_pids()
            edge = _group_pids(service.edge.pid or 0)
            before = (time.process_time(), cpu_seconds(workers), cpu_seconds(edge))
            time.sleep(seconds)
            after = (time.process_time(), cpu_seconds(workers), cpu_seconds(edge))
        finally:
            service.stop()
    main, worker, kamailio = ((b - a) / seconds * 100 for a, b in zip(before, after, strict=True))
    return {"max_calls": max_calls, "workers": len(workers), "seconds": seconds,
            "server_process_pct": round(main, 2), "workers_pct": round(worker, 2),
            "per_worker_pct": round(worker / len(workers), 2), "kamailio_pct": round(kamailio, 2),
            "total_pct_of_one_core": round(main + worker + kamailio, 2)}


def run_edge_bench(parts: tuple[str, ...]) -> dict[str, Any]:
    """Run the chosen parts (setup, flood, failover, idle) and return their figures."""
    runners: dict[str, Callable[[], dict[str, Any]]] = {
        "setup": bench_setup, "flood": bench_flood, "failover": bench_failover, "idle": bench_idle}
    load = os.getloadavg()
    result: dict[str, Any] = {name: runners[name]() for name in parts}
    result["load_average_before"] = [round(x, 2) for x in load]
    return result
