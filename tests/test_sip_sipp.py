"""The SIP server against SIPp (Debian sip-tester) scenarios in tests/sipp/: audio, CANCEL, 488, bad input."""

from __future__ import annotations

import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ivr.sip import RegistrationConfig, SipConfig, SipServer
from ivr.sip.echo import EchoBot
from ivr.testing.waiting import wait_for

pytestmark = pytest.mark.slow

SCENARIOS = Path(__file__).parent / "sipp"


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_sipp(scenario: str, cwd: Path, *args: str, target: str = "",
             timeout: float = 60) -> subprocess.CompletedProcess[str]:
    sipp = shutil.which("sipp")
    if sipp is None:
        pytest.fail("sipp is not installed; apt-get install sip-tester (see the README's test command)")
    cmd = [sipp, *([target] if target else []), "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1",
           "-p", str(free_port()), "-mp", str(free_port() & ~1), "-nostdin", "-timeout", f"{int(timeout) - 5}s",
           "-timeout_error", "-trace_err", "-trace_logs", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        errors = "".join(p.read_text(errors="replace")[-3000:] for p in cwd.glob("*errors.log"))
        print(f"sipp failed ({proc.returncode}):\n{errors}\n{proc.stdout[-2000:]}")
    return proc


@pytest.fixture()
def bot() -> EchoBot:
    context = {"X-IVR-Call-Id": "c-42", "X-IVR-Intent": "billing"}
    return EchoBot(transfer_on={"9": ("sip:agent@127.0.0.1:5999", context)})


@pytest.fixture()
def server(bot: EchoBot) -> Iterator[SipServer]:
    srv = SipServer(SipConfig(port=0, transports=("udp", "tcp"), log_level=0), on_call=bot)
    srv.start()
    yield srv
    srv.stop()
    assert srv.stats.active_calls == 0
    assert not srv.call_threads()


def target(server: SipServer) -> list[str]:
    return [f"127.0.0.1:{server.port}", "-s", "100"]


def test_call_with_g711_rtp_audio_reaches_the_bot(server: SipServer, bot: EchoBot, tmp_path: Path) -> None:
    dest, *service = target(server)
    proc = run_sipp("call_pcap.xml", tmp_path, *service, "-d", "5000", "-m", "1", target=dest)
    assert proc.returncode == 0
    assert wait_for(lambda: server.stats.active_calls == 0)
    [call] = bot.calls
    assert call.codec == "PCMA/8000" and call.caller == "sipp"
    assert call.voiced_frames > 100  # the pcap holds ~4.7 s of speech-like audio
    assert wait_for(lambda: call.hung_up_by_caller)  # the bot's thread notes the BYE just after the call ends
    assert server.stats.outcomes["completed"] == 1


def test_cancel_before_answer(server: SipServer, bot: EchoBot, tmp_path: Path) -> None:
    server.config.ring_seconds = 2.0
    dest, *service = target(server)
    assert run_sipp("cancel.xml", tmp_path, *service, "-m", "1", target=dest).returncode == 0
    assert wait_for(lambda: server.stats.outcomes["cancelled"] == 1)
    time.sleep(2.2)  # past the ring time: the cancelled call must not be answered after all
    assert not bot.calls and server.stats.active_calls == 0


def test_offer_with_only_unsupported_codecs_gets_488(server: SipServer, bot: EchoBot, tmp_path: Path) -> None:
    dest, *service = target(server)
    assert run_sipp("unsupported_codec.xml", tmp_path, *service, "-m", "1", target=dest).returncode == 0
    assert not bot.calls and server.stats.active_calls == 0


def test_malformed_messages_then_options_still_answered(server: SipServer, tmp_path: Path) -> None:
    dest, *service = target(server)
    assert run_sipp("malformed.xml", tmp_path, *service, "-m", "1", target=dest).returncode == 0
    assert run_sipp("options.xml", tmp_path, *service, "-m", "1", "-t", "t1", target=dest).returncode == 0
    assert server.stats.active_calls == 0


def test_late_offer_reinvite_and_a_caller_that_sends_no_audio(server: SipServer, bot: EchoBot,
                                                                tmp_path: Path) -> None:
    dest, *service = target(server)
    assert run_sipp("late_offer_reinvite.xml", tmp_path, *service, "-d", "1500", "-m", "1", target=dest).returncode == 0
    assert wait_for(lambda: server.stats.active_calls == 0)
    [call] = bot.calls
    assert call.codec == "PCMU/8000"
    assert call.voiced_frames == 0
    assert call.frames >= 3.0 * 50 * 0.8  # silence frames keep coming (timeouts in the flow still work)
    assert call.max_gap < 0.2


def test_refer_carries_context_headers(server: SipServer, bot: EchoBot, tmp_path: Path) -> None:
    dest, *service = target(server)
    proc = run_sipp("refer.xml", tmp_path, *service, "-m", "1", target=dest)
    assert proc.returncode == 0
    assert wait_for(lambda: server.stats.outcomes["transferred"] == 1)
    assert bot.calls[0].digits == "9" and bot.calls[0].transfer_accepted is True
    logs = "".join(p.read_text() for p in tmp_path.glob("*_logs.log"))
    assert "intent=billing" in logs and "call=c-42" in logs


def test_burst_beyond_capacity_is_refused_cleanly(server: SipServer, bot: EchoBot, tmp_path: Path) -> None:
    server.config.max_calls = 3
    dest, *service = target(server)
    proc = run_sipp("call_or_busy.xml", tmp_path, *service, "-d", "2000", "-m", "100", "-l", "100", "-r", "100",
                    "-trace_stat", "-fd", "1", target=dest)
    assert proc.returncode == 0  # every call was either answered or refused with 503/486
    assert wait_for(lambda: server.stats.active_calls == 0, 10)
    assert 3 <= len(bot.calls) < 100
    assert server.stats.outcomes["completed"] == len(bot.calls)
    assert wait_for(lambda: not server.call_threads())
    # and the server still takes calls afterwards
    assert run_sipp("call_pcap.xml", tmp_path, *service, "-d", "500", "-m", "1", target=dest).returncode == 0


def test_call_setup_time_median(server: SipServer, tmp_path: Path) -> None:
    dest, *service = target(server)
    proc = run_sipp("call_or_busy.xml", tmp_path, *service, "-d", "200", "-m", "20", "-l", "2", "-r", "10",
                    "-trace_rtt", "-rtt_freq", "1", target=dest)
    assert proc.returncode == 0
    [rtt] = list(tmp_path.glob("*_rtt.csv"))
    times = [float(line.split(";")[1]) for line in rtt.read_text().splitlines()[1:] if line.strip()]
    assert len(times) == 20
    median = statistics.median(times)
    print(f"call set-up (INVITE to 200 OK) median {median:.1f} ms over {len(times)} SIPp calls")
    assert median <= 50


@pytest.mark.parametrize("password, registered", [("secret", True), ("wrong", False)])
def test_registration_with_digest_auth(tmp_path: Path, password: str, registered: bool) -> None:
    port = free_port()
    registrar = subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / "registrar.xml"), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
         "-nostdin", "-timeout", "40s", "-trace_err"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        reg = RegistrationConfig(registrar=f"sip:127.0.0.1:{port}", username="ivr", password=password)
        srv = SipServer(SipConfig(port=0, log_level=0, registration=reg))
        srv.start()
        try:
            assert srv.wait_registered(5) is registered
            if not registered:
                assert wait_for(lambda: srv.registration_status[0] == 403)
        finally:
            srv.stop()
        assert registrar.wait(20) == 0
    finally:
        if registrar.poll() is None:
            registrar.kill()


def test_rtp_from_a_wrong_address_does_not_break_the_call(bot: EchoBot, tmp_path: Path) -> None:
    import struct
    import threading

    rtp_port = free_port() & ~1
    srv = SipServer(SipConfig(port=0, log_level=0, rtp_port=rtp_port, rtp_port_range=2), on_call=bot)
    srv.start()
    stop = threading.Event()

    def rogue() -> None:  # a stranger sprays loud PCMU at the call's RTP port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            seq = 0
            while not stop.wait(0.02):
                seq += 1
                header = struct.pack("!BBHII", 0x80, 0, seq & 0xFFFF, seq * 160, 0xDEADBEEF)
                sock.sendto(header + bytes([0x80, 0x00]) * 80, ("127.0.0.1", rtp_port))

    sender = threading.Thread(target=rogue)
    try:
        sender.start()
        proc = run_sipp("late_offer_reinvite.xml", tmp_path, "-s", "100", "-d", "1500", "-m", "1",
                        target=f"127.0.0.1:{srv.port}")
        assert proc.returncode == 0  # the call itself went through normally, re-INVITE and BYE included
    finally:
        stop.set()
        sender.join()
        srv.stop()
    [call] = bot.calls
    print(f"rogue RTP heard in {call.voiced_frames} of {call.frames} frames")
    assert call.hung_up_by_caller and call.frames >= 3.0 * 50 * 0.8
    assert call.voiced_frames < 15  # pjmedia does not let the stranger take over the audio
    assert srv.stats.outcomes["completed"] == 1 and srv.stats.active_calls == 0
