"""Admission, the worker pipe's typed messages, and the edge configuration (checked by the real Kamailio)."""

from __future__ import annotations

import socket
import subprocess
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
from click.testing import CliRunner

from ivr.cli.edge import edge as edge_cli
from ivr.sip import wire
from ivr.sip.admission import Admission, IncomingCall, Verdict
from ivr.sip.config import RegistrationConfig, SipConfig
from ivr.sip.edge import EdgeFiles, EdgeOptions, find_kamailio, render_config, render_dispatcher_list
from ivr.sip.workers import WorkerAddress

needs_kamailio = pytest.mark.skipif(find_kamailio() is None, reason="needs Kamailio (apt-get install kamailio)")


def call(call_id: str, source: str = "10.0.0.9:5060", called: str = "1000") -> IncomingCall:
    return IncomingCall(call_id, "caller", called, source)


def test_admission_counts_by_ticket_and_refuses_beyond_max_calls() -> None:
    admission = Admission(SipConfig(max_calls=2))
    first, second = admission.admit(call("a")), admission.admit(call("b"))
    assert first.admitted and second.admitted and first.ticket != second.ticket
    assert admission.admit(call("c")) == Verdict(code=503, outcome="rejected_capacity")
    assert admission.release(first.ticket) and not admission.release(first.ticket)  # exactly once
    assert not admission.release(0)  # a refused call holds nothing
    assert admission.admit(call("c")).admitted
    assert admission.active_calls == 2


def test_a_second_invite_with_a_live_call_id_cannot_take_or_free_its_slot() -> None:
    admission = Admission(SipConfig(max_calls=5))
    live = admission.admit(call("same"))
    duplicate = admission.admit(call("same"))
    assert duplicate == Verdict(code=482, outcome="rejected_duplicate")
    admission.release(duplicate.ticket)
    assert admission.active_calls == 1 and live.admitted


def test_admission_refusals_allow_list_routes_and_shutdown() -> None:
    config = SipConfig(max_calls=5, allow_from=("10.0.0.0/8",))
    admission = Admission(config, route=lambda number: number != "404")
    assert admission.admit(call("x", source="192.0.2.1:5060")).code == 403
    assert admission.admit(call("y", called="404")).code == 404
    config.allow_from = ()  # read for every call: changes at run time
    assert admission.admit(call("x", source="192.0.2.1:5060")).admitted
    admission.stopping = True
    assert admission.admit(call("z")) == Verdict(code=503, outcome="rejected_shutdown")


def test_a_dead_workers_tickets_are_released_together() -> None:
    admission = Admission(SipConfig(max_calls=10))
    worker_a, worker_b = object(), object()
    for n in range(3):
        admission.admit(call(f"a{n}"), owner=worker_a)
    kept = admission.admit(call("b0"), owner=worker_b)
    assert sorted(admission.release_owner(worker_a)) == ["a0", "a1", "a2"]
    assert admission.active_calls == 1 and admission.release(kept.ticket)


def test_edge_addresses_with_and_without_port() -> None:
    config = SipConfig(edge=("127.0.0.1:5060", "10.1.1.1"))
    assert config.is_edge("127.0.0.1:5060") and not config.is_edge("127.0.0.1:5070")
    assert config.is_edge("10.1.1.1:40000") and not config.is_edge("10.1.1.2:5060")


def _pipes() -> tuple[wire.ServerPipe, wire.WorkerPipe]:
    a, b = socket.socketpair()
    return wire.server_end(Connection(a.detach())), wire.worker_end(Connection(b.detach()))


def test_worker_messages_cross_the_pipe_typed() -> None:
    server, worker = _pipes()
    try:
        assert worker.send(wire.AdmitRequest(7, call("c1")))
        assert server.receive() == wire.AdmitRequest(7, call("c1"))
        assert server.send(wire.AdmitReply(7, Verdict(ticket=3)))
        assert worker.receive() == wire.AdmitReply(7, Verdict(ticket=3))
        audio = wire.Frames((wire.CallAudio(1, (b"\x00" * 320,), 4, 640),))
        worker.send(audio)
        assert server.receive() == audio
        with pytest.raises(wire.WireError):
            server.send(wire.Heartbeat())  # a worker's message, not the server's
    finally:
        server.close()
        worker.close()


def test_an_unknown_message_is_refused_not_dispatched() -> None:
    server, worker = _pipes()
    try:
        worker.conn.send(("finished", "call-1", "completed", 0))  # the old untyped tuple
        with pytest.raises(wire.WireError):
            server.receive()
        worker.close()
        with pytest.raises(EOFError):
            server.receive()
    finally:
        server.close()


def _kamailio_check(config_text: str, folder: Path) -> subprocess.CompletedProcess[str]:
    path = folder / "kamailio.cfg"
    path.write_text(config_text)
    return subprocess.run([find_kamailio() or "kamailio", "-c", "-f", str(path)], capture_output=True, text=True)


@needs_kamailio
@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", "192.0.2.80"])
def test_rendered_edge_config_is_accepted_by_kamailio(host: str, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    sip = SipConfig(host=host, port=5060, transports=("udp", "tcp"), max_calls=30,
                    allow_from=("10.0.0.0/8", "192.0.2.7"), public_address="203.0.113.5",
                    registration=RegistrationConfig("sip:pbx.example.com", "ivr", "secret"))
    options = EdgeOptions(tls_port=5061, tls_cert=cert, tls_key=key, invite_rate=5)
    files = EdgeFiles(tmp_path, tmp_path)
    files.dispatcher.write_text(render_dispatcher_list([WorkerAddress(0, "127.0.0.1", 5100)], None))
    text = render_config(sip, options, files)
    assert "src_ip == 10.0.0.0/8 || src_ip == 192.0.2.7" in text
    assert 'append_hf("Contact: <sip:$fU@203.0.113.5:5060>\\r\\n")' in text  # registrations name the edge
    check = _kamailio_check(text, tmp_path)
    listening = check.stdout + check.stderr
    if host == "192.0.2.80":  # not an address of this machine: Kamailio parses it, then cannot bind
        assert "syntax error" not in listening and "parse error" not in listening
    else:
        assert check.returncode == 0, listening


@needs_kamailio
def test_ivr_edge_config_writes_a_config_kamailio_accepts(tmp_path: Path) -> None:
    result = CliRunner().invoke(edge_cli, ["config", "--sip-host", "127.0.0.1", "--max-calls", "10",
                                           "--worker-ports", "5200", "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    listing = (tmp_path / "dispatcher.list").read_text()
    assert [line.split()[1] for line in listing.splitlines() if line.startswith("1 ")] == [
        "sip:127.0.0.1:5200", "sip:127.0.0.1:5201", "sip:127.0.0.1:5202"]
    text = (tmp_path / "kamailio.cfg").read_text()
    assert f'"list_file", "{tmp_path.resolve()}/dispatcher.list"' in text
    check = subprocess.run([find_kamailio() or "kamailio", "-c", "-f", str(tmp_path / "kamailio.cfg")],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr[-2000:]
    printed = CliRunner().invoke(edge_cli, ["config"])
    assert printed.exit_code == 0 and printed.output.startswith("#!KAMAILIO")
