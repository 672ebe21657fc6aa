"""A cheap voicing (periodicity) measure that tells voiced speech from noises such as clicks and coughs.

webrtcvad flags many broadband noises as speech. Voiced speech (vowels, nasals) is periodic at the
speaker's pitch, 70-400 Hz, so the normalised autocorrelation of a short window has a strong peak at the
pitch period; white/pink noise, clicks and most coughs do not. The analysis runs at 8 kHz on a 40 ms
window (the current 20 ms frame and the one before it, enough for two periods of a 70 Hz voice).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ivr.audio.frame import AudioFrame

MIN_PITCH_HZ = 70.0
MAX_PITCH_HZ = 400.0
_RATE = 8000
_WINDOW = 320  # 40 ms at 8 kHz
_FFT_SIZE = 512  # >= _WINDOW + _MAX_LAG: no circular wrap-around at the lags we look at
_MIN_LAG = int(_RATE / MAX_PITCH_HZ)  # 20 samples
_MAX_LAG = int(np.ceil(_RATE / MIN_PITCH_HZ))  # 115 samples
_ALL_LAGS = np.arange(0, _MAX_LAG + 1)
_MIN_RISE = 0.3


@dataclass(frozen=True, slots=True)
class Voicing:
    """The voicing of one 40 ms window.

    ``periodicity`` is the peak normalised autocorrelation in the pitch range (0: noise, near 1: a clean
    vowel); ``pitch_hz`` is the pitch at that peak; ``level_db`` is the window's RMS level in dBFS.
    """

    periodicity: float
    pitch_hz: float
    level_db: float


def _to_8k(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    x = samples.astype(np.float32)
    if sample_rate == 16000:
        # Averaging sample pairs is a crude low-pass; good enough for pitch, which lives below 1 kHz.
        x = 0.5 * (x[0::2] + x[1::2])
    return x


def voicing(samples: np.ndarray, sample_rate: int) -> Voicing:
    """Measure the voicing of a window of int16 samples at 8 or 16 kHz (about 40 ms is best)."""
    x = _to_8k(samples, sample_rate)
    x = x - x.mean()
    energy = float(np.dot(x, x))
    n = x.size
    level_db = 10.0 * np.log10(energy / max(n, 1) / (32768.0**2) + 1e-12)
    if n <= _MAX_LAG + 16 or energy <= 1e-3:
        return Voicing(0.0, 0.0, level_db)
    spectrum = np.fft.rfft(x, _FFT_SIZE)
    acf = np.fft.irfft(spectrum.real**2 + spectrum.imag**2, _FFT_SIZE)
    # Normalise each lag by the energies of the two overlapping parts, so the score does not fall with lag.
    sq = np.empty(n + 1)
    sq[0] = 0.0
    np.cumsum(x * x, out=sq[1:])
    lags = _ALL_LAGS
    head = sq[n - lags]  # energy of x[0 : n - lag]
    tail = sq[n] - sq[lags]  # energy of x[lag : n]
    norm = acf[lags] / np.sqrt(head * tail + 1e-9)
    # Low-frequency noise (brown noise, rumble) correlates at every short lag but its autocorrelation only
    # decays; a voice's rises again to a peak at the pitch period. Count a lag only after such a dip.
    dip = np.minimum.accumulate(norm)
    rise = norm - dip
    candidates = np.where(rise[_MIN_LAG:] >= _MIN_RISE, norm[_MIN_LAG:], -1.0)
    best = int(np.argmax(candidates))
    peak = float(candidates[best])
    if peak <= 0.0:
        return Voicing(0.0, 0.0, level_db)
    # A voice at pitch f also peaks at 2/f, 3/f...: take the first lag nearly as strong as the best, and
    # the local maximum there, so the reported pitch is not an octave too low.
    first = int(np.nonzero(candidates >= 0.9 * peak)[0][0])
    while first + 1 < candidates.size and candidates[first + 1] > candidates[first]:
        first += 1
    best = first + _MIN_LAG
    return Voicing(float(norm[best]), _RATE / float(best), level_db)


_UNVOICED = Voicing(0.0, 0.0, -120.0)


class VoicingTracker:
    """Feeds 20 ms frames and measures the voicing of the last 40 ms (this frame plus the previous one)."""

    def __init__(self) -> None:
        self._previous: np.ndarray | None = None
        self._rate = 0

    def reset(self) -> None:
        """Forget the previous frame."""
        self._previous = None

    def skip(self, frame: AudioFrame) -> Voicing:
        """Remember ``frame`` for the next window without analysing it (reports it as unvoiced)."""
        self._previous = frame.samples()
        self._rate = frame.sample_rate
        return _UNVOICED

    def update(self, frame: AudioFrame) -> Voicing:
        """Measure the voicing of the window that ends with ``frame``."""
        current = frame.samples()
        if self._previous is None or self._rate != frame.sample_rate:
            window = current
        else:
            window = np.concatenate((self._previous, current))
        self._previous = current
        self._rate = frame.sample_rate
        return voicing(window, frame.sample_rate)
