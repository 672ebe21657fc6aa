"""``ivr bench calls``: many concurrent SIP callers against a real ``IvrServer`` on loopback.

Starts the server with one demo flow (pjsua2 worker pool, the flow's speech engine, SQLite) and N callers,
started a little apart, each speaking the flow's fixtures over RTP and pressing keys: by default one SIPp
process replaying each caller's RTP from a pcap (``ivr.bench.sipp``; it costs the machine ~0.03 core, so
the figures are the server's), or one pjsua2 caller process per call (``ivr.testing.sip_caller``;
~0.04 core each). Everything callers hear is timed on the wire by an RTP capture on the loopback
interface (``ivr.bench.wire``): turn latency (end of the caller's speech → first voiced reply packet) and
gaps over 40 ms in the bot's outgoing RTP. Call set-up (INVITE → 200 OK) is what each caller measured.
The CPU used by the server, its SIP workers and the callers is reported as average busy cores. The
capture (and SIPp's RTP replay) needs root / CAP_NET_RAW; without it the wire figures are left out.
"""

from __future__ import annotations

import os
import resource
import shutil
import socket
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ivr.errors import IvrError

CALLER_ADDRESS = "127.0.0.61"
"""Callers call from this loopback address, so the capture sees only the benchmark's RTP."""


@dataclass(frozen=True)
class Turn:
    """One caller step and the bot's answer to it (whose spoken length sets how long the caller waits)."""

    step: str
    reply: tuple[str, ...]


@dataclass(frozen=True)
class BenchFlow:
    """A demo flow and a call through it."""

    name: str
    fixtures: str
    greeting: tuple[str, ...]
    turns: tuple[Turn, ...]
    hangup: bool = True
    """The caller hangs up at the end (False: the bot does)."""


FLOWS = {
    "hotline": BenchFlow(
        name="hotline",
        fixtures="audio_fixtures/hotline",
        greeting=("Thanks for calling Acme.",
                  "How can I help you today? You can say order status, billing, or agent. "
                  "Or press 1 for order status, 2 for billing, or 0 for an agent."),
        turns=(
            Turn("play order_status.wav", ("Sure. Please say or key in your order number, then press pound.",)),
            Turn("dtmf 12345#", ("I heard 1 2 3 4 5. Is that right?",)),
            Turn("play yes.wav", ("Good news. Order 1 2 3 4 5 shipped on Monday and should arrive by Thursday.",
                                  "Is there anything else I can help you with?")),
            Turn("play no.wav", ("Before you go: on a scale from 1 to 5, how satisfied are you with this call? "
                                 "Say a number or press a key.",)),
        ),
    ),
    "korean": BenchFlow(
        name="korean",
        fixtures="audio_fixtures/korean",
        greeting=("에이씨미 고객센터에 전화해 주셔서 감사합니다.",
                  "주문 조회, 요금, 상담원 중에서 말씀해 주세요. "
                  "주문 조회는 1번, 요금은 2번, 상담원은 0번을 누르세요."),
        turns=(
            Turn("play order_status.wav", ("주문 내역과 배송 상태는 홈페이지의 마이 페이지에서 확인하실 수 있습니다.",
                                           "더 도와 드릴 일이 있으신가요? 네 또는 아니요로 말씀해 주세요.")),
            Turn("play no.wav", ("감사합니다. 안녕히 계세요.",)),
        ),
        hangup=False,
    ),
}

# The demo hotline's order service: the order the callers key in exists.
ORDER_ROUTES = {"GET /orders/12345": {"json": {"order": "12345", "status": "shipped", "shipped_on": "Monday",
                                               "eta": "Thursday"}}}


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _ms(values: list[float], scale: float = 1000.0) -> dict[str, Any]:
    if not values:
        return {"n": 0}
    return {"n": len(values), "median_ms": round(statistics.median(values) * scale, 1),
            "p95_ms": round(_percentile(values, 0.95) * scale, 1), "max_ms": round(max(values) * scale, 1)}


def _script(flow: BenchFlow, seconds: Any, margin: float = 1.5) -> str:
    """The caller's script: wait out each prompt (its synthesized length plus ``margin``), then act."""
    root = Path(flow.fixtures).resolve()
    parts = [f"wait {sum(seconds(t) for t in flow.greeting) + margin:.1f}"]
    for turn in flow.turns:
        kind, _, arg = turn.step.partition(" ")
        parts.append(f"play {root / arg}" if kind == "play" else turn.step)
        parts.append(f"wait {sum(seconds(t) for t in turn.reply) + margin + 1.0:.1f}")
    if flow.hangup:
        parts[-1] = "wait 2"  # hang up while the last prompt plays
        parts.append("hangup")
    return "; ".join(parts)


def _worker_cpu_seconds(server: Any) -> float:
    """CPU time used so far by the server's SIP worker processes (Linux /proc; 0 if unavailable)."""
    pool = server.sip.pool
    total = 0.0
    for pid in pool.worker_pids() if pool is not None else []:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def copy_demo_flow(name: str, flows_dir: Path, source: Path = Path("flows")) -> Path:
    """Copy demo flow ``name`` and the knowledge files it refers to (relative paths) into ``flows_dir``."""
    flows_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / f"{name}.yaml", flows_dir)
    if (source / "knowledge").is_dir():
        shutil.copytree(source / "knowledge", flows_dir / "knowledge", dirs_exist_ok=True)
    return flows_dir / f"{name}.yaml"


def run_calls_bench(calls: int = 20, flow: str = "hotline", stagger: float = 0.5,
                    callers: str = "sipp", model: str | None = None) -> dict[str, Any]:
    """Run ``calls`` concurrent calls through ``flow`` (hotline or korean) and return the figures.

    ``callers``: ``sipp`` (one SIPp process replaying each caller's RTP from a pcap: cheap, so the figures
    are the server's) or ``pjsua2`` (one pjsua2 caller process per call, as the SIP tests use).
    """
    from ivr.bench.wire import RtpCapture
    from ivr.replay.runner import MockWebServer
    from ivr.server import IvrServer, ServerConfig
    from ivr.sip.config import SipConfig
    from ivr.testing.sip_caller import CallerResult, place_call

    if flow not in FLOWS:
        raise IvrError(f"unknown benchmark flow {flow!r}; use one of {', '.join(FLOWS)}")
    if calls < 1:
        raise IvrError("--calls must be at least 1")
    if callers not in ("sipp", "pjsua2"):
        raise IvrError(f"unknown callers {callers!r}; use sipp or pjsua2")
    spec = FLOWS[flow]
    work = Path(tempfile.mkdtemp(prefix="ivr-bench-calls-"))
    copy_demo_flow(spec.name, work / "flows")
    orders = MockWebServer(ORDER_ROUTES).start()
    config = ServerConfig(
        flows_dir=work / "flows",
        sip=SipConfig(host="127.0.0.1", port=_free_port(socket.SOCK_DGRAM), max_calls=calls, log_level=0),
        web_port=_free_port(socket.SOCK_STREAM), database=str(work / "ivr.db"),
        variables={"api_base": orders.base_url}, whisper_model=model)
    load_before = os.getloadavg()
    server = IvrServer(config)
    server.start()
    result: dict[str, Any] = {"flow": spec.name, "calls": calls, "callers": callers,
                              "engine": sorted(server.services), "model": model or "default"}
    try:
        services = next(iter(server.services.values()))
        tts = services.tts_for(server.flows.get(spec.name).language)

        def seconds(text: str) -> float:
            return sum(len(chunk) for chunk in tts.stream(text, 8000)) / 2 / 8000

        script = _script(spec, seconds)
        result["script"] = script
        peak = [0]
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.2):
                peak[0] = max(peak[0], server.sip.admission.active_calls)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        uri = f"sip:{spec.name}@127.0.0.1:{server.sip.port}"

        def call(index: int) -> CallerResult:
            time.sleep(index * stagger)
            try:
                return place_call(uri, script, bind=CALLER_ADDRESS, timeout=240)
            except IvrError as exc:
                return CallerResult(error=str(exc))

        try:
            capture: Any = RtpCapture(CALLER_ADDRESS)
        except IvrError as exc:
            capture = None
            result["wire_error"] = str(exc)
        started = time.monotonic()
        cpu_main, cpu_workers = time.process_time(), _worker_cpu_seconds(server)
        cpu_children = resource.getrusage(resource.RUSAGE_CHILDREN)
        if capture is not None:
            capture.__enter__()
        sipp: Any = None
        results: list[CallerResult] = []
        try:
            if callers == "sipp":
                from ivr.bench.sipp import run_sipp_callers

                sipp = run_sipp_callers(f"127.0.0.1:{server.sip.port}", spec.name, script, calls, stagger,
                                        work / "sipp", CALLER_ADDRESS, caller_hangs_up=spec.hangup)
            else:
                with ThreadPoolExecutor(calls) as pool:
                    results = list(pool.map(call, range(calls)))
        finally:
            if capture is not None:
                capture.stop()
        wall = time.monotonic() - started
        result["wall_seconds"] = round(wall, 1)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        # average cores busy during the calls: the server's main process (speech, sessions; it also runs
        # this benchmark's RTP capture), its SIP worker processes, and the callers (SIPp or pjsua2)
        result["cpu_cores"] = {
            "server_main": round((time.process_time() - cpu_main) / wall, 2),
            "server_sip_workers": round((_worker_cpu_seconds(server) - cpu_workers) / wall, 2),
            "callers": round((children.ru_utime + children.ru_stime - cpu_children.ru_utime
                              - cpu_children.ru_stime) / wall, 2),
        }
        sampling.set()
        sampler.join()
        deadline = time.monotonic() + 10
        while server.sip.admission.active_calls and time.monotonic() < deadline:
            time.sleep(0.1)
        outcomes: dict[str, int] = {}
        for row in server.store.list_calls(limit=1000):
            outcomes[row["outcome"] or "none"] = outcomes.get(row["outcome"] or "none", 0) + 1
        expected_outcome = "caller_hangup" if spec.hangup else "completed"
        if sipp is not None:
            # SIPp fails a call on any unexpected turn of the dialog: a call never answered is a failed call;
            # an answered one that went otherwise (the bot transferred it, hung up early or never) was out of
            # step with the caller's script, as the pjsua2 callers report it
            unanswered = max(0, calls - len(sipp.setup_ms))
            failures: list[dict[str, Any]] = [{"sipp_errors": sipp.errors}] if sipp.failed else []
            result.update({"failed_calls": unanswered,
                           "calls_out_of_step": max(0, sipp.failed + max(0, calls - sipp.successful - sipp.failed)
                                                    - unanswered),
                           "failures": failures, "setup": _ms(sipp.setup_ms, scale=1.0)})
        else:
            expected_end = "local" if spec.hangup else "remote"
            failed = [r for r in results if not r.connected or r.error]
            result.update({
                "failed_calls": len(failed),
                # connected calls whose scripted caller fell out of step with the bot (e.g. replies came late)
                "calls_out_of_step": sum(1 for r in results
                                         if r.connected and not r.error and r.ended_by != expected_end),
                "failures": [{"status": r.status, "error": r.error, "ended_by": r.ended_by, "steps": r.steps_done}
                             for r in failed][:5],
                "setup": _ms([r.setup_ms for r in results if r.connected], scale=1.0),
            })
        result.update({
            "peak_concurrent_calls": peak[0],
            "server_outcomes": outcomes,
            "server_calls_not_as_scripted": sum(n for k, n in outcomes.items() if k != expected_outcome),
            "active_calls_after": server.sip.admission.active_calls,
        })
        if capture is not None:
            wire = [c for c in capture.calls() if c.speech_ends()]
            latencies = [x for c in wire for x in c.turn_latencies()]
            gaps = [g for c in wire for g in c.bot.gaps(0.04)]
            speech_turns = sum(1 for t in spec.turns if t.step.startswith("play")) * calls
            result["turn_latency_on_wire"] = {**_ms(latencies), "speech_turns_expected": speech_turns}
            result["outbound_rtp_gaps_over_40ms"] = {
                "count": len(gaps), "max_ms": round(max(gaps) * 1000, 1) if gaps else 0.0,
                "packets": sum(len(c.bot.audio()) for c in wire), "calls_captured": len(wire)}
    finally:
        server.stop(5)
        orders.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["load_average_before"] = [round(x, 2) for x in load_before]
    result["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return result
