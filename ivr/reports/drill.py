"""Drill-down: the calls behind a figure, as SQL conditions on ``calls`` built from the same definitions as
the figures (docs/reports.md), so a listing holds exactly the calls a tile or a bar counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.elements import ColumnElement

from ivr.reports import queries as q
from ivr.reports.definitions import ReportOptions
from ivr.store import schema as t

C = q.C
NO_INTENT = "(none)"
"""The intent filter value for calls without an intent (as the transfer-rate-by-intent table names them)."""

CALL_FIGURES = {
    "contained": "contained in the bot",
    "transferred": "transferred (or tried)",
    "repeated": "called again on the same intent (not first-contact resolved)",
    "csat": "with a CSAT answer",
    "nps": "with an NPS answer",
}
QUEUE_FIGURES = {
    "queued": "queued",
    "answered": "answered by an agent",
    "answered_within": "answered within the service level",
    "abandoned": "abandoned in queue",
}
FIGURES = {**CALL_FIGURES, **QUEUE_FIGURES}
"""The figures a listing can be narrowed to, with how the page names them."""


@dataclass(frozen=True)
class CallFilter:
    """Which calls of [since, until) to list: those a ``figure`` counts (empty: every call started then),
    optionally of one queue, agent, intent, flow or clock ``hour``. Queue figures count queue entries that
    joined in the range; with no queue, agent or hour, each queued call once by its last entry (as the
    headline tiles do)."""

    since: float
    until: float
    figure: str = ""
    queue: str = ""
    agent: str = ""
    intent: str = ""
    flow: str = ""
    hour: int | None = None


def _hour_keys(since: float, until: float, hour: int) -> list[int]:
    """The :func:`ivr.reports.queries.hour_key` groups that :func:`ivr.reports.queries.local_hour` names ``hour``."""
    if until - since > q.LONG_RANGE:
        return [hour]
    count = int((until - since) // 3600) + 1
    return [k for k in range(count) if q.local_hour(since, until, k) == hour]


def _hour_is(store: Any, column: Any, f: CallFilter) -> ColumnElement[bool]:
    assert f.hour is not None
    return q.hour_key(store, column, f.since, f.until).in_(_hour_keys(f.since, f.until, f.hour))


def _entry_test(figure: str, enqueued: Any, answered: Any, state: Any, options: ReportOptions) -> Any:
    if figure == "answered":
        return answered.is_not(None)
    if figure == "answered_within":
        return sa.and_(answered.is_not(None), answered - enqueued <= options.service_level_seconds)
    if figure == "abandoned":
        return state == "abandoned"
    return sa.true()


def _call_conditions(store: Any, f: CallFilter, options: ReportOptions) -> list[Any]:
    conds: list[Any] = [C.started_at >= f.since, C.started_at < f.until]
    if f.figure == "contained":
        conds.append(q.contained(options))
    elif f.figure == "transferred":
        conds.append(q.transferred())
    elif f.figure == "repeated":
        conds += [q.fcr_eligible(), q.repeated(options)]
    elif f.figure == "csat":
        conds.append(C.csat.is_not(None))  # the store keeps only answers in range: what the figures count
    elif f.figure == "nps":
        conds.append(C.nps.is_not(None))
    if f.queue:
        conds.append(C.queue == f.queue)
    if f.agent:
        conds.append(C.agent == f.agent)
    if f.hour is not None:
        conds.append(_hour_is(store, C.started_at, f))
    return conds


def _queue_conditions(store: Any, f: CallFilter, options: ReportOptions) -> list[Any]:
    if not (f.queue or f.agent or f.hour is not None):
        per_call, last = q.per_call_entries(f.since, f.until)
        test = _entry_test(f.figure, per_call.c.first_at, last.c.answered_at, last.c.state, options)
        ids = sa.select(per_call.c.call_id).select_from(per_call.join(last, last.c.id == per_call.c.last_id))
        return [C.id.in_(ids.where(test))]
    e = t.queue_entries.alias("drill_entry")
    conds = [e.c.enqueued_at >= f.since, e.c.enqueued_at < f.until,
             _entry_test(f.figure, e.c.enqueued_at, e.c.answered_at, e.c.state, options)]  # fmt: skip
    if f.queue:
        conds.append(e.c.queue == f.queue)
    if f.agent:
        conds += [e.c.agent == f.agent, e.c.answered_at.is_not(None)]
    if f.hour is not None:
        conds.append(_hour_is(store, e.c.enqueued_at, f))
    # not correlated: the range's entries are read once through the enqueued_at index
    return [C.id.in_(sa.select(e.c.call_id).where(*conds))]


def conditions(store: Any, f: CallFilter, options: ReportOptions | None = None) -> list[Any]:
    """SQL conditions on ``calls`` that hold for exactly the calls ``f`` describes."""
    options = options or ReportOptions()
    if f.figure and f.figure not in FIGURES:
        raise ValueError(f"figure must be one of {', '.join(FIGURES)}")
    conds = _queue_conditions(store, f, options) if f.figure in QUEUE_FIGURES else _call_conditions(store, f, options)
    if f.intent == NO_INTENT:
        conds.append(sa.or_(C.intent.is_(None), C.intent == ""))
    elif f.intent:
        conds.append(C.intent == f.intent)
    if f.flow:
        conds.append(C.flow == f.flow)
    return conds


def nps_group(score: float | None) -> str:
    """How NPS counts an answer: 'promoter' (9-10), 'passive' (7-8), 'detractor' (0-6), '' for none."""
    if score is None:
        return ""
    return "promoter" if score >= 9 else "detractor" if score <= 6 else "passive"


def seen_by(agent: str) -> ColumnElement[bool]:
    """Calls offered to or taken by ``agent`` (what :func:`ivr.web.data.can_see_call` lets an agent see)."""
    e = t.queue_entries.alias("seen_entry")
    return sa.or_(C.agent == agent, C.id.in_(sa.select(e.c.call_id).where(e.c.agent == agent)))
