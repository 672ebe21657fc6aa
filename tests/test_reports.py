"""The report definitions (docs/reports.md) on a small hand-built store: each figure checked against numbers
worked out by hand, with the edge cases (no calls, short abandons, repeat callers, overflow)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ivr.reports import ReportOptions, build_report, daily_trend, day_bounds, summary
from ivr.store import Store, open_store

DAY = dt.date(2026, 3, 10)
START = day_bounds(DAY)[0]
H = 3600.0


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return open_store(tmp_path / "ivr.db")


def bot_call(store: Store, call_id: str, caller: str, intent: str | None, at: float, outcome: str | None,
             said: str = "", **context: object) -> None:  # fmt: skip
    """A call the bot handled alone, started ``at`` seconds after midnight of DAY."""
    store.start_call(call_id, caller, "100", "support", START + at)
    if said:
        store.add_turn(call_id, START + at + 5, "caller", said, intent=intent)
    store.set_context(call_id, {"intent": intent, **context} if intent else dict(context))
    if outcome is not None:
        store.end_call(call_id, START + at + 60, outcome)


def queued_call(store: Store, call_id: str, caller: str, at: float, wait: float, *, answered: bool,
                talk: float = 0.0, agent: str = "ann", queue: str = "support", **context: object) -> None:  # fmt: skip
    """A call the bot queued at ``at`` + 30 s: answered after ``wait`` s (and talked ``talk`` s) or abandoned
    after ``wait`` s."""
    store.start_call(call_id, caller, "100", "support", START + at)
    store.set_context(call_id, {"intent": "billing", **context})
    joined = START + at + 30
    entry = store.add_queue_entry(call_id, queue, 0, joined, {})
    if answered:
        store.update_queue_entry(entry, state="connected", answered_at=joined + wait, agent=agent)
        store.update_queue_entry(entry, state="completed", ended_at=joined + wait + talk, outcome="completed")
        store.end_call(call_id, joined + wait + talk, "transferred")
    else:
        store.update_queue_entry(entry, state="abandoned", ended_at=joined + wait, outcome="abandoned")
        store.end_call(call_id, joined + wait, "abandoned")


@pytest.fixture
def day_store(store: Store) -> Store:
    """Eleven calls on DAY (one still going on), two the days after (repeat callers)."""
    bot_call(store, "c1", "+1A", "faq", 9 * H, "completed", said="what are your opening hours")
    bot_call(store, "c2", "+1B", "faq", 9 * H + 600, "caller_hangup", said="uh")  # a menu hang-up
    bot_call(store, "c3", "+1C", "billing", 10 * H, "transfer_failed", said="my card 4111 1111 1111 1111")
    queued_call(store, "c4", "+1D", 11 * H, 10, answered=True, talk=100, agent="ann", csat=5, nps=10)
    queued_call(store, "c5", "+1E", 11 * H + 60, 3, answered=False)  # a short abandon
    queued_call(store, "c6", "+1D", 12 * H, 30, answered=False)  # +1D again, same intent: c4 not resolved
    queued_call(store, "c7", "+1G", 12 * H + 60, 30, answered=True, talk=200, agent="ben",
                slots={"satisfaction": 2}, nps=3)  # fmt: skip
    bot_call(store, "c8", "+1H", "faq", 13 * H, None)  # still going on
    bot_call(store, "c9", "", "faq", 14 * H, "error")  # no number (withheld or erased): no FCR
    bot_call(store, "c10", "+1J", "faq", 15 * H, "goodbye")  # a flow's own hang-up reason: contained
    bot_call(store, "c13", "+1C", "orders", 16 * H, "completed")  # +1C again, another intent: not a repeat
    bot_call(store, "c11", "+1A", "faq", 3 * 86400 + 9 * H, "completed")  # within 7 days: c1 not resolved
    bot_call(store, "c12", "+1B", "faq", 9 * 86400 + 9 * H, "completed")  # after 7 days: c2 resolved
    return store


OPTIONS = ReportOptions(wrap_up={"support": 10.0})


def test_figures_of_a_day(day_store: Store) -> None:
    s = summary(day_store, *day_bounds(DAY), OPTIONS)
    assert s["calls"] == 11 and s["ended"] == 10
    assert s["contained"] == 3 and s["containment"] == pytest.approx(3 / 10)  # c1, c10, c13
    assert s["transferred"] == 5 and s["transfer_rate"] == pytest.approx(5 / 11)  # queued c4-c7, c3 tried
    assert s["fcr_calls"] == 10 and s["fcr_repeated"] == 2 and s["fcr"] == pytest.approx(8 / 10)
    assert s["queued"] == 4 and s["offered"] == 4 and s["short_abandoned"] == 1
    assert s["service_level"] == pytest.approx(1 / 3)  # c4 within 20 s, of 4 offered less 1 short abandon
    assert s["abandonment"] == pytest.approx(1 / 3)  # c6 only
    assert s["asa"] == pytest.approx(20.0) and s["wait_p90"] == pytest.approx(30.0)
    assert s["talk_average"] == pytest.approx(150.0)
    assert s["aht"] == pytest.approx(160.0)  # (100 + 10 + 200 + 10) / 2
    assert s["csat_average"] == pytest.approx(3.5) and s["csat"] == pytest.approx(0.5) and s["csat_responses"] == 2
    assert s["nps"] == pytest.approx(0.0) and s["nps_responses"] == 2  # one promoter, one detractor
    assert s["transfer_rate_by_intent"]["billing"] == {"calls": 5, "transferred": 5, "rate": 1.0}
    assert s["transfer_rate_by_intent"]["faq"]["rate"] == 0.0


def test_thresholds_are_options(day_store: Store) -> None:
    s = summary(day_store, *day_bounds(DAY), ReportOptions(short_abandon_seconds=0, service_level_seconds=30,
                                                           fcr_days=2))  # fmt: skip
    assert s["short_abandoned"] == 0 and s["abandonment"] == pytest.approx(2 / 4)
    assert s["service_level"] == pytest.approx(2 / 4)  # c4 and c7 within 30 s
    assert s["fcr_repeated"] == 1  # only c4 (repeated the same day); c1's repeat came 3 days later
    assert s["aht"] == pytest.approx(150.0)  # no wrap-up configured


def test_nothing_to_report(store: Store) -> None:
    s = summary(store, *day_bounds(DAY))
    assert s["calls"] == 0 and s["queued"] == 0
    for figure in ("containment", "fcr", "service_level", "abandonment", "asa", "aht", "wait_p90", "csat_average",
                   "nps"):  # fmt: skip
        assert s[figure] is None, figure
    report = build_report(store, *day_bounds(DAY))
    assert [r["calls"] for r in report.table("hours").rows] == [0] * 24
    assert report.table("queues").rows == [] and report.table("intents").rows == []
    assert [d["calls"] for d in report.table("days").rows] == [0]


def test_tables_per_hour_queue_agent_flow_intent(day_store: Store) -> None:
    report = build_report(day_store, *day_bounds(DAY), OPTIONS)
    hours = {r["hour"]: r for r in report.table("hours").rows}
    assert hours["09:00"]["calls"] == 2 and hours["09:00"]["contained"] == 1
    assert hours["11:00"]["offered"] == 2 and hours["11:00"]["short_abandoned"] == 1
    assert sum(r["calls"] for r in hours.values()) == 11
    (support,) = report.table("queues").rows
    assert support["queue"] == "support" and support["answered"] == 2 and support["aht"] == pytest.approx(160.0)
    agents = {r["agent"]: r for r in report.table("agents").rows}
    assert set(agents) == {"ann", "ben"}
    assert agents["ann"]["aht"] == pytest.approx(110.0) and agents["ann"]["csat_average"] == 5.0
    assert agents["ben"]["asa"] == pytest.approx(30.0) and agents["ben"]["nps"] == pytest.approx(-100.0)
    (flow,) = report.table("flows").rows
    assert flow["flow"] == "support" and flow["calls"] == 11
    intents = report.table("intents").rows
    ranked = [(r["rank"], r["intent"], r["calls"]) for r in intents]
    assert ranked == [(1, "billing", 5), (2, "faq", 5), (3, "orders", 1)]  # ties by name
    billing, faq = intents[0], intents[1]
    assert faq["share"] == pytest.approx(5 / 11) and faq["fcr"] == pytest.approx(3 / 4)  # c1 repeated; c9 no number
    assert "what are your opening hours" in faq["examples"]
    assert billing["fcr"] == pytest.approx(4 / 5) and billing["transfer_rate"] == 1.0
    assert "4111" not in billing["examples"] and "**** **** **** ****" in billing["examples"]
    questions = report.table("questions").rows
    assert questions[0]["question"] in {"what are your opening hours", "my card **** **** **** ****"}
    assert all("4111" not in r["question"] for r in questions)
    assert "uh" in {r["question"] for r in questions}


def test_overflowed_call_counts_once_with_its_whole_wait(store: Store) -> None:
    store.start_call("o1", "+1Z", "100", "support", START + 8 * H)
    first = store.add_queue_entry("o1", "support", 0, START + 8 * H, {})
    store.update_queue_entry(first, state="overflowed", ended_at=START + 8 * H + 60, outcome="requeued:billing")
    second = store.add_queue_entry("o1", "billing", 0, START + 8 * H + 60, {})
    store.update_queue_entry(second, state="connected", answered_at=START + 8 * H + 65, agent="ann")
    s = summary(store, *day_bounds(DAY))
    assert s["queued"] == 1 and s["answered"] == 1 and s["asa"] == pytest.approx(65.0)
    queues = {r["queue"]: r for r in build_report(store, *day_bounds(DAY), tables=("queues",)).table("queues").rows}
    assert queues["support"]["offered"] == 1 and queues["support"]["answered"] == 0
    assert queues["billing"]["asa"] == pytest.approx(5.0)


def test_a_repeat_call_links_even_when_it_ends_first(store: Store) -> None:
    store.start_call("early", "+1Q", "100", "support", START)
    store.set_context("early", {"intent": "refund"})
    bot_call(store, "later", "+1Q", "refund", 120, "completed")  # started later, ended before "early"
    store.end_call("early", START + 600, "completed")
    s = summary(store, *day_bounds(DAY))
    assert s["fcr_calls"] == 2 and s["fcr_repeated"] == 1


def test_survey_answers_read_from_where_a_survey_leaves_them(store: Store) -> None:
    bot_call(store, "s1", "+1", "faq", H, "completed", survey={"csat": "4", "nps": 9})
    bot_call(store, "s2", "+2", "faq", 2 * H, "completed", variables={"satisfaction": 7})  # out of range: ignored
    bot_call(store, "s3", "+3", "faq", 3 * H, "completed")
    store.set_survey("s3", csat=1, nps=0)
    s = summary(store, *day_bounds(DAY))
    assert s["csat_responses"] == 2 and s["csat_average"] == pytest.approx(2.5)
    assert s["nps_responses"] == 2 and s["nps"] == pytest.approx(0.0)


def test_daily_trend_per_day(day_store: Store) -> None:
    days = daily_trend(day_store, DAY, DAY + dt.timedelta(days=3), OPTIONS)
    assert [d["day"] for d in days] == ["2026-03-10", "2026-03-11", "2026-03-12", "2026-03-13"]
    assert [d["calls"] for d in days] == [11, 0, 0, 1]
    assert days[0]["containment"] == pytest.approx(3 / 10) and days[0]["service_level"] == pytest.approx(1 / 3)
    again = daily_trend(day_store, DAY, DAY + dt.timedelta(days=3), OPTIONS)  # closed days: remembered
    assert again == days


def test_day_rollups_are_stored_and_made_again_after_a_write(day_store: Store, tmp_path: Path) -> None:
    first = daily_trend(day_store, DAY, DAY, OPTIONS)
    other = open_store(tmp_path / "ivr.db")  # another process
    with other.engine.begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM report_rollups WHERE period LIKE 'h%'").scalar() == 24
        conn.exec_driver_sql("DELETE FROM report_rollups WHERE period LIKE 'h%'")
    assert daily_trend(other, DAY, DAY, OPTIONS) == first  # the stored day, its hours not needed
    other.set_survey("c8", csat=5, nps=10)  # a survey arriving later makes the day stale
    assert daily_trend(other, DAY, DAY, OPTIONS)[0]["csat_responses"] == first[0]["csat_responses"] + 1
    assert daily_trend(day_store, DAY, DAY, OPTIONS)[0]["csat_responses"] == first[0]["csat_responses"] + 1
    with other.engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM queue_entries")
        conn.exec_driver_sql("DELETE FROM calls")
    assert daily_trend(other, DAY, DAY, OPTIONS)[0]["calls"] == 0
    assert daily_trend(other, DAY, DAY, ReportOptions())[0]["calls"] == 0  # other options: computed afresh


def test_migration_links_repeat_calls_already_stored(tmp_path: Path) -> None:
    import sqlalchemy as sa
    from alembic import command

    from ivr.store import migrate

    engine = sa.create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = migrate._config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0004")
        for i, (caller, at) in enumerate([("+1", 0.0), ("+1", 100.0), ("+2", 50.0)]):
            conn.exec_driver_sql("INSERT INTO calls (id, caller, called, flow, started_at, intent, context, node) "
                                 f"VALUES ('m{i}', '{caller}', '', '', {START + at}, 'faq', '{{}}', '')")
    store = open_store(tmp_path / "old.db")
    with store.engine.connect() as conn:
        links = dict(conn.exec_driver_sql("SELECT id, repeat_at FROM calls ORDER BY id").all())
    assert links == {"m0": START + 100.0, "m1": None, "m2": None}


def test_hours_of_a_range_of_days_add_up_by_hour_of_day(day_store: Store) -> None:
    since, until = day_bounds(DAY)[0], day_bounds(DAY + dt.timedelta(days=3))[1]
    table = build_report(day_store, since, until, OPTIONS, tables=("hours",)).table("hours")
    hours = {r["hour"]: r for r in table.rows}
    assert hours["09:00"]["calls"] == 3  # c1, c2 on DAY and c11 three days later
    assert sum(r["calls"] for r in hours.values()) == 12


def test_post_agent_survey_answers_count_for_the_agent(store: Store) -> None:
    """The survey after the agent (flows' after_agent) saves ``csat`` and ``nps`` slots on the call."""
    queued_call(store, "a1", "+1", 9 * H, 5, answered=True, talk=60, agent="ann", slots={"csat": 4, "nps": 9})
    queued_call(store, "a2", "+2", 10 * H, 5, answered=True, talk=60, agent="ann", slots={"csat": 2, "nps": 6})
    (ann,) = build_report(store, *day_bounds(DAY), tables=("agents",)).table("agents").rows
    assert ann["csat_average"] == pytest.approx(3.0) and ann["csat_responses"] == 2 and ann["nps"] == 0.0


def test_top_unanswered_questions_count_the_knowledge_files_misses(store: Store) -> None:
    for i, asked in enumerate(["Do you price match?", "do you price match", "Card 4111 1111 1111 1111 lost"]):
        bot_call(store, f"faq-{i}", f"+1555000{i}", "question", 100.0 * i, "completed")
        store.add_event(f"faq-{i}", START + 100 * i + 10, "faq_unanswered", {"question": asked, "best": "returns"})
    table = build_report(store, START, START + 24 * H, tables=("unanswered",)).tables[0]
    first = table.rows[0]
    assert (first["rank"], first["question"], first["count"], first["calls"]) == (1, "do you price match", 2, 2)
    assert table.rows[0]["closest"] == "returns"
    assert "4111 1111 1111 1111" not in str(table.rows)  # card numbers masked for everyone
