"""Spoken intent accuracy: did the bot route the caller right? (``ivr intents eval --audio``).

Each labelled recording (a CSV of ``audio,intent`` rows; an empty intent means the caller said nothing the
flow knows, so a no-match is right) goes the way a caller's turn goes: to the call's sample rate (8 kHz
through the phone line of ``ivr.bench.corpus``, or 16 kHz wideband), through the VAD endpointer, the
flow's recognizer, the recognizer-confidence and garbled-text checks, and the flow's intent classifier.
The report gives accuracy, the no-match rate and the confusions per sample rate.
"""

from __future__ import annotations

import csv
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ivr.audio.frame import AudioFrame, samples_per_frame
from ivr.errors import ConfigError, Diagnostic
from ivr.events import SpeechEnded, SpeechStarted, Transcript
from ivr.nlu.garbled import looks_garbled

RATES = (8000, 16000)


@dataclass(frozen=True)
class LabelledRecording:
    """One CSV row: a recording and the intent it should route to (None: a no-match)."""

    audio: Path
    intent: str | None
    line: int


def read_labelled_audio(path: Path) -> list[LabelledRecording]:
    """Rows of an ``audio,intent`` CSV (audio paths relative to the CSV); every problem as file:line."""
    problems: list[Diagnostic] = []
    rows: list[LabelledRecording] = []
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "audio" not in reader.fieldnames or "intent" not in reader.fieldnames:
            raise ConfigError([Diagnostic(str(path), 1, 1, "expected a header with columns 'audio' and 'intent'")])
        for record in reader:
            audio = path.parent / (record.get("audio") or "").strip()
            if not audio.is_file():
                problems.append(Diagnostic(str(path), reader.line_num, 1, f"{audio}: no such audio file"))
                continue
            intent = (record.get("intent") or "").strip() or None
            rows.append(LabelledRecording(audio, intent, reader.line_num))
    if problems:
        raise ConfigError(problems)
    return rows


def _frames(path: Path, rate: int) -> list[AudioFrame]:
    """The recording at ``rate`` as 20 ms frames; at 8 kHz as a phone line delivers it."""
    import soundfile
    import soxr

    from ivr.audio.wavfile import float_to_pcm16
    from ivr.bench.corpus import phone_line

    samples, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if source_rate != rate:
        mono = np.asarray(soxr.resample(mono, source_rate, rate), dtype=np.float32)
    if rate == 8000:
        mono = phone_line(mono)
    mono = np.concatenate([mono, np.zeros(rate, dtype=np.float32)])  # the caller stops and waits
    pcm = float_to_pcm16(mono)
    step = samples_per_frame(rate) * 2
    return [AudioFrame(pcm[i:i + step], rate) for i in range(0, len(pcm) - step + 1, step)]


def hear(services: Any, frames: Sequence[AudioFrame], rate: int) -> Transcript:
    """One turn: endpoint the caller's speech with the VAD and transcribe it."""
    from ivr.flow.actions import Listen

    endpointer = services.new_endpointer(rate, Listen(no_input_timeout=10.0))
    recognizer = services.asr.new_recognizer(rate)
    speaking = False
    for frame in frames:
        for event in endpointer.process(frame):
            if isinstance(event, SpeechStarted) and not speaking:
                speaking = True
                for early in endpointer.preroll():
                    recognizer.accept(early)
            elif isinstance(event, SpeechEnded) and speaking:
                return recognizer.finish()
        if speaking:
            recognizer.accept(frame)
    return recognizer.finish() if speaking else Transcript("", 0.0)


def evaluate_audio(flow_path: Path, data_path: Path, engine: str | None = None, model: str | None = None,
                   rates: Sequence[int] = RATES) -> dict[str, Any]:
    """Route every labelled recording with the flow's speech settings (or ``engine``/``model``)."""
    from ivr.flow.loader import load_flow, normalize_utterance
    from ivr.runtime import FlowRuntime
    from ivr.services import SpeechServices

    flow = load_flow(flow_path)
    runtime = FlowRuntime(flow)
    engine = engine or runtime.default_engine()
    model = model or runtime.model_for(engine)
    rows = read_labelled_audio(data_path)
    services = SpeechServices.create(engine, model)
    examples = {normalize_utterance(text): intent for intent, texts in flow.intents.items() for text in texts}
    report: dict[str, Any] = {"flow": flow.name, "engine": engine, "model": model or "default",
                              "recordings": len(rows), "by_rate": {}}
    try:
        for rate in rates:
            right = no_match = 0
            confusions: Counter[tuple[str, str]] = Counter()
            seconds: list[float] = []
            heard = []
            for row in rows:
                started = time.perf_counter()
                transcript = hear(services, _frames(row.audio, rate), rate)
                seconds.append(time.perf_counter() - started)
                predicted = _route(flow, examples, transcript)
                no_match += predicted is None
                right += predicted == row.intent
                if predicted != row.intent:
                    confusions[(row.intent or "(no match)", predicted or "(no match)")] += 1
                heard.append({"audio": row.audio.name, "expected": row.intent, "predicted": predicted,
                              "text": transcript.text, "confidence": transcript.confidence})
            report["by_rate"][str(rate)] = {
                "accuracy": round(right / len(rows), 4), "no_match_rate": round(no_match / len(rows), 4),
                "confusions": [{"expected": e, "predicted": p, "count": n} for (e, p), n in confusions.most_common()],
                "median_turn_ms": round(1000 * statistics.median(seconds), 1), "heard": heard}
    finally:
        services.shutdown()
    return report


def _route(flow: Any, examples: dict[str, str], transcript: Transcript) -> str | None:
    """The intent the flow's classifier gives the turn, with the interpreter's own checks first."""
    from ivr.flow.loader import normalize_utterance

    text = transcript.text.strip()
    if not text or transcript.confidence < flow.speech.min_confidence or looks_garbled(text):
        return None
    exact = examples.get(normalize_utterance(text))
    if exact is not None:
        return exact
    match = flow.classifier.classify(text) if flow.classifier is not None else None
    return match.intent if match is not None else None
