"""The daily report: one day's figures and tables as HTML and CSV files, optionally sent to a webhook."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from pathlib import Path

from ivr.reports.definitions import ReportOptions
from ivr.reports.export import post_webhook, webhook_payload, write_report
from ivr.reports.mail import MailRelay, mail_report
from ivr.reports.periods import day_bounds
from ivr.reports.report import Report, build_report
from ivr.store import Store

log = logging.getLogger(__name__)

DAILY_TABLES = ("summary", "hours", "queues", "agents", "flows", "intents", "questions", "unanswered")


@dataclass
class DailyReport:
    """What :func:`daily_report` made: the report and the files written."""

    day: dt.date
    report: Report
    files: list[Path]


def daily_report(store: Store, day: dt.date, out_dir: Path, options: ReportOptions | None = None,
                 webhook: str | None = None, mail: MailRelay | None = None) -> DailyReport:  # fmt: skip
    """Write ``ivr-report-<day>.html`` and ``ivr-report-<day>-<table>.csv`` into ``out_dir``; with ``webhook``
    POST them there as JSON (see :func:`ivr.reports.export.webhook_payload`), with ``mail`` mail them."""
    since, until = day_bounds(day)
    report = build_report(store, since, until, options, DAILY_TABLES)
    title = f"ivr daily report {day.isoformat()}"
    files = write_report(report, out_dir, f"ivr-report-{day.isoformat()}", title)
    if webhook:
        post_webhook(webhook, webhook_payload(report, "daily", title))
        log.info("daily report %s sent to the webhook", day)
    if mail:
        mail_report(mail, title, files)
        log.info("daily report %s mailed to %s", day, ", ".join(mail.recipients))
    return DailyReport(day, report, files)
