"""Vosk (Kaldi) streaming recognition: partial results while the caller speaks, phrase grammars.

One ``vosk.Model`` per process is shared by every call (Vosk models are safe to share between
recognizers); each call gets a ``VoskRecognizer`` wrapping its own ``KaldiRecognizer``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ivr.audio.frame import AudioFrame, check_rate
from ivr.errors import ModelError
from ivr.events import Transcript, Word
from ivr.speech.asr.grammar import UNKNOWN_WORDS, clean_phrases, exact_phrase, snap
from ivr.speech.asr.vocabulary import read_vocabulary, supports_runtime_grammar
from ivr.speech.interfaces import RecognizerCapabilities

log = logging.getLogger(__name__)

ENGINE_NAME = "vosk"
# Ask Vosk for a partial result every this many frames (5 x 20 ms): often enough for barge-in and
# live captions, rare enough not to cost CPU on every frame.
PARTIAL_EVERY = 5
# In grammar mode a phrase word below this confidence rejects the utterance.
MIN_GRAMMAR_WORD_CONFIDENCE = 0.6


def check_model_dir(path: Path) -> None:
    """Raise ModelError unless ``path`` looks like a Vosk model directory."""
    if not path.is_dir():
        raise ModelError(f"{path}: no such Vosk model directory; see `ivr models list` or `ivr models pull NAME`")
    if not (path / "am").is_dir() or not (path / "conf" / "model.conf").is_file():
        raise ModelError(
            f"{path}: not a Vosk model directory (expected am/ and conf/model.conf); "
            "point --model at the unpacked model folder"
        )


CAPABILITIES = RecognizerCapabilities(streaming=True, partials=True, grammars=True, word_confidences=True, peek=True)


class VoskEngine:
    """A loaded Vosk model; ask it for one ``VoskRecognizer`` per call."""

    name = ENGINE_NAME
    capabilities = CAPABILITIES

    def __init__(self, model_dir: str | Path) -> None:
        import vosk

        self.model_dir = Path(model_dir)
        check_model_dir(self.model_dir)
        vosk.SetLogLevel(-1)
        try:
            self._model = vosk.Model(str(self.model_dir))
        except Exception as exc:  # vosk raises a bare Exception when Kaldi cannot read the files
            raise ModelError(f"{self.model_dir}: Vosk could not load this model ({exc}); pull it again") from None
        self.grammar_capable = supports_runtime_grammar(self.model_dir)
        self._vocabulary: frozenset[str] | None = None
        self._lock = threading.Lock()

    @property
    def vocabulary(self) -> frozenset[str]:
        """The model's words (read once, on first use)."""
        with self._lock:
            if self._vocabulary is None:
                self._vocabulary = read_vocabulary(self.model_dir)
            return self._vocabulary

    def unknown_word(self) -> str | None:
        """The model's out-of-vocabulary token, if it has one."""
        return next((u for u in UNKNOWN_WORDS if u in self.vocabulary), None)

    def usable_phrases(self, phrases: Sequence[str]) -> list[str]:
        """The phrases whose every word the model knows (the others are logged and dropped)."""
        vocab = self.vocabulary
        usable = []
        for phrase in clean_phrases(phrases):
            missing = [w for w in phrase.split() if vocab and w not in vocab]
            if missing:
                log.warning("grammar phrase %r dropped: %s not in the Vosk model's vocabulary", phrase, missing)
            else:
                usable.append(phrase)
        return usable

    def new_recognizer(self, sample_rate: int, grammar: Sequence[str] | None = None) -> VoskRecognizer:
        """A recognizer for one call at 8 or 16 kHz, optionally confined to ``grammar`` phrases."""
        check_rate(sample_rate)
        return VoskRecognizer(self, sample_rate, grammar)

    def _kaldi_recognizer(self, sample_rate: int, grammar_json: str | None) -> Any:
        import vosk

        if grammar_json is None:
            rec = vosk.KaldiRecognizer(self._model, float(sample_rate))
        else:
            rec = vosk.KaldiRecognizer(self._model, float(sample_rate), grammar_json)
        rec.SetWords(True)
        return rec


class VoskRecognizer:
    """Streaming recognition of one call's utterances with Vosk.

    With a grammar on a lookahead model, decoding is confined to the phrases plus the model's
    unknown-word token; anything that is not exactly one phrase is rejected. On models without runtime
    grammars, the free transcript is snapped to the closest phrase instead.
    """

    def __init__(self, engine: VoskEngine, sample_rate: int, grammar: Sequence[str] | None) -> None:
        self._engine = engine
        self.sample_rate = sample_rate
        self.phrases: list[str] | None = None
        self._confined = False
        grammar_json = None
        if grammar:
            self.phrases = engine.usable_phrases(grammar)
            if engine.grammar_capable and self.phrases:
                unk = engine.unknown_word()
                grammar_json = json.dumps([*self.phrases, *([unk] if unk else [])], ensure_ascii=False)
                self._confined = True
        self._rec = engine._kaldi_recognizer(sample_rate, grammar_json)
        self._segments: list[list[dict[str, Any]]] = []
        self._frames = 0
        self._last_partial = ""

    def accept(self, frame: AudioFrame) -> Transcript | None:
        """Feed 20 ms of audio; returns a partial transcript when the words heard so far change."""
        if frame.sample_rate != self.sample_rate:
            raise ValueError(f"frame is {frame.sample_rate} Hz but this recognizer runs at {self.sample_rate} Hz")
        self._frames += 1
        if self._rec.AcceptWaveform(frame.pcm):
            # Vosk found an internal pause: keep the segment, the utterance goes on until finish().
            self._segments.append(json.loads(self._rec.Result()).get("result", []))
            text = self._joined(self._segments)
        elif self._frames % PARTIAL_EVERY == 0:
            partial = json.loads(self._rec.PartialResult()).get("partial", "")
            text = " ".join(t for t in (self._joined(self._segments), partial) if t)
        else:
            return None
        text = " ".join(w for w in text.split() if w not in UNKNOWN_WORDS)
        if text == self._last_partial:
            return None
        self._last_partial = text
        return Transcript(text=text, confidence=0.0, final=False, engine=ENGINE_NAME)

    capabilities = CAPABILITIES
    """Results grow with the audio: ``peek`` is cheap and ``finish`` only flushes the decoder."""

    def peek(self) -> Transcript:
        """What was heard so far (a partial result, no confidences), without ending the utterance. With a
        grammar the text is the one phrase heard, or empty while it is not exactly one phrase."""
        partial = json.loads(self._rec.PartialResult()).get("partial", "")
        words = [w for w in f"{self._joined(self._segments)} {partial}".split() if w not in UNKNOWN_WORDS]
        if self.phrases is None:
            return Transcript(" ".join(words), 0.0, final=False, engine=ENGINE_NAME)
        phrase = exact_phrase(words, self.phrases) if self._confined else None
        return Transcript(phrase or "", 0.0, final=False, engine=ENGINE_NAME, heard=" ".join(words))

    def finish(self) -> Transcript:
        """The final transcript of the utterance; the recognizer is ready for the next one."""
        self._segments.append(json.loads(self._rec.FinalResult()).get("result", []))
        words = [w for seg in self._segments for w in seg]
        self.reset()
        return self._transcript(words)

    def reset(self) -> None:
        """Drop the audio fed so far."""
        self._rec.Reset()
        self._segments = []
        self._frames = 0
        self._last_partial = ""

    @staticmethod
    def _joined(segments: list[list[dict[str, Any]]]) -> str:
        return " ".join(str(w.get("word", "")) for seg in segments for w in seg)

    def _transcript(self, raw: list[dict[str, Any]]) -> Transcript:
        words = tuple(
            Word(str(w["word"]), float(w.get("conf", 1.0)), float(w.get("start", 0.0)), float(w.get("end", 0.0)))
            for w in raw
            if w.get("word")
        )
        known = tuple(w for w in words if w.text not in UNKNOWN_WORDS)
        heard = " ".join(w.text for w in known)
        confidence = sum(w.confidence for w in known) / len(known) if known else 0.0
        if self.phrases is None:
            return Transcript(heard, round(confidence, 4), known, engine=ENGINE_NAME, heard=heard)
        if self._confined:
            phrase = exact_phrase([w.text for w in words], self.phrases)
            if any(w.confidence < MIN_GRAMMAR_WORD_CONFIDENCE for w in known):
                phrase = None  # a phrase word the decoder itself doubts: likely out-of-grammar speech
            elif phrase is not None and len(known) < len(words):
                confidence *= 0.8  # the phrase came with unknown words around it
        else:
            match = snap(heard, self.phrases)
            phrase = match.phrase if match else None
            confidence *= match.score if match else 0.0
        if phrase is None:
            return Transcript("", 0.0, (), engine=ENGINE_NAME, rejected=True, heard=heard)
        return Transcript(phrase, round(confidence, 4), known, engine=ENGINE_NAME, heard=heard)
