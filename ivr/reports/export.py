"""A report as files and messages: CSV (one per table, safe to open in a spreadsheet), a self-contained HTML
page (everything escaped), and a POST to a webhook."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
from pathlib import Path
from typing import Any

import requests
from jinja2 import Environment, PackageLoader, select_autoescape

from ivr.reports.periods import ReportError
from ivr.reports.report import Column, Report, Table
from ivr.store.masking import mask_url

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
"""A spreadsheet takes a cell starting with one of these for a formula (CSV injection)."""


def safe_cell(value: object) -> str:
    """A value as a CSV cell: text that a spreadsheet would run as a formula gets a leading quote."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.4f}".rstrip("0").rstrip(".")
    if isinstance(value, int):
        return str(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def table_csv(table: Table) -> str:
    """The table as CSV text: a header of column keys, then one line per row."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c.key for c in table.columns])
    for row in table.rows:
        writer.writerow([safe_cell(row.get(c.key)) for c in table.columns])
    return out.getvalue()


def shown(value: Any, kind: str) -> str:
    """A value as a person reads it: ratios as percentages, seconds rounded, '–' for none."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if kind == "ratio":
        return f"{value:.1%}"
    if kind == "seconds":
        return f"{value:.0f} s"
    if kind == "score":
        return f"{value:.1f}"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def cell(row: dict[str, Any], column: Column) -> str:
    """A table cell as shown in HTML (the summary table carries each value's own kind)."""
    kind = row.get("kind", "count") if column.kind == "value" else column.kind
    return shown(row.get(column.key), kind)


_env = Environment(loader=PackageLoader("ivr.reports", "."), autoescape=select_autoescape(["html"]))
_env.globals.update(cell=cell)


def render_html(report: Report, title: str) -> str:
    """The report as one HTML page (no script, nothing from the internet; every value escaped)."""
    since = dt.datetime.fromtimestamp(report.since).strftime("%Y-%m-%d %H:%M")
    until = dt.datetime.fromtimestamp(report.until).strftime("%Y-%m-%d %H:%M")
    return _env.get_template("daily.html").render(report=report, title=title, since=since, until=until,
                                                  options=report.options)  # fmt: skip


def write_report(report: Report, out_dir: Path, stem: str, title: str) -> list[Path]:
    """Write ``<stem>.html`` and ``<stem>-<table>.csv`` for each table into ``out_dir``; returns the files."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        files = [out_dir / f"{stem}.html"]
        files[0].write_text(render_html(report, title), encoding="utf-8")
        for table in report.tables:
            path = out_dir / f"{stem}-{table.name}.csv"
            path.write_text(table_csv(table), encoding="utf-8", newline="")
            files.append(path)
    except OSError as exc:
        raise ReportError(f"cannot write the report into {out_dir}: {exc}. Pick a writable folder with --out") from exc
    return files


def webhook_payload(report: Report, name: str, title: str) -> dict[str, Any]:
    """What is POSTed to a webhook: the summary figures, each table as CSV text, and the HTML page."""
    return {
        "report": name,
        "title": title,
        "since": report.since,
        "until": report.until,
        "summary": {k: v for k, v in report.summary.items() if not isinstance(v, dict)},
        "csv": {table.name: table_csv(table) for table in report.tables},
        "html": render_html(report, title),
    }


def post_webhook(url: str, payload: dict[str, Any], timeout: float = 15.0) -> None:
    """POST ``payload`` as JSON to ``url``; a refusal or an unreachable host raises :class:`ReportError`."""
    try:
        resp = requests.post(url, data=json.dumps(payload, default=str), timeout=timeout,
                             headers={"Content-Type": "application/json", "User-Agent": "ivr-report"})  # fmt: skip
    except requests.RequestException as exc:
        raise ReportError(f"could not send the report to {mask_url(url)}: {exc}. Check the webhook URL") from exc
    if resp.status_code >= 300:
        raise ReportError(f"the webhook {mask_url(url)} answered {resp.status_code}: {resp.text[:200]!r}")
