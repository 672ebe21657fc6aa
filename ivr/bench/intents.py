"""Intent detection benchmark: 10-shot Banking77 accuracy by repeated sampling, latency, build and load cost.

Each seed samples 10 training utterances per intent as a flow's intents and tests on other utterances of
the same (train) split, so no held-out data is needed; the spread over seeds shows how much the choice
of examples matters.
"""

from __future__ import annotations

import random
import statistics
import time
from pathlib import Path
from typing import Any

from ivr.errors import IvrError
from ivr.nlu.embedding import shared_encoder, shared_encoder_info
from ivr.nlu.evaluation import evaluate, few_shot, read_labelled_csv
from ivr.nlu.intents import KernelIntentClassifier

BANKING77 = Path(__file__).resolve().parents[2].parent / "shared" / "datasets" / "banking77" / "train.csv"


def run_intents_bench(
    seeds: int = 3,
    k: int = 10,
    test_per_seed: int = 1000,
    data: str | Path = BANKING77,
    intents: int | None = None,
    use_model: bool = True,
) -> dict[str, Any]:
    """Accuracy mean/sd over ``seeds`` k-shot samples, median ms per utterance, build and model load time.

    ``intents`` limits the run to the first N labels (alphabetically) for a quicker check.
    """
    path = Path(data)
    if not path.is_file():
        raise IvrError(f"{path}: Banking77 train.csv not found; pass data= the path of a text,category CSV")
    rows = read_labelled_csv(path)
    labels = sorted({r.intent for r in rows if r.intent is not None})[:intents]
    started = time.perf_counter()
    encoder = shared_encoder() if use_model else None
    info = shared_encoder_info() if use_model else None
    load_seconds = info.load_seconds if info else time.perf_counter() - started
    accuracies: list[float] = []
    builds: list[float] = []
    latencies: list[float] = []
    for seed in range(seeds):
        examples, rest = few_shot(rows, k, seed, labels)
        # A fixed-size test sample per seed keeps the run short; it is disjoint from the examples.
        test = [rest[i] for i in sorted(_sample_indices(len(rest), test_per_seed, seed))]
        started = time.perf_counter()
        classifier = KernelIntentClassifier(examples, 0.0, encoder)
        builds.append(time.perf_counter() - started)
        for row in test[:50]:  # per-utterance latency, one call at a time as in a call
            t0 = time.perf_counter()
            classifier.classify(row.text)
            latencies.append((time.perf_counter() - t0) * 1000)
        accuracies.append(evaluate(classifier, test)["accuracy"])
    return {
        "model": encoder.name if encoder is not None else "n-gram fallback",
        "k": k,
        "intents": len(labels),
        "seeds": seeds,
        "test_per_seed": test_per_seed,
        "accuracy_mean": round(statistics.mean(accuracies), 4),
        "accuracy_sd": round(statistics.pstdev(accuracies), 4),
        "accuracies": accuracies,
        "ms_per_utterance_median": round(statistics.median(latencies), 2),
        "build_seconds_median": round(statistics.median(builds), 2),
        "model_load_seconds": round(load_seconds, 2),
    }


def _sample_indices(population: int, size: int, seed: int) -> list[int]:
    return random.Random(10_000 + seed).sample(range(population), min(size, population))
