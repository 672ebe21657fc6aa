"""``ivr serve`` refuses to start on invalid flows and says where the problems are."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ivr.testing.waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent


def test_serve_refuses_an_invalid_flow_and_lists_every_problem(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(ROOT / "flows" / "hotline.yaml", flows / "hotline.yaml")
    shutil.copytree(ROOT / "flows" / "knowledge", flows / "knowledge")  # the hotline's FAQ answers
    broken = flows / "broken.yaml"
    broken.write_text(
        "version: 1\nname: broken\nlanguage: en-US\nstart: greet\nnodes:\n"
        "  greet:\n    say: hello\n    next: menuu\n"
        "  menu:\n    ask: {prompt: hi}\n    on: {nothing: greet}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "ivr.cli.main", "serve", "--flows", str(flows), "--sip-port", "0",
         "--web-port", "0", "--database", str(tmp_path / "ivr.db")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{broken}:8:11:" in result.stderr and "menuu" in result.stderr and "did you mean" in result.stderr
    assert "nothing" in result.stderr  # the undefined intent is reported in the same run


def test_server_refuses_a_flow_that_transfers_to_a_queue_the_queues_file_lacks(tmp_path: Path) -> None:
    from ivr.errors import FlowError
    from ivr.server import IvrServer, ServerConfig

    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(ROOT / "flows" / "hotline.yaml", flows / "hotline.yaml")
    shutil.copytree(ROOT / "flows" / "knowledge", flows / "knowledge")  # the hotline's FAQ answers
    queues = tmp_path / "queues.yaml"
    queues.write_text((ROOT / "config" / "queues.yaml").read_text().replace("  billing:", "  bililng:"))
    with pytest.raises(FlowError) as info:
        IvrServer(ServerConfig(flows_dir=flows, queues_file=queues, database=str(tmp_path / "ivr.db")))
    assert f"{flows / 'hotline.yaml'}:322:14: unknown queue 'billing' (did you mean 'bililng'?)" in str(info.value)


def test_flow_reloads_are_counted_in_the_metrics(tmp_path: Path) -> None:
    from ivr.server import IvrServer, ServerConfig

    flows = tmp_path / "flows"
    flows.mkdir()
    flow = flows / "hotline.yaml"
    flow.write_text("version: 1\nname: hotline\nstart: bye\nnodes:\n  bye: {hangup: true}\n")
    server = IvrServer(ServerConfig(flows_dir=flows, database=str(tmp_path / "ivr.db")))
    for text in ("version: 1\nname: hotline\nstart: bye\nnodes: {bye: [}\n",
                 "version: 1\nname: hotline\nstart: bye\nnodes:\n  bye: {hangup: 'Bye.'}\n"):
        before = flow.stat().st_mtime_ns
        flow.write_text(text)
        os.utime(flow, ns=(before + 1_000_000, before + 1_000_000))
        server.flows.refresh()
        server.flows.refresh()
    metrics = server.metrics.render().decode()
    assert 'ivr_flow_reloads_total{result="error"} 1.0' in metrics
    assert 'ivr_flow_reloads_total{result="ok"} 1.0' in metrics


def test_numbers_no_flow_claims_get_the_configured_answer_and_the_log_says_which(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from ivr.server import IvrServer, ServerConfig

    flows = tmp_path / "flows"
    flows.mkdir()
    for name, number in (("sales", "2000"), ("hotline", "1000")):
        (flows / f"{name}.yaml").write_text(f"version: 1\nname: {name}\nnumbers: ['{number}']\nstart: bye\n"
                                            "nodes:\n  bye: {hangup: true}\n")
    default = IvrServer(ServerConfig(flows_dir=flows, database=str(tmp_path / "a.db"), default_flow="sales"))
    reject = IvrServer(ServerConfig(flows_dir=flows, database=str(tmp_path / "b.db"), unrouted="reject"))
    with caplog.at_level("INFO", logger="ivr.server"):
        assert default.route("sip:1000@pbx") and reject.route("sip:1000@pbx")  # claimed: no complaint
        assert not caplog.records
        assert default.route("sip:9999@pbx")
        assert "call to sip:9999@pbx: no flow has this number; answered by the default flow 'sales'" in caplog.text
        assert not reject.route("sip:9999@pbx")
        assert "call to sip:9999@pbx: no flow has this number; refused with 404" in caplog.text


def _serve(flows: Path, db: Path, sip_port: int, cwd: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "ivr.cli.main", "serve", "--flows", str(flows), "--sip-host", "127.0.0.1",
         "--sip-port", str(sip_port), "--web-port", "0", "--database", str(db), "--max-calls", "8",
         "--node", "box-1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd)
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("ivr: serving"):
            assert "Kamailio edge, 2 worker(s)) as node box-1;" in line, line
            return process
    raise AssertionError(f"ivr serve did not start (exit {process.wait()})")


def _descendants(pid: int) -> set[int]:
    """The server's children and theirs (workers, Kamailio and Kamailio's own children)."""
    rows = [line.split() for line in subprocess.run(["ps", "-eo", "pid,ppid"], capture_output=True,
                                                    text=True).stdout.splitlines()[1:]]
    found, frontier = set(), {pid}
    while frontier:
        frontier = {int(child) for child, parent in rows if int(parent) in frontier} - found
        found |= frontier
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":  # a zombie is dead, only not reaped yet
            alive.add(pid)
    return alive


@pytest.mark.slow
def test_a_killed_server_leaves_no_edge_behind_and_its_calls_are_closed_at_the_next_start(tmp_path: Path) -> None:
    from test_sip_sipp import free_port

    from ivr.store import open_store
    from ivr.testing.sip_caller import place_call

    if shutil.which("kamailio") is None and not Path("/usr/sbin/kamailio").exists():
        pytest.fail("Kamailio is not installed; apt-get install kamailio (see the README's test command)")
    flows = tmp_path / "flows"
    flows.mkdir()
    shutil.copy(ROOT / "flows" / "hotline.yaml", flows / "hotline.yaml")
    shutil.copytree(ROOT / "flows" / "knowledge", flows / "knowledge")  # the hotline's FAQ answers
    db, port = tmp_path / "var" / "ivr.db", free_port()
    server = _serve(flows, db, port, tmp_path)
    caller = threading.Thread(target=place_call, args=(f"sip:1000@127.0.0.1:{port}", "wait 8"))
    try:
        caller.start()
        time.sleep(4.0)  # the call is up, the greeting playing
        children = _descendants(server.pid)
        assert len(children) >= 4  # two workers, Kamailio and its children
        server.kill()  # kill -9: no shutdown code runs
        server.wait(5)
        assert wait_for(lambda: not _alive(children), 5), _alive(children)
        [before] = open_store(db).list_calls()
        assert before["ended_at"] is None  # left "in progress" by the crash
        restarted = _serve(flows, db, port, tmp_path)  # the port is free again
        try:
            call = open_store(db).get_call(before["id"])
            assert call is not None and call["outcome"] == "interrupted" and call["ended_at"] is not None
            children = _descendants(restarted.pid)
        finally:
            restarted.terminate()
            assert restarted.wait(30) == 0
        assert wait_for(lambda: not _alive(children), 5), _alive(children)
    finally:
        caller.join(30)
        if server.poll() is None:
            server.kill()
