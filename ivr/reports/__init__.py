"""Contact-centre reports: the definitions of docs/reports.md computed with SQL aggregates in the store.

>>> report = build_report(store, *day_bounds(dt.date(2026, 11, 30)))
>>> report.summary["containment"], [table.name for table in report.tables]
"""

from __future__ import annotations

from ivr.reports.definitions import ReportOptions
from ivr.reports.periods import day_bounds, days_between, parse_day
from ivr.reports.report import Column, Report, Table, build_report, daily_trend, summary

__all__ = [
    "Column",
    "Report",
    "ReportOptions",
    "Table",
    "build_report",
    "daily_trend",
    "day_bounds",
    "days_between",
    "parse_day",
    "summary",
]
