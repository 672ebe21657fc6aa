"""``ivr say``: speak a prompt into a WAV file with the synthesizer calls hear."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from ivr.errors import IvrError, SynthesisError


@click.command("say")
@click.argument("text", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="WAV file to write (PCM16 mono).")
@click.option("--rate", type=click.Choice(["8000", "16000"]), default="8000", show_default=True,
              help="Sample rate in Hz: 8000 for telephone calls, 16000 for wideband.")
@click.option("--voice", help="espeak-ng voice, e.g. en-us, en-gb-x-rp, de, en-us+f3 (see --list-voices).")
@click.option("--language", default="en-us", show_default=True,
              help="Language whose voice speaks when --voice is not set.")
@click.option("--speed", type=int, help="Speaking rate in words per minute (80–450; default 165).")
@click.option("--no-cache", is_flag=True, help="Render again instead of using the prompt cache.")
@click.option("--list-voices", is_flag=True, help="List the installed voices and variants, then exit.")
def say(text: str | None, output: Path | None, rate: str, voice: str | None, language: str, speed: int | None,
        no_cache: bool, list_voices: bool) -> None:
    """Synthesize TEXT (use - to read it from stdin) into a WAV file.

    Prompts are cached in $IVR_TTS_CACHE (default var/tts-cache), shared with the running server.

    \b
    Example:
      ivr say "Thanks for calling Acme." -o greeting.wav --rate 8000 --voice en-us+f3
    """
    from ivr.speech.tts import PromptCache, SynthesizerConfig, default_cache_dir, shared_engine
    from ivr.speech.tts.synthesizer import EspeakSynthesizer

    if list_voices:
        _print_voices()
        return
    if text is None:
        raise click.UsageError("give the TEXT to speak (or - to read it from stdin)")
    if output is None:
        raise click.UsageError("give the WAV file to write with -o/--output")
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise click.UsageError("TEXT is empty; there is nothing to say")
    settings: dict[str, object] = {"language": language}
    if voice:
        settings["voice"] = voice
    if speed is not None:
        settings["speed"] = speed
    config = SynthesizerConfig(**settings)  # type: ignore[arg-type]
    cache = PromptCache(None if no_cache else default_cache_dir())
    synth = EspeakSynthesizer(config, cache, shared_engine())
    _check_writable(output)
    started = time.perf_counter()
    pcm = synth.synthesize(text, int(rate))
    elapsed = time.perf_counter() - started
    _write(output, pcm, int(rate))
    source = "cache" if cache.stats.hits else f"rendered in {elapsed * 1000:.0f} ms"
    click.echo(f"{output}: {len(pcm) / 2 / int(rate):.2f} s at {rate} Hz, voice {synth.settings.voice} ({source})")


def _print_voices() -> None:
    from ivr.speech.tts import shared_engine

    engine = shared_engine()
    click.echo(f"{'VOICE':<20} {'LANGUAGE':<16} NAME")
    for v in sorted(engine.voices, key=lambda v: v.short_id):
        click.echo(f"{v.short_id:<20} {','.join(v.languages):<16} {v.name}")
    click.echo(f"\nvariants (append as VOICE+VARIANT, e.g. en-us+f3): {', '.join(sorted(engine.variants))}")


def _check_writable(output: Path) -> None:
    """Fail before rendering if the WAV cannot be written, with a hint what to do."""
    existed = output.exists()
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        with output.open("ab"):
            pass
        if not existed:
            output.unlink()
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}; choose a writable path with -o") from None


def _write(output: Path, pcm: bytes, rate: int) -> None:
    from ivr.audio.wavfile import write_wav

    try:
        write_wav(output, pcm, rate)
    except OSError as exc:
        raise OutputError(f"cannot write {output}: {exc.strerror or exc}; choose a writable path with -o") from None


class OutputError(IvrError):
    """The output file cannot be written."""


__all__ = ["SynthesisError", "say"]
