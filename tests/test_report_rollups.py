"""Roll-ups (ivr.reports.rollups) give exactly the figures computed straight from the calls, on a store with a
realistic mix, and stay exact as later writes land: a call ending after midnight, a caller moved from queue to
queue across midnight, a repeat call days later (FCR), a survey after the call ended, a call erased."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import pytest

from ivr.bench.reports import fill_store
from ivr.reports import ReportOptions, build_report, daily_trend, day_bounds, report
from ivr.reports import rollups as r
from ivr.store import Store, open_store

FIRST = dt.date(2026, 5, 4)
DAYS = [FIRST + dt.timedelta(days=n) for n in range(4)]
OPTIONS = ReportOptions(wrap_up={"support": 15.0, "vip": 5.0}, service_level_seconds=25.0)
PAGE = ("summary", "hours", "queues", "agents", "flows", "intents")
MIDNIGHT = day_bounds(DAYS[1])[0]


def same(a: Any, b: Any, where: str = "") -> None:
    """``a`` equals ``b``, floats up to the order they were added in."""
    if isinstance(a, float) or isinstance(b, float):
        assert a is not None and b is not None and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9), (where, a, b)
    elif isinstance(a, dict) and isinstance(b, dict):
        assert a.keys() == b.keys(), (where, sorted(a.keys() ^ b.keys()))
        for key in a:
            same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list) and isinstance(b, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{where}[{i}]")
    else:
        assert a == b, (where, a, b)


def direct(store: Store, since: float, until: float, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The page's tables computed straight from the calls (no roll-up)."""
    with monkeypatch.context() as m:
        m.setattr(report, "range_sums", r.compute)
        built = build_report(store, since, until, OPTIONS, PAGE)
    return {"head": built.summary, **{t.name: t.rows for t in built.tables}}


def rolled(store: Store, since: float, until: float) -> dict[str, Any]:
    built = build_report(store, since, until, OPTIONS, PAGE)
    return {"head": built.summary, **{t.name: t.rows for t in built.tables}}


def check(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every day and the whole range: roll-ups == direct; the trend == each day's direct summary."""
    for day in DAYS:
        since, until = day_bounds(day)
        same(rolled(store, since, until), direct(store, since, until, monkeypatch), day.isoformat())
    since, until = day_bounds(DAYS[0])[0], day_bounds(DAYS[-1])[1]
    whole = rolled(store, since, until)
    same(whole, direct(store, since, until, monkeypatch), "range")
    for row in daily_trend(store, DAYS[0], DAYS[-1], OPTIONS):
        expected = direct(store, row["since"], row["until"], monkeypatch)["head"]
        for key, value in row.items():
            if key in expected and key not in ("since", "until"):
                same(value, expected[key], f"trend {row['day']}.{key}")


def edge_calls(store: Store) -> None:
    """Calls around midnight between DAYS[0] and DAYS[1], some still open (their ends come later)."""
    store.start_call("late", "+1999", "100", "hotline", MIDNIGHT - 120)  # ends after midnight (later)
    store.set_context("late", {"intent": "billing"})
    entry = store.add_queue_entry("late", "support", 0, MIDNIGHT - 60, {})
    store.update_queue_entry(entry, state="overflowed", ended_at=MIDNIGHT + 30, outcome="requeued:vip")
    moved = store.add_queue_entry("late", "vip", 0, MIDNIGHT + 30, {})  # moved queue after midnight
    store.update_queue_entry(moved, state="connected", answered_at=MIDNIGHT + 50, agent="agent07")
    store.start_call("first", "+1998", "100", "hotline", MIDNIGHT - 3600)
    store.set_context("first", {"intent": "refund"})
    store.end_call("first", MIDNIGHT - 3500, "completed")


@pytest.fixture
def mixed(tmp_path: Path) -> Store:
    store = open_store(tmp_path / "ivr.db")
    fill_store(store, 4000, 4, day_bounds(DAYS[-1])[1], seed=3)  # outcomes, queues, agents, surveys, repeats
    edge_calls(store)
    return store


def later_writes(store: Store) -> None:
    """What happens after the roll-ups were made: ends, a repeat call, a late survey, an erasure."""
    store.update_queue_entry(_entry_of(store, "late", "vip"), state="completed",
                             ended_at=MIDNIGHT + 400, outcome="completed")  # fmt: skip
    store.end_call("late", MIDNIGHT + 400, "transferred")
    store.set_survey("first", csat=2, nps=3)  # a survey arriving a day later
    store.start_call("again", "+1998", "100", "support", day_bounds(DAYS[3])[0] + 3600)  # +1998 again, refund
    store.set_context("again", {"intent": "refund"})
    store.end_call("again", day_bounds(DAYS[3])[0] + 3700, "completed")  # makes "first" a repeat (FCR)
    store.erase_call("call-10", MIDNIGHT + 7200)


def _entry_of(store: Store, call_id: str, queue: str) -> int:
    call = store.get_call(call_id)
    assert call is not None
    return int(next(e["id"] for e in call["queue_entries"] if e["queue"] == queue))


def test_rollups_equal_the_direct_figures_and_follow_later_writes(mixed: Store,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    check(mixed, monkeypatch)
    before = rolled(mixed, *day_bounds(DAYS[0]))["head"]
    later_writes(mixed)
    check(mixed, monkeypatch)
    after = rolled(mixed, *day_bounds(DAYS[0]))["head"]
    assert after["csat_responses"] == before["csat_responses"] + 1  # the late survey counts
    assert after["fcr_repeated"] == before["fcr_repeated"] + 1  # "first" was repeated three days later
    assert after["answered"] == before["answered"]  # "late" waited from before midnight: counted then, once
    other = open_store(mixed.engine.url.database or "")  # another process reads the same roll-ups
    same(rolled(other, *day_bounds(DAYS[0])), rolled(mixed, *day_bounds(DAYS[0])), "other process")


def test_a_queued_call_counts_once_in_the_period_it_first_joined(mixed: Store) -> None:
    later_writes(mixed)
    day0 = build_report(mixed, *day_bounds(DAYS[0]), OPTIONS, ("summary",)).summary
    day1 = build_report(mixed, *day_bounds(DAYS[1]), OPTIONS, ("summary",)).summary
    both = build_report(mixed, day_bounds(DAYS[0])[0], day_bounds(DAYS[1])[1], OPTIONS, ("summary",)).summary
    assert both["queued"] == day0["queued"] + day1["queued"]
    queues = {row["queue"]: row for row in build_report(mixed, *day_bounds(DAYS[1]), OPTIONS,
                                                         ("queues",)).table("queues").rows}  # fmt: skip
    assert queues["vip"]["answered"] >= 1  # per queue, the entry counts where it joined


def test_a_migrated_database_gets_triggers_and_its_days_rolled_up(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command

    from ivr.store import migrate

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = migrate._config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0009")
        conn.exec_driver_sql("INSERT INTO calls (id, caller, called, flow, started_at, intent, context, node, "
                             f"ended_at, outcome) VALUES ('old', '+1', '', 'f', {MIDNIGHT + 60}, 'faq', '{{}}', '', "
                             f"{MIDNIGHT + 90}, 'completed')")  # fmt: skip
    store = open_store(tmp_path / "old.db")
    assert build_report(store, *day_bounds(DAYS[1]), OPTIONS, ("summary",)).summary["contained"] == 1
    store.set_survey("old", csat=5)
    assert build_report(store, *day_bounds(DAYS[1]), OPTIONS, ("summary",)).summary["csat_responses"] == 1
    with store.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0009")
        command.upgrade(cfg, "head")


def test_writes_log_changes_that_fold_into_counters_without_changing_any_sum(mixed: Store) -> None:
    bounds = {d.isoformat(): day_bounds(d) for d in DAYS}
    before = r._versions(mixed, bounds)
    with mixed.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM report_changes").scalar()
    r.fold_changes(mixed)
    with mixed.engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM report_changes").scalar() == 0
    assert r._versions(mixed, bounds) == before
    mixed.set_survey("first", csat=4)  # DAYS[0] only
    after = r._versions(mixed, bounds)
    assert after[DAYS[0].isoformat()] > before[DAYS[0].isoformat()]
    assert {d: v for d, v in after.items() if d != DAYS[0].isoformat()} == {
        d: v for d, v in before.items() if d != DAYS[0].isoformat()}
    r.fold_changes(mixed)
    assert r._versions(mixed, bounds) == after


def test_ivr_serve_keeps_the_rollups_up_to_date_in_the_background(mixed: Store) -> None:
    import threading
    import time

    stop = threading.Event()
    thread = r.keep_up_to_date(mixed, OPTIONS, stop, days=(dt.date.today() - DAYS[0]).days + 1, every=0.05)

    def stored(period: str) -> tuple[int, str] | None:
        with mixed.engine.connect() as conn:
            row = conn.exec_driver_sql("SELECT version, data FROM report_rollups WHERE period = ? AND options = ?",
                                       (period, OPTIONS.key())).first()  # fmt: skip
        return None if row is None else (int(row[0]), str(row[1]))

    try:
        deadline = time.monotonic() + 60
        while stored(DAYS[0].isoformat()) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        before = stored(DAYS[0].isoformat())
        assert before is not None
        mixed.set_survey("first", csat=2)  # a write to DAYS[0]: the refresh remakes its roll-up
        while stored(DAYS[0].isoformat()) == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stored(DAYS[0].isoformat()) != before
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


def test_rollups_on_postgresql_equal_the_direct_figures(postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(postgres_url)
    fill_store(store, 1500, 4, day_bounds(DAYS[-1])[1], seed=5)
    edge_calls(store)
    check(store, monkeypatch)
    later_writes(store)
    check(store, monkeypatch)


@pytest.fixture
def paris(monkeypatch: pytest.MonkeyPatch) -> Any:
    import time

    monkeypatch.setenv("TZ", "Europe/Paris")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.parametrize("change", [dt.date(2026, 3, 29), dt.date(2026, 10, 25)])  # 23 and 25 hours
def test_rollups_equal_the_direct_figures_across_a_dst_change(paris: Any, change: dt.date, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    store = open_store(tmp_path / "ivr.db")
    fill_store(store, 1500, 3, day_bounds(change + dt.timedelta(days=1))[1], seed=9)
    since, until = day_bounds(change)
    assert until - since != 86400
    same(rolled(store, since, until), direct(store, since, until, monkeypatch), "the day")
    hours = {row["hour"]: row["calls"] for row in rolled(store, since, until)["hours"]}
    assert sum(hours.values()) == rolled(store, since, until)["head"]["calls"]
    first, last = day_bounds(change - dt.timedelta(days=1))[0], day_bounds(change + dt.timedelta(days=1))[1]
    head = rolled(store, first, last)["head"]
    same(head, direct(store, first, last, monkeypatch)["head"], "three days")
