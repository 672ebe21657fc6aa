"""Recorded prompts: WAV files played instead of synthesized text, converted to the call's rate once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from ivr.audio.wavfile import read_wav
from ivr.errors import AudioFormatError
from ivr.speech.interfaces import Synthesizer
from ivr.speech.tts.cache import LruBytes

_wav_prompts = LruBytes(64 * 1024 * 1024)


def load_wav_prompt(path: str | Path, sample_rate: int) -> bytes:
    """A WAV prompt as PCM16 mono at ``sample_rate`` (8000 or 16000), converted once and kept in memory.

    An edited file (new size or modification time) is read again. Raises AudioFormatError naming the file
    when it is missing or not a usable WAV.
    """
    path = Path(path).resolve()
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise AudioFormatError(path, "no such prompt file; check the path in the flow") from None
    except OSError as exc:
        raise AudioFormatError(path, f"cannot read the prompt file ({exc.strerror})") from None
    key = (str(path), stat.st_mtime_ns, stat.st_size, sample_rate)
    pcm = _wav_prompts.get(key)
    if pcm is None:
        pcm = read_wav(path, sample_rate).pcm
        _wav_prompts.put(key, pcm)
    return pcm


def prompt_audio(synthesizer: Synthesizer, sample_rate: int, text: str = "",
                 audio: str | Path | None = None) -> Iterator[bytes]:
    """The audio of a prompt as PCM16 chunks: the WAV file ``audio`` if given, else ``text`` synthesized."""
    if audio:
        return iter((load_wav_prompt(audio, sample_rate),))
    return synthesizer.stream(text, sample_rate)
