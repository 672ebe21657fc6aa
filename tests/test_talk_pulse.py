"""`ivr talk` against real (virtual) sound devices: a private PulseAudio server with a null sink for the
bot's voice and a second null sink whose monitor is the caller's microphone, reached through PortAudio and
ALSA's pulse plugin exactly as on a desktop. Real whisper recognition and real espeak-ng prompts."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from ivr.audio.wavfile import read_wav
from ivr.call import events as ev
from ivr.talk import devices
from ivr.talk.channel import LocalAudioChannel
from ivr.talk.screen import TranscriptScreen
from ivr.talk.virtual import VirtualSoundServer

E = TypeVar("E", bound=ev.CallEvent)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TINY_FLOW = ROOT / "tests" / "data" / "talk_flow.yaml"
HOTLINE = ROOT / "flows" / "hotline.yaml"
IVR = [sys.executable, "-c", "from ivr.cli.main import main; main()"]


@pytest.fixture(scope="module")
def sound_server() -> Iterator[VirtualSoundServer]:
    """A private PulseAudio daemon for this module; this process's PortAudio sees its devices."""
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.fail("pulseaudio and pulseaudio-utils are not installed; run the README's test setup")
    folder = tempfile.mkdtemp(prefix="ivr-pa-")  # short: a unix socket path must fit in 108 bytes
    server = VirtualSoundServer(folder)
    with pytest.MonkeyPatch.context() as env:
        try:
            server.start()
            for name, value in server.env.items():
                env.setenv(name, value)
            devices.rescan()
            yield server
        finally:
            server.stop()
            shutil.rmtree(folder, ignore_errors=True)
    devices.rescan()


def run_ivr(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*IVR, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def without_sound_server(folder: Path) -> dict[str, str]:
    """An environment in which PulseAudio clients find no server and start none."""
    (folder / "client.conf").write_text("autospawn = no\n")
    return {
        **os.environ,
        "PULSE_SERVER": f"unix:{folder}/no-such-socket",
        "PULSE_CLIENTCONFIG": str(folder / "client.conf"),
    }


# ---------------------------------------------------------------- CLI errors


def test_without_any_audio_device_talk_says_what_to_do(tmp_path: Path) -> None:
    if Path("/proc/asound/cards").exists() and "no soundcards" not in Path("/proc/asound/cards").read_text():
        pytest.skip("this machine has a real sound card, so 'no device at all' cannot be staged")
    env = without_sound_server(tmp_path)
    result = run_ivr("talk", str(TINY_FLOW), env=env)
    assert result.returncode == 1
    assert "error: no microphone (input) device found" in result.stderr
    assert "no audio devices found" in result.stderr and "start the sound server" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    listed = run_ivr("talk", "--list-devices", env=env)
    assert listed.returncode == 0 and "no audio devices found" in listed.stdout


def test_list_devices_shows_the_virtual_devices(sound_server: VirtualSoundServer) -> None:
    result = run_ivr("talk", "--list-devices", env={**os.environ, **sound_server.env})
    assert result.returncode == 0, result.stderr
    assert " pulse  (ALSA, 32 in, 32 out" in result.stdout
    assert "(< default input, > default output)" in result.stdout


def test_a_device_name_that_does_not_exist_lists_the_real_ones(sound_server: VirtualSoundServer) -> None:
    result = run_ivr("talk", str(TINY_FLOW), "--output-device", "bluetooth", env={**os.environ, **sound_server.env})
    assert result.returncode == 1
    assert "error: no speaker (output) device matches 'bluetooth'" in result.stderr
    assert " pulse  (ALSA" in result.stderr and "--output-device" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------- a real call


class Caller:
    """Answers the bot's first question by playing a WAV into the virtual microphone: a caller who knows
    what they want and speaks over the menu ``barge_in_after`` seconds into it."""

    def __init__(self, server: VirtualSoundServer, answer: Path, barge_in_after: float) -> None:
        self.server = server
        self.answer = answer
        self.barge_in_after = barge_in_after
        self.events: list[ev.CallEvent] = []
        self.players: list[subprocess.Popen[bytes]] = []
        self._answered = False

    def on_event(self, event: ev.CallEvent) -> None:
        self.events.append(event)
        if isinstance(event, ev.Listening) and not self._answered:  # only the first question
            self._answered = True
            threading.Timer(self.barge_in_after, self._speak).start()

    def _speak(self) -> None:
        self.players.append(self.server.play(self.answer))

    def of(self, kind: type[E]) -> list[E]:
        return [e for e in self.events if isinstance(e, kind)]


class Both:
    def __init__(self, *observers: Any) -> None:
        self.observers = observers

    def on_event(self, event: ev.CallEvent) -> None:
        for observer in self.observers:
            observer.on_event(event)


def test_talking_to_a_flow_through_pulseaudio(
    sound_server: VirtualSoundServer,
    espeak_wav: Callable[..., Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from ivr.call import CallSession
    from ivr.runtime import FlowRuntime
    from ivr.services import SpeechServices

    answer, queue = "I want to speak to a human", "support"
    runtime = FlowRuntime.from_file(HOTLINE)
    services = SpeechServices.create(runtime.default_engine())
    bot_wav = tmp_path / "bot.wav"
    recorder = sound_server.record(bot_wav)
    announced: list[str] = []
    try:
        with LocalAudioChannel(16000, "pulse", "pulse", keyboard=False, announce=announced.append) as channel:
            caller = Caller(sound_server, espeak_wav(answer, lead=0.2, tail=1.0), barge_in_after=2.5)
            session = CallSession(channel, runtime.new_interpreter(channel), services, flow_name=runtime.name,
                                  observer=Both(caller, TranscriptScreen()))
            started = time.monotonic()
            result = session.run()
            elapsed = time.monotonic() - started
        time.sleep(0.5)  # the sink's monitor lags the sink a little
    finally:
        recorder.send_signal(signal.SIGINT)
        recorder.wait(timeout=5)
        for player in caller.players:
            player.wait(timeout=10)
    screen = capsys.readouterr().out
    print(screen)

    # The caller was heard over the prompt, understood, and the call went where the flow sends it.
    assert [e.by for e in caller.of(ev.BargedIn)] == ["speech"]
    assert "(barge-in by speech: prompt stopped)" in screen
    transcript = " ".join(e.text for e in caller.of(ev.CallerSaid)).lower()
    assert "human" in transcript, transcript
    assert [e.intent for e in caller.of(ev.IntentFound)] == ["agent"]
    assert "intent  agent (" in screen
    assert result.outcome == "transferred" and result.transfer_target == queue, screen
    assert f"transfer → {queue}" in screen
    assert announced and f"transferred to {queue} with:" in announced[0] and "X-IVR-Call-Id" in announced[0]
    assert elapsed < 40
    assert channel.dropped_frames == 0

    # The bot's voice reached the speaker: the recording of the sink is speech, and it is the prompts.
    bot = read_wav(bot_wav, 16000)
    levels = [float(np.sqrt(np.mean(f.samples().astype(np.float64) ** 2))) for f in bot.frames()]
    assert sum(level > 500 for level in levels) * 0.02 > 1.0, f"only silence reached the sink ({bot.duration:.1f} s)"
    recognizer = services.asr.new_recognizer(16000)
    for frame in bot.frames():
        recognizer.accept(frame)
    heard = recognizer.finish().text.lower()
    services.shutdown()
    first_prompt = next(e.text for e in caller.of(ev.PromptPlayed))
    assert first_prompt.split()[0].lower().strip(",.") in heard, (first_prompt, heard)


def test_ctrl_c_hangs_up_ivr_talk_and_gives_the_terminal_back(sound_server: VirtualSoundServer) -> None:
    import pty
    import termios

    master, terminal = pty.openpty()
    before = termios.tcgetattr(terminal)
    process = subprocess.Popen(
        [*IVR, "talk", str(TINY_FLOW), "-i", "pulse", "-o", "pulse"],
        cwd=ROOT,
        env={**os.environ, **sound_server.env},
        stdin=terminal,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "(listening" in line:
                assert termios.tcgetattr(terminal) != before  # keys are read one at a time
                process.send_signal(signal.SIGINT)
                break
        out, err = process.communicate(timeout=30)
        restored = termios.tcgetattr(terminal) == before
    finally:
        process.kill()
        os.close(master)
        os.close(terminal)
    assert restored
    text = "".join(lines) + out
    assert process.returncode == 0, text + err
    assert "type 0-9 * # for keys, Ctrl-C hangs up" in text
    assert "bot     › Hello, this is the test line." in text
    assert "call ended: caller_hangup" in text
    assert "Traceback" not in err
