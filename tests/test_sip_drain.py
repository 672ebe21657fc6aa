"""A stopping node drains: its workers answer the edge's OPTIONS probes and new INVITEs with 503 (real SIPp
peer), while the call in progress goes on to its end."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_sip_sipp import free_port, run_sipp  # tests/ is on sys.path (pytest's default import mode)

from ivr.cli.edge import edge as edge_cli
from ivr.sip import SipConfig
from ivr.sip.echo import EchoBot
from ivr.sip.edge import EdgeOptions, find_kamailio
from ivr.sip.kamailio_rpc import KamailioRpc, KamailioRpcError
from ivr.sip.service import SipService
from ivr.testing.sip_caller import place_call
from ivr.testing.waiting import wait_for

pytestmark = pytest.mark.slow


def test_a_stopping_node_answers_probes_and_new_calls_503_while_its_call_goes_on(tmp_path: Path) -> None:
    bot = EchoBot()
    base = free_port()
    service = SipService(SipConfig(host="127.0.0.1", port=0, transports=("udp",), max_calls=4, log_level=0),
                         EdgeOptions(mode="external", addresses=("127.0.0.1",), worker_port_base=base,
                                     var_dir=tmp_path / "edge"), on_call=bot)
    service.start()
    pool = service.pool
    assert pool is not None
    worker = f"127.0.0.1:{base}"
    stopped = threading.Event()
    try:
        assert run_sipp("options.xml", tmp_path, "-s", "ping", "-m", "1", target=worker).returncode == 0
        with ThreadPoolExecutor(2) as run:
            call = run.submit(place_call, f"sip:100@{worker}", "wait 5")
            assert wait_for(lambda: len(bot.calls) == 1, 10)
            started = time.monotonic()
            stopping = run.submit(lambda: (service.stop(30), stopped.set()))
            assert wait_for(lambda: pool.draining, 2)
            # What Kamailio's dispatcher sees: probes fail, so it takes the node's workers out.
            assert run_sipp("options_503.xml", tmp_path, "-s", "ping", "-m", "1", target=worker).returncode == 0
            assert run_sipp("invite_503.xml", tmp_path, "-s", "100", "-m", "1", target=worker).returncode == 0
            assert not stopped.is_set()  # still draining: the call is up
            result = call.result()
            stopping.result()
        assert result.connected and result.ended_by == "local" and result.duration >= 4.5
        assert time.monotonic() - started < 10  # stopped when the call ended, not after the 30 s grace
        assert service.stats.outcomes["completed"] == 1
        assert service.stats.outcomes["rejected_shutdown"] == 1
    finally:
        if not stopped.is_set():
            service.stop()


def start_node(tmp_path: Path, name: str, bot: EchoBot, base: int) -> SipService:
    service = SipService(SipConfig(host="127.0.0.1", port=0, transports=("udp",), max_calls=4, log_level=0),
                         EdgeOptions(mode="external", addresses=("127.0.0.1",), worker_port_base=base,
                                     var_dir=tmp_path / name), on_call=bot)
    service.start()
    return service


@pytest.mark.skipif(find_kamailio() is None, reason="needs Kamailio (apt-get install kamailio)")
def test_a_site_kamailio_spreads_calls_over_nodes_and_skips_a_draining_one(tmp_path: Path) -> None:
    bots = {"a": EchoBot(), "b": EchoBot()}
    bases = {"a": free_port(), "b": free_port()}
    nodes = {name: start_node(tmp_path, name, bots[name], bases[name]) for name in bots}
    port, run_dir = free_port(), tmp_path / "run"
    run_dir.mkdir()
    result = CliRunner().invoke(edge_cli, ["config", "--sip-host", "127.0.0.1", "--sip-port", str(port),
                                           "--transport", "udp", "--run-dir", str(run_dir), "-o", str(tmp_path / "kam"),
                                           *(f"--node={name}=127.0.0.1:{base}:4" for name, base in bases.items())])
    assert result.exit_code == 0, result.output
    kamailio = subprocess.Popen([find_kamailio() or "kamailio", "-f", str(tmp_path / "kam" / "kamailio.cfg"), "-DD",
                                 "-E", "-Y", str(run_dir), "-P", str(run_dir / "pid"), "-m", "64", "-M", "8"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, process_group=0)
    rpc = KamailioRpc(run_dir / "rpc.sock")

    def active() -> set[str]:
        with contextlib.suppress(KamailioRpcError):
            records = rpc.call("dispatcher.list", timeout=0.5)["RECORDS"]
            return {t["DEST"]["URI"] for r in records for t in r["SET"]["TARGETS"]
                    if str(t["DEST"]["FLAGS"]).startswith("A")}
        return set()

    try:
        assert wait_for(lambda: len(active()) == 2, 10)
        with ThreadPoolExecutor(4) as run:  # round robin: one call on each node
            assert all(r.connected for r in run.map(lambda _: place_call(f"sip:100@127.0.0.1:{port}", "wait 1"),
                                                    range(2)))
        assert len(bots["a"].calls) == 1 and len(bots["b"].calls) == 1
        pool = nodes["a"].pool
        assert pool is not None
        pool.drain()  # what SIGTERM starts (then the grace period)
        # Before the probes take node a out, its 503 passes the call to node b; after, only b is asked.
        assert all(place_call(f"sip:100@127.0.0.1:{port}", "wait 0.3").connected for _ in range(2))
        assert wait_for(lambda: active() == {f"sip:127.0.0.1:{bases['b']}"}, 5)
        assert place_call(f"sip:100@127.0.0.1:{port}", "wait 0.3").connected
        assert len(bots["a"].calls) == 1 and len(bots["b"].calls) == 4
        nodes["b"].stop()  # node b gone too: the probes take it out, and callers get 503
        assert wait_for(lambda: not active(), 5)
        assert place_call(f"sip:100@127.0.0.1:{port}", "wait 0.3").status == 503
    finally:
        kamailio.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            kamailio.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(kamailio.pid, signal.SIGKILL)
        for node in nodes.values():
            node.stop()
