"""faster-whisper (CTranslate2, int8 on CPU) recognition, one utterance at a time.

Whisper is not a streaming model: the recognizer buffers the utterance and transcribes it in
``finish()``, after the endpoint. The stock recipe pads every utterance to a 30-second window, whose
encoder pass dominates the time of a short answer. The fast path encodes the utterance plus 5 seconds of
silence instead, decodes greedily with timestamps (text the model places after the end of the audio is a
continuation it made up, and is dropped), and aligns the result to get each word's time and probability.
When the result comes out unsure (mean word probability under ``REDECODE_BELOW``, or text that loops) the
utterance is decoded again with the full window, which hears short, clipped words better (a 10 or 15 s
window does not help), when no other utterance is being recognised (on a busy server speed wins); its result
is taken unless it loops where the first did not.
Measured on real telephone speech (``ivr bench wer``, docs/benchmarks.md). Why 5 s: with less padding the
model does not find the end of a one-word answer and repeats it
("zero zero zero …", "the leader has left the conference. The leader has left the"); more costs time
without helping. When the model ends its transcript a second or more before the audio ends and sound follows,
the rest is decoded the same way and appended (stock ``transcribe`` seeks on likewise). On a quiet server,
utterances of 15 s or more take the full window at once (the short one would cost nearly as much). Long
utterances (over ~25 s) go through faster-whisper's stock ``transcribe``.

Grammar-like prompts pass their phrases as a decoding hint, and the result is snapped to the closest
phrase (or rejected when nothing is close enough; see ``ivr.speech.asr.grammar``).
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ivr.audio.frame import AudioFrame, check_rate
from ivr.audio.wavfile import resample
from ivr.errors import ModelError
from ivr.events import Transcript, Word
from ivr.nlu.garbled import looks_garbled
from ivr.speech.asr.grammar import DEFAULT_SNAP_THRESHOLD, clean_phrases, normalize, snap
from ivr.speech.interfaces import RecognizerCapabilities

ENGINE_NAME = "whisper"
WHISPER_RATE = 16000
WINDOW_SECONDS = 30.0
PAD_SECONDS = 5.0
"""Silence encoded after a short utterance (see the module docstring)."""
FULL_WINDOW_FROM_SECONDS = 15.0
"""From this length on the short window (utterance + 5 s) costs two thirds of the full one or more: on a quiet
server such utterances are decoded once with the full window, which hears better, instead of risking both."""
REDECODE_BELOW = 0.6
"""A mean word probability under which the short-window result is decoded again with the full window. Chosen
on the dev part of the evaluation set (184 utterances under 25 s, tiny.en; ``ivr bench wer --split dev
--redecode-sweep``): short window only 12.29 % WER, full window only 10.95 % (at 4x the time); again when
the mean is under 0.6 (or the text loops): 11.22 % with 23 % decoded twice, median 0.29x stock's time; the
highest threshold whose mean time stays under half of stock's. Swept again for base, on the fixed and the mobile
line (``--line mobile``): 0.6 puts its fast path ahead of stock on both, and no threshold is better on both
models and both lines by more than a few words."""
SHORT_UTTERANCE_SECONDS = 25.0
MIN_SPEECH_SECONDS = 0.1
SILENCE_RMS = 1e-4
NO_SPEECH_PROB = 0.6
NO_SPEECH_LOGPROB = -1.0
MAX_PROMPT_TOKENS = 200
TOKENS_PER_SECOND = 6
"""Fast speech is ~4 words (~6 tokens) a second, timestamps included: the decoding budget per second of audio
(a cap that stops a runaway decode, not a limit on what a caller can say)."""
MAX_CONTINUATIONS = 2
"""How many times the rest of an utterance is decoded after the model stopped early (see ``_decode``)."""
CONTINUE_AFTER_SECONDS = 1.0
SOUND_BELOW_PEAK = 0.1
"""The rest of an utterance counts as sound (worth decoding) when a 100 ms stretch of it is at least this
fraction of the utterance's loudest 100 ms in RMS (-20 dB): speech after a pause, not line noise."""
MAX_NEW_TOKENS = 220
TEXT_CONTEXT = 448
"""Whisper's decoder positions: prompt and decoded tokens together."""
# faster-whisper's transcribe() defaults: punctuation joins the word it belongs to.
PREPENDED_PUNCTUATION = "\"'“¿([{-"
APPENDED_PUNCTUATION = "\"'.。,，!！?？:：”)]}、"


@dataclass(frozen=True)
class Heard:
    """What Whisper made of one utterance: text, a confidence (the mean word probability) and the words."""

    text: str
    confidence: float
    words: tuple[Word, ...] = ()

    @classmethod
    def of(cls, text: str, words: Sequence[Word]) -> Heard:
        """``text`` heard as ``words``, its confidence their mean probability (0 without words)."""
        confidence = float(np.mean([w.confidence for w in words])) if words else 0.0
        return cls(text, round(confidence, 4), tuple(words))


NOTHING = Heard("", 0.0)

CAPABILITIES = RecognizerCapabilities(grammars=True, word_confidences=True, peek=True)
"""Per utterance: no partials; grammars by snapping the free transcript to the closest phrase."""


class WhisperEngine:
    """A loaded faster-whisper model shared by all calls; ask it for one recognizer per call.

    Threads: by default each utterance is decoded on one thread and as many utterances as there are
    cores run side by side (``cpu_threads=1``, ``num_workers=0`` → one per core). For a small model and
    utterances of a few seconds, splitting one utterance over two threads is no faster, while decoding
    two calls' utterances at once nearly doubles what the server gets through when calls pile up.
    """

    name = ENGINE_NAME
    capabilities = CAPABILITIES

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
        self._in_flight = 0  # utterances being transcribed right now (all calls)
        self._in_flight_lock = threading.Lock()
        multilingual = bool(self._whisper.model.is_multilingual)
        self.language = language if multilingual else "en"
        self._tokenizer = Tokenizer(
            self._whisper.hf_tokenizer, multilingual, task="transcribe",
            language=self.language if multilingual else None,
        )
        self.beam_size = beam_size
        self.fast = fast
        self.whisper = self._whisper
        """The faster-whisper model itself (for benchmarks comparing against its stock ``transcribe``)."""
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

    def transcribe_audio(self, audio: np.ndarray, hint: str | None, force_decode: bool = False) -> Heard:
        """Transcribe float32 16 kHz mono ``audio``."""
        seconds = len(audio) / WHISPER_RATE
        if not force_decode and (seconds < MIN_SPEECH_SECONDS or float(np.sqrt(np.mean(audio**2))) < SILENCE_RMS):
            return NOTHING
        if not self.fast or seconds > SHORT_UTTERANCE_SECONDS:
            return self._transcribe_long(audio, hint)
        with self._in_flight_lock:
            self._in_flight += 1
        try:
            quiet = self._in_flight == 1
            if quiet and seconds >= FULL_WINDOW_FROM_SECONDS:  # the short window would cost nearly as much
                return self._decode(audio, hint, WINDOW_SECONDS)
            heard = self._decode(audio, hint, seconds + PAD_SECONDS)
            # The second pass costs a full 30 s encoder pass: taken when no other caller is being heard,
            # so that under load every caller's turn stays quick (speed wins, accuracy when there is room).
            if heard.words and quiet and (heard.confidence < REDECODE_BELOW or looks_garbled(heard.text)):
                again = self._decode(audio, hint, WINDOW_SECONDS)
                if takes_second_pass(heard.text, again.text):
                    return again
            return heard
        finally:
            with self._in_flight_lock:
                self._in_flight -= 1

    def _prompt(self, hint: str | None) -> list[int]:
        tok = self._tokenizer
        prompt: list[int] = []
        if hint:
            prompt = [tok.sot_prev, *tok.encode(" " + hint.strip())[-MAX_PROMPT_TOKENS:]]
        return [*prompt, *tok.sot_sequence]

    def _decode(self, audio: np.ndarray, hint: str | None, window: float) -> Heard:
        """Decode the audio padded with silence to ``window`` seconds. When the model ends before the audio
        does (its last timestamp well before the end, with sound after it: "… your volume" and not "or 8 to
        exit"), the rest is decoded the same way and appended, as stock ``transcribe()`` seeks on."""
        padding = max(0.0, window - len(audio) / WHISPER_RATE)
        heard, heard_until = self._decode_window(audio, hint, window)
        offset = 0.0
        for _ in range(MAX_CONTINUATIONS):
            offset += heard_until
            rest = audio[int(offset * WHISPER_RATE):]
            if not heard.text or looks_garbled(heard.text) or not has_sound_after(audio, rest):
                break
            more, heard_until = self._decode_window(rest, hint, len(rest) / WHISPER_RATE + padding)
            joined = f"{heard.text} {more.text}".strip()
            if not more.text or drop_repeated_sentences(joined) != joined:
                break
            words = (*heard.words, *(Word(w.text, w.confidence, round(w.start + offset, 2),
                                          round(w.end + offset, 2)) for w in more.words))
            heard = Heard.of(joined, words)
        return heard

    def _decode_window(self, audio: np.ndarray, hint: str | None, window: float) -> tuple[Heard, float]:
        """Encode the audio padded with silence to ``window`` seconds, decode greedily, align the words.
        Returns what was heard and the time (s) up to which the model transcribed the audio."""
        import ctranslate2  # type: ignore[import-untyped]
        from faster_whisper.transcribe import merge_punctuations

        seconds = len(audio) / WHISPER_RATE
        total = min(WINDOW_SECONDS, max(window, seconds + 0.5))
        padded = np.concatenate([audio, np.zeros(int(total * WHISPER_RATE) - len(audio), dtype=np.float32)])
        features = self._whisper.feature_extractor(padded)
        frames = min(features.shape[-1] - features.shape[-1] % 2, 3000)
        features = np.ascontiguousarray(features[None, :, :frames], dtype=np.float32)
        encoded = self._whisper.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=False)
        prompt = self._prompt(hint)
        result: Any = self._whisper.model.generate(
            encoded, [prompt], beam_size=self.beam_size, max_length=generation_length(len(prompt), seconds),
            return_scores=True, return_no_speech_prob=True, suppress_blank=True,
        )[0]
        avg_logprob = float(result.scores[0]) if result.scores else -10.0
        if result.no_speech_prob > NO_SPEECH_PROB and avg_logprob < NO_SPEECH_LOGPROB:
            return NOTHING, seconds
        tokens, heard_until = self._tokens_within(list(result.sequences_ids[0]), seconds)
        if not tokens:
            return NOTHING, seconds
        text = drop_repeated_sentences(self._tokenizer.decode(tokens).strip())
        if text != self._tokenizer.decode(tokens).strip():  # a repeat was cut: align what is left
            tokens, heard_until = self._tokenizer.encode(" " + text), seconds
        # CTranslate2's align takes the number of mel frames holding audio (not padding, not encoder positions).
        audio_frames = min(frames, int(np.ceil(seconds * self._whisper.feature_extractor.sampling_rate
                                                / self._whisper.feature_extractor.hop_length)))
        aligned = self._whisper.find_alignment(self._tokenizer, [tokens], encoded, audio_frames)[0]
        merge_punctuations(aligned, PREPENDED_PUNCTUATION, APPENDED_PUNCTUATION)  # "car" + "." → "car."
        words = tuple(Word(w["word"].strip(), round(float(w["probability"]), 4), round(float(w["start"]), 2),
                           round(float(w["end"]), 2)) for w in aligned if w["word"].strip())
        if words:  # the aligned end of the last word is surer than a timestamp token the model chose
            heard_until = max(heard_until, min(words[-1].end, seconds))
        return Heard.of(text, words), heard_until

    def _tokens_within(self, ids: list[int], seconds: float) -> tuple[list[int], float]:
        """Text tokens of the segments that start inside the audio (not in the padding), and the last
        timestamp inside the audio: how far the model got (the whole audio when it gave no timestamp)."""
        tok = self._tokenizer
        kept: list[int] = []
        segment: list[int] = []
        start: float | None = None
        last_stamp: float | None = None
        for t in ids:
            if t >= tok.timestamp_begin:
                stamp = (t - tok.timestamp_begin) * 0.02
                if start is None:
                    start = stamp
                    if stamp < seconds:  # a segment starts inside the audio: the model got this far
                        last_stamp = stamp
                    continue
                if start < seconds - 0.1:
                    kept.extend(segment)
                    last_stamp = min(stamp, seconds)
                segment, start = [], None
            elif t < tok.eot:
                segment.append(t)
        if segment and (start is None or start < seconds - 0.1):
            kept.extend(segment)
            last_stamp = seconds  # a segment cut off by the budget or the end: no seeking on
        return kept, seconds if last_stamp is None else last_stamp

    def _transcribe_long(self, audio: np.ndarray, hint: str | None) -> Heard:
        # Stock decoding (temperature fallback, conditioning on the previous window) plus word timings.
        segments, _ = self._whisper.transcribe(
            audio, language=self.language, beam_size=self.beam_size, initial_prompt=hint, vad_filter=False,
            word_timestamps=True,
        )
        texts: list[str] = []
        words: list[Word] = []
        for seg in segments:
            if seg.no_speech_prob > NO_SPEECH_PROB and seg.avg_logprob < NO_SPEECH_LOGPROB:
                continue
            texts.append(seg.text.strip())
            words.extend(Word(w.word.strip(), round(float(w.probability), 4), round(float(w.start), 2),
                              round(float(w.end), 2)) for w in seg.words or () if w.word.strip())
        if not texts:
            return NOTHING
        return Heard.of(" ".join(texts), words)


class WhisperRecognizer:
    """Buffers one utterance of a call and transcribes it with Whisper in ``finish()``."""

    capabilities = CAPABILITIES

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
        heard = self._engine.transcribe_audio(audio, self._hint)
        if self.phrases is None:
            return Transcript(heard.text, heard.confidence, heard.words, engine=ENGINE_NAME, heard=heard.text)
        match = snap(heard.text, self.phrases, self._engine.snap_threshold)
        if match is None:
            return Transcript("", 0.0, (), engine=ENGINE_NAME, rejected=True, heard=heard.text)
        conf = round(heard.confidence * match.score, 4)
        return Transcript(match.phrase, conf, (Word(match.phrase, conf),), engine=ENGINE_NAME, heard=heard.text)

    def reset(self) -> None:
        """Drop the buffered audio."""
        self._chunks = []


def generation_length(prompt_tokens: int, seconds: float) -> int:
    """The ``max_length`` to give CTranslate2's Whisper ``generate`` so that it may decode
    ``TOKENS_PER_SECOND`` tokens per second of audio (plus a few) after a prompt of ``prompt_tokens``.

    CTranslate2 decodes at most ``min(max_length / 2, max_length - prompt)`` new tokens (whisper.cc, the
    original 224-token sampling limit), so asking for prompt + budget gave half the budget: the ends of
    long sentences were cut off ("… you may end the test by hanging").
    """
    budget = min(MAX_NEW_TOKENS, int(seconds * TOKENS_PER_SECOND) + 16)
    return min(TEXT_CONTEXT, max(2 * budget, prompt_tokens + budget))


def takes_second_pass(first: str, second: str) -> bool:
    """Whether the second pass's text replaces the first's: when it has text and does not loop where the first
    did not ("8-8-8-8-8…" for "eighteenth" on a noisy line is worse than the first, however unsure that was)."""
    return bool(second) and (looks_garbled(first) or not looks_garbled(second))


def has_sound_after(audio: np.ndarray, rest: np.ndarray) -> bool:
    """Whether ``rest`` (the end of ``audio``) is long enough and loud enough to hold words the model
    left out: ``CONTINUE_AFTER_SECONDS`` or more, with a 100 ms stretch within 20 dB of the loudest."""
    if len(rest) < CONTINUE_AFTER_SECONDS * WHISPER_RATE:
        return False

    def loudest(samples: np.ndarray) -> float:
        step = WHISPER_RATE // 10
        usable = samples[: len(samples) - len(samples) % step].reshape(-1, step)
        return float(np.sqrt(np.mean(usable**2, axis=1)).max()) if len(usable) else 0.0

    return loudest(rest) >= SOUND_BELOW_PEAK * loudest(audio)


_SENTENCE_END = re.compile(r"(?<=[.?!])\s+")
"""Between sentences: after a full stop, question or exclamation mark and a space (not the point in "7.98")."""


def drop_repeated_sentences(text: str) -> str:
    """Remove a sentence that repeats the sentence of several words before it, or begins to ("The leader has
    left the conference. The leader has left the"): a Whisper decoding loop on short audio. A one-word
    sentence said again is kept: "5. 5." is a digit string, "No. No." how people answer."""
    kept: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        said = normalize(sentence).split()
        before = normalize(kept[-1]).split() if kept else []
        if sentence and not (said and len(before) > 1 and before[:len(said)] == said):
            kept.append(sentence)
    return " ".join(kept)
