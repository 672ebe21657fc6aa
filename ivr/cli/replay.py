"""``ivr replay``: run recorded-caller scenarios against their flows."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ivr.errors import IvrError


@click.command()
@click.argument("scenarios", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Write JUnit XML here.")
@click.option("--realtime", is_flag=True, help="Pace the caller's audio in real time, as on a phone line.")
@click.option(
    "--record",
    "record_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Write each call's caller and bot audio as WAV files into this folder.",
)
@click.option("--engine", type=click.Choice(["whisper", "vosk"]), help="Override the recognizer engine.")
@click.option("--model", help="Override the recognizer model (path or name).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the verdicts, not the transcripts.")
def replay(
    scenarios: tuple[Path, ...],
    junit: Path | None,
    realtime: bool,
    record_dir: Path | None,
    engine: str | None,
    model: str | None,
    quiet: bool,
) -> None:
    """Replay SCENARIO files (or folders of *.yaml scenarios) through the real pipeline; exit 1 on any
    failed expectation."""
    from ivr.replay.junit import write_junit
    from ivr.replay.runner import ReplayReport, ReplayRunner

    files: list[Path] = []
    for item in scenarios:
        files += sorted(item.rglob("*.yaml")) if item.is_dir() else [item]
    runner = ReplayRunner(engine=engine, model=model, realtime=realtime, record_dir=record_dir)
    reports: list[ReplayReport] = []
    broken = 0
    try:
        for path in files:
            try:
                report = runner.run_file(path)
            except IvrError as exc:
                click.echo(f"{exc}", err=True)
                broken += 1
                continue
            reports.append(report)
            if quiet:
                click.echo(f"{'PASS' if report.passed else 'FAIL'} {report.scenario.name}")
                for failure in report.failures:
                    click.echo(f"  ✗ {failure}")
            else:
                click.echo(report.render() + "\n")
    finally:
        runner.close()
    if junit:
        write_junit(reports, junit)
    failed = sum(1 for r in reports if not r.passed) + broken
    click.echo(f"{len(reports) - (failed - broken)} passed, {failed} failed")
    sys.exit(1 if failed else 0)
