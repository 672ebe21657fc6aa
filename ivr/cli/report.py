"""``ivr report daily``: a day's contact-centre report as HTML and CSV (definitions: docs/reports.md)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from ivr.store.location import DATABASE_ENV, DEFAULT_DATABASE


@click.group()
def report() -> None:
    """Contact-centre reports: containment, FCR, AHT, ASA, service level, abandonment, CSAT, NPS..."""


def _check_database(database: str) -> None:
    from ivr.reports.periods import ReportError

    if "://" not in database and database != ":memory:" and not Path(database).expanduser().is_file():
        raise ReportError(f"no database at {database}: pass --database (the file or URL `ivr serve` uses) or set "
                          f"{DATABASE_ENV}")  # fmt: skip


@report.command()
@click.option("--date", "day_text", default=None, metavar="YYYY-MM-DD",
              help="The day (local time) to report on; default: yesterday.")
@click.option("--database", "--db", "database", envvar=DATABASE_ENV, default=DEFAULT_DATABASE, show_default=True,
              help=f"SQLite path or database URL (env {DATABASE_ENV}; the same default as `ivr serve`).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("reports"),
              show_default=True, help="Folder for ivr-report-DAY.html and ivr-report-DAY-TABLE.csv.")
@click.option("--webhook", default=None, help="Also POST the report (JSON: summary, CSV texts, HTML) to this URL.")
@click.option("--mail-to", "mail_to", multiple=True, metavar="ADDRESS",
              help="Also mail the report (HTML, CSVs attached) to this address (repeatable).")
@click.option("--smtp", default="localhost:25", show_default=True, metavar="HOST[:PORT]",
              help="The mail relay for --mail-to.")
@click.option("--mail-from", default="", help="Sender address for --mail-to (default: ivr@this host).")
@click.option("--queues", "queues_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="queues.yaml for each queue's wrap-up and the service level (default: config/queues.yaml "
                   "when it exists).")
@click.option("--service-level", type=float, default=None,
              help="Seconds within which an answer counts for the service level (default: queues.yaml's, else 20).")
@click.option("--short-abandon", type=float, default=5.0, show_default=True,
              help="Callers who hang up sooner than this are not counted abandoned.")
@click.option("--fcr-days", type=float, default=7.0, show_default=True,
              help="A repeat call on the same intent within this many days means the first was not resolved.")
def daily(day_text: str | None, database: str, out_dir: Path, webhook: str | None, mail_to: tuple[str, ...],
          smtp: str, mail_from: str, queues_file: Path | None, service_level: float | None, short_abandon: float,
          fcr_days: float) -> None:  # fmt: skip
    """Write one day's report as HTML and one CSV per table (summary, hours, queues, agents, flows, intents,
    questions, unanswered), optionally sending it to a webhook and mailing it. Run it from cron, or let
    `ivr serve --daily-report-at HH:MM` run it."""
    from ivr.queue.config import load_queues
    from ivr.reports import ReportOptions, parse_day
    from ivr.reports.daily import daily_report
    from ivr.reports.mail import MailRelay
    from ivr.store import open_store

    day = parse_day(day_text, "--date") if day_text else dt.date.today() - dt.timedelta(days=1)
    _check_database(database)
    if queues_file is None and Path("config/queues.yaml").is_file():
        queues_file = Path("config/queues.yaml")
    queues = load_queues(queues_file) if queues_file is not None else None
    options = ReportOptions.from_queues(queues, service_level_seconds=service_level,
                                        short_abandon_seconds=short_abandon, fcr_days=fcr_days)  # fmt: skip
    mail = MailRelay.parse(mail_to, smtp, mail_from) if mail_to else None
    result = daily_report(open_store(database), day, out_dir, options, webhook, mail)
    s = result.report.summary
    click.echo(f"{day}: {s['calls']} calls, containment {_pct(s['containment'])}, "
               f"service level {_pct(s['service_level'])}, abandonment {_pct(s['abandonment'])}")
    for path in result.files:
        click.echo(f"wrote {path}")
    if webhook:
        click.echo("sent to the webhook")
    if mail:
        click.echo(f"mailed to {', '.join(mail.recipients)}")


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.0%}"
