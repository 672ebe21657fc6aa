"""A stopping node drains: its workers answer the edge's OPTIONS probes and new INVITEs with 503 (real SIPp
peer), while the call in progress goes on to its end."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from test_sip_sipp import free_port, run_sipp  # tests/ is on sys.path (pytest's default import mode)

from ivr.sip import SipConfig
from ivr.sip.echo import EchoBot
from ivr.sip.edge import EdgeOptions
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
