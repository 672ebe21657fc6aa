"""``ivr intents``: score a flow's intents on labelled utterances (``eval``), make k-shot flows (``fewshot``)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import click

from ivr.nlu.evaluation import check_labels, evaluate, few_shot, read_flow_intents, read_labelled_csv, write_flow
from ivr.nlu.intents import build_classifier


@click.group("intents")
def intents() -> None:
    """Measure how well a flow's intents are recognised."""


@intents.command("eval")
@click.option("--flow", "flow_path", required=True, type=click.Path(dir_okay=False), help="Flow YAML with intents.")
@click.option("--data", "data_path", type=click.Path(dir_okay=False), help="CSV of text,intent rows.")
@click.option("--audio", "audio_path", type=click.Path(dir_okay=False, path_type=Path),
              help="CSV of audio,intent rows: recordings go through VAD, the recognizer and the classifier.")
@click.option("--engine", type=click.Choice(["whisper", "vosk"]), help="--audio: recognizer (default: the flow's).")
@click.option("--model", help="--audio: recognizer model, e.g. tiny.en or base (default: the flow's).")
@click.option("--rate", "rates", multiple=True, type=click.Choice(["8000", "16000"]),
              help="--audio: sample rates to test (default both; 8000 goes through a phone line).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=None, help="Override the flow's intent_threshold.")
@click.option("--no-model", is_flag=True, help="Use the n-gram fallback instead of the embedding model.")
def eval_command(flow_path: str, data_path: str | None, audio_path: Path | None, engine: str | None,
                 model: str | None, rates: tuple[str, ...], as_json: bool, threshold: float | None,
                 no_model: bool) -> None:
    """Classify every labelled row with the flow's intents; print accuracy, per-intent P/R/F1 and confusions.

    With --data the rows are text; with --audio they are recordings routed as a caller's turn would be.
    An empty intent means the utterance should be a no-match.
    """
    if (data_path is None) == (audio_path is None):
        raise click.UsageError("give either --data (text rows) or --audio (recordings)")
    if audio_path is not None:
        _eval_audio(Path(flow_path), audio_path, engine, model, tuple(int(r) for r in rates) or None, as_json)
        return
    assert data_path is not None
    flow = read_flow_intents(flow_path)
    rows = read_labelled_csv(data_path)
    check_labels(data_path, rows, list(flow.examples))
    started = time.perf_counter()
    classifier = build_classifier(flow.examples, flow.threshold if threshold is None else threshold,
                                  use_model=not no_model)
    built = time.perf_counter() - started
    started = time.perf_counter()
    report = evaluate(classifier, rows)
    report["ms_per_utterance"] = round((time.perf_counter() - started) / len(rows) * 1000, 2)
    report["build_seconds"] = round(built, 2)
    report["model"] = classifier.encoder.name if classifier.encoder is not None else "n-gram fallback"
    if as_json:
        click.echo(json.dumps(report, indent=2))
        return
    click.echo(f"accuracy {report['accuracy']:.4f} on n={report['n']} (top-1 ignoring the threshold "
               f"{report['top1_accuracy']:.4f}); model: {report['model']}; "
               f"{report['ms_per_utterance']} ms/utterance; built in {built:.2f}s")
    width = max(len(name) for name in report["per_intent"])
    click.echo(f"{'intent':<{width}}  precision  recall     f1  support")
    for name, s in report["per_intent"].items():
        click.echo(f"{name:<{width}}  {s['precision']:9.3f}  {s['recall']:6.3f}  {s['f1']:5.3f}  {s['support']:7d}")
    if report["confusions"]:
        click.echo("most frequent confusions (expected -> predicted):")
        for c in report["confusions"][:10]:
            click.echo(f"  {c['count']:4d}  {c['expected']} -> {c['predicted']}")


def _eval_audio(flow: Path, data: Path, engine: str | None, model: str | None, rates: tuple[int, ...] | None,
                as_json: bool) -> None:
    from ivr.bench.spoken_intents import RATES, evaluate_audio

    report = evaluate_audio(flow, data, engine, model, rates or RATES)
    if as_json:
        click.echo(json.dumps(report, indent=2, ensure_ascii=False))
        return
    click.echo(f"{report['recordings']} recordings, flow {report['flow']}, {report['engine']} "
               f"({report['model']})")
    for rate, figures in report["by_rate"].items():
        click.echo(f"  {rate} Hz: accuracy {figures['accuracy']:.3f}, no-match {figures['no_match_rate']:.3f}, "
                   f"median turn {figures['median_turn_ms']} ms")
        for c in figures["confusions"][:10]:
            click.echo(f"    {c['count']:4d}  {c['expected']} -> {c['predicted']}")


@intents.command("fewshot")
@click.option("--data", "data_path", required=True, type=click.Path(dir_okay=False), help="Labelled CSV to sample.")
@click.option("-k", "k", type=click.IntRange(1), default=10, show_default=True, help="Examples per intent.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the sample.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Flow YAML to write.")
@click.option("--rest", type=click.Path(dir_okay=False), help="Also write the rows not sampled, as a CSV to eval.")
@click.option("--threshold", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="intent_threshold of the flow (0: closed-set, as published few-shot results are).")
def fewshot_command(data_path: str, k: int, seed: int, output: str, rest: str | None, threshold: float) -> None:
    """Make a flow whose intents are k examples per label of a CSV (and the held-out rest)."""
    rows = read_labelled_csv(data_path)
    examples, remaining = few_shot(rows, k, seed)
    write_flow(output, examples, f"{Path(data_path).stem}-{k}shot-seed{seed}", threshold)
    message = f"wrote {output}: {len(examples)} intents x {k} examples"
    if rest:
        with Path(rest).open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "intent"])
            writer.writerows([r.text, r.intent] for r in remaining)
        message += f"; {len(remaining)} held-out rows in {rest}"
    click.echo(message)
