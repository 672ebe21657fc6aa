"""The supervisor page's charts and links from its figures to the calls behind them (``/calls`` with the
filters of :mod:`ivr.reports.drill`)."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from flask import url_for
from markupsafe import Markup

from ivr.reports.drill import nps_group
from ivr.reports.export import safe_cell
from ivr.web.charts import Bar, bar_chart
from ivr.web.data import mask_number

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
    "csat": "csat",
    "nps": "nps",
}
"""Which calls each headline tile links to (the figure's calls; FCR: the repeated ones)."""

SURVEY_LINKS = {"csat_average": "csat", "csat_responses": "csat", "nps": "nps"}
"""A table's survey columns: to the calls whose answers they count."""

TABLE_LINKS: dict[str, tuple[str, dict[str, str]]] = {
    # table: (the row key that names the group, {column: figure})
    "queues": ("queue", {"queue": "queued", "offered": "queued", "answered": "answered", "abandoned": "abandoned"}),
    "agents": ("agent", {"agent": "answered", "answered": "answered", **SURVEY_LINKS}),
    "flows": ("flow", {"flow": "", "calls": "", "contained": "contained", "transferred": "transferred",
                       **SURVEY_LINKS}),
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


CALL_CSV_COLUMNS = ("started", "call_id", "caller", "flow", "intent", "queue", "agent", "outcome", "csat", "nps",
                    "nps_group")  # fmt: skip
"""The columns of a listing's CSV export (``/calls.csv``)."""


def calls_csv(pages: Iterable[Sequence[Row]]) -> Iterator[str]:
    """A call listing as CSV text, a header then one piece per page of calls: local start time, caller
    numbers masked but their last 4 digits (the file may leave the building, as a report's), the survey
    answers, and cells a spreadsheet would take for a formula quoted."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CALL_CSV_COLUMNS)
    for rows in pages:
        for c in rows:
            started = dt.datetime.fromtimestamp(c["started_at"]).isoformat(sep=" ", timespec="seconds")
            writer.writerow([safe_cell(v) for v in (
                started, c["id"], mask_number(c["caller"] or ""), c["flow"], c["intent"], c["queue"], c["agent"],
                c["outcome"], c["csat"], c["nps"], nps_group(c["nps"]))])  # fmt: skip
        yield out.getvalue()
        out.seek(0)
        out.truncate()
