"""Voice activity detection for calls: an endpointer for listening and a barge-in detector for prompts.

Both classify each 20 ms frame with webrtcvad plus two cheap checks that keep steady noise out:

* a noise floor tracked per call: a frame must be clearly louder than the line's background, unless
* it is voiced: periodic at a pitch of 70-400 Hz (``ivr.speech.voicing``), which noise rarely is.

The ``Endpointer`` turns frames into SpeechStarted / SpeechEnded / NoInput events for one Listen. The
``BargeInDetector`` runs while a prompt plays and only fires on sustained voiced speech with a steady
pitch, so coughs, clicks, knocks and short noise bursts do not cut the prompt off.

Times (``at`` of the events, ``position``) are seconds of audio fed to the detector, plus the
``start_at`` it was created with, so they are call times when the session passes its clock.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import webrtcvad

from ivr.audio.frame import FRAME_MS, AudioFrame, check_rate
from ivr.errors import IvrError
from ivr.events import ControlEvent, NoInput, SpeechEnded, SpeechStarted
from ivr.speech.voicing import Voicing, VoicingTracker

FRAME_SECONDS = FRAME_MS / 1000


class VadConfigError(IvrError, ValueError):
    """An endpointer or barge-in setting is out of range."""


def _frames(seconds: float) -> int:
    return max(1, round(seconds / FRAME_SECONDS))


class NoiseFloor:
    """The background level of a line in dBFS: follows quiet frames down at once, creeps up slowly.

    It rises faster on unvoiced frames than on voiced ones, so a new steady noise (fan, traffic) is
    learned within a second or two while a long stretch of speech barely moves it.
    """

    def __init__(self, rise_db_per_frame: float = 0.25, voiced_rise_db_per_frame: float = 0.02) -> None:
        self.level_db: float | None = None
        self._rise = rise_db_per_frame
        self._voiced_rise = voiced_rise_db_per_frame

    def update(self, level_db: float, voiced: bool) -> float:
        """Take one frame's level into account; returns the floor to compare that frame against."""
        level_db = max(level_db, -90.0)
        if self.level_db is None:
            self.level_db = level_db
            return level_db
        floor = self.level_db
        if level_db < floor:
            self.level_db = 0.5 * (floor + level_db)
        else:
            self.level_db = min(level_db, floor + (self._voiced_rise if voiced else self._rise))
        return floor


@dataclass(frozen=True)
class FrameDecision:
    """How one frame was classified: webrtcvad's verdict, the voicing of the 40 ms ending with it, the
    line's noise floor and the frame's own level (both dBFS)."""

    vad: bool
    voicing: Voicing
    floor_db: float
    level_db: float

    @property
    def snr_db(self) -> float:
        """How far the frame is above the noise floor."""
        return self.level_db - self.floor_db


class FrameClassifier:
    """webrtcvad + voicing + noise floor for one stream of frames at one sample rate."""

    def __init__(self, sample_rate: int, aggressiveness: int) -> None:
        check_rate(sample_rate)
        if aggressiveness not in (0, 1, 2, 3):
            raise VadConfigError(f"VAD aggressiveness must be 0, 1, 2 or 3, got {aggressiveness}")
        self.sample_rate = sample_rate
        self._vad = webrtcvad.Vad(aggressiveness)
        self._voicing = VoicingTracker()
        self.floor = NoiseFloor()

    def classify(self, frame: AudioFrame, voiced_threshold: float) -> FrameDecision:
        """Classify one frame (it must be at this classifier's sample rate)."""
        if frame.sample_rate != self.sample_rate:
            raise VadConfigError(
                f"frame at {frame.sample_rate} Hz fed to a detector made for {self.sample_rate} Hz; "
                "make one detector per call at the call's rate"
            )
        is_speech = bool(self._vad.is_speech(frame.pcm, self.sample_rate))
        # Only frames webrtcvad calls speech need the (costlier) voicing analysis.
        voice = self._voicing.update(frame) if is_speech else self._voicing.skip(frame)
        samples = frame.samples().astype(np.float32)
        level = 10.0 * math.log10(float(np.dot(samples, samples)) / samples.size / 32768.0**2 + 1e-12)
        floor = self.floor.update(level, voice.periodicity >= voiced_threshold)
        return FrameDecision(is_speech, voice, floor, level)


# --------------------------------------------------------------------------------------------- endpointer


@dataclass(frozen=True)
class EndpointerConfig:
    """Endpointing settings for one Listen (all times in seconds).

    ``min_speech``: speech needed (within a slightly longer window) before SpeechStarted, of which at
    least ``min_voiced`` must be voiced (so a cough or a noise burst alone does not start an utterance);
    ``end_silence``: silence after the last speech that ends the utterance (the hangover);
    ``max_speech``: an utterance is cut (SpeechEnded reason 'max_length') after this long;
    ``no_input_timeout``: NoInput when no speech started this long after arming (0 disables);
    ``pre_roll``: audio kept from before the speech start, handed to the recognizer with ``preroll()``.
    """

    aggressiveness: int = 2
    min_speech: float = 0.12
    min_voiced: float = 0.04
    end_silence: float = 0.5
    max_speech: float = 15.0
    no_input_timeout: float = 5.0
    pre_roll: float = 0.3
    voiced_threshold: float = 0.45
    min_snr_db: float = 12.0

    def __post_init__(self) -> None:
        problems = []
        if not 0.02 <= self.min_speech <= 2.0:
            problems.append(f"min_speech {self.min_speech} s must be between 0.02 and 2")
        if not 0 <= self.min_voiced <= self.min_speech:
            problems.append(f"min_voiced {self.min_voiced} s must be between 0 and min_speech")
        if not 0.1 <= self.end_silence <= 10.0:
            problems.append(f"end_silence {self.end_silence} s must be between 0.1 and 10")
        if self.max_speech <= self.min_speech:
            problems.append(f"max_speech {self.max_speech} s must be longer than min_speech")
        if self.no_input_timeout < 0:
            problems.append(f"no_input_timeout {self.no_input_timeout} s must be 0 (off) or more")
        if not 0 <= self.pre_roll <= 2.0:
            problems.append(f"pre_roll {self.pre_roll} s must be between 0 and 2")
        if self.aggressiveness not in (0, 1, 2, 3):
            problems.append(f"aggressiveness {self.aggressiveness} must be 0, 1, 2 or 3")
        if problems:
            raise VadConfigError("invalid endpointer settings: " + "; ".join(problems))


_WAITING, _SPEAKING, _DONE = "waiting", "speaking", "done"


@dataclass(frozen=True, slots=True)
class _Heard:
    start: float
    frame: AudioFrame
    speech: bool
    voiced: bool


class Endpointer:
    """Finds where the caller's utterance starts and ends (implements ``ivr.speech.interfaces.Endpointer``).

    Armed on creation (and by ``reset``): it reports at most one SpeechStarted and then one SpeechEnded,
    or one NoInput, and then stays quiet until re-armed with ``reset``. Feed it every caller frame.
    """

    def __init__(self, sample_rate: int, config: EndpointerConfig | None = None, start_at: float = 0.0) -> None:
        self.config = config or EndpointerConfig()
        self.sample_rate = sample_rate
        self._classifier = FrameClassifier(sample_rate, self.config.aggressiveness)
        self._start_at = start_at
        self._count = 0  # frames processed; times are derived from it so they do not drift
        self._recent: deque[_Heard] = deque()  # pre-roll plus the speech-start window
        self._run = 0  # consecutive speech frames
        self._state = _WAITING
        self._utterance_start: float | None = None
        self._arm()

    # ------------------------------------------------------------------ control

    def reset(self, config: EndpointerConfig | None = None, **changes: Any) -> None:
        """Re-arm for the next Listen, optionally with a new config or changed fields (e.g. end_silence=1.0).

        The noise floor and the recent audio are kept: if the caller is already talking, speech start is
        reported on the next frame with its true onset.
        """
        config = config or self.config
        if changes:
            config = replace(config, **changes)
        if config.aggressiveness != self.config.aggressiveness:
            floor = self._classifier.floor
            self._classifier = FrameClassifier(self.sample_rate, config.aggressiveness)
            self._classifier.floor = floor
        self.config = config
        self._arm()

    def force_speech(self, at: float | None = None) -> None:
        """Declare that an utterance is under way (e.g. barge-in already detected it) since ``at``
        (default, or if ``at`` is later than ``position``: now). Only its end is looked for then; no
        SpeechStarted is reported."""
        now = self.position
        self._state = _SPEAKING
        self._utterance_start = now if at is None else min(at, now)
        self._last_speech_end = now

    def stop(self) -> None:
        """Disarm: report nothing more until ``reset``."""
        self._state = _DONE

    def _arm(self) -> None:
        self._state = _WAITING
        self._armed_at = self.position
        self._utterance_start = None
        self._last_speech_end = self.position
        self._window = _frames(self.config.min_speech) + 3  # slack: a dropped frame does not delay start
        self._limit = _frames(self.config.pre_roll) + 2 * self._window

    # ------------------------------------------------------------------ queries

    @property
    def position(self) -> float:
        """Seconds of audio processed (plus ``start_at``)."""
        return round(self._start_at + self._count * FRAME_SECONDS, 6)

    @property
    def in_utterance(self) -> bool:
        """True between SpeechStarted (or ``force_speech``) and SpeechEnded."""
        return self._state == _SPEAKING

    @property
    def listening(self) -> bool:
        """True while armed: waiting for speech or inside an utterance."""
        return self._state != _DONE

    @property
    def voice_active(self) -> bool:
        """Is the caller making speech sounds right now (2 of the last 3 frames), whatever the state."""
        return sum(1 for h in list(self._recent)[-3:] if h.speech) >= 2

    @property
    def trailing_silence(self) -> float:
        """Seconds since the caller last spoke inside the current utterance (0 outside one)."""
        return max(0.0, self.position - self._last_speech_end) if self._state == _SPEAKING else 0.0

    @property
    def utterance_start(self) -> float | None:
        """Where the current (or last) utterance started, or None before any speech."""
        return self._utterance_start

    def preroll(self) -> list[AudioFrame]:
        """The buffered audio from ``pre_roll`` seconds before the utterance start up to the latest frame.

        Call it on SpeechStarted and feed these frames to the recognizer before the following ones.
        Without a speech start it returns the last ``pre_roll`` seconds.
        """
        if self._utterance_start is None:
            keep = _frames(self.config.pre_roll)
            return [h.frame for h in list(self._recent)[-keep:]]
        since = self._utterance_start - self.config.pre_roll - 1e-6
        return [h.frame for h in self._recent if h.start >= since]

    # ------------------------------------------------------------------ processing

    def _onset(self) -> float:
        # walk back from now over speech frames, bridging gaps of up to 40 ms, to where the speech began
        onset, gap = self._recent[-1].start, 0
        for heard in reversed(self._recent):
            if heard.speech:
                onset, gap = heard.start, 0
            else:
                gap += 1
                if gap > 2:
                    break
        return onset

    def process(self, frame: AudioFrame) -> list[ControlEvent]:
        """Feed 20 ms of caller audio; returns the SpeechStarted / SpeechEnded / NoInput events it caused."""
        cfg = self.config
        start = self.position
        d = self._classifier.classify(frame, cfg.voiced_threshold)
        voiced = d.vad and d.voicing.periodicity >= cfg.voiced_threshold
        speech = voiced or (d.vad and d.snr_db >= cfg.min_snr_db)
        self._count += 1
        end = self.position
        self._recent.append(_Heard(start, frame, speech, voiced))
        while len(self._recent) > self._limit:
            self._recent.popleft()
        self._run = self._run + 1 if speech else 0
        events: list[ControlEvent] = []
        if self._state == _WAITING:
            window = list(self._recent)[-self._window :]
            if (
                speech
                and sum(1 for h in window if h.speech) >= _frames(cfg.min_speech)
                and sum(1 for h in window if h.voiced) >= round(cfg.min_voiced / FRAME_SECONDS)
            ):
                self._state = _SPEAKING
                self._utterance_start = onset = self._onset()
                self._last_speech_end = end
                events.append(SpeechStarted(at=onset))
            elif cfg.no_input_timeout and end - self._armed_at >= cfg.no_input_timeout - 1e-9:
                self._state = _DONE
                events.append(NoInput())
        elif self._state == _SPEAKING:
            # a lone speech frame in a pause (a click, a breath) does not extend the utterance
            if self._run >= 2:
                self._last_speech_end = end
            assert self._utterance_start is not None
            if end - self._last_speech_end >= cfg.end_silence - 1e-9:
                self._state = _DONE
                events.append(SpeechEnded(at=self._last_speech_end, reason="silence"))
            elif end - self._utterance_start >= cfg.max_speech - 1e-9:
                self._state = _DONE
                events.append(SpeechEnded(at=end, reason="max_length"))
        return events


# ---------------------------------------------------------------------------------------------- barge-in


@dataclass(frozen=True)
class BargeInConfig:
    """Barge-in settings: how much steady voiced speech interrupts a prompt.

    ``min_voiced``: seconds of voiced frames with a continuous pitch needed (one unvoiced frame may
    interrupt the run); ``min_periodicity``: voicing needed per frame (0..1); ``min_snr_db`` and
    ``min_level_db``: how loud above the noise floor / in absolute dBFS a voiced frame must be;
    ``min_held_frames``: frames of the run within 6 dB of its loudest (a knock dies away, a vowel holds).
    """

    aggressiveness: int = 3
    min_voiced: float = 0.08
    min_periodicity: float = 0.45
    min_snr_db: float = 3.0
    min_held_frames: int = 3
    min_level_db: float = -55.0
    pre_roll: float = 0.3

    def __post_init__(self) -> None:
        if not 0.04 <= self.min_voiced <= 1.0:
            raise VadConfigError(f"barge-in min_voiced {self.min_voiced} s must be between 0.04 and 1")
        if not 0.0 < self.min_periodicity < 1.0:
            raise VadConfigError(f"barge-in min_periodicity {self.min_periodicity} must be between 0 and 1")
        if self.aggressiveness not in (0, 1, 2, 3):
            raise VadConfigError(f"barge-in aggressiveness {self.aggressiveness} must be 0, 1, 2 or 3")


def _same_pitch(a: float, b: float) -> bool:
    ratio = a / b if b else 0.0
    # within 20 %, or an octave jump (the pitch tracker's typical error)
    return 0.8 <= ratio <= 1.25 or 1.75 <= ratio <= 2.3 or 0.43 <= ratio <= 0.57


class BargeInDetector:
    """Decides, frame by frame while a prompt plays, whether the caller started talking over it.

    ``process`` returns True once, on the frame where barge-in is decided (about 80-140 ms into voiced
    speech), and False afterwards until ``reset``. Short or unvoiced noises never add up to a decision.
    """

    def __init__(self, sample_rate: int, config: BargeInConfig | None = None, start_at: float = 0.0) -> None:
        self.config = config or BargeInConfig()
        self.sample_rate = sample_rate
        self._classifier = FrameClassifier(sample_rate, self.config.aggressiveness)
        self._start_at = start_at
        self._count = 0
        self._recent: deque[tuple[float, AudioFrame]] = deque(maxlen=_frames(self.config.pre_roll) + 50)
        self._needed = _frames(self.config.min_voiced)
        self.reset()

    def reset(self) -> None:
        """Re-arm for the next prompt (the noise floor is kept)."""
        self.triggered_at: float | None = None
        self.onset_at: float | None = None
        self._run: list[tuple[float, float]] = []  # (level dBFS, pitch Hz) of the current voiced run
        self._levels: list[float] = []  # levels of every frame since the run started
        self._voiced_upto = 0  # len(self._levels) at the run's latest voiced frame
        self._abrupt: bool | None = None
        self._run_start = 0.0
        self._gap = 0

    def _held(self) -> bool:
        # A knock or a tap can ring at one pitch, but it dies away from its attack, while a vowel holds
        # its level: ask for several frames near the run's loudest one.
        peak = max(level for level, _ in self._run)
        return sum(1 for level, _ in self._run if level >= peak - 6.0) >= self.config.min_held_frames

    def _dying_away(self) -> bool:
        # The ring-down of an impact (knock, tap, dropped object): it starts abruptly and only gets
        # quieter from its peak on. A syllable builds up over several milliseconds and does not decay
        # steadily for 100 ms.
        levels = self._levels[: self._voiced_upto]  # trailing unvoiced frames are the background again
        top = levels.index(max(levels))
        if any(b >= a for a, b in zip(levels[top:], levels[top + 1 :], strict=False)):
            return False
        if self._abrupt is None:
            self._abrupt = self._abrupt_onset()
        return self._abrupt

    def _abrupt_onset(self) -> bool:
        # 5 ms energies over 60 ms around the run's first frame: does the sound jump 20 dB within 10 ms?
        first = self._run_start - FRAME_SECONDS - 1e-6
        around = [f.samples() for t, f in self._recent if first <= t][:3]
        x = np.concatenate(around).astype(np.float32)
        block = self.sample_rate // 200
        energy = (x[: x.size // block * block].reshape(-1, block) ** 2).sum(axis=1) + 1.0
        db = 10.0 * np.log10(energy)
        peak = int(np.argmax(db))
        rise_start = int(np.nonzero(db >= db[peak] - 20.0)[0][0])
        return rise_start > 0 and peak - rise_start <= 1

    @property
    def position(self) -> float:
        """Seconds of audio processed (plus ``start_at``)."""
        return round(self._start_at + self._count * FRAME_SECONDS, 6)

    @property
    def triggered(self) -> bool:
        """True once barge-in was decided (until ``reset``)."""
        return self.triggered_at is not None

    def preroll(self) -> list[AudioFrame]:
        """Audio from ``pre_roll`` seconds before the voiced onset up to the latest frame (after a barge-in)
        or the last ``pre_roll`` seconds; feed it to the recognizer so the first word is not lost."""
        if self.onset_at is None:
            return [f for _, f in list(self._recent)[-_frames(self.config.pre_roll) :]]
        since = self.onset_at - self.config.pre_roll - 1e-6
        return [f for t, f in self._recent if t >= since]

    def process(self, frame: AudioFrame) -> bool:
        """Feed 20 ms of caller audio; True exactly on the frame where barge-in is decided."""
        cfg = self.config
        start = self.position
        self._count += 1
        self._recent.append((start, frame))
        d = self._classifier.classify(frame, cfg.min_periodicity)
        if self.triggered_at is not None:
            return False
        v = d.voicing
        voiced = (
            d.vad
            and v.periodicity >= cfg.min_periodicity
            and d.level_db >= cfg.min_level_db
            and d.snr_db >= cfg.min_snr_db
        )
        if voiced and self._run and _same_pitch(v.pitch_hz, self._run[-1][1]):
            self._run.append((d.level_db, v.pitch_hz))
            self._levels.append(d.level_db)
            self._voiced_upto = len(self._levels)
            self._gap = 0
        elif voiced:
            self._run, self._run_start, self._gap = [(d.level_db, v.pitch_hz)], start, 0
            self._levels, self._voiced_upto, self._abrupt = [d.level_db], 1, None
        elif self._run:
            self._levels.append(d.level_db)
            self._gap += 1
            # a run survives a short unvoiced stretch (a consonant), not a return to the background level
            if self._gap > 2 or d.snr_db < cfg.min_snr_db:
                self._run = []
        if len(self._run) >= self._needed and self._held() and not self._dying_away():
            self.triggered_at = self.position
            # the voicing window spans the previous frame too: speech began about a frame earlier
            self.onset_at = round(self._run_start - FRAME_SECONDS, 6)
            return True
        return False
