"""The numbers a contact centre lives by, for the console: thin wrappers over :mod:`ivr.reports` (the SQL
aggregates and definitions of docs/reports.md)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from typing import Any

from ivr.reports import ReportOptions, day_bounds
from ivr.reports import daily_trend as _trend
from ivr.reports import summary as _summary
from ivr.reports.definitions import TRANSFER_OUTCOMES
from ivr.store import Store
from ivr.store.survey import survey_scores

__all__ = ["TRANSFER_OUTCOMES", "daily_trend", "day_bounds", "figures", "hourly_calls", "percentile"]


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _satisfaction(context: Mapping[str, Any]) -> float | None:
    """The CSAT answer a call's context holds (see :mod:`ivr.store.survey`)."""
    return survey_scores(context)[0]


def _options(service_level_seconds: float, options: ReportOptions | None) -> ReportOptions:
    if options is None:
        return ReportOptions(service_level_seconds=service_level_seconds)
    return options


def figures(store: Store, since: float, until: float, service_level_seconds: float = 20.0,
            options: ReportOptions | None = None) -> dict[str, Any]:  # fmt: skip
    """Calls, containment, FCR, transfer rate by intent, abandonment, waits, service level, AHT, CSAT and NPS
    for calls started (and callers queued) in [since, until)."""
    return _summary(store, since, until, _options(service_level_seconds, options))


def daily_trend(store: Store, days: int, today: dt.date, service_level_seconds: float = 20.0,
                options: ReportOptions | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Per-day figures for the last ``days`` days up to ``today``, oldest first, with a ``day`` key."""
    first = today - dt.timedelta(days=days - 1)
    return _trend(store, first, today, _options(service_level_seconds, options))


def hourly_calls(store: Store, day: dt.date, options: ReportOptions | None = None) -> list[tuple[str, float]]:
    """Calls started in each hour of ``day`` (24 bars)."""
    from ivr.reports.report import build_report

    since, until = day_bounds(day)
    hours = build_report(store, since, until, options, tables=("hours",)).table("hours")
    return [(row["hour"][:2], float(row["calls"])) for row in hours.rows]
