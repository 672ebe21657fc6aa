"""Turn latency through the whole pipeline: end of the caller's speech → first audio of the bot's reply.

Replays the demo scenarios (real VAD, ASR, intents, flow and TTS; no SIP) paced in real time, as on a
phone line, so recognition competes with the audio clock exactly as in a call. DTMF turns are left out.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from ivr.call.events import CallerSaid, KeysPressed, TurnLatency
from ivr.replay.runner import ReplayRunner

ENGLISH = ["order_status_speech", "billing_to_agent", "agent_request", "barge_in"]
KOREAN = ["order_info", "no_match", "barge_in"]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _latencies(runner: ReplayRunner, paths: list[Path]) -> tuple[list[float], list[str]]:
    latencies: list[float] = []
    failures: list[str] = []
    for path in paths:
        report = runner.run_file(path)
        failures += [f"{report.scenario.name}: {f}" for f in report.failures]
        speech_turn = False
        for event in report.events:
            if isinstance(event, (CallerSaid, KeysPressed)):
                speech_turn = isinstance(event, CallerSaid)
            elif isinstance(event, TurnLatency) and speech_turn:
                latencies.append(event.seconds)
    return latencies, failures


def run_turns_bench(fixtures: Path = Path("audio_fixtures"), realtime: bool = True) -> dict[str, Any]:
    """Median and 95th percentile turn latency for the English (whisper) and Korean (Vosk grammar) flows."""
    result: dict[str, Any] = {"realtime": realtime}
    runner = ReplayRunner(realtime=realtime)
    try:
        for label, folder, names in (("whisper_en", "hotline", ENGLISH), ("vosk_ko_grammar", "korean", KOREAN)):
            paths = [fixtures / folder / f"{name}.yaml" for name in names]
            latencies, failures = _latencies(runner, paths)
            result[label] = {
                "turns": len(latencies),
                "median_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
                "p95_ms": round(_percentile(latencies, 0.95) * 1000, 1) if latencies else None,
                "max_ms": round(max(latencies) * 1000, 1) if latencies else None,
                "scenario_failures": failures,
            }
    finally:
        runner.close()
    return result
