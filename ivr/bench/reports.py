"""Reports benchmark: ``ivr report daily`` and the supervisor's figures for one day and for the whole range
of a store holding 1,000,000 calls over 30 days (a third of them queued for an agent).

Run: ``ivr bench reports`` (``--calls`` and ``--days`` for a smaller store).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from werkzeug.security import generate_password_hash

from ivr.reports import ReportOptions, day_bounds
from ivr.reports.daily import daily_report
from ivr.reports.rollups import build_rollups
from ivr.store import Store, open_store
from ivr.store import schema as t

INTENTS = ["order_status", "billing", "refund", "delivery", "password_reset", "opening_hours", "agent",
           "cancel_order", "address_change", "payment_failed", "returns", "warranty", "store_locator",
           "complaint", "invoice", "subscription", "gift_card", "price_match", "loyalty", "other"]  # fmt: skip
QUEUES = ["support", "billing", "orders", "returns", "vip"]
AGENTS = [f"agent{n:02d}" for n in range(50)]
# A stored context is encrypted: about this many bytes of token per call (the figures never open it).
SEALED_CONTEXT = {"sealed": "gAAAAA" + "x" * 250}
CHUNK = 50_000
REPEAT_LINKS = (
    "UPDATE calls SET repeat_at = (SELECT MIN(later.started_at) FROM calls AS later WHERE later.caller = calls.caller "
    "AND later.intent = calls.intent AND later.started_at > calls.started_at) WHERE caller <> '' AND intent IS NOT NULL"
)


def _calls(count: int, days: int, end: float, seed: int) -> Iterator[tuple[list[dict[str, Any]], ...]]:
    """Chunks of (calls, turns, queue entries) rows: a realistic mix of outcomes, repeat callers, surveys."""
    rng = random.Random(seed)
    weights = [1 / (rank + 1) for rank in range(len(INTENTS))]
    start = end - days * 86400.0
    step = (end - start) / count
    callers = max(1, count // 3)
    calls: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    entries: list[dict[str, Any]] = []
    for i in range(count):
        began = start + i * step + rng.random() * step
        intent = rng.choices(INTENTS, weights)[0]
        bot_end = began + rng.uniform(20, 180)
        row: dict[str, Any] = {"id": f"call-{i}", "caller": f"+1555{rng.randrange(callers):07d}", "called": "100",
                               "flow": rng.choice(("hotline", "hotline", "support", "korean")), "started_at": began,
                               "answered_at": began, "intent": intent, "context": SEALED_CONTEXT, "queue": None,
                               "agent": None, "repeat_at": None,
                               "csat": float(rng.randint(1, 5)) if rng.random() < 0.2 else None,
                               "nps": float(rng.randint(0, 10)) if rng.random() < 0.15 else None}  # fmt: skip
        turns.append({"call_id": row["id"], "at": began + 5, "speaker": "caller", "intent": intent,
                      "text": f"{intent.replace('_', ' ')} please, order **** {rng.randrange(20)}"})  # fmt: skip
        roll = rng.random()
        if roll < 0.67:
            outcome = ("completed" if roll < 0.55 else "caller_hangup" if roll < 0.63 else "error" if roll < 0.65
                       else "transfer_failed")  # fmt: skip
            row.update(ended_at=bot_end, outcome=outcome)
        else:
            queue = rng.choice(QUEUES)
            entry: dict[str, Any] = {"call_id": row["id"], "queue": queue, "priority": 0, "enqueued_at": bot_end,
                                     "answered_at": None, "agent": None, "context": SEALED_CONTEXT}  # fmt: skip
            if rng.random() < 0.85:
                answered = bot_end + rng.expovariate(1 / 15)
                ended = answered + rng.uniform(60, 600)
                entry.update(state="completed", answered_at=answered, ended_at=ended, agent=rng.choice(AGENTS),
                             outcome="completed")  # fmt: skip
                row.update(ended_at=ended, outcome="transferred", queue=queue, agent=entry["agent"])
            else:
                ended = bot_end + rng.uniform(1, 120)
                entry.update(state="abandoned", ended_at=ended, outcome="abandoned")
                row.update(ended_at=ended, outcome="abandoned", queue=queue)
            entries.append(entry)
        calls.append(row)
        if len(calls) >= CHUNK:
            yield calls, turns, entries
            calls, turns, entries = [], [], []
    if calls:
        yield calls, turns, entries


def fill_store(store: Store, count: int, days: int, end: float, seed: int = 7) -> None:
    """Bulk-insert ``count`` calls spread over the ``days`` days before ``end`` (one caller turn each; a third
    queued, most of those answered by one of 50 agents in 5 queues; CSAT on 20 %, NPS on 15 %)."""
    for calls, turns, entries in _calls(count, days, end, seed):
        with store.engine.begin() as conn:
            conn.execute(t.calls.insert(), calls)
            conn.execute(t.turns.insert(), turns)
            if entries:
                conn.execute(t.queue_entries.insert(), entries)
    with store.engine.begin() as conn:  # what the store does as each call ends: link repeat calls (FCR)
        conn.exec_driver_sql(REPEAT_LINKS)


def _median_ms(fn: Any, repeats: int) -> tuple[float, float]:
    """(first, median of the rest) in ms."""
    times = []
    for _ in range(repeats + 1):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return times[0], statistics.median(times[1:]) if repeats else times[0]


def supervisor_client(store: Store) -> Any:
    """A function that GETs a console URL as a logged-in supervisor (asserting a 200)."""
    from ivr.web import create_app

    if "sup" not in {u["name"] for u in store.list_users()}:
        store.add_user("sup", generate_password_hash("sup-password", "pbkdf2:sha256:1000"), "supervisor", 0.0)
    app = create_app(store, None, {"secret_key": "bench"})
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    client.post("/login", data={"name": "sup", "password": "sup-password", "csrf_token": token})

    def get(url: str) -> None:
        resp = client.get(url)
        assert resp.status_code == 200, resp.status_code

    return get


def _period(day: dt.date, last: dt.date | None) -> str:
    return f"since={day.isoformat()}&until={(last or day).isoformat()}"


def bench_supervisor(store: Store, day: dt.date, last: dt.date | None = None, repeats: int = 5) -> dict[str, float]:
    """ms for the supervisor's figures fragment and whole page for ``day`` (to ``last``, both included; first
    request, then median)."""
    get = supervisor_client(store)
    period = _period(day, last)
    first_fragment, fragment_ms = _median_ms(lambda: get(f"/supervisor/figures?{period}"), repeats)
    first_page, page_ms = _median_ms(lambda: get(f"/supervisor?{period}"), repeats)
    _, csv_ms = _median_ms(lambda: get(f"/supervisor/report.csv?{period}&table=agents"), 1)
    return {"figures_first_ms": round(first_fragment, 1), "figures_median_ms": round(fragment_ms, 1),
            "page_first_ms": round(first_page, 1), "page_median_ms": round(page_ms, 1),
            "csv_agents_ms": round(csv_ms, 1)}  # fmt: skip


def add_traffic(store: Store, at: float, count: int, rng: random.Random, stored: int) -> None:
    """``count`` calls ending just before ``at`` from callers of the stored ones (so earlier calls become
    repeats: their days change), 30 % with a survey answered after the call."""
    callers = max(1, stored // 3)
    for _ in range(count):
        call_id = f"live-{rng.randrange(10**12)}"
        store.start_call(call_id, f"+1555{rng.randrange(callers):07d}", "100", "hotline", at - 300)
        store.set_context(call_id, {"intent": rng.choice(INTENTS[:5])})
        store.end_call(call_id, at - 200, "completed")
        if rng.random() < 0.3:
            store.set_survey(call_id, csat=rng.randint(1, 5))


def bench_after_traffic(store: Store, first: dt.date, last: dt.date, calls: int = 30,
                        rounds: int = 3) -> dict[str, float]:  # fmt: skip
    """Median ms of the first figures request after ``calls`` calls ended on ``last`` (repeats of earlier calls,
    late surveys: every day they touch is made again), for ``last`` and for ``first`` to ``last``."""
    get = supervisor_client(store)
    rng = random.Random(11)
    stored = store.count_calls()
    at = day_bounds(last)[1]
    one: list[float] = []
    whole: list[float] = []
    for _ in range(rounds):
        for period, times in ((_period(last, None), one), (_period(first, last), whole)):
            add_traffic(store, at, calls, rng, stored)
            started = time.perf_counter()
            get(f"/supervisor/figures?{period}")
            times.append((time.perf_counter() - started) * 1000)
    return {"calls_between_views": calls, "figures_last_day_ms": round(statistics.median(one), 1),
            "figures_range_ms": round(statistics.median(whole), 1)}  # fmt: skip


def bench_daily(store: Store, database: Path, day: dt.date, out_dir: Path) -> dict[str, Any]:
    """Seconds for the daily report in process and as the ``ivr report daily`` command."""
    started = time.perf_counter()
    result = daily_report(store, day, out_dir, ReportOptions())
    in_process = time.perf_counter() - started
    path = os.pathsep.join([str(Path(__file__).parents[2]), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ivr.cli.main", "report", "daily", "--date", day.isoformat(),
                    "--database", str(database), "--out", str(out_dir / "cli")], check=True, env=env,
                   capture_output=True)  # fmt: skip
    command = time.perf_counter() - started
    return {"in_process_s": round(in_process, 2), "command_s": round(command, 2),
            "day_calls": result.report.summary["calls"], "files": len(result.files)}  # fmt: skip


def run_reports_bench(calls: int = 1_000_000, days: int = 30, folder: Path | None = None) -> dict[str, Any]:
    """Fill a SQLite store with ``calls`` calls over ``days`` days, then time the daily report of the middle
    day on the never-summarised store, the start-up build of every day's roll-ups, the supervisor's figures
    for the middle day and for all ``days`` days, and the figures again right after new calls ended."""
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        database = Path(tmp) / "reports.db"
        store = open_store(database)
        today = dt.date.today()
        end = day_bounds(today)[0]
        started = time.perf_counter()
        fill_store(store, calls, days, end)
        fill_s = time.perf_counter() - started
        day = today - dt.timedelta(days=max(1, days // 2))
        result: dict[str, Any] = {"stored_calls": store.count_calls(), "days": days, "fill_s": round(fill_s, 1),
                                  "database_mb": round(database.stat().st_size / 1e6, 1), "day": day.isoformat()}
        result["report_daily"] = bench_daily(store, database, day, Path(tmp) / "out")
        started = time.perf_counter()
        build_rollups(store, today - dt.timedelta(days=days), today, ReportOptions())
        result["rollups_build_s"] = round(time.perf_counter() - started, 1)
        result["supervisor"] = bench_supervisor(store, day)
        first, last = today - dt.timedelta(days=days), today - dt.timedelta(days=1)
        result["supervisor_range"] = bench_supervisor(store, first, last)
        # what ivr serve's 15 s refresh leaves at this store's rate (1M calls / 30 days: ~6 calls), and 5 times that
        result["after_traffic"] = [bench_after_traffic(store, first, last, n) for n in (6, 30)]
        store.close()
        return result
