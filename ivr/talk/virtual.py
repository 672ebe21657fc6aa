"""A private PulseAudio server with virtual devices, to try ``ivr talk`` without a sound card (tests, CI).

It has two null sinks: ``bot_speaker`` (the default output: whatever the bot says goes there and can be
recorded from ``bot_speaker.monitor``) and ``caller_line`` (play a WAV into it and its monitor, the
default input, hears it like a microphone). Everything lives in one temporary folder: the daemon's socket,
state and log; nothing touches the user's own sound server. PortAudio reaches it through ALSA's ``pulse``
device (Debian: libasound2-plugins).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from ivr.errors import AudioDeviceError

BOT_SINK = "bot_speaker"
CALLER_SINK = "caller_line"

_SCRIPT = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name={bot} rate={rate} channels=1 sink_properties=device.description=BotSpeaker
load-module module-null-sink sink_name={caller} rate={rate} channels=1 sink_properties=device.description=CallerLine
set-default-sink {bot}
set-default-source {caller}.monitor
"""


class VirtualSoundServer:
    """Start with ``with VirtualSoundServer(folder) as server:``; ``server.env`` is what a client process
    needs in its environment (``apply_env`` sets it in this one)."""

    def __init__(self, folder: str | Path, rate: int = 16000) -> None:
        self.folder = Path(folder)
        self.rate = rate
        self.socket = self.folder / "native"
        self.log_path = self.folder / "pulseaudio.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point PulseAudio clients (and ALSA's pulse plugin) at this server."""
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_CLIENTCONFIG": str(self.folder / "client.conf"),
            "PULSE_SINK": BOT_SINK,
            "PULSE_SOURCE": f"{CALLER_SINK}.monitor",
        }

    def apply_env(self) -> None:
        """Point this process's PulseAudio clients at the server (call before ``devices.rescan``)."""
        os.environ.update(self.env)

    def start(self, timeout: float = 10.0) -> VirtualSoundServer:
        """Start the daemon and wait until it answers (raises AudioDeviceError with its log if not)."""
        binary = shutil.which("pulseaudio")
        if binary is None:
            raise AudioDeviceError("pulseaudio is not installed (Debian: apt-get install pulseaudio pulseaudio-utils)")
        for sub in ("runtime", "state", "home"):
            (self.folder / sub).mkdir(parents=True, exist_ok=True)
        script = self.folder / "virtual.pa"
        script.write_text(_SCRIPT.format(socket=self.socket, bot=BOT_SINK, caller=CALLER_SINK, rate=self.rate))
        (self.folder / "client.conf").write_text("autospawn = no\n")
        daemon_env = {
            **os.environ,
            "HOME": str(self.folder / "home"),
            "XDG_RUNTIME_DIR": str(self.folder / "runtime"),
            "PULSE_RUNTIME_PATH": str(self.folder / "runtime"),
            "PULSE_STATE_PATH": str(self.folder / "state"),
            "PULSE_CLIENTCONFIG": str(self.folder / "client.conf"),
        }
        daemon_env.pop("PULSE_SERVER", None)
        with self.log_path.open("wb") as log:
            self._process = subprocess.Popen(
                [
                    binary,
                    "--daemonize=no",
                    "--system=false",
                    "--exit-idle-time=-1",
                    "--use-pid-file=no",
                    "--realtime=yes",
                    "--high-priority=yes",
                    "--disable-shm=yes",
                    "-n",
                    "-F",
                    str(script),
                    "--log-target=stderr",
                ],
                env=daemon_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                break
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise AudioDeviceError(f"the virtual PulseAudio server did not start:\n{self.log_path.read_text()[-2000:]}")

    def stop(self) -> None:
        """Stop the daemon (politely, then firmly)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> VirtualSoundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def play(self, wav: str | Path, sink: str = CALLER_SINK) -> subprocess.Popen[bytes]:
        """Play a WAV into ``sink`` in real time (by default: what the 'microphone' hears)."""
        return subprocess.Popen(
            ["paplay", f"--device={sink}", str(wav)],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def record(self, wav: str | Path, source: str = f"{BOT_SINK}.monitor") -> subprocess.Popen[bytes]:
        """Record ``source`` (by default: what the bot says) to a mono PCM16 WAV until terminated."""
        return subprocess.Popen(
            [
                "parecord",
                f"--device={source}",
                f"--rate={self.rate}",
                "--channels=1",
                "--format=s16le",
                "--file-format=wav",
                str(wav),
            ],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def _answers(self) -> bool:
        result = subprocess.run(
            ["pactl", "info"],
            env={**os.environ, **self.env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return result.returncode == 0
