"""The supervisor page's charts and links from its figures to the calls behind them (``/calls`` with the
filters of :mod:`ivr.reports.drill`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from flask import url_for
from markupsafe import Markup

from ivr.web.charts import Bar, bar_chart

Row = Mapping[str, Any]

TILE_FIGURES = {
    "calls": "",
    "containment": "contained",
    "fcr": "repeated",
    "transferred": "transferred",
    "abandonment": "abandoned",
    "asa": "answered",
    "wait_p90": "answered",
    "service_level": "answered_within",
    "aht": "answered",
}
"""Which calls each headline tile links to (the figure's calls; FCR: the repeated ones)."""

TABLE_LINKS: dict[str, tuple[str, dict[str, str]]] = {
    # table: (the row key that names the group, {column: figure})
    "queues": ("queue", {"queue": "queued", "offered": "queued", "answered": "answered", "abandoned": "abandoned"}),
    "agents": ("agent", {"agent": "answered", "answered": "answered"}),
    "flows": ("flow", {"flow": "", "calls": "", "contained": "contained", "transferred": "transferred"}),
    "intents": ("intent", {"intent": "", "calls": "", "transferred": "transferred"}),
}


def calls_url(since: str, until: str, **filters: Any) -> str:
    """The call records page listing the calls of days ``since`` to ``until`` that ``filters`` select."""
    return url_for("console.calls", since=since, until=until, **{k: v for k, v in filters.items() if v != ""})


def tile_url(range_args: Mapping[str, str], tile: str) -> str:
    """Where a headline tile leads."""
    return calls_url(range_args["since"], range_args["until"], figure=TILE_FIGURES[tile])


def cell_url(range_args: Mapping[str, str], table: str, row: Row, column: str) -> str:
    """Where a cell of a figures table leads ('' when it leads nowhere)."""
    key, columns = TABLE_LINKS.get(table, ("", {}))
    name = row.get(key)
    if column not in columns or not name or (name == "(none)" and table != "intents"):
        return ""
    return calls_url(range_args["since"], range_args["until"], figure=columns[column], **{key: name})


def _short(day: str, first: dt.date, last: dt.date) -> str:
    return day[5:] if first.year == last.year else day


def figure_charts(hours: Sequence[Row], trend: Sequence[Row], first: dt.date, last: dt.date) -> list[Markup]:
    """The charts of the supervisor page: calls per hour of the range, and per day figures."""
    since, until = first.isoformat(), last.isoformat()
    days = "" if first == last else f", {since} to {until}"
    hour_bars = [Bar(r["hour"][:2], float(r["calls"]), f"{r['hour']}–{int(r['hour'][:2]) + 1:02d}:00",
                     calls_url(since, until, hour=int(r["hour"][:2]))) for r in hours]  # fmt: skip
    charts = [bar_chart(f"Calls per hour of the day{days}", hour_bars, axis="calls", chart_id="chart-hours",
                        empty="No calls in this period")]  # fmt: skip
    t_first = dt.date.fromisoformat(trend[0]["day"]) if trend else first
    per_day = [("calls", "Calls per day", "", "calls", ""),
               ("containment", "Containment per day", "%", "", "contained"),
               ("abandonment", "Abandonment per day", "%", "", "abandoned"),
               ("asa", "Average speed of answer per day", "s", "seconds", "answered"),
               ("service_level", "Service level per day", "%", "", "answered_within")]  # fmt: skip
    for key, title, unit, axis, figure in per_day:
        bars = [Bar(_short(d["day"], t_first, last), None if d[key] is None else float(d[key]), d["day"],
                    calls_url(d["day"], d["day"], figure=figure)) for d in trend]  # fmt: skip
        charts.append(bar_chart(title, bars, unit=unit, axis=axis, chart_id=f"chart-{key}",
                                empty="No calls in these days" if key == "calls" else "Nothing to measure"))
    return charts
