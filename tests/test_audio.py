"""Reading WAV files of every common kind, rejecting bad files clearly, and the 20 ms frame type."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ivr.audio.frame import AudioFrame, frames_from_pcm, pcm_from_frames, samples_per_frame
from ivr.audio.wavfile import read_wav, write_wav
from ivr.errors import AudioFormatError, IvrError


def _sox(*args: str | int | float | Path) -> None:
    sox = shutil.which("sox")
    if sox is None:
        pytest.fail("sox is not installed; run the README's test command (it installs it)")
    subprocess.run([sox, *map(str, args)], check=True, capture_output=True)


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])


def _tone(path: Path, rate: int, *encoding: str, channels: int = 1, hz: int = 440) -> Path:
    tones = ["sine", str(hz)] + (["sine", str(hz * 3 // 2)] if channels == 2 else [])
    _sox("-n", "-r", rate, *encoding, "-c", channels, path, "synth", "1.0", *tones, "vol", "0.5")
    return path


KINDS = {
    "8k-16bit": (8000, ["-b", "16"]),
    "11k-16bit": (11025, ["-b", "16"]),
    "16k-16bit": (16000, ["-b", "16"]),
    "22k-8bit-unsigned": (22050, ["-b", "8", "-e", "unsigned-integer"]),
    "44k-24bit": (44100, ["-b", "24"]),
    "48k-32bit-int": (48000, ["-b", "32", "-e", "signed-integer"]),
    "48k-float": (48000, ["-b", "32", "-e", "floating-point"]),
    "16k-float64": (16000, ["-b", "64", "-e", "floating-point"]),
    "8k-mu-law": (8000, ["-e", "u-law"]),
    "8k-a-law": (8000, ["-e", "a-law"]),
    "16k-ima-adpcm": (16000, ["-e", "ima-adpcm"]),
}


@pytest.mark.parametrize("kind", KINDS)
def test_any_common_wav_becomes_mono_pcm16_at_an_internal_rate(kind: str, tmp_path: Path) -> None:
    rate, encoding = KINDS[kind]
    path = _tone(tmp_path / f"{kind}.wav", rate, *encoding)
    audio = read_wav(path)
    assert audio.sample_rate == (rate if rate in (8000, 16000) else 16000)
    assert audio.duration == pytest.approx(1.0, abs=0.02)  # ADPCM pads to its block size
    assert _peak_hz(audio.samples(), audio.sample_rate) == pytest.approx(440, abs=2)
    # the level survives too: a -6 dBFS sine has an RMS of about 0.35 of full scale
    rms = np.sqrt(np.mean(audio.samples().astype(np.float64) ** 2)) / 32768
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1)


@pytest.mark.parametrize("target", [8000, 16000])
@pytest.mark.parametrize("source", [8000, 11025, 16000, 22050, 44100, 48000])
def test_resampling_keeps_a_tones_frequency(source: int, target: int, tmp_path: Path) -> None:
    hz = 1000 if target == 8000 else 3000
    audio = read_wav(_tone(tmp_path / "t.wav", source, "-b", "16", hz=min(hz, source // 3)), sample_rate=target)
    assert audio.sample_rate == target
    assert audio.duration == pytest.approx(1.0, abs=0.01)
    assert _peak_hz(audio.samples(), target) == pytest.approx(min(hz, source // 3), abs=2)
    assert len(audio.frames()) == 50


def test_stereo_is_mixed_down_to_mono(tmp_path: Path) -> None:
    audio = read_wav(_tone(tmp_path / "stereo.wav", 44100, "-b", "16", channels=2))
    spectrum = np.abs(np.fft.rfft(audio.samples().astype(np.float64)))
    freqs = np.fft.rfftfreq(audio.samples().size, 1 / audio.sample_rate)
    strongest = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert strongest == pytest.approx([440, 660], abs=2)  # both channels are heard


def test_write_then_read_is_lossless(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    pcm = rng.integers(-32768, 32767, 8000, dtype=np.int16).astype("<i2").tobytes()
    write_wav(tmp_path / "sub" / "x.wav", pcm, 8000)
    assert read_wav(tmp_path / "sub" / "x.wav").pcm == pcm


# ------------------------------------------------------------------------------------------ bad files


def _bad(tmp: Path, kind: str) -> Path:
    good = _tone(tmp / "good.wav", 16000, "-b", "16")
    path = tmp / f"{kind}.wav"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-header":
        path.write_bytes(good.read_bytes()[:20])
    elif kind == "header-without-audio":
        _sox("-n", "-r", 16000, "-b", 16, "-c", 1, path, "trim", "0", "0")
    elif kind == "mp3-renamed":
        mp3 = tmp / "x.mp3"
        _sox(good, mp3)
        mp3.rename(path)
    elif kind == "text-renamed":
        path.write_text("hello, this is not audio\n")
    elif kind == "html-renamed":
        path.write_text("<html><body>404 Not Found</body></html>")
    elif kind == "unsupported-encoding":
        data = bytearray(good.read_bytes())
        data[20:22] = (0x1234).to_bytes(2, "little")  # an unknown WAVE format tag
        path.write_bytes(bytes(data))
    elif kind == "directory":
        path.mkdir()
    elif kind == "missing":
        pass
    return path


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("empty", "empty"),
        ("truncated-header", "truncated"),
        ("header-without-audio", "no audio"),
        ("mp3-renamed", "MP3"),
        ("text-renamed", "not a WAV"),
        ("html-renamed", "text/HTML"),
        ("unsupported-encoding", "cannot decode"),
        ("directory", "directory"),
        ("missing", "no such file"),
    ],
)
def test_bad_files_get_one_clear_error_naming_the_file(kind: str, problem: str, tmp_path: Path) -> None:
    path = _bad(tmp_path, kind)
    with pytest.raises(AudioFormatError) as caught:
        read_wav(path)
    message = str(caught.value)
    assert message.startswith(str(path) + ": ")
    assert problem.lower() in message.lower()
    assert "Traceback" not in message and "\n" not in message
    assert isinstance(caught.value, IvrError) and caught.value.path == str(path)


def test_a_wav_cut_off_mid_data_is_read_up_to_the_cut(tmp_path: Path) -> None:
    good = _tone(tmp_path / "good.wav", 16000, "-b", "16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(good.read_bytes()[: 44 + 16000])  # header claims 1 s, half of it is there
    assert read_wav(cut).duration == pytest.approx(0.5, abs=0.01)


def test_unsupported_target_rate_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="8000 or 16000"):
        read_wav(_tone(tmp_path / "t.wav", 16000, "-b", "16"), sample_rate=44100)


# --------------------------------------------------------------------------------------------- frames


def test_audio_frame_checks_rate_and_length() -> None:
    assert samples_per_frame(8000) == 160 and samples_per_frame(16000) == 320
    frame = AudioFrame(bytes(640), 16000)
    assert frame.samples().dtype == np.int16 and frame.samples().size == 320
    assert AudioFrame.silence(8000) == AudioFrame(bytes(320), 8000)
    with pytest.raises(ValueError, match="8000 or 16000"):
        AudioFrame(bytes(882 * 2), 44100)
    with pytest.raises(ValueError, match="320 bytes, got 640"):
        AudioFrame(bytes(640), 8000)
    with pytest.raises(AttributeError):
        frame.pcm = b""  # type: ignore[misc]


def test_frames_from_pcm_splits_pads_and_joins_back() -> None:
    pcm = np.arange(16000 + 100, dtype="<i2").tobytes()  # 1 s and 100 samples at 16 kHz
    frames = list(frames_from_pcm(pcm, 16000))
    assert len(frames) == 51
    assert frames[-1].pcm[:200] == pcm[-200:] and frames[-1].pcm[200:] == bytes(440)
    assert pcm_from_frames(frames)[: len(pcm)] == pcm
    assert len(list(frames_from_pcm(pcm, 16000, pad=False))) == 50
    assert list(frames_from_pcm(b"", 8000)) == []
