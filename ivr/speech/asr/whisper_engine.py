"""faster-whisper (CTranslate2, int8 on CPU) recognition, one utterance at a time.

Whisper is not a streaming model: the recognizer buffers the utterance and transcribes it in
``finish()``, after the endpoint. To keep that fast on a small CPU, short utterances skip the stock
30-second window: the encoder runs on the utterance plus a second of padding (its cost grows with the
input length), followed by greedy decoding with a token budget proportional to the audio length.
Timestamps are decoded so text placed in the padding (a hallucinated repeat) can be dropped. Long
utterances (over ~25 s) go through faster-whisper's regular ``transcribe``.

Grammar-like prompts pass their phrases as a decoding hint, and the result is snapped to the closest
phrase (or rejected when nothing is close enough; see ``ivr.speech.asr.grammar``).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ivr.audio.frame import AudioFrame, check_rate
from ivr.audio.wavfile import resample
from ivr.errors import ModelError
from ivr.events import Transcript, Word
from ivr.speech.asr.grammar import DEFAULT_SNAP_THRESHOLD, clean_phrases, normalize, snap

ENGINE_NAME = "whisper"
WHISPER_RATE = 16000
PAD_SECONDS = 2.0  # silence appended before encoding: Whisper expects trailing padding
RETRY_PAD_SECONDS = 4.0
SHORT_UTTERANCE_SECONDS = 25.0
MIN_SPEECH_SECONDS = 0.1
SILENCE_RMS = 1e-4
NO_SPEECH_PROB = 0.6
NO_SPEECH_LOGPROB = -1.0
MAX_PROMPT_TOKENS = 200


class WhisperEngine:
    """A loaded faster-whisper model shared by all calls; ask it for one recognizer per call.

    Threads: by default each utterance is decoded on one thread and as many utterances as there are
    cores run side by side (``cpu_threads=1``, ``num_workers=0`` → one per core). For a small model and
    utterances of a few seconds, splitting one utterance over two threads is no faster, while decoding
    two calls' utterances at once nearly doubles what the server gets through when calls pile up.
    """

    name = ENGINE_NAME

    def __init__(
        self,
        model_dir: str | Path,
        *,
        language: str = "en",
        cpu_threads: int = 1,
        num_workers: int = 0,
        beam_size: int = 1,
        fast: bool = True,
        snap_threshold: float = DEFAULT_SNAP_THRESHOLD,
    ) -> None:
        from faster_whisper import WhisperModel
        from faster_whisper.tokenizer import Tokenizer

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "model.bin").is_file():
            raise ModelError(f"{self.model_dir}: not a faster-whisper model directory (no model.bin)")
        try:
            self._whisper = WhisperModel(
                str(self.model_dir), device="cpu", compute_type="int8",
                cpu_threads=cpu_threads or (os.cpu_count() or 1), num_workers=num_workers or (os.cpu_count() or 1),
            )
        except (RuntimeError, ValueError, OSError) as exc:
            raise ModelError(f"{self.model_dir}: faster-whisper could not load this model ({exc})") from None
        multilingual = bool(self._whisper.model.is_multilingual)
        self.language = language if multilingual else "en"
        self._tokenizer = Tokenizer(
            self._whisper.hf_tokenizer, multilingual, task="transcribe",
            language=self.language if multilingual else None,
        )
        self.beam_size = beam_size
        self.fast = fast
        self.snap_threshold = snap_threshold
        self._warm_up()

    def new_recognizer(self, sample_rate: int, grammar: Sequence[str] | None = None) -> WhisperRecognizer:
        """A recognizer for one call at 8 or 16 kHz; ``grammar`` phrases bias and snap the result."""
        check_rate(sample_rate)
        return WhisperRecognizer(self, sample_rate, grammar)

    def _warm_up(self) -> None:
        # The first encode allocates CTranslate2's buffers; do it at load, not on the first caller.
        self.transcribe_audio(np.zeros(WHISPER_RATE // 2, dtype=np.float32), hint=None, force_decode=True)

    # ---------------------------------------------------------------- recognition

    def transcribe_audio(self, audio: np.ndarray, hint: str | None, force_decode: bool = False) -> tuple[str, float]:
        """Transcribe float32 16 kHz mono ``audio``; returns (text, confidence 0..1)."""
        seconds = len(audio) / WHISPER_RATE
        if not force_decode and (seconds < MIN_SPEECH_SECONDS or float(np.sqrt(np.mean(audio**2))) < SILENCE_RMS):
            return "", 0.0
        if self.fast and seconds <= SHORT_UTTERANCE_SECONDS:
            return self._transcribe_short(audio, hint)
        return self._transcribe_long(audio, hint)

    def _prompt(self, hint: str | None) -> list[int]:
        tok = self._tokenizer
        prompt: list[int] = []
        if hint:
            prompt = [tok.sot_prev, *tok.encode(" " + hint.strip())[-MAX_PROMPT_TOKENS:]]
        return [*prompt, *tok.sot_sequence]

    def _transcribe_short(self, audio: np.ndarray, hint: str | None) -> tuple[str, float]:
        text, confidence, complete = self._decode_short(audio, hint, PAD_SECONDS)
        if not complete:
            # The decoder ran to its token budget (a repetition loop); more trailing silence cures it.
            text, confidence, _ = self._decode_short(audio, hint, RETRY_PAD_SECONDS)
        return text, confidence

    def _decode_short(self, audio: np.ndarray, hint: str | None, pad: float) -> tuple[str, float, bool]:
        """Encode only the utterance plus ``pad`` seconds and decode with timestamps.

        Timestamps let the model say where its text sits; segments it places after the end of the
        audio are hallucinated continuations and are dropped. Returns (text, confidence, complete).
        """
        import ctranslate2  # type: ignore[import-untyped]

        seconds = len(audio) / WHISPER_RATE
        padded = np.concatenate([audio, np.zeros(int(pad * WHISPER_RATE), dtype=np.float32)])
        features = self._whisper.feature_extractor(padded)
        frames = min(features.shape[-1] - features.shape[-1] % 2, 3000)
        features = np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)
        encoded = self._whisper.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)
        prompt = self._prompt(hint)
        # Fast speech is ~4 words (~6 tokens) a second, plus timestamps; the cap stops a loop early.
        budget = min(220, int(seconds * 6) + 16)
        result: Any = self._whisper.model.generate(
            encoded, [prompt], beam_size=self.beam_size, max_length=len(prompt) + budget,
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
        )[0]
        ids: list[int] = list(result.sequences_ids[0])
        avg_logprob = float(result.scores[0]) if result.scores else -10.0
        if result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < NO_SPEECH_LOGPROB:
            return "", 0.0, True
        text = drop_repeated_sentences(self._tokenizer.decode(self._tokens_within(ids, seconds)).strip())
        return text, math.exp(min(0.0, avg_logprob)), len(ids) < budget

    def _tokens_within(self, ids: list[int], seconds: float) -> list[int]:
        """Text tokens of the segments that start inside the audio (not in the padding)."""
        tok = self._tokenizer
        kept: list[int] = []
        segment: list[int] = []
        start: float | None = None
        for t in ids:
            if t >= tok.timestamp_begin:
                stamp = (t - tok.timestamp_begin) * 0.02
                if start is None:
                    start = stamp
                    continue
                if start < seconds - 0.1:
                    kept.extend(segment)
                segment, start = [], None
            elif t < tok.eot:
                segment.append(t)
        if segment and (start is None or start < seconds - 0.1):
            kept.extend(segment)
        return kept

    def _transcribe_long(self, audio: np.ndarray, hint: str | None) -> tuple[str, float]:
        segments, _ = self._whisper.transcribe(
            audio, language=self.language, beam_size=self.beam_size, without_timestamps=True,
            temperature=0.0, condition_on_previous_text=False, initial_prompt=hint, vad_filter=False,
        )
        texts, logprobs = [], []
        for seg in segments:
            if seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < NO_SPEECH_LOGPROB:
                continue
            texts.append(seg.text.strip())
            logprobs.append(seg.avg_logprob)
        if not texts:
            return "", 0.0
        return " ".join(texts), math.exp(min(0.0, sum(logprobs) / len(logprobs)))


class WhisperRecognizer:
    """Buffers one utterance of a call and transcribes it with Whisper in ``finish()``."""

    def __init__(self, engine: WhisperEngine, sample_rate: int, grammar: Sequence[str] | None) -> None:
        self._engine = engine
        self.sample_rate = sample_rate
        self.phrases = clean_phrases(grammar) if grammar else None
        self._hint = ", ".join(self.phrases) + "." if self.phrases else None
        self._chunks: list[bytes] = []

    def accept(self, frame: AudioFrame) -> Transcript | None:
        """Buffer 20 ms of audio (Whisper gives no partial results)."""
        if frame.sample_rate != self.sample_rate:
            raise ValueError(f"frame is {frame.sample_rate} Hz but this recognizer runs at {self.sample_rate} Hz")
        self._chunks.append(frame.pcm)
        return None

    def finish(self) -> Transcript:
        """Transcribe the buffered utterance; the recognizer is ready for the next one."""
        transcript = self.peek()
        self.reset()
        return transcript

    def peek(self) -> Transcript:
        """Transcribe what is buffered so far, keeping it (to end a turn early on a complete sentence)."""
        pcm = b"".join(self._chunks)
        samples = np.frombuffer(pcm, dtype="<i2")
        audio = resample(samples, self.sample_rate, WHISPER_RATE) if len(samples) else np.zeros(0, np.float32)
        heard, confidence = self._engine.transcribe_audio(audio, self._hint)
        if self.phrases is None:
            return Transcript(heard, round(confidence, 4), _words(heard, confidence), engine=ENGINE_NAME, heard=heard)
        match = snap(heard, self.phrases, self._engine.snap_threshold)
        if match is None:
            return Transcript("", 0.0, (), engine=ENGINE_NAME, rejected=True, heard=heard)
        conf = round(confidence * match.score, 4)
        return Transcript(match.phrase, conf, _words(match.phrase, conf), engine=ENGINE_NAME, heard=heard)

    def reset(self) -> None:
        """Drop the buffered audio."""
        self._chunks = []


_SENTENCE = re.compile(r"[^.?!]+[.?!]*")


def drop_repeated_sentences(text: str) -> str:
    """Remove a sentence that repeats the one before it (a Whisper decoding loop on short audio)."""
    kept: list[str] = []
    for sentence in (m.group().strip() for m in _SENTENCE.finditer(text)):
        if sentence and (not kept or normalize(sentence) != normalize(kept[-1])):
            kept.append(sentence)
    return " ".join(kept)


def _words(text: str, confidence: float) -> tuple[Word, ...]:
    # Whisper's greedy pass gives one score for the utterance; every word carries it.
    return tuple(Word(w, round(confidence, 4)) for w in text.split())
