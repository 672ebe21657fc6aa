"""Measure how well a flow's intents are recognised: read intents and labelled CSVs, score, make k-shot flows.

Used by ``ivr intents eval|fewshot`` and by the intent benchmark. Problems in the input files are
reported as ``file:line:col: message`` (all of them), never as a traceback.
"""

from __future__ import annotations

import csv
import io
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from ivr.errors import ConfigError, Diagnostic
from ivr.nlu.intents import DEFAULT_THRESHOLD
from ivr.nlu.types import IntentClassifier
from ivr.yamlsource import load_yaml_file

TEXT_COLUMN = "text"
LABEL_COLUMNS = ("intent", "category")  # "category" is Banking77's header
NO_MATCH_LABELS = {"", "none", "no_match", "nomatch"}


@dataclass(frozen=True)
class LabelledUtterance:
    """One CSV row: what the caller said, the intent expected (None: should be a no-match), its line."""

    text: str
    intent: str | None
    line: int


@dataclass(frozen=True)
class FlowIntents:
    """The ``intents:`` of a flow file and its ``intent_threshold``."""

    examples: dict[str, list[str]]
    threshold: float


def read_flow_intents(path: str | Path) -> FlowIntents:
    """Read ``intents: {name: {examples: [...]}}`` and optional ``intent_threshold`` from a flow YAML."""
    name = str(path)
    not_a_flow = "a flow file must be a mapping with an 'intents:' section"
    root, problems = load_yaml_file(Path(path), name, empty=not_a_flow)
    if root is None or problems:
        raise ConfigError(problems)
    if root.kind != "map":
        raise ConfigError([Diagnostic(name, 1, 1, not_a_flow)])
    intents, intents_key = root.get("intents"), root.key_node("intents")
    if intents is None or intents.kind != "map" or not intents.entries:
        line, col = (intents_key.line, intents_key.col) if intents_key is not None else (1, 1)
        raise ConfigError(
            [Diagnostic(name, line, col, "no intents: add 'intents: {name: {examples: [...]}}' to the flow")]
        )
    examples: dict[str, list[str]] = {}
    for intent, (key, body) in intents.entries.items():
        listed = body.get("examples") if body.kind == "map" else body
        if listed is None or listed.kind != "seq" or not listed.items:
            problems.append(
                Diagnostic(name, key.line, key.col, f"intent '{intent}' needs a non-empty 'examples:' list")
            )
            continue
        texts = []
        for item in listed.items:
            if not isinstance(item.scalar, str) or not item.scalar.strip():
                problems.append(
                    Diagnostic(name, item.line, item.col, f"intent '{intent}': examples must be non-empty text")
                )
            else:
                texts.append(item.scalar)
        examples[intent] = texts
    threshold_node, threshold_key = root.get("intent_threshold"), root.key_node("intent_threshold")
    threshold = DEFAULT_THRESHOLD if threshold_node is None else threshold_node.scalar
    if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0 <= threshold <= 1:
        assert threshold_key is not None
        problems.append(Diagnostic(name, threshold_key.line, threshold_key.col,
                                   "intent_threshold must be a number from 0 to 1 (e.g. 0.5)"))
        threshold = DEFAULT_THRESHOLD
    if problems:
        raise ConfigError(problems)
    return FlowIntents(examples, float(threshold))


def read_labelled_csv(path: str | Path) -> list[LabelledUtterance]:
    """Rows of a ``text,intent`` (or Banking77 ``text,category``) CSV with a header line."""
    name = str(path)
    try:
        content = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Diagnostic(name, 0, 0, f"cannot read the CSV: {exc.strerror}")]) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError([Diagnostic(name, 0, 0, "not UTF-8 text; save the CSV as UTF-8")]) from exc
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except StopIteration:
        raise ConfigError([Diagnostic(name, 1, 1, "empty file: expected a header 'text,intent'")]) from None
    except csv.Error as exc:
        raise ConfigError([Diagnostic(name, 1, 1, f"not a valid CSV: {exc}")]) from exc
    label_col = next((c for c in LABEL_COLUMNS if c in header), None)
    if TEXT_COLUMN not in header or label_col is None:
        raise ConfigError(
            [Diagnostic(name, 1, 1, f"header is {','.join(header)!r}; expected columns 'text' and 'intent'")]
        )
    ti, li = header.index(TEXT_COLUMN), header.index(label_col)
    rows: list[LabelledUtterance] = []
    problems: list[Diagnostic] = []
    try:
        for record in reader:
            line = reader.line_num
            if not record or all(not field.strip() for field in record):
                continue
            if len(record) != len(header):
                problems.append(Diagnostic(name, line, 1, f"{len(record)} fields, expected {len(header)}"))
                continue
            text, label = record[ti].strip(), record[li].strip()
            if not text:
                problems.append(Diagnostic(name, line, ti + 1, "empty text"))
                continue
            rows.append(LabelledUtterance(text, None if label.lower() in NO_MATCH_LABELS else label, line))
    except csv.Error as exc:
        problems.append(Diagnostic(name, reader.line_num, 1, f"not a valid CSV row: {exc}"))
    if problems:
        raise ConfigError(problems)
    if not rows:
        raise ConfigError([Diagnostic(name, 2, 1, "no rows to evaluate after the header")])
    return rows


def check_labels(path: str | Path, rows: Sequence[LabelledUtterance], intents: Sequence[str]) -> None:
    """Every expected intent must be one of the flow's (or empty for an expected no-match)."""
    known = set(intents)
    problems = [
        Diagnostic(str(path), row.line, 1, f"intent '{row.intent}' is not in the flow (leave it empty for a no-match)")
        for row in rows
        if row.intent is not None and row.intent not in known
    ]
    if problems:
        raise ConfigError(problems[:20] + ([Diagnostic(str(path), 0, 0, f"... {len(problems) - 20} more")]
                                           if len(problems) > 20 else []))


def evaluate(classifier: IntentClassifier, rows: Sequence[LabelledUtterance]) -> dict[str, Any]:
    """Accuracy (with the threshold), top-1 accuracy (ignoring it), per-intent P/R/F1 and confusions."""
    correct = top1 = 0
    pairs: Counter[tuple[str, str]] = Counter()
    stats: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        match = classifier.classify(row.text)
        predicted = match.intent
        best = match.ranked[0][0] if match.ranked else None
        correct += predicted == row.intent
        top1 += (best == row.intent) if row.intent is not None else predicted is None
        expected_name = row.intent or "(no match)"
        predicted_name = predicted or "(no match)"
        stats[expected_name]["support"] += 1
        if predicted == row.intent:
            stats[expected_name]["tp"] += 1
        else:
            stats[expected_name]["fn"] += 1
            stats[predicted_name]["fp"] += 1
            pairs[(expected_name, predicted_name)] += 1
    per_intent: dict[str, dict[str, float | int]] = {}
    for name in sorted(stats):
        s = stats[name]
        precision = s["tp"] / (s["tp"] + s["fp"]) if s["tp"] + s["fp"] else 0.0
        recall = s["tp"] / s["support"] if s["support"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_intent[name] = {
            "precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "support": s["support"]
        }
    n = len(rows)
    return {
        "accuracy": round(correct / n, 4) if n else 0.0,
        "top1_accuracy": round(top1 / n, 4) if n else 0.0,
        "n": n,
        "per_intent": per_intent,
        "confusions": [
            {"expected": e, "predicted": p, "count": c} for (e, p), c in pairs.most_common(20)
        ],
    }


def few_shot(
    rows: Sequence[LabelledUtterance], k: int, seed: int, intents: Sequence[str] | None = None
) -> tuple[dict[str, list[str]], list[LabelledUtterance]]:
    """Pick k examples per intent (seeded); return them as flow intents plus the rows not picked."""
    by_intent: dict[str, list[LabelledUtterance]] = defaultdict(list)
    for row in rows:
        if row.intent is not None:
            by_intent[row.intent].append(row)
    rng = random.Random(seed)
    chosen = sorted(by_intent) if intents is None else list(intents)
    examples: dict[str, list[str]] = {}
    picked: set[int] = set()
    for name in chosen:
        pool = by_intent.get(name, [])
        sample = rng.sample(pool, min(k, len(pool)))
        examples[name] = [r.text for r in sample]
        picked.update(id(r) for r in sample)
    wanted = set(chosen)
    rest = [r for r in rows if id(r) not in picked and r.intent in wanted]
    return examples, rest


def write_flow(path: str | Path, examples: dict[str, list[str]], name: str, threshold: float) -> None:
    """Write a minimal flow file (version, name, language, intent_threshold, intents) for ``eval``."""
    doc = {
        "version": 1,
        "name": name,
        "language": "en-US",
        "intent_threshold": threshold,
        "intents": {intent: {"examples": texts} for intent, texts in examples.items()},
    }
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096
    with Path(path).open("w", encoding="utf-8") as handle:
        yaml.dump(doc, handle)
