"""A report for a time range: the summary figures and the tables per hour, queue, agent, flow, intent and
opening request, with the ratios of docs/reports.md taken from the SQL counts of :mod:`ivr.reports.queries`."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import dataclass, field
from typing import Any

from ivr.reports import queries as q
from ivr.reports.definitions import ReportOptions
from ivr.reports.periods import day_bounds, days_between
from ivr.reports.rollups import (
    AGENT_FIELDS,
    CALL_FIELDS,
    ENTRY_FIELDS,
    Sums,
    counts,
    day_sums,
    nearest_rank,
    range_sums,
)
from ivr.store import Store, mask_sensitive

Row = dict[str, Any]


def ratio(part: float, whole: float) -> float | None:
    """``part / whole``, None when there is nothing to divide."""
    return part / whole if whole else None


def call_figures(r: Row) -> Row:
    """The call ratios from :func:`ivr.reports.queries.call_columns` counts (kept alongside them)."""
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
    """The queue ratios from :func:`ivr.reports.queries.entry_columns` counts (kept alongside them)."""
    out = dict(r)
    counted = r["offered"] - r["short_abandoned"]
    out["service_level"] = ratio(r["answered_within"], counted)
    out["abandonment"] = ratio(r["abandoned"] - r["short_abandoned"], counted)
    out["asa"] = ratio(r["wait_sum"], r["answered"])
    out["talk_average"] = ratio(r["talk_sum"], r["handled"])
    out["aht"] = ratio(r["talk_sum"] + r["wrap_sum"], r["handled"])
    return out


class Cube:
    """The sums of a range (:class:`ivr.reports.rollups.Sums`, from roll-ups for whole days) as figures per
    intent, flow, hour, queue and agent."""

    def __init__(self, store: Store, since: float, until: float, options: ReportOptions) -> None:
        self.store, self.since, self.until, self.options = store, since, until, options
        self.zero_calls = q.zero_calls(options)
        self.zero_entries = q.zero_entries(options)

    @functools.cached_property
    def sums(self) -> Sums:
        """The range's counts."""
        return range_sums(self.store, self.since, self.until, self.options)

    def calls_by(self, key: str | None) -> dict[Any, Row]:
        """Call figures per ``key`` (intent, flow or hour; None: the total)."""
        groups = self.sums.calls["all" if key is None else key]
        if key is None and not groups:
            return {None: call_figures(dict(self.zero_calls))}
        return {k: call_figures({**self.zero_calls, **counts(v, CALL_FIELDS)}) for k, v in groups.items()}

    def entries_by(self, key: str) -> dict[Any, Row]:
        """Queue figures per ``key`` (queue or hour), per entry."""
        return {k: queue_figures({**self.zero_entries, **counts(v, ENTRY_FIELDS)})
                for k, v in self.sums.entries[key].items()}  # fmt: skip

    def queued_calls(self) -> Row:
        """Queue figures per queued call (each counted once, by its last entry, waiting from its first)."""
        return queue_figures({**self.zero_entries, **counts(self.sums.queued, ENTRY_FIELDS)})


def summary(store: Store, since: float, until: float, options: ReportOptions | None = None, *,
            cube: Cube | None = None) -> Row:  # fmt: skip
    """Every headline figure for [since, until): calls, containment, FCR, transfers, queue figures (per
    call), AHT, CSAT, NPS and the transfer rate by intent."""
    options = options or ReportOptions()
    cube = cube or Cube(store, since, until, options)
    calls = cube.calls_by(None)[None]
    queue = cube.queued_calls()
    out: Row = {"since": since, "until": until, **calls, **queue}
    out.update(
        wait_average=queue["asa"],
        wait_p90=nearest_rank(cube.sums.all_waits(), 0.9),
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


def daily_trend(store: Store, first: dt.date, last: dt.date, options: ReportOptions | None = None) -> list[Row]:
    """Per-day figures from ``first`` to ``last`` (both included, oldest first, a ``day`` key each), from the
    day roll-ups."""
    options = options or ReportOptions()
    zero_calls, zero_entries = q.zero_calls(options), q.zero_entries(options)
    days = days_between(first, last)
    out = []
    for day, sums in zip(days, day_sums(store, days, options), strict=True):
        since, until = day_bounds(day)
        row = queue_figures({**zero_entries, **counts(sums.queued, ENTRY_FIELDS)})
        row.update(call_figures({**zero_calls, **counts(sums.calls["all"].get(None), CALL_FIELDS)}))
        row.update(day=day.isoformat(), since=since, until=until, wait_average=row["asa"])
        out.append(row)
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


def _unanswered(store: Store, since: float, until: float, options: ReportOptions) -> Table:
    rows = store.unanswered_questions(since, until, options.top)
    for rank, row in enumerate(rows, 1):
        row.update(rank=rank, question=mask_sensitive(row["question"]), closest=row["closest"] or "",
                   examples=" | ".join(mask_sensitive(text) for text in row["examples"]))
    columns = [Column("rank", "#"), Column("question", "Question (masked)", "text"), Column("count", "Asked"),
               Column("calls", "Calls"), Column("closest", "Closest entry", "text"),
               Column("examples", "As asked (masked)", "text")]
    return Table("unanswered", f"Top {options.top} questions the knowledge files could not answer", columns, rows)


def _flows(cube: Cube) -> Table:
    rows = sorted(({**r, "flow": name or "(none)"} for name, r in cube.calls_by("flow").items()),
                  key=lambda r: r["flow"])  # fmt: skip
    columns = [Column("flow", "Flow", "text"), *_CALL_COLUMNS, Column("fcr", "FCR", "ratio"), *_SURVEY_COLUMNS]
    return Table("flows", "Per flow", columns, rows)


def _queues(cube: Cube) -> Table:
    rows = sorted(({**r, "queue": name} for name, r in cube.entries_by("queue").items()), key=lambda r: r["queue"])
    return Table("queues", "Per queue", [Column("queue", "Queue", "text"), *_QUEUE_COLUMNS], rows)


def _agents(cube: Cube) -> Table:
    rows = []
    for agent, values in cube.sums.agents.items():
        agent_counts = counts(values, AGENT_FIELDS)
        row = queue_figures({**cube.zero_entries, **agent_counts})
        row.update(call_figures({**cube.zero_calls, **agent_counts}), agent=agent)
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


TABLES = ("summary", "hours", "queues", "agents", "flows", "intents", "questions", "unanswered", "days")


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
            built.append(_agents(cube))
        elif name == "flows":
            built.append(_flows(cube))
        elif name == "intents":
            built.append(_intents(store, since, until, options, cube))
        elif name == "questions":
            built.append(_questions(store, since, until, options))
        elif name == "unanswered":
            built.append(_unanswered(store, since, until, options))
        elif name == "days":
            built.append(_days(store, since, until, options))
        else:
            raise KeyError(f"no report table {name!r}; tables: {', '.join(TABLES)}")
    return Report(since, until, options, head, built)
