"""Make caller audio fixtures with espeak-ng and sox (telephone band, varied voices, optional noise).

A fixture list is YAML: ``{file.wav: {text: "...", voice: en-us+f3, speed: 160, noise: 0.02, rate: 8000}}``.
``python -m ivr.testing.fixtures audio_fixtures/hotline/fixtures.yml`` (re)makes the WAVs beside it.
Synthetic speech stands in for recordings of real callers; replace a WAV with a real recording at any time.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ivr.errors import ConfigError, Diagnostic, IvrError
from ivr.yamlsource import load_yaml_file


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise IvrError(f"{name} is not installed; install it with `sudo apt-get install {name}`")
    return path


def make_caller_wav(out: Path, text: str, voice: str = "en-us", speed: int = 160, rate: int = 8000,
                    noise: float = 0.0, lead: float = 0.3, tail: float = 0.3) -> None:
    """Speak ``text`` into ``out`` as a telephone-band mono WAV, with optional background noise."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.wav"
        subprocess.run([_tool("espeak-ng"), "-v", voice, "-s", str(speed), "-w", str(raw), text], check=True)
        clean = Path(tmp) / "clean.wav"
        # narrowband calls get a telephone band-pass like a real line; wideband (G.722) keeps its band
        band = ["sinc", "300-3400"] if rate == 8000 else []
        subprocess.run([_tool("sox"), str(raw), "-r", str(rate), "-c", "1", "-b", "16", str(clean), *band,
                        "pad", str(lead), str(tail)], check=True)
        if noise > 0:
            length = subprocess.run([_tool("soxi"), "-D", str(clean)], check=True, capture_output=True,
                                    text=True).stdout.strip()
            hiss = Path(tmp) / "noise.wav"
            subprocess.run([_tool("sox"), "-n", "-r", str(rate), "-c", "1", "-b", "16", str(hiss), "synth",
                            length, "pinknoise", "vol", str(noise)], check=True)
            subprocess.run([_tool("sox"), "-m", str(clean), str(hiss), str(out)], check=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(clean, out)


def make_fixtures(listing: Path) -> list[Path]:
    """Make every WAV listed in a fixtures YAML file, next to it."""
    shape = "a fixture list maps each WAV to what it says: {file.wav: {text: ...}}"
    root, problems = load_yaml_file(listing, str(listing), kind="fixture list", advice="split it into several lists",
                                    empty=shape)
    if root is None or problems:
        raise ConfigError(problems)
    spec = root.plain()
    if not isinstance(spec, dict):
        raise ConfigError([Diagnostic(str(listing), root.line, root.col, shape)])
    made = []
    for name, entry in spec.items():
        out = listing.parent / name
        make_caller_wav(out, str(entry["text"]), voice=str(entry.get("voice", "en-us")),
                        speed=int(entry.get("speed", 160)), rate=int(entry.get("rate", 8000)),
                        noise=float(entry.get("noise", 0.0)))
        made.append(out)
    return made


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        for path in make_fixtures(Path(arg)):
            print(path)
