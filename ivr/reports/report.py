"""A report for a time range: the summary figures and the tables per hour, queue, agent, flow, intent and
opening request, with the ratios of docs/reports.md taken from the SQL counts of :mod:`ivr.reports.queries`."""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ivr.reports import queries as q
from ivr.reports.definitions import ReportOptions
from ivr.reports.periods import day_bounds, days_between
from ivr.store import Store, mask_sensitive, schema

Row = dict[str, Any]


def ratio(part: float, whole: float) -> float | None:
    """``part / whole``, None when there is nothing to divide."""
    return part / whole if whole else None


def call_figures(r: Row) -> Row:
    """The call ratios from :func:`ivr.reports.queries.call_counts` counts (kept alongside them)."""
    out = dict(r)
    out["containment"] = ratio(r["contained"], r["ended"])
    out["transfer_rate"] = ratio(r["transferred"], r["calls"])
    out["csat_average"] = ratio(r["csat_sum"], r["csat_responses"])
    out["csat"] = ratio(r["csat_satisfied"], r["csat_responses"])
    nps = ratio(r["promoters"] - r["detractors"], r["nps_responses"])
    out["nps"] = None if nps is None else 100 * nps
    if "fcr_calls" in r:
        out["fcr"] = ratio(r["fcr_calls"] - r["fcr_repeated"], r["fcr_calls"])
    return out


def queue_figures(r: Row) -> Row:
    """The queue ratios from :func:`ivr.reports.queries.entry_counts` counts (kept alongside them)."""
    out = dict(r)
    counted = r["offered"] - r["short_abandoned"]
    out["service_level"] = ratio(r["answered_within"], counted)
    out["abandonment"] = ratio(r["abandoned"] - r["short_abandoned"], counted)
    out["asa"] = ratio(r["wait_sum"], r["answered"])
    out["talk_average"] = ratio(r["talk_sum"], r["handled"])
    out["aht"] = ratio(r["talk_sum"] + r["wrap_sum"], r["handled"])
    return out


KEYS = frozenset({"key", "intent", "flow", "hour", "hour_index", "queue", "agent"})


def add_up(rows: list[Row], key: str | None = None) -> dict[Any, Row]:
    """Sum the counts of cube ``rows`` per value of ``key`` (all rows under None when ``key`` is None)."""
    if not rows:
        return {}
    fields = [name for name in rows[0] if name not in KEYS]
    out: dict[Any, Row] = {}
    for row in rows:
        group = None if key is None else row[key]
        acc = out.get(group)
        if acc is None:
            out[group] = acc = dict.fromkeys(fields, 0)
        for name in fields:
            acc[name] += row[name]
    return out


class Cube:
    """The grouped counts of one range, read once and only when a table needs them: calls per (intent, flow,
    hour) and queue entries per (queue, hour). Every table is a sum over these groups."""

    def __init__(self, store: Store, since: float, until: float, options: ReportOptions) -> None:
        self.store, self.since, self.until, self.options = store, since, until, options
        self.zero_calls = q.zero_calls(options)
        self.zero_entries = q.zero_entries(options)

    @functools.cached_property
    def calls(self) -> list[Row]:
        """Call counts per (intent, flow, hour)."""
        return self._named(q.call_cube(self.store, self.since, self.until, self.options))

    @functools.cached_property
    def entries(self) -> list[Row]:
        """Queue entry counts per (queue, hour)."""
        return self._named(q.entry_cube(self.store, self.since, self.until, self.options))

    def _named(self, rows: list[Row]) -> list[Row]:
        names: dict[Any, int | None] = {}
        for row in rows:
            key = row.pop("hour_index")
            if key not in names:
                names[key] = q.local_hour(self.since, self.until, key) if key is not None else None
            row["hour"] = names[key]
        return rows

    def calls_by(self, key: str | None) -> dict[Any, Row]:
        """Call figures per ``key`` (intent, flow or hour; None: the total)."""
        groups = add_up(self.calls, key)
        if key is None and not groups:
            groups = {None: {}}
        return {k: call_figures({**self.zero_calls, **v}) for k, v in groups.items()}

    def entries_by(self, key: str | None) -> dict[Any, Row]:
        """Queue figures per ``key`` (queue or hour; None: the total, per entry)."""
        return {k: queue_figures({**self.zero_entries, **v}) for k, v in add_up(self.entries, key).items()}


def summary(store: Store, since: float, until: float, options: ReportOptions | None = None, *,
            cube: Cube | None = None) -> Row:  # fmt: skip
    """Every headline figure for [since, until): calls, containment, FCR, transfers, queue figures (per
    call), AHT, CSAT, NPS and the transfer rate by intent."""
    options = options or ReportOptions()
    cube = cube or Cube(store, since, until, options)
    calls = cube.calls_by(None)[None]
    queue = queue_figures(q.call_queue_counts(store, since, until, options))
    out: Row = {"since": since, "until": until, **calls, **queue}
    out.update(
        wait_average=queue["asa"],
        wait_p90=q.wait_percentile(store, since, until, 0.9, queue["answered"]),
        service_level_seconds=options.service_level_seconds,
        short_abandon_seconds=options.short_abandon_seconds,
        fcr_days=options.fcr_days,
        satisfaction_average=calls["csat_average"],
        satisfaction_responses=calls["csat_responses"],
    )
    intents = cube.calls_by("intent")
    out["transfer_rate_by_intent"] = {
        name or "(none)": {"calls": r["calls"], "transferred": r["transferred"], "rate": r["transfer_rate"]}
        for name, r in sorted(intents.items(), key=lambda item: item[0] or "(none)")
    }
    return out


CLOSED_AFTER = 6 * 3600.0
"""A day's figures are kept once the day has been over this long (no call of it can still be going on)."""
_closed_days: weakref.WeakKeyDictionary[sa.Engine, dict[tuple[str, str], Row]] = weakref.WeakKeyDictionary()


def daily_trend(store: Store, first: dt.date, last: dt.date, options: ReportOptions | None = None) -> list[Row]:
    """Per-day figures from ``first`` to ``last`` (both included, oldest first, a ``day`` key each). Days long
    over are read from ``report_days`` (and remembered in the process); the others are computed with two
    grouped queries, and stored once closed."""
    options = options or ReportOptions()
    key = options.key()
    kept = _closed_days.setdefault(store.engine, {})
    days = [d.isoformat() for d in days_between(first, last)]
    missing = [d for d in days if (d, key) not in kept]
    if missing:
        for day, row in _stored_days(store, missing, key).items():
            kept[(day, key)] = row
        missing = [d for d in missing if (d, key) not in kept]
    fresh: dict[str, Row] = {}
    if missing:
        fresh = _trend_rows(store, dt.date.fromisoformat(missing[0]), dt.date.fromisoformat(missing[-1]), options)
        closed = {d: row for d, row in fresh.items() if row["until"] + CLOSED_AFTER < time.time()}
        _store_days(store, closed, key)
        if len(kept) < 100_000:
            kept.update({(d, key): row for d, row in closed.items()})
    return [dict(fresh.get(d) or kept[(d, key)]) for d in days]


def _stored_days(store: Store, days: list[str], key: str) -> dict[str, Row]:
    rd = schema.report_days.c
    query = sa.select(rd.day, rd.data).where(rd.options == key, rd.day >= days[0], rd.day <= days[-1])
    with store.engine.connect() as conn:
        return {day: json.loads(data) for day, data in conn.execute(query) if day in days}


def _store_days(store: Store, rows: dict[str, Row], key: str) -> None:
    if not rows:
        return
    rd = schema.report_days
    now = time.time()
    with store.engine.begin() as conn:
        conn.execute(rd.delete().where(rd.c.options == key, rd.c.day.in_(list(rows))))
        conn.execute(rd.insert(), [{"day": d, "options": key, "data": json.dumps(row), "computed_at": now}
                                   for d, row in rows.items()])  # fmt: skip


def _trend_rows(store: Store, first: dt.date, last: dt.date, options: ReportOptions) -> dict[str, Row]:
    days = days_between(first, last)
    bounds = [day_bounds(d)[0] for d in days] + [day_bounds(last)[1]]
    since, until = bounds[0], bounds[-1]
    calls = {r["key"]: r for r in q.call_counts(store, since, until, options, by=q.bucket(q.C.started_at, bounds))}
    queues = {r["key"]: r for r in q.call_queue_counts_by(store, since, until, options, bounds)}
    zero_calls, zero_entries = q.zero_calls(options), q.zero_entries(options)
    out = {}
    for i, day in enumerate(days):
        row = queue_figures({**zero_entries, **queues.get(i, {})})
        row.update(call_figures({**zero_calls, **calls.get(i, {})}))
        row.pop("key", None)
        row.update(day=day.isoformat(), since=bounds[i], until=bounds[i + 1], wait_average=row["asa"])
        out[day.isoformat()] = row
    return out


@dataclass(frozen=True)
class Column:
    """A column of a report table: ``kind`` is text, count, ratio (0..1), seconds or score."""

    key: str
    label: str
    kind: str = "count"


@dataclass
class Table:
    """One table of a report (one CSV file, one HTML table)."""

    name: str
    title: str
    columns: list[Column]
    rows: list[Row] = field(default_factory=list)


@dataclass
class Report:
    """A report over [since, until): the headline ``summary`` and its ``tables``."""

    since: float
    until: float
    options: ReportOptions
    summary: Row
    tables: list[Table]

    def table(self, name: str) -> Table:
        """The table called ``name``."""
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)


SUMMARY_FIGURES = [
    Column("calls", "Calls"),
    Column("ended", "Ended calls"),
    Column("contained", "Contained"),
    Column("containment", "Containment", "ratio"),
    Column("fcr", "First-contact resolution", "ratio"),
    Column("transferred", "Transferred (or tried)"),
    Column("transfer_rate", "Transfer rate", "ratio"),
    Column("queued", "Calls queued"),
    Column("answered", "Answered by an agent"),
    Column("abandoned", "Abandoned in queue"),
    Column("short_abandoned", "Short abandons"),
    Column("abandonment", "Abandonment", "ratio"),
    Column("service_level", "Service level", "ratio"),
    Column("asa", "Average speed of answer", "seconds"),
    Column("wait_p90", "90th percentile wait", "seconds"),
    Column("talk_average", "Average talk time", "seconds"),
    Column("aht", "Average handle time", "seconds"),
    Column("csat_average", "CSAT average (1-5)", "score"),
    Column("csat", "CSAT (share 4-5)", "ratio"),
    Column("csat_responses", "CSAT responses"),
    Column("nps", "NPS", "score"),
    Column("nps_responses", "NPS responses"),
]
_QUEUE_COLUMNS = [
    Column("offered", "Offered"),
    Column("answered", "Answered"),
    Column("abandoned", "Abandoned"),
    Column("short_abandoned", "Short abandons"),
    Column("abandonment", "Abandonment", "ratio"),
    Column("service_level", "Service level", "ratio"),
    Column("asa", "ASA", "seconds"),
    Column("talk_average", "Talk", "seconds"),
    Column("aht", "AHT", "seconds"),
]
_CALL_COLUMNS = [
    Column("calls", "Calls"),
    Column("contained", "Contained"),
    Column("containment", "Containment", "ratio"),
    Column("transferred", "Transferred"),
    Column("transfer_rate", "Transfer rate", "ratio"),
]
_SURVEY_COLUMNS = [
    Column("csat_average", "CSAT", "score"),
    Column("csat_responses", "CSAT responses"),
    Column("nps", "NPS", "score"),
]


def _summary_table(summary: Row) -> Table:
    rows = [{"key": c.key, "figure": c.label, "value": summary.get(c.key), "kind": c.kind} for c in SUMMARY_FIGURES]
    columns = [Column("key", "Key", "text"), Column("figure", "Figure", "text"), Column("value", "Value", "value")]
    return Table("summary", "Summary", columns, rows)


def _hours(cube: Cube) -> Table:
    calls, queues = cube.calls_by("hour"), cube.entries_by("hour")
    rows = []
    for hour in range(24):
        row: Row = {"hour": f"{hour:02d}:00"}
        row.update(queues.get(hour) or queue_figures(dict(cube.zero_entries)))
        row.update(calls.get(hour) or call_figures(dict(cube.zero_calls)))
        rows.append(row)
    return Table("hours", "Per hour", [Column("hour", "Hour", "text"), *_CALL_COLUMNS, *_QUEUE_COLUMNS], rows)


def _intents(store: Store, since: float, until: float, options: ReportOptions, cube: Cube) -> Table:
    rows = [{**r, "intent": name} for name, r in cube.calls_by("intent").items() if name]
    total = sum(r["calls"] for r in rows)
    rows.sort(key=lambda r: (-r["calls"], r["intent"]))
    for rank, row in enumerate(rows, 1):
        row.update(rank=rank, share=ratio(row["calls"], total))
        shown = rank <= options.top
        examples = q.intent_examples(store, since, until, row["intent"], options.examples) if shown else []
        row["examples"] = " | ".join(mask_sensitive(text) for text in examples)
    columns = [Column("rank", "#"), Column("intent", "Intent", "text"), Column("share", "Share", "ratio"),
               *_CALL_COLUMNS, Column("fcr", "FCR", "ratio"), Column("examples", "Examples (masked)", "text")]
    return Table("intents", f"Intents (top {options.top} with examples; transfer rate by intent)", columns, rows)


def _questions(store: Store, since: float, until: float, options: ReportOptions) -> Table:
    rows = [r for r in q.opening_requests(store, since, until, options.top * 3)
            if any(ch.isalpha() for ch in r["question"] or "")][: options.top]  # fmt: skip
    for rank, row in enumerate(rows, 1):
        row.update(rank=rank, question=mask_sensitive(row["question"]), intent=row["intent"] or "")
    columns = [Column("rank", "#"), Column("question", "Opening request (masked)", "text"), Column("calls", "Calls"),
               Column("intent", "Intent", "text")]
    return Table("questions", f"Top {options.top} opening requests", columns, rows)


def _flows(cube: Cube) -> Table:
    rows = sorted(({**r, "flow": name or "(none)"} for name, r in cube.calls_by("flow").items()),
                  key=lambda r: r["flow"])  # fmt: skip
    columns = [Column("flow", "Flow", "text"), *_CALL_COLUMNS, Column("fcr", "FCR", "ratio"), *_SURVEY_COLUMNS]
    return Table("flows", "Per flow", columns, rows)


def _queues(cube: Cube) -> Table:
    rows = sorted(({**r, "queue": name} for name, r in cube.entries_by("queue").items()), key=lambda r: r["queue"])
    return Table("queues", "Per queue", [Column("queue", "Queue", "text"), *_QUEUE_COLUMNS], rows)


def _agents(store: Store, since: float, until: float, options: ReportOptions) -> Table:
    zero_calls, zero_entries = q.zero_calls(options), q.zero_entries(options)
    rows = []
    for counts in q.agent_counts(store, since, until, options):
        row = queue_figures({**zero_entries, **counts})
        row.update(call_figures({**zero_calls, **counts}), agent=counts["key"])
        rows.append(row)
    rows.sort(key=lambda r: r["agent"])
    columns = [Column("agent", "Agent", "text"), Column("answered", "Answered"), Column("handled", "Handled"),
               Column("asa", "ASA", "seconds"), Column("talk_average", "Talk", "seconds"),
               Column("aht", "AHT", "seconds"), *_SURVEY_COLUMNS]  # fmt: skip
    return Table("agents", "Per agent", columns, rows)


def _days(store: Store, since: float, until: float, options: ReportOptions) -> Table:
    first = dt.date.fromtimestamp(since)
    last = dt.date.fromtimestamp(until - 1)
    rows = daily_trend(store, first, last, options)
    columns = [Column("day", "Day", "text"), *_CALL_COLUMNS, Column("fcr", "FCR", "ratio"), *_QUEUE_COLUMNS,
               *_SURVEY_COLUMNS]
    return Table("days", "Per day", columns, rows)


TABLES = ("summary", "hours", "queues", "agents", "flows", "intents", "questions", "days")


def build_report(store: Store, since: float, until: float, options: ReportOptions | None = None,
                 tables: tuple[str, ...] = TABLES) -> Report:  # fmt: skip
    """The report for [since, until) with the ``tables`` asked for (all by default); ``summary`` is filled
    when the summary table is asked for."""
    options = options or ReportOptions()
    cube = Cube(store, since, until, options)
    head = summary(store, since, until, options, cube=cube) if "summary" in tables else {}
    built: list[Table] = []
    for name in tables:
        if name == "summary":
            built.append(_summary_table(head))
        elif name == "hours":
            built.append(_hours(cube))
        elif name == "queues":
            built.append(_queues(cube))
        elif name == "agents":
            built.append(_agents(store, since, until, options))
        elif name == "flows":
            built.append(_flows(cube))
        elif name == "intents":
            built.append(_intents(store, since, until, options, cube))
        elif name == "questions":
            built.append(_questions(store, since, until, options))
        elif name == "days":
            built.append(_days(store, since, until, options))
        else:
            raise KeyError(f"no report table {name!r}; tables: {', '.join(TABLES)}")
    return Report(since, until, options, head, built)
