"""`ivr report daily` (files, webhook, errors), the console's CSV export and date range, and a small run of
the reports benchmark."""

from __future__ import annotations

import csv
import datetime as dt
import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from click.testing import CliRunner
from werkzeug.security import generate_password_hash

from ivr.cli.main import _register, cli
from ivr.reports import day_bounds
from ivr.reports.export import safe_cell
from ivr.store import Store, open_store
from ivr.web import create_app

DAY = dt.date(2026, 3, 10)
START = day_bounds(DAY)[0]
HOSTILE = '=HYPERLINK("http://evil.example","x")'


def fill(store: Store) -> None:
    store.start_call("c1", "+15550100", "100", "support", START + 9 * 3600)
    store.add_turn("c1", START + 9 * 3600 + 5, "caller", "where is my order 12345678", intent="order_status")
    store.set_context("c1", {"intent": "order_status", "csat": 5})
    store.end_call("c1", START + 9 * 3600 + 90, "completed")
    store.start_call("c2", "+15550101", "100", "<b>support</b>", START + 10 * 3600)
    store.add_turn("c2", START + 10 * 3600 + 5, "caller", "-2+3 <script>alert(1)</script>", intent=HOSTILE)
    store.set_context("c2", {"intent": HOSTILE})
    entry = store.add_queue_entry("c2", "support", 0, START + 10 * 3600 + 30, {})
    store.update_queue_entry(entry, state="connected", answered_at=START + 10 * 3600 + 40, agent="@ann")
    store.update_queue_entry(entry, state="completed", ended_at=START + 10 * 3600 + 200)
    store.end_call("c2", START + 10 * 3600 + 200, "transferred")


@pytest.fixture
def database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)  # no config/queues.yaml here
    path = tmp_path / "ivr.db"
    store = open_store(path)
    fill(store)
    store.close()
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def run(*args: str) -> Any:
    _register()
    return CliRunner().invoke(cli, ["report", "daily", *args])


def test_daily_report_writes_html_and_one_csv_per_table(database: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run("--date", DAY.isoformat(), "--database", str(database), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "2026-03-10: 2 calls, containment 50%" in result.output
    names = sorted(p.name for p in out.iterdir())
    tables = ("summary", "hours", "queues", "agents", "flows", "intents", "questions", "unanswered")
    assert names == sorted(["ivr-report-2026-03-10.html"] + [f"ivr-report-2026-03-10-{t}.csv" for t in tables])
    summary = {row["key"]: row["value"] for row in read_csv(out / "ivr-report-2026-03-10-summary.csv")}
    assert summary["calls"] == "2" and summary["containment"] == "0.5" and summary["aht"] == "160"
    intents = (out / "ivr-report-2026-03-10-intents.csv").read_text()
    assert "'=HYPERLINK" in intents and "\n=" not in intents and ",=" not in intents  # no formula survives
    assert "12345678" not in intents and "****5678" not in intents  # digits stay starred
    agents = read_csv(out / "ivr-report-2026-03-10-agents.csv")
    assert agents[0]["agent"] == "'@ann" and agents[0]["aht"] == "160"
    html = (out / "ivr-report-2026-03-10.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;" in html and "&lt;b&gt;support&lt;/b&gt;" in html
    assert "50.0%" in html


def test_daily_report_adds_each_queues_wrap_up(database: Path, tmp_path: Path) -> None:
    queues = tmp_path / "queues.yaml"
    queues.write_text("agents:\n  ann: {uri: 'sip:ann@127.0.0.1'}\nqueues:\n  support: {wrap_up: 20}\n"
                      "service_level_seconds: 5\n")  # fmt: skip
    result = run("--date", DAY.isoformat(), "--database", str(database), "--out", str(tmp_path / "q"),
                 "--queues", str(queues))  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = {row["key"]: row["value"] for row in read_csv(tmp_path / "q/ivr-report-2026-03-10-summary.csv")}
    assert summary["aht"] == "180" and summary["service_level"] == "0"  # answered after 10 s > 5 s


def test_daily_report_says_what_is_wrong(database: Path, tmp_path: Path) -> None:
    result = run("--date", "2026-02-30", "--database", str(database), "--out", str(tmp_path))
    assert result.exit_code == 1 and "--date must be a date YYYY-MM-DD" in result.output
    result = run("--date", DAY.isoformat(), "--database", str(tmp_path / "missing.db"), "--out", str(tmp_path))
    assert result.exit_code == 1 and "no database at" in result.output and "--database" in result.output
    assert not (tmp_path / "missing.db").exists()  # not created by asking


def test_daily_report_defaults_to_yesterday(tmp_path: Path) -> None:
    open_store(tmp_path / "ivr.db").close()
    result = run("--database", str(tmp_path / "ivr.db"), "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    yesterday = dt.date.today() - dt.timedelta(days=1)
    assert (tmp_path / "out" / f"ivr-report-{yesterday.isoformat()}.html").is_file()


class _Hook(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(_Hook.status)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    _Hook.received.clear()
    _Hook.status = 200
    server = http.server.HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/reports"
    server.shutdown()


def test_daily_report_is_posted_to_a_webhook(database: Path, tmp_path: Path, hook: str) -> None:
    result = run("--date", DAY.isoformat(), "--database", str(database), "--out", str(tmp_path), "--webhook", hook)
    assert result.exit_code == 0, result.output
    (sent,) = _Hook.received
    assert sent["report"] == "daily" and sent["summary"]["calls"] == 2
    assert set(sent["csv"]) == {"summary", "hours", "queues", "agents", "flows", "intents", "questions", "unanswered"}
    assert "&lt;script&gt;" in sent["html"]
    _Hook.status = 500
    result = run("--date", DAY.isoformat(), "--database", str(database), "--out", str(tmp_path), "--webhook", hook)
    assert result.exit_code == 1 and "answered 500" in result.output


@pytest.mark.parametrize("value,cell", [("=1+1", "'=1+1"), ("+1555", "'+1555"), ("-2", "'-2"), ("@x", "'@x"),
                                        ("\tx", "'\tx"), ("plain", "plain"), (-20.0, "-20"), (0.125, "0.125"),
                                        (None, ""), (3, "3")])  # fmt: skip
def test_csv_cells_never_start_a_formula(value: object, cell: str) -> None:
    assert safe_cell(value) == cell


@pytest.fixture
def console(tmp_path: Path) -> Any:
    store = open_store(tmp_path / "console.db")
    fill(store)
    app = create_app(store, None, {"secret_key": "test"})
    for name, role in (("ann", "agent"), ("sue", "supervisor")):
        store.add_user(name, generate_password_hash(f"{name}-pw", "pbkdf2:sha256:1000"), role, 0.0)
    return app


def signed_in(app: Any, name: str) -> Any:
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = page.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
    assert client.post("/login", data={"name": name, "password": f"{name}-pw", "csrf_token": token}).status_code == 302
    return client


def test_csv_export_is_for_supervisors_and_injection_safe(console: Any) -> None:
    url = f"/supervisor/report.csv?since={DAY.isoformat()}&table=intents"
    anon = console.test_client().get(url)
    assert anon.status_code == 302 and "/login" in anon.headers["Location"]
    assert signed_in(console, "ann").get(url).status_code == 403
    sue = signed_in(console, "sue")
    resp = sue.get(url)
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert "attachment" in resp.headers["Content-Disposition"] and "ivr-intents-2026-03-10" in resp.headers[
        "Content-Disposition"]  # fmt: skip
    rows = list(csv.DictReader(io.StringIO(resp.get_data(as_text=True))))
    assert {r["intent"] for r in rows} == {"order_status", "'" + HOSTILE}
    assert all(not value.startswith(("=", "+", "-", "@")) for r in rows for value in r.values())
    summary = sue.get(f"/supervisor/report.csv?since={DAY.isoformat()}&until={DAY.isoformat()}&table=summary")
    assert "containment,Containment,0.5" in summary.get_data(as_text=True)
    days = sue.get("/supervisor/report.csv?since=2026-03-09&until=2026-03-11&table=days").get_data(as_text=True)
    assert [line.split(",")[0] for line in days.splitlines()[1:]] == ["2026-03-09", "2026-03-10", "2026-03-11"]
    assert sue.get(f"/supervisor/report.csv?since={DAY.isoformat()}&table=users").status_code == 400


def test_supervisor_page_shows_a_date_range_escaped(console: Any) -> None:
    sue = signed_in(console, "sue")
    html = sue.get(f"/supervisor?since={DAY.isoformat()}&until=2026-03-11").get_data(as_text=True)
    assert 'name="since" value="2026-03-10"' in html and 'name="until" value="2026-03-11"' in html
    assert '<strong id="fig-calls">2</strong>' in html and '<strong id="fig-aht">160 s</strong>' in html
    assert "&lt;b&gt;support&lt;/b&gt;" in html and "<b>support</b>" not in html
    assert HOSTILE not in html  # the intent's quotes are escaped
    assert "/supervisor/report.csv?" in html and "since=2026-03-10" in html
    assert 'data-refresh="/supervisor/figures?since=2026-03-10&amp;until=2026-03-11"' in html
    assert sue.get("/supervisor?since=2026-03-11&until=2026-03-10").status_code == 400
    assert sue.get("/supervisor?since=2026-01-01&until=2026-12-31").status_code == 400  # over 92 days
    today = sue.get("/supervisor").get_data(as_text=True)
    assert '<h2 id="figures-title">Today</h2>' in today


def test_reports_bench_small_run(tmp_path: Path) -> None:
    from ivr.bench.reports import run_reports_bench

    result = run_reports_bench(calls=3000, days=3, folder=tmp_path)
    assert result["stored_calls"] == 3000
    assert result["report_daily"]["day_calls"] > 500 and result["report_daily"]["files"] == 9
    assert result["supervisor"]["figures_median_ms"] > 0 and result["supervisor"]["page_median_ms"] > 0


class _Inbox:
    """A real SMTP server (aiosmtpd) on loopback that keeps what it receives."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        import email

        self.messages.append((envelope.rcpt_tos, email.message_from_bytes(envelope.content)))
        return "250 OK"


@pytest.fixture
def smtp_relay() -> Iterator[tuple[str, _Inbox]]:
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    inbox = _Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield f"127.0.0.1:{port}", inbox
    controller.stop()


def test_daily_report_is_mailed_through_the_relay(database: Path, tmp_path: Path,
                                                  smtp_relay: tuple[str, _Inbox]) -> None:
    relay, inbox = smtp_relay
    result = run("--date", DAY.isoformat(), "--database", str(database), "--out", str(tmp_path / "out"),
                 "--mail-to", "boss@example.com", "--mail-to", "ops@example.com", "--smtp", relay)
    assert result.exit_code == 0, result.output
    assert "mailed to boss@example.com, ops@example.com" in result.output
    [(recipients, message)] = inbox.messages
    assert recipients == ["boss@example.com", "ops@example.com"]
    assert message["Subject"] == f"ivr daily report {DAY.isoformat()}"
    parts = {part.get_content_type(): part for part in message.walk()}
    assert "<script>" not in parts["text/html"].get_payload(decode=True).decode()  # escaped, as in the file
    attached = [p.get_filename() for p in message.walk() if p.get_filename()]
    assert f"ivr-report-{DAY.isoformat()}-summary.csv" in attached and len(attached) == 8


def test_a_mail_relay_that_is_down_is_a_clear_error(database: Path, tmp_path: Path) -> None:
    result = run("--date", DAY.isoformat(), "--database", str(database), "--out", str(tmp_path / "out"),
                 "--mail-to", "boss@example.com", "--smtp", "127.0.0.1:9")
    assert result.exit_code != 0 and "cannot mail the report through 127.0.0.1:9" in result.output
    bad = run("--date", DAY.isoformat(), "--database", str(database), "--mail-to", "not-an-address")
    assert bad.exit_code != 0 and "not an e-mail address: not-an-address" in bad.output


def test_the_daily_report_runs_on_schedule_once_a_day(database: Path, tmp_path: Path) -> None:
    from ivr.reports.schedule import DailyReportPlan, DailyReportScheduler

    plan = DailyReportPlan(DailyReportPlan.parse_time("06:00"), tmp_path / "daily")
    six = dt.datetime.combine(DAY + dt.timedelta(days=1), dt.time(6, 0)).timestamp()
    store = open_store(database)  # before the clock starts: opening may take longer than the lead below
    started, base = time.monotonic(), six - 1.0  # a second before 06:00 the next day

    def clock() -> float:
        return base + time.monotonic() - started

    leading = [True]
    scheduler = DailyReportScheduler(store, plan, lambda: leading[0], clock)
    assert scheduler.next_run(six - 10) == six and scheduler.next_run(six + 1) == six + 86400
    scheduler.start()
    try:
        report = tmp_path / "daily" / f"ivr-report-{DAY.isoformat()}.html"
        deadline = time.monotonic() + 10
        while not report.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert report.exists()
    finally:
        scheduler.stop()
    assert scheduler.run_once(six + 5) is None  # made already: not again
    leading[0] = False
    assert scheduler.run_once(six + 86400) is None  # another node leads the cluster: it makes the report
    with pytest.raises(Exception, match="HH:MM"):
        DailyReportPlan.parse_time("6am")
