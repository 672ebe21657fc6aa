"""``ivr talk``: call a flow from this computer's microphone and speakers, with a live transcript."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from ivr.talk.channel import LocalAudioChannel


@click.command()
@click.argument("flow", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("-i", "--input-device", metavar="D", help="Microphone: index or part of the name (default: system).")
@click.option("-o", "--output-device", metavar="D", help="Speaker: index or part of the name (default: system).")
@click.option(
    "--rate", type=click.Choice(["16000", "8000"]), default="16000", show_default=True, help="Call sample rate."
)
@click.option("--engine", type=click.Choice(["whisper", "vosk"]), help="Recognizer (default: by flow language).")
@click.option("--model", help="Recognizer model (path or name).")
@click.option("--caller", default="local", show_default=True, help="Caller number the flow sees.")
@click.option(
    "--half-duplex",
    is_flag=True,
    help="Mute the microphone while the bot speaks (speakers without headphones; no barge-in by speech).",
)
@click.option("--no-keys", is_flag=True, help="Do not read keys typed on the terminal as DTMF.")
@click.option(
    "--var",
    "variables",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a flow variable for this call (repeatable), e.g. --var api_base=http://localhost:8085.",
)
@click.option("--list-devices", "show_devices", is_flag=True, help="List the audio devices and exit.")
def talk(
    flow: Path | None,
    input_device: str | None,
    output_device: str | None,
    rate: str,
    engine: str | None,
    model: str | None,
    caller: str,
    half_duplex: bool,
    no_keys: bool,
    variables: tuple[str, ...],
    show_devices: bool,
) -> None:
    """Talk to FLOW through the microphone and speakers, as if calling the hotline.

    Same recognition, intents and flow as a phone call. Type 0-9 * # for keypad keys; Ctrl-C hangs up.
    """
    from ivr.talk.devices import format_device_list, list_devices, resolve_device

    if show_devices:
        click.echo(format_device_list(list_devices()))
        return
    if flow is None:
        raise click.UsageError("give the FLOW file to talk to (or --list-devices)")
    if not flow.is_file():
        raise click.BadParameter(f"{flow}: no such flow file", param_hint="FLOW")
    call_vars = _parse_vars(variables)

    # Check the devices before loading speech models, so a wrong name fails in a second, not after ten.
    devices = list_devices()
    mic = resolve_device(input_device, "input", devices)
    speaker = resolve_device(output_device, "output", devices)

    from ivr.call import CallSession
    from ivr.runtime import FlowRuntime
    from ivr.services import SpeechServices
    from ivr.talk.channel import LocalAudioChannel
    from ivr.talk.screen import TranscriptScreen

    runtime = FlowRuntime.from_file(flow)
    chosen_engine = engine or runtime.default_engine()
    click.echo(f"loading {chosen_engine} speech recognition…", err=True)
    services = SpeechServices.create(chosen_engine, model or runtime.model_for(chosen_engine),
                                     language=runtime.language.split("-")[0].lower())
    channel = LocalAudioChannel(
        int(rate),
        mic.index,
        speaker.index,
        caller=caller,
        keyboard=not no_keys,
        half_duplex=half_duplex,
        announce=click.echo,
    )
    try:
        with channel, _ctrl_c_hangs_up(channel):
            click.echo(
                f"talking to {runtime.name}: microphone {mic.index} ({mic.name}, {channel.input_rate} Hz), "
                f"speaker {speaker.index} ({speaker.name}, {channel.output_rate} Hz)"
            )
            keys = "type 0-9 * # for keys, " if channel.keyboard_active else ""
            echo = "" if half_duplex else " (use headphones, or --half-duplex on speakers)"
            click.echo(f"speak after the prompt{echo}; {keys}Ctrl-C hangs up")
            interpreter = runtime.new_interpreter(channel, call_vars)
            session = CallSession(channel, interpreter, services, flow_name=runtime.name, language=runtime.language,
                                  prompts=runtime.flow.prompts, observer=TranscriptScreen())
            result = session.run()
    finally:
        services.shutdown()
    if channel.overflows or channel.dropped_frames:
        click.echo(
            f"note: {channel.overflows} microphone overflows, {channel.dropped_frames} frames dropped "
            "(the machine was too busy to keep up)",
            err=True,
        )
    click.echo(f"call {result.call_id} ended: {result.outcome}")


def _parse_vars(items: tuple[str, ...]) -> dict[str, str]:
    variables = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip().isidentifier():
            raise click.BadParameter(f"{item!r} is not NAME=VALUE", param_hint="--var")
        variables[name.strip()] = value
    return variables


@contextmanager
def _ctrl_c_hangs_up(channel: LocalAudioChannel) -> Iterator[None]:
    """The first Ctrl-C hangs up politely (the flow sees a Hangup); a second one aborts at once."""
    pressed = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal pressed
        if pressed:
            raise KeyboardInterrupt
        pressed = True
        channel.interrupt()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
