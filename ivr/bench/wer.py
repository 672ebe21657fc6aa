"""``ivr bench wer``: word error rate and time per utterance on real human speech over a phone line.

Each recognizer setting transcribes every utterance of the chosen split of ``ivr.bench.corpus`` (8 kHz,
band-limited, G.711), resampled to 16 kHz as a call's audio is. WER is computed with jiwer on normalised
text (lower case, numbers spelled out, punctuation dropped), over all words of the split and separately for
sentences and short answers. Times are CPU-bound wall times on one thread, the median per utterance.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ivr.audio.wavfile import resample
from ivr.bench import corpus
from ivr.errors import IvrError
from ivr.nlu.garbled import looks_garbled

if TYPE_CHECKING:
    from ivr.speech.asr.whisper_engine import WhisperEngine

Transcribe = Callable[[np.ndarray], str]

_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint", "ok": "okay", "e-mail": "email"}


def normalize(text: str) -> str:
    """Lower case, numbers as words, no punctuation: how references and results are compared."""
    from num2words import num2words

    t = text.lower().replace("&", " and ").replace("%", " percent ").replace("#", " pound ")
    t = re.sub(r"\$(\d+)", r"\1 dollars", t)
    t = re.sub(r"(\d+)(st|nd|rd|th)\b", lambda m: " " + num2words(int(m.group(1)), to="ordinal") + " ", t)
    t = re.sub(r"\d+", lambda m: " " + num2words(int(m.group())) + " ", t)
    t = re.sub(r"[-–—/]", " ", t)
    t = re.sub(r"[^a-z' ]", " ", t)
    words = [w.strip("'") for w in t.split()]
    return " ".join(_ABBREVIATIONS.get(w, w) for w in words if w)


HESITATIONS = frozenset({"hmm", "mm", "mhm", "mmm", "uh", "um"})
"""The words Whisper's own evaluation normalizer (``EnglishTextNormalizer``) drops from references and results
before scoring: the second WER figure follows that convention, the first counts every word."""


def without_hesitations(text: str) -> str:
    """A normalized text with the hesitation words (``HESITATIONS``) left out."""
    return " ".join(w for w in text.split() if w not in HESITATIONS)


def repeats(text: str) -> bool:
    """True when the text loops: a run of words starts again right after itself, possibly cut short
    ("where with my order where with my order where with", "1 2 3 4 5 1 2 3"): one word three times,
    two words three times, or three or more words followed by at least three of them again."""
    words = normalize(text).split()
    needed = {1: 2, 2: 4}  # words that must repeat for a run of this length; 3 for longer runs
    for i in range(len(words)):
        for period in range(1, len(words) - i):
            again = 0
            while i + period + again < len(words) and words[i + period + again] == words[i + again]:
                again += 1
            if again >= needed.get(period, 3):
                return True
    return False


@dataclass
class SettingResult:
    """What one recognizer setting made of the split."""

    name: str
    ids: list[str] = field(default_factory=list)
    refs: list[str] = field(default_factory=list)
    hyps: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    audio_seconds: list[float] = field(default_factory=list)

    def wer(self, kind: str | None = None, source: str | None = None) -> float:
        """Word error rate (0..1) over the whole split, or over one kind of utterance or one source."""
        import jiwer

        pairs = [(r, h) for r, h, k, s in zip(self.refs, self.hyps, self.kinds, self.sources, strict=True)
                 if (kind is None or k == kind) and (source is None or s == source) and r]
        if not pairs:
            return float("nan")
        refs, hyps = zip(*pairs, strict=True)
        return float(jiwer.wer(list(refs), list(hyps)))

    def without_hesitations(self) -> SettingResult:
        """The same results scored with hesitation words left out of references and results."""
        return replace(self, refs=[without_hesitations(r) for r in self.refs],
                       hyps=[without_hesitations(h) for h in self.hyps])

    def errors(self) -> list[tuple[int, int]]:
        """Per utterance: (word errors, reference words)."""
        import jiwer

        counts = []
        for ref, hyp in zip(self.refs, self.hyps, strict=True):
            if not ref:
                counts.append((0, 0))
                continue
            out = jiwer.process_words(ref, hyp)
            counts.append((out.substitutions + out.deletions + out.insertions, len(ref.split())))
        return counts

    def summary(self) -> dict[str, Any]:
        """The figures, rounded for the report."""
        near_three = [s for s, a in zip(self.seconds, self.audio_seconds, strict=True) if 2.0 <= a <= 4.0]
        exact_short = [r == h for r, h, k in zip(self.refs, self.hyps, self.kinds, strict=True) if k == "short"]
        return {
            "wer_percent": round(100 * self.wer(), 2),
            "wer_without_hesitations_percent": round(100 * self.without_hesitations().wer(), 2),
            "wer_sentences_percent": round(100 * self.wer("sentence"), 2),
            "wer_short_percent": round(100 * self.wer("short"), 2),
            "short_exact_percent": round(100 * sum(exact_short) / max(1, len(exact_short)), 1),
            "wer_by_source_percent": {source: round(100 * self.wer(source=source), 2)
                                      for source in sorted(set(self.sources))},
            "repeats": sum(repeats(h) and not repeats(r) for r, h in zip(self.refs, self.hyps, strict=True)),
            "utterances": len(self.refs),
            "median_ms": round(1000 * statistics.median(self.seconds), 1),
            "median_ms_2_to_4_s": round(1000 * statistics.median(near_three), 1) if near_three else None,
            "total_s": round(sum(self.seconds), 1),
        }


def paired_difference_interval(a: SettingResult, b: SettingResult, rounds: int = 2000,
                               seed: int = 0) -> tuple[float, float]:
    """95 % interval of WER(a) − WER(b) in points, by a paired bootstrap over utterances: how far apart the
    two settings could be on another draw of utterances like these (a difference inside it is noise)."""
    pairs = [(ea, eb, n) for (ea, n), (eb, _) in zip(a.errors(), b.errors(), strict=True)]
    rng = np.random.default_rng(seed)
    table = np.array(pairs, dtype=float)
    draws = table[rng.integers(0, len(table), size=(rounds, len(table)))]
    points = 100 * (draws[:, :, 0].sum(axis=1) - draws[:, :, 1].sum(axis=1)) / np.maximum(draws[:, :, 2].sum(axis=1), 1)
    low, high = np.percentile(points, [2.5, 97.5])
    return round(float(low), 2), round(float(high), 2)


def stock_transcribe(engine: WhisperEngine, audio: np.ndarray) -> str:
    """Stock faster-whisper ``transcribe()``, greedy, told the language the fast path is told (English)."""
    segments, _ = engine.whisper.transcribe(audio, language=engine.language, beam_size=1)
    return " ".join(s.text.strip() for s in segments)


SAMPLING_SEED = 2026
"""Stock ``transcribe()`` samples when greedy decoding fails its checks (temperature fallback), and so does the
fast path for utterances over 25 s: a fixed seed makes a bench run repeat its figures."""


def bench_engine(model: str) -> WhisperEngine:
    """Whisper ``model`` on one thread and one worker, its sampling seeded (``SAMPLING_SEED``)."""
    import ctranslate2  # type: ignore[import-untyped]

    from ivr.speech.asr.whisper_engine import WhisperEngine
    from ivr.speech.models import whisper_model_dir

    # CTranslate2 seeds each thread's generator when the thread first samples: set before the model's thread exists.
    ctranslate2.set_random_seed(SAMPLING_SEED)
    return WhisperEngine(whisper_model_dir(model), cpu_threads=1, num_workers=1)


def largest_differences(a: SettingResult, b: SettingResult, count: int = 8) -> list[dict[str, Any]]:
    """The utterances where ``a`` makes the most more word errors than ``b``, worst first (to see where and
    how one setting loses to the other)."""
    rows = [(ea - eb, i) for i, ((ea, _), (eb, _)) in enumerate(zip(a.errors(), b.errors(), strict=True)) if ea > eb]
    return [{"id": a.ids[i], "more_errors": more, "said": a.refs[i], a.name: a.hyps[i], b.name: b.hyps[i]}
            for more, i in sorted(rows, key=lambda row: (-row[0], row[1]))[:count]]


def whisper_settings(model: str = "tiny.en") -> dict[str, Transcribe]:
    """The shipped fast path and stock faster-whisper ``transcribe()`` (greedy), on the same weights."""
    engine = bench_engine(model)

    def fast(audio: np.ndarray) -> str:
        return engine.transcribe_audio(audio, hint=None).text

    def stock(audio: np.ndarray) -> str:
        return stock_transcribe(engine, audio)

    return {f"{model} fast": fast, f"{model} stock": stock}


def run(settings: dict[str, Transcribe], utterances: list[corpus.Utterance],
        line: str = "g711") -> dict[str, SettingResult]:
    """Transcribe every utterance, heard over ``line`` (``corpus.LINES``), with every setting."""
    if not utterances:
        raise IvrError("no utterances to score (is the corpus installed? see `ivr bench wer --help`)")
    results = {name: SettingResult(name) for name in settings}
    for utterance in utterances:
        audio = resample(corpus.line_audio(utterance, line), corpus.LINE_RATE, 16000)
        reference = normalize(utterance.text)
        for name, transcribe in settings.items():
            started = time.perf_counter()
            text = transcribe(audio)
            elapsed = time.perf_counter() - started
            result = results[name]
            result.ids.append(utterance.id)
            result.refs.append(reference)
            result.hyps.append(normalize(text))
            result.kinds.append(utterance.kind)
            result.sources.append(utterance.source)
            result.seconds.append(elapsed)
            result.audio_seconds.append(len(audio) / 16000)
    return results


def doubles_a_digit(heard: str, said: str) -> bool:
    """``heard`` is ``said`` with one of its digits written twice ("7433" for "743")."""
    return len(heard) == len(said) + 1 and any(
        heard[i] == heard[i - 1] and heard[:i] + heard[i + 1:] == said for i in range(1, len(heard)))


def digit_string_results(settings: dict[str, Transcribe], utterances: list[corpus.Utterance],
                         line: str = "g711") -> dict[str, Any]:
    """Per setting, the share of digit strings read back exactly as the flow's ``digits`` slot parses them
    ("7, 4, 3." → 743), how many came back with a digit doubled, and the first misses."""
    from ivr.nlu.slots import parse_slot

    scores: dict[str, dict[str, Any]] = {name: {"exact": 0, "a_digit_doubled": 0, "misses": []} for name in settings}
    for utterance in utterances:
        audio = resample(corpus.line_audio(utterance, line), corpus.LINE_RATE, 16000)
        for name, transcribe in settings.items():
            heard, score = transcribe(audio), scores[name]
            value = parse_slot("digits", heard)
            if value == utterance.text:
                score["exact"] += 1
                continue
            score["a_digit_doubled"] += isinstance(value, str) and doubles_a_digit(value, utterance.text)
            if len(score["misses"]) < 8:
                score["misses"].append({"said": utterance.text, "heard": heard})
    report: dict[str, Any] = {"strings": len(utterances)}
    for name, score in scores.items():
        report[name] = {"exact_percent": round(100 * score.pop("exact") / max(1, len(utterances)), 1), **score}
    return report


DIGITS_SOURCE = "digits"
"""Not a corpus of its own: ``corpus.digit_strings``, scored as the flow's digits slot reads them."""
BENCH_SOURCES = (*corpus.SOURCES, DIGITS_SOURCE)


def run_wer_bench(split: str = "test", models: tuple[str, ...] = ("tiny.en",),
                  sources: tuple[str, ...] = BENCH_SOURCES, limit: int = 0, line: str = "g711") -> dict[str, Any]:
    """WER and time per utterance of the fast path and stock transcribe for each model, over ``line``;
    with the ``digits`` source, also how exactly digit strings come back."""
    if line not in corpus.LINES:
        raise IvrError(f"unknown line {line!r}; use one of {', '.join(corpus.LINES)}")
    settings: dict[str, Transcribe] = {}
    for model in models:
        settings.update(whisper_settings(model))
    report: dict[str, Any] = {"split": split, "sources": list(sources),
                              "line": f"{corpus.LINES[line]}, resampled to 16 kHz"}
    if DIGITS_SOURCE in sources:
        strings = list(corpus.choose(corpus.digit_strings(), split))[: limit or None]
        report["digit_strings"] = digit_string_results(settings, strings, line)
    speech_sources = tuple(s for s in sources if s != DIGITS_SOURCE)
    if not speech_sources:
        return report
    utterances = list(corpus.choose(corpus.load(speech_sources), split))[: limit or None]
    results = run(settings, utterances, line)
    report.update({"utterances": len(utterances), "settings": {name: r.summary() for name, r in results.items()}})
    for model in models:
        fast, stock = report["settings"][f"{model} fast"], report["settings"][f"{model} stock"]
        report[f"{model} fast_minus_stock_wer_points"] = round(fast["wer_percent"] - stock["wer_percent"], 2)
        report[f"{model} fast_minus_stock_95_percent_interval"] = paired_difference_interval(
            results[f"{model} fast"], results[f"{model} stock"])
        report[f"{model} fast_minus_stock_without_hesitations_wer_points"] = round(
            fast["wer_without_hesitations_percent"] - stock["wer_without_hesitations_percent"], 2)
        report[f"{model} fast_minus_stock_without_hesitations_95_percent_interval"] = paired_difference_interval(
            results[f"{model} fast"].without_hesitations(), results[f"{model} stock"].without_hesitations())
        report[f"{model} fast_over_stock_time"] = round(fast["median_ms"] / max(stock["median_ms"], 1e-6), 2)
        report[f"{model} fast_worse_than_stock"] = largest_differences(
            results[f"{model} fast"], results[f"{model} stock"])
        report[f"{model} stock_worse_than_fast"] = largest_differences(
            results[f"{model} stock"], results[f"{model} fast"])
    return report


REDECODE_THRESHOLDS = (0.5, 0.6, 0.7, 0.75, 0.8, 0.9)


def run_redecode_sweep(split: str = "dev", model: str = "tiny.en", sources: tuple[str, ...] = corpus.SOURCES,
                       limit: int = 0, thresholds: tuple[float, ...] = REDECODE_THRESHOLDS,
                       line: str = "g711") -> dict[str, Any]:
    """How the fast path's second pass should be triggered: each utterance (under 25 s) is decoded once with
    the short window, once with the full window and once by stock ``transcribe()``; every rule "decode again
    when the mean word probability is under T (or the text loops)" is then scored from those results (WER,
    share decoded twice, median and mean time against stock's), with the full window as the second pass and
    with stock's own decoding (temperature fallback) as the second pass. The report keeps each utterance's
    three decodes (``decodes``), to see where the rules win and lose."""
    from ivr.speech.asr.whisper_engine import PAD_SECONDS, SHORT_UTTERANCE_SECONDS, WINDOW_SECONDS, takes_second_pass

    engine = bench_engine(model)
    utterances = [u for u in corpus.choose(corpus.load(sources), split)][: limit or None]
    runs: list[dict[str, Any]] = []
    for utterance in utterances:
        audio = resample(corpus.line_audio(utterance, line), corpus.LINE_RATE, 16000)
        seconds = len(audio) / 16000
        if seconds > SHORT_UTTERANCE_SECONDS:
            continue
        run = {"id": utterance.id, "ref": normalize(utterance.text), "kind": utterance.kind,
               "source": utterance.source, "audio_s": round(seconds, 2)}
        for name, window in (("short", seconds + PAD_SECONDS), ("full", WINDOW_SECONDS)):
            started = time.perf_counter()
            heard = engine._decode(audio, None, window)
            confidence = 0.0 if looks_garbled(heard.text) else heard.confidence  # a loop is always unsure
            run[name] = (normalize(heard.text), confidence, time.perf_counter() - started,
                         [w.confidence for w in heard.words])
        started = time.perf_counter()
        run["stock"] = (normalize(stock_transcribe(engine, audio)), 1.0, time.perf_counter() - started)
        runs.append(run)
    if not runs:
        raise IvrError("no utterances to score (is the corpus installed? see `ivr bench wer --help`)")

    def score(name: str, pick: Callable[[dict[str, Any]], tuple[str, float]]) -> dict[str, Any]:
        result = SettingResult(name)
        for run in runs:
            text, elapsed = pick(run)
            result.refs.append(run["ref"])
            result.hyps.append(text)
            result.kinds.append(run["kind"])
            result.sources.append(run["source"])
            result.seconds.append(elapsed)
            result.audio_seconds.append(run["audio_s"])
        summary = result.summary()
        summary["mean_ms"] = round(1000 * statistics.mean(result.seconds), 1)
        return summary

    stock = score("stock", lambda r: (r["stock"][0], r["stock"][2]))
    rules = {"short window only": score("short", lambda r: (r["short"][0], r["short"][2])),
             "full window only": score("full", lambda r: (r["full"][0], r["full"][2]))}
    for threshold in thresholds:
        twice = round(100 * sum(bool(r["short"][0]) and r["short"][1] < threshold for r in runs) / len(runs), 1)
        for second, label in (("full", ""), ("stock", " (second pass: stock transcribe)")):
            def pick(r: dict[str, Any], t: float = threshold, again: str = second) -> tuple[str, float]:
                text, confidence, elapsed = r["short"][:3]
                if text and confidence < t:
                    return (r[again][0] if takes_second_pass(text, r[again][0]) else text), elapsed + r[again][2]
                return text, elapsed
            rule = score(f"mean < {threshold}{label}", pick)
            rule["decoded_twice_percent"] = twice
            rules[f"again when mean word probability < {threshold}{label}"] = rule
    for rule in rules.values():
        rule["wer_minus_stock_points"] = round(rule["wer_percent"] - stock["wer_percent"], 2)
        rule["median_over_stock"] = round(rule["median_ms"] / stock["median_ms"], 2)
        rule["mean_over_stock"] = round(rule["mean_ms"] / stock["mean_ms"], 2)
    return {"split": split, "model": model, "line": corpus.LINES[line], "utterances": len(runs), "stock": stock,
            "rules": rules, "decodes": runs}


MULTILINGUAL_PROBE = {
    "ko": ["주문 상태를 확인하고 싶어요", "상담원과 통화하고 싶습니다", "요금 청구서에 대해 문의드립니다",
           "배송이 아직 도착하지 않았어요", "비밀번호를 잊어버렸어요", "감사합니다 좋은 하루 되세요"],
    "zh": ["我想查询我的订单状态", "请帮我转接人工客服", "我对账单有疑问", "我的包裹还没有到",
           "我忘记了我的密码", "谢谢你再见"],
}
"""Caller-like sentences for the multilingual probe (spoken by espeak-ng: synthetic, see run_multilingual_probe)."""


def run_multilingual_probe(model: str = "base") -> dict[str, Any]:
    """Character error rate of whisper ``model`` on synthetic Korean and Mandarin sentences over a phone line.

    There is no real Korean or Chinese speech with transcripts among the registries' packages, so this says
    whether the model understands the languages at all, not how well it will hear real callers.
    """
    import tempfile
    from pathlib import Path

    import jiwer

    from ivr.speech.asr.whisper_engine import WhisperEngine
    from ivr.speech.models import whisper_model_dir
    from ivr.testing.fixtures import make_caller_wav

    voices = {"ko": "ko", "zh": "cmn"}
    report: dict[str, Any] = {"model": model, "synthetic": True}
    with tempfile.TemporaryDirectory(prefix="ivr-multilingual-") as tmp:
        for language, sentences in MULTILINGUAL_PROBE.items():
            engine = WhisperEngine(whisper_model_dir(model), language=language, cpu_threads=1, num_workers=1)
            refs, hyps, seconds = [], [], []
            for index, sentence in enumerate(sentences):
                wav = Path(tmp) / f"{language}{index}.wav"
                make_caller_wav(wav, sentence, voice=voices[language], speed=150, rate=8000)
                utterance = corpus.Utterance(f"{language}/{index}", wav, sentence, "espeak", "sentence")
                audio = resample(corpus.line_audio(utterance), corpus.LINE_RATE, 16000)
                started = time.perf_counter()
                text = engine.transcribe_audio(audio, hint=None).text
                seconds.append(time.perf_counter() - started)
                refs.append(re.sub(r"[\W_]", "", sentence))
                hyps.append(re.sub(r"[\W_]", "", text))
            report[language] = {"cer_percent": round(100 * float(jiwer.cer(refs, hyps)), 1),
                                "median_ms": round(1000 * statistics.median(seconds), 1),
                                "examples": [{"said": r, "heard": h} for r, h in zip(refs[:3], hyps[:3], strict=True)]}
    return report
