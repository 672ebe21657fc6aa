"""Entry point of the ``ivr`` command: one group, subcommands registered from their own modules."""

from __future__ import annotations

import importlib
import logging
import sys

import click

from ivr import __version__
from ivr.errors import IvrError

# (module, attribute) of each subcommand; each lives next to the code it drives.
_COMMANDS = [
    ("ivr.cli.asr", "transcribe"),
    ("ivr.cli.asr", "models"),
    ("ivr.cli.tts", "say"),
    ("ivr.cli.flows", "flows"),
    ("ivr.cli.intents", "intents"),
    ("ivr.cli.replay", "replay"),
    ("ivr.cli.talk", "talk"),
    ("ivr.cli.serve", "serve"),
    ("ivr.cli.edge", "edge"),
    ("ivr.cli.bench", "bench"),
    ("ivr.web.cli", "users"),
    ("ivr.web.cli", "console"),
    ("ivr.cli.calls", "calls"),
    ("ivr.cli.report", "report"),
]


class IvrGroup(click.Group):
    """A click group that prints IvrError as a clean message (exit 1) instead of a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except IvrError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=IvrGroup)
@click.version_option(__version__, prog_name="ivr")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def cli(verbose: int) -> None:
    """ivr: an offline voice IVR and speech-bot server."""
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _register() -> None:
    for module_name, attr in _COMMANDS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:  # a real missing dependency, not a command still being written
                raise
            continue
        cli.add_command(getattr(module, attr))


def main() -> None:
    """Run the ``ivr`` command line."""
    _register()
    cli()


if __name__ == "__main__":
    main()
