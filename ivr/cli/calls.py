"""``ivr calls erase ID``: erase what one caller said and gave (transcript, context, events, notes,
number, recordings), e.g. on the caller's request. ``ivr serve --retention-days`` does it for old calls."""

from __future__ import annotations

import click


@click.group()
def calls() -> None:
    """Stored calls."""


@calls.command("erase")
@click.argument("call_ids", metavar="ID...", nargs=-1, required=True)
@click.option("--db", envvar="IVR_DB", default="var/ivr.db", show_default=True,
              help="SQLite file or database URL (env IVR_DB); the same data key as the server (IVR_DATA_KEY "
              "or the key file beside the database).")
def erase(call_ids: tuple[str, ...], db: str) -> None:
    """Erase the transcript, context, events, notes, caller number and recordings of each call ID (its
    times, outcome, queue and agent stay, for the figures)."""
    from ivr.store import open_store
    from ivr.store.retention import erase_call

    store = open_store(db)
    missing = [call_id for call_id in call_ids if not erase_call(store, call_id)]
    for call_id in call_ids:
        if call_id not in missing:
            click.echo(f"erased call {call_id}")
    if missing:
        raise click.ClickException(f"no call {', '.join(repr(m) for m in missing)} in {db}")
