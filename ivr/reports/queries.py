"""The report's SQL: aggregates over the calls and queue entries of a time range, grouped per hour.

Every figure is a COUNT/SUM over an indexed range (migration 0005 adds covering indexes), so an hour or a day
costs what its rows cost; :mod:`ivr.reports.rollups` keeps the sums per hour and day, and ratios are taken
afterwards in :mod:`ivr.reports.report`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from ivr.reports.definitions import TRANSFER_OUTCOMES, ReportOptions
from ivr.store import Store
from ivr.store import schema as t

C = t.calls.c
Q = t.queue_entries.c
DAY = 86400.0
Row = dict[str, Any]


def count_if(cond: ColumnElement[Any]) -> ColumnElement[Any]:
    """How many rows meet ``cond``."""
    return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)


def sum_if(cond: ColumnElement[Any], value: Any) -> ColumnElement[Any]:
    """The sum of ``value`` over the rows that meet ``cond``."""
    return sa.func.coalesce(sa.func.sum(sa.case((cond, value), else_=0.0)), 0.0)


def contained(options: ReportOptions) -> ColumnElement[bool]:
    """A call ended in the bot by the flow's own ending: never queued, no transfer, not a hang-up, error or
    fallback (docs/reports.md, containment)."""
    excluded = sorted(TRANSFER_OUTCOMES | options.not_served_outcomes)
    return sa.and_(C.ended_at.is_not(None), C.queue.is_(None), C.outcome.is_not(None), C.outcome != "",
                   C.outcome.not_in(excluded), C.outcome.not_like("rejected%"))  # fmt: skip


def transferred() -> ColumnElement[bool]:
    """The bot handed the call, or tried to, to a person: it joined a queue or was sent to a number."""
    return sa.or_(C.queue.is_not(None), C.outcome.in_(sorted(TRANSFER_OUTCOMES)))


def fcr_eligible() -> ColumnElement[bool]:
    """Calls FCR can judge: a caller number and an intent."""
    return sa.and_(C.caller != "", C.intent.is_not(None), C.intent != "")


def repeated(options: ReportOptions) -> ColumnElement[bool]:
    """The same number called again about the same intent within ``fcr_days`` days (``calls.repeat_at``, set
    by the store when the later call ends)."""
    return sa.and_(C.repeat_at.is_not(None), C.repeat_at <= C.started_at + options.fcr_days * DAY)


def call_columns(options: ReportOptions, fcr: bool = True) -> list[ColumnElement[Any]]:
    """The counts of the call figures (containment, transfers, surveys and, with ``fcr``, repeat calls)."""
    cols: list[ColumnElement[Any]] = [
        sa.func.count().label("calls"),
        sa.func.count(C.ended_at).label("ended"),
        count_if(contained(options)).label("contained"),
        count_if(transferred()).label("transferred"),
        *survey_columns(),
    ]
    if fcr:
        cols += [count_if(fcr_eligible()).label("fcr_calls"),
                 count_if(sa.and_(fcr_eligible(), repeated(options))).label("fcr_repeated")]  # fmt: skip
    return cols


def wrap_up(queue: ColumnElement[Any], options: ReportOptions) -> ColumnElement[Any]:
    """The after-call work of an entry's queue, in seconds."""
    if not options.wrap_up:
        return sa.literal(float(options.default_wrap_up))
    return sa.case(dict(options.wrap_up), value=queue, else_=float(options.default_wrap_up))


def entry_columns(enqueued: Any, answered: Any, ended: Any, state: Any, queue: Any,
                  options: ReportOptions) -> list[ColumnElement[Any]]:  # fmt: skip
    """The counts and sums of the queue figures over entries (waits measured from ``enqueued``)."""
    has_result = sa.or_(answered.is_not(None), ended.is_not(None))
    abandoned = state == "abandoned"
    handled = sa.and_(answered.is_not(None), ended.is_not(None))
    return [
        sa.func.count().label("queued"),
        count_if(has_result).label("offered"),
        sa.func.count(answered).label("answered"),
        count_if(abandoned).label("abandoned"),
        count_if(sa.and_(abandoned, ended - enqueued < options.short_abandon_seconds)).label("short_abandoned"),
        count_if(sa.and_(answered.is_not(None), answered - enqueued <= options.service_level_seconds))
        .label("answered_within"),
        sum_if(answered.is_not(None), answered - enqueued).label("wait_sum"),
        count_if(handled).label("handled"),
        sum_if(handled, ended - answered).label("talk_sum"),
        sum_if(handled, wrap_up(queue, options)).label("wrap_sum"),
    ]


@functools.lru_cache(maxsize=64)
def zero_calls(options: ReportOptions) -> Row:
    """Every count of :func:`call_counts` at zero (for a group with no calls)."""
    return {c.name: 0 for c in call_columns(options, True)}


@functools.lru_cache(maxsize=64)
def zero_entries(options: ReportOptions) -> Row:
    """Every count of :func:`entry_columns` at zero (for a group with no queue entries)."""
    return {c.name: 0 for c in entry_columns(Q.enqueued_at, Q.answered_at, Q.ended_at, Q.state, Q.queue, options)}


def _floor_int(store: Store, value: ColumnElement[Any]) -> ColumnElement[Any]:
    # SQLite's CAST truncates (= floor for the positive times here); PostgreSQL's rounds.
    return sa.cast(value if store.is_sqlite else sa.func.floor(value), sa.Integer)


def hour_index(store: Store, column: Any, since: float) -> ColumnElement[Any]:
    """Whole hours from ``since`` to ``column`` (cheap for the database; :func:`local_hour` names them)."""
    return _floor_int(store, (column - since) / 3600.0)


LONG_RANGE = 2 * DAY + 3600


def hour_key(store: Store, column: Any, since: float, until: float) -> ColumnElement[Any]:
    """The group of ``column`` for per-hour figures: its hour index, or over more than two days the hour of
    the day (``since`` is a local midnight; an hour off after a DST change inside the range)."""
    index = hour_index(store, column, since)
    return index if until - since <= LONG_RANGE else index % 24


Ranges = Sequence[tuple[float, float]] | None
"""Parts of a period to read alone (the hours whose roll-ups are stale), or None for all of it."""


def within(column: Any, since: float, until: float, ranges: Ranges = None) -> ColumnElement[bool]:
    """``column`` in [since, until), or with ``ranges`` in one of them."""
    if ranges is None:
        return sa.and_(column >= since, column < until)
    return sa.or_(*(sa.and_(column >= low, column < high) for low, high in ranges))


def group_key(store: Store, column: Any, since: float, until: float, ranges: Ranges = None) -> ColumnElement[Any]:
    """:func:`hour_key`, or with ``ranges`` the hour index from ``since`` however long the period."""
    return hour_index(store, column, since) if ranges is not None else hour_key(store, column, since, until)


def local_hour(since: float, until: float, key: int) -> int:
    """The local clock hour (0-23) of an :func:`hour_key` group (exact across DST changes up to two days)."""
    if until - since > LONG_RANGE:
        return key
    return dt.datetime.fromtimestamp(since + key * 3600 + 1).hour


def _rows(store: Store, query: sa.Select[Any]) -> list[Row]:
    with store.engine.connect() as conn:
        result = conn.execute(query)
        keys = list(result.keys())
        return [dict(zip(keys, row, strict=True)) for row in result]


def survey_columns(calls: Any = C) -> list[ColumnElement[Any]]:
    """The survey counts (CSAT and NPS) of the calls in a query."""
    return [
        sa.func.count(calls.csat).label("csat_responses"),
        sa.func.coalesce(sa.func.sum(calls.csat), 0.0).label("csat_sum"),
        count_if(calls.csat >= 4).label("csat_satisfied"),
        sa.func.count(calls.nps).label("nps_responses"),
        count_if(calls.nps >= 9).label("promoters"),
        count_if(calls.nps <= 6).label("detractors"),
    ]


def call_cube(store: Store, since: float, until: float, options: ReportOptions, ranges: Ranges = None) -> list[Row]:
    """The call counts of calls started in [since, until) (or ``ranges``) per (intent, flow, hour index): one
    scan of the covering index; every per-dimension figure is a sum over these few groups."""
    hour = group_key(store, C.started_at, since, until, ranges)
    query = (
        sa.select(C.intent.label("intent"), C.flow.label("flow"), hour.label("hour_index"), *call_columns(options))
        .where(within(C.started_at, since, until, ranges))
        .group_by(C.intent, C.flow, hour)
    )
    return _rows(store, query)


def entry_cube(store: Store, since: float, until: float, options: ReportOptions, ranges: Ranges = None) -> list[Row]:
    """The queue counts of entries that joined in [since, until) (or ``ranges``) per (queue, hour index)."""
    hour = group_key(store, Q.enqueued_at, since, until, ranges)
    query = (
        sa.select(Q.queue.label("queue"), hour.label("hour_index"),
                  *entry_columns(Q.enqueued_at, Q.answered_at, Q.ended_at, Q.state, Q.queue, options))
        .where(within(Q.enqueued_at, since, until, ranges))
        .group_by(Q.queue, hour)
    )
    return _rows(store, query)


def agent_cube(store: Store, since: float, until: float, options: ReportOptions, ranges: Ranges = None) -> list[Row]:
    """Queue counts per (agent, hour index) of the entries they answered that joined in [since, until) (or
    ``ranges``), and the surveys of calls started then that an agent took (``calls.agent``: the last agent
    connected)."""
    hour = group_key(store, Q.enqueued_at, since, until, ranges)
    entries = (
        sa.select(Q.agent.label("key"), hour.label("hour_index"),
                  *entry_columns(Q.enqueued_at, Q.answered_at, Q.ended_at, Q.state, Q.queue, options))
        .where(within(Q.enqueued_at, since, until, ranges), Q.agent.is_not(None), Q.answered_at.is_not(None))
        .group_by(hour, Q.agent)
    )
    call_hour = group_key(store, C.started_at, since, until, ranges)
    surveys = (
        sa.select(C.agent.label("key"), call_hour.label("hour_index"), *survey_columns())
        .where(within(C.started_at, since, until, ranges), C.agent.is_not(None))
        .group_by(C.agent, call_hour)
    )
    return _rows(store, entries) + _rows(store, surveys)


def per_call_entries(since: float, until: float, ranges: Ranges = None) -> tuple[Any, Any]:
    """Each queued call that first joined a queue in [since, until) (or ``ranges``): its first join time and
    its last entry (the one that says how the wait ended, whenever it joined), so a call moved from queue to
    queue counts once, in the period it started waiting."""
    joined = sa.select(Q.call_id).where(within(Q.enqueued_at, since, until, ranges))
    first_at = sa.func.min(Q.enqueued_at)
    per_call = (
        sa.select(Q.call_id, first_at.label("first_at"), sa.func.max(Q.id).label("last_id"))
        .where(Q.call_id.in_(joined))
        .group_by(Q.call_id)
        .having(within(first_at, since, until, ranges))
        .subquery()
    )
    last = t.queue_entries.alias("last")
    return per_call, last


def queued_call_cube(store: Store, since: float, until: float, options: ReportOptions,
                     ranges: Ranges = None) -> list[Row]:  # fmt: skip
    """Queue figures' counts per queued call (a call that overflowed from queue to queue counts once, its
    wait from its first queue to its answer), per hour index of its first join."""
    per_call, last = per_call_entries(since, until, ranges)
    hour = group_key(store, per_call.c.first_at, since, until, ranges)
    cols = entry_columns(per_call.c.first_at, last.c.answered_at, last.c.ended_at, last.c.state, last.c.queue,
                         options)  # fmt: skip
    query = sa.select(hour.label("hour_index"), *cols).select_from(per_call.join(last, last.c.id == per_call.c.last_id))
    return _rows(store, query.group_by(hour))


def answered_waits(store: Store, since: float, until: float, ranges: Ranges = None) -> list[Row]:
    """The wait of each answered queued call (``wait``, from its first join to its answer), with the hour
    index of its first join."""
    per_call, last = per_call_entries(since, until, ranges)
    hour = group_key(store, per_call.c.first_at, since, until, ranges)
    query = (
        sa.select(hour.label("hour_index"), (last.c.answered_at - per_call.c.first_at).label("wait"))
        .select_from(per_call.join(last, last.c.id == per_call.c.last_id))
        .where(last.c.answered_at.is_not(None))
    )
    return _rows(store, query)


def intent_examples(store: Store, since: float, until: float, intent: str, limit: int) -> list[str]:
    """Up to ``limit`` different things callers said that were recognised as ``intent`` (as stored: digits
    starred)."""
    tu = t.turns.c
    query = (
        sa.select(tu.text)
        .select_from(t.calls.join(t.turns, tu.call_id == C.id))
        .where(C.started_at >= since, C.started_at < until, C.intent == intent, tu.speaker == "caller",
               tu.intent == intent)
        .distinct()
        .limit(limit)
    )
    return [r["text"] for r in _rows(store, query)]


def opening_requests(store: Store, since: float, until: float, limit: int) -> list[Row]:
    """The most frequent first things callers said (lower-cased), with how many calls and their intent."""
    tu = t.turns.c
    first = (
        sa.select(sa.func.min(tu.id).label("turn_id"))
        .select_from(t.calls.join(t.turns, tu.call_id == C.id))
        .where(C.started_at >= since, C.started_at < until, tu.speaker == "caller")
        .group_by(C.id)
        .subquery()
    )
    text = sa.func.lower(tu.text)
    query = (
        sa.select(text.label("question"), sa.func.count().label("calls"), sa.func.max(tu.intent).label("intent"))
        .select_from(first.join(t.turns, tu.id == first.c.turn_id))
        .group_by(text)
        .order_by(sa.desc("calls"), text)
        .limit(limit)
    )
    return _rows(store, query)
