"""Roll-ups: the report's additive sums per hour and per day, kept in ``report_rollups`` so a range of days is
read as a few hundred rows instead of a scan of its calls (docs/reports.md, Speed).

An hour's sums come from the SQL of :mod:`ivr.reports.queries` (the only definition of each figure); a day's
are its hours added up; a range's, its days added up. Triggers (migration 0010) bump a counter per 15 minutes
of call start / queue join time in the same transaction as every write a figure depends on (a call ending, a
survey arriving, a later call making an earlier one a repeat); a roll-up remembers the sum of the counters it
was made from and is made again when that sum has grown.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from ivr.reports import queries as q
from ivr.reports.definitions import ReportOptions
from ivr.reports.periods import day_bounds, days_between
from ivr.store import Store
from ivr.store import schema as t

Row = dict[str, Any]
SLOT = 900.0
"""Seconds per report_marks slot (as in migration 0010)."""
CALL_DIMENSIONS = ("all", "intent", "flow", "hour")
ENTRY_DIMENSIONS = ("queue", "hour")


Vector = np.ndarray[Any, Any]
CALL_FIELDS = tuple(q.zero_calls(ReportOptions()))
ENTRY_FIELDS = tuple(q.zero_entries(ReportOptions()))
AGENT_FIELDS = ENTRY_FIELDS + tuple(c.name for c in q.survey_columns())


def vector(row: Row, fields: tuple[str, ...]) -> Vector:
    """The counts of ``row`` in ``fields`` order (float64: whole counts stay exact; a missing one is 0)."""
    return np.array([row.get(name, 0) for name in fields], dtype=np.float64)


def counts(values: Vector | None, fields: tuple[str, ...]) -> Row:
    """The counts of a :func:`vector` by name: sums of seconds and scores (``*_sum``) as floats, counts as
    ints (as SQL gives them)."""
    if values is None:
        return {}
    listed = values.tolist()
    return {name: float(v) if name.endswith("_sum") else int(v) for name, v in zip(fields, listed, strict=True)}


def _add_groups(into: dict[Any, Vector], groups: dict[Any, Vector]) -> None:
    for key, values in groups.items():
        mine = into.get(key)
        if mine is None:
            into[key] = values.copy()
        else:
            mine += values


@dataclass
class Sums:
    """The additive counts of a period as vectors (fields: :data:`CALL_FIELDS`, :data:`ENTRY_FIELDS`,
    :data:`AGENT_FIELDS`): calls per dimension (``all``, ``intent``, ``flow``, local ``hour``), queue entries
    per ``queue`` and ``hour``, per agent, per queued call, and the waits of answered queued calls (for
    percentiles)."""

    calls: dict[str, dict[Any, Vector]] = field(default_factory=lambda: {d: {} for d in CALL_DIMENSIONS})
    entries: dict[str, dict[Any, Vector]] = field(default_factory=lambda: {d: {} for d in ENTRY_DIMENSIONS})
    agents: dict[Any, Vector] = field(default_factory=dict)
    queued: Vector | None = None
    waits: list[Vector] = field(default_factory=list)  # float64 chunks, in no order

    def add(self, other: Sums) -> Sums:
        """Add ``other``'s counts to these (returns self)."""
        for mine, theirs in ((self.calls, other.calls), (self.entries, other.entries)):
            for dimension, groups in theirs.items():
                _add_groups(mine[dimension], groups)
        _add_groups(self.agents, other.agents)
        if other.queued is not None:
            self.queued = other.queued.copy() if self.queued is None else self.queued + other.queued
        self.waits.extend(other.waits)
        return self

    def to_json(self) -> str:
        """The counts as JSON (groups as [key, counts] pairs: keys may be None or numbers)."""
        def pairs(groups: dict[Any, Vector]) -> list[Any]:
            return [[k, v.tolist()] for k, v in groups.items()]

        return json.dumps({"calls": {d: pairs(g) for d, g in self.calls.items()},
                           "entries": {d: pairs(g) for d, g in self.entries.items()}, "agents": pairs(self.agents),
                           "queued": None if self.queued is None else self.queued.tolist()})  # fmt: skip

    @classmethod
    def from_json(cls, text: str, waits: bytes) -> Sums:
        """Sums from :meth:`to_json` and :meth:`packed_waits`."""
        data = json.loads(text)

        def groups(pairs: list[Any]) -> dict[Any, Vector]:
            return {k: np.array(v, dtype=np.float64) for k, v in pairs}

        queued = data["queued"]
        return cls({d: groups(g) for d, g in data["calls"].items()},
                   {d: groups(g) for d, g in data["entries"].items()}, groups(data["agents"]),
                   None if queued is None else np.array(queued, dtype=np.float64),
                   [np.frombuffer(waits, "<f8")])  # fmt: skip

    def packed_waits(self) -> bytes:
        """The waits as little-endian float64."""
        return self.all_waits().astype("<f8").tobytes()

    def all_waits(self) -> Vector:
        """The waits in one array."""
        return np.concatenate(self.waits) if self.waits else np.zeros(0)


def nearest_rank(values: np.ndarray[Any, Any], fraction: float) -> float | None:
    """The nearest-rank ``fraction`` (0..1) percentile of ``values``; None when empty."""
    if not len(values):
        return None
    rank = max(1, math.ceil(fraction * len(values))) - 1
    return float(np.partition(values, rank)[rank])


def compute_hours(store: Store, since: float, until: float, options: ReportOptions,
                  ranges: q.Ranges = None) -> dict[int, Sums]:  # fmt: skip
    """The sums of [since, until) per hour index from ``since`` (over more than two days, per hour of the day:
    :func:`ivr.reports.queries.hour_key`), straight from the calls and queue entries. With ``ranges`` (whole
    hours from ``since``), only those, per hour index however long the period."""
    out: dict[int, Sums] = {}
    names: dict[int, int] = {}

    def at(index: int) -> tuple[Sums, int]:
        if index not in out:
            exact = ranges is not None or until - since <= q.LONG_RANGE
            out[index] = Sums()
            names[index] = dt.datetime.fromtimestamp(since + index * 3600 + 1).hour if exact else index
        return out[index], names[index]

    for row in q.call_cube(store, since, until, options, ranges):
        sums, hour = at(row["hour_index"])
        values = vector(row, CALL_FIELDS)
        for dimension, key in (("all", None), ("intent", row["intent"]), ("flow", row["flow"]), ("hour", hour)):
            _add_groups(sums.calls[dimension], {key: values})
    for row in q.entry_cube(store, since, until, options, ranges):
        sums, hour = at(row["hour_index"])
        values = vector(row, ENTRY_FIELDS)
        _add_groups(sums.entries["queue"], {row["queue"]: values})
        _add_groups(sums.entries["hour"], {hour: values})
    for row in q.agent_cube(store, since, until, options, ranges):
        _add_groups(at(row["hour_index"])[0].agents, {row["key"]: vector(row, AGENT_FIELDS)})
    for row in q.queued_call_cube(store, since, until, options, ranges):
        sums, _ = at(row["hour_index"])
        sums.queued = vector(row, ENTRY_FIELDS)
    waits: dict[int, list[float]] = {}
    for row in q.answered_waits(store, since, until, ranges):
        at(row["hour_index"])
        waits.setdefault(row["hour_index"], []).append(float(row["wait"]))
    for index, chunk in waits.items():
        out[index].waits.append(np.array(chunk, dtype=np.float64))
    return out


def compute(store: Store, since: float, until: float, options: ReportOptions) -> Sums:
    """The sums of [since, until) straight from the calls and queue entries (what the roll-ups add up to)."""
    total = Sums()
    for sums in compute_hours(store, since, until, options).values():
        total.add(sums)
    return total


def whole_days(since: float, until: float) -> list[dt.date] | None:
    """The local days [since, until) spans exactly, or None when it does not start and end at midnight."""
    first, last = dt.date.fromtimestamp(since), dt.date.fromtimestamp(until - 1)
    if first > last or day_bounds(first)[0] != since or day_bounds(last)[1] != until:
        return None
    return days_between(first, last)


def range_sums(store: Store, since: float, until: float, options: ReportOptions) -> Sums:
    """The sums of [since, until): added up from day roll-ups when the range is whole days, else computed."""
    days = whole_days(since, until)
    if days is None:
        return compute(store, since, until, options)
    total = Sums()
    for sums in day_sums(store, days, options):
        total.add(sums)
    return total


_kept: weakref.WeakKeyDictionary[sa.Engine, dict[tuple[str, str], tuple[int, Sums]]] = weakref.WeakKeyDictionary()
_kept_lock = threading.Lock()
KEPT_MAX = 5_000
"""Roll-ups remembered per database in a process (an hour's or a day's is ~20 kB: 92 days ~50 MB)."""


def day_sums(store: Store, days: Sequence[dt.date], options: ReportOptions) -> list[Sums]:
    """Each day's sums (shared: add them up, never change them): its roll-up when no write has touched the
    day since it was made, else added up from its hours, of which those written to are made again (all at
    once, with one query per kind of count), and stored."""
    if not days:
        return []
    key = options.key()
    bounds = {d.isoformat(): day_bounds(d) for d in days}
    versions = _versions(store, bounds)
    found = _kept_sums(store, key, versions)
    stale = [p for p in versions if p not in found]
    if stale:
        fold_changes(store)
        marks = _marks(store, bounds[stale[0]][0], bounds[stale[-1]][1])
        hours = {p: _hours(*bounds[p]) for p in stale}
        hour_versions = {h: _version(marks, s, e) for spans in hours.values() for h, (s, e) in spans.items()}
        kept_hours = _kept_sums(store, key, hour_versions)
        missing = {h for h in hour_versions if h not in kept_hours}
        fresh = _compute_periods(store, bounds[days[0].isoformat()][0], options,
                                 {h: spans[h] for spans in hours.values() for h in spans if h in missing})
        kept_hours.update(fresh)
        for period in stale:
            total = Sums()
            for hour in hours[period]:
                total.add(kept_hours[hour])
            found[period] = total
        rows = {h: (hour_versions[h], kept_hours[h]) for h in missing}
        rows.update({p: (versions[p], found[p]) for p in stale})
        _store(store, key, rows)
        with _kept_lock:
            kept = _kept.setdefault(store.engine, {})
            if len(kept) > KEPT_MAX:
                kept.clear()
            kept.update({(p, key): row for p, row in rows.items()})
            kept.update({(h, key): (hour_versions[h], kept_hours[h]) for h in hour_versions})
    return [found[d.isoformat()] for d in days]


def _hours(since: float, until: float) -> dict[str, tuple[float, float]]:
    """The hours of a day: period name -> [start, end)."""
    starts = [since + 3600.0 * i for i in range(round((until - since) / 3600))]
    return {f"h{int(s)}": (s, min(s + 3600.0, until)) for s in starts}


def _compute_periods(store: Store, origin: float, options: ReportOptions,
                     spans: dict[str, tuple[float, float]]) -> dict[str, Sums]:  # fmt: skip
    """The sums of each of ``spans`` (hours), read together: one query per kind of count."""
    if not spans:
        return {}
    by_index = {round((s - origin) / 3600): name for name, (s, _) in spans.items()}
    if any(abs(s - origin - 3600 * round((s - origin) / 3600)) > 1e-6 for s, _ in spans.values()):
        # hours not whole hours apart (a DST change of half an hour): each on its own
        return {name: compute(store, s, e, options) for name, (s, e) in spans.items()}
    ranges = _merged(sorted(spans.values()))
    computed = compute_hours(store, origin, max(e for _, e in spans.values()), options, ranges)
    return {name: computed.get(index, Sums()) for index, name in by_index.items()}


def _merged(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for low, high in spans:
        if out and low <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], high))
        else:
            out.append((low, high))
    return out


def _kept_sums(store: Store, key: str, versions: dict[str, int]) -> dict[str, Sums]:
    """The sums of ``versions``' periods made at those versions: remembered in the process, else stored."""
    with _kept_lock:
        kept = _kept.setdefault(store.engine, {})
        hits = {p: kept.get((p, key)) for p in versions}
    found = {p: hit[1] for p, hit in hits.items() if hit is not None and hit[0] == versions[p]}
    missing = {p: v for p, v in versions.items() if p not in found}
    if missing:
        stored = _stored(store, key, missing)
        found.update(stored)
        with _kept_lock:
            _kept.setdefault(store.engine, {}).update({(p, key): (missing[p], s) for p, s in stored.items()})
    return found


def _slot_counts(first: int, end: int) -> Any:
    """Per slot in [first, end): its folded counter and each unfolded change (a subquery: slot, n)."""
    m, c = t.report_marks.c, t.report_changes.c
    folded = sa.select(m.slot.label("slot"), m.version.label("n")).where(m.slot >= first, m.slot < end)
    pending = sa.select(c.slot.label("slot"), sa.literal(1).label("n")).where(c.slot >= first, c.slot < end)
    return sa.union_all(folded, pending).subquery()


def _versions(store: Store, bounds: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Each period's change count, added up by the database in one snapshot (one row per period)."""
    names = list(bounds)
    slots = [math.floor(bounds[p][0] / SLOT) for p in names]
    end = math.ceil(bounds[names[-1]][1] / SLOT)
    counts = _slot_counts(slots[0], end)
    period = sa.case(*((counts.c.slot < limit, i) for i, limit in enumerate([*slots[1:], end])), else_=None)
    query = sa.select(period.label("period"), sa.func.sum(counts.c.n)).group_by(period)
    with store.engine.connect() as conn:
        sums = {int(i): int(total) for i, total in conn.execute(query).all() if i is not None}
    return {p: sums.get(i, 0) for i, p in enumerate(names)}


def _marks(store: Store, since: float, until: float) -> dict[int, int]:
    counts = _slot_counts(math.floor(since / SLOT), math.ceil(until / SLOT))
    query = sa.select(counts.c.slot, sa.func.sum(counts.c.n)).group_by(counts.c.slot)
    with store.engine.connect() as conn:
        return {int(slot): int(n) for slot, n in conn.execute(query).all()}


def fold_changes(store: Store) -> None:
    """Move the changes the triggers logged into the per-slot counters (one transaction: every sum a reader
    can see stays the same; readers add up counters and unfolded changes alike). On PostgreSQL in one snapshot
    (REPEATABLE READ), so changes committed meanwhile stay for the next fold; a fold racing another gives way."""
    c, m = t.report_changes.c, t.report_marks
    options = {} if store.is_sqlite else {"isolation_level": "REPEATABLE READ"}
    try:
        with store.engine.connect().execution_options(**options) as conn, conn.begin():
            last = conn.execute(sa.select(sa.func.max(c.id))).scalar()
            if last is None:
                return
            counts = conn.execute(sa.select(c.slot, sa.func.count()).where(c.id <= last).group_by(c.slot)
                                  .order_by(c.slot)).all()  # fmt: skip
            insert = (sqlite.insert if store.is_sqlite else postgresql.insert)(m)
            upsert = insert.on_conflict_do_update(index_elements=[m.c.slot],
                                                  set_={"version": m.c.version + insert.excluded.version})
            conn.execute(upsert, [{"slot": slot, "version": n} for slot, n in counts])
            conn.execute(t.report_changes.delete().where(c.id <= last))
    except sa.exc.OperationalError:
        pass  # another fold took these changes first, or the database is busy: they wait for the next fold


def _version(marks: dict[int, int], since: float, until: float) -> int:
    """The sum of the change counters of [since, until) (grows with every write to it)."""
    first, end = math.floor(since / SLOT), math.ceil(until / SLOT)
    if end - first < len(marks):
        return sum(marks.get(slot, 0) for slot in range(first, end))
    return sum(v for slot, v in marks.items() if first <= slot < end)


def _stored(store: Store, key: str, versions: dict[str, int]) -> dict[str, Sums]:
    """The stored roll-ups of ``versions``' periods that were made at those versions."""
    r = t.report_rollups.c
    query = sa.select(r.period, r.version, r.data, r.waits).where(r.options == key, r.period.in_(list(versions)))
    with store.engine.connect() as conn:
        return {period: Sums.from_json(data, waits) for period, version, data, waits in conn.execute(query)
                if versions[period] == version}  # fmt: skip


def _store(store: Store, key: str, rows: dict[str, tuple[int, Sums]]) -> None:
    if not rows:
        return
    table = t.report_rollups
    insert = (sqlite.insert if store.is_sqlite else postgresql.insert)(table)
    upsert = insert.on_conflict_do_update(index_elements=[table.c.period, table.c.options],
                                          set_={n: insert.excluded[n] for n in ("version", "data", "waits",
                                                                                "computed_at")})  # fmt: skip
    now = time.time()
    values = [{"period": p, "options": key, "version": v, "data": s.to_json(), "waits": s.packed_waits(),
               "computed_at": now} for p, (v, s) in rows.items()]  # fmt: skip
    with store.engine.begin() as conn:
        conn.execute(upsert, values)


def build_rollups(store: Store, first: dt.date, last: dt.date, options: ReportOptions) -> int:
    """Make the roll-ups of the days ``first`` to ``last`` that are missing or stale (a database that was
    never summarised, at start); returns how many days were looked at."""
    days = days_between(first, last)
    for day in days:
        day_sums(store, [day], options)
    return len(days)


BUILD_DAYS = 92
"""Days back ``ivr serve`` keeps rolled up (the longest range the supervisor page shows)."""
REFRESH_SECONDS = 15.0
"""How often ``ivr serve`` brings those roll-ups up to date (a page view then pays for the last seconds)."""


def keep_up_to_date(store: Store, options: ReportOptions, stop: threading.Event, days: int = BUILD_DAYS,
                    every: float = REFRESH_SECONDS) -> threading.Thread:  # fmt: skip
    """In a daemon thread until ``stop`` is set: make the roll-ups of the last ``days`` days (a database that
    was never summarised, or with other options, is ready before a supervisor asks), then every ``every``
    seconds remake those that calls have changed since."""
    import logging

    log = logging.getLogger(__name__)

    def run() -> None:
        started = time.perf_counter()
        try:
            today = dt.date.today()
            for day in days_between(today - dt.timedelta(days=days - 1), today):
                if stop.is_set():
                    return
                day_sums(store, [day], options)
            log.info("report roll-ups of %d days ready in %.1f s", days, time.perf_counter() - started)
            while not stop.wait(every):
                fold_changes(store)
                today = dt.date.today()
                day_sums(store, days_between(today - dt.timedelta(days=days - 1), today), options)
        except Exception:  # a report is never worth a node: log and stop (pages make roll-ups on use)
            if not stop.is_set():
                log.exception("keeping report roll-ups up to date failed")

    thread = threading.Thread(target=run, name="report-rollups", daemon=True)
    thread.start()
    return thread
