"""The daily report on a schedule, inside ``ivr serve``: yesterday's report every day at a local time."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ivr.reports.daily import DailyReport, daily_report
from ivr.reports.definitions import ReportOptions
from ivr.reports.mail import MailRelay
from ivr.reports.periods import ReportError
from ivr.store import Store

log = logging.getLogger(__name__)


@dataclass
class DailyReportPlan:
    """``ivr serve --daily-report-at HH:MM``: when, where to write, and where to send."""

    at: dt.time
    out_dir: Path = Path("var/reports")
    webhook: str | None = None
    mail: MailRelay | None = None
    options: ReportOptions = field(default_factory=ReportOptions)

    @staticmethod
    def parse_time(text: str) -> dt.time:
        """``HH:MM`` (24 h, local time); raises ReportError otherwise."""
        try:
            return dt.time.fromisoformat(text)
        except ValueError:
            raise ReportError(f"--daily-report-at must be HH:MM (24 h, local time), not {text!r}") from None


class DailyReportScheduler:
    """Writes (and sends) yesterday's report once a day at ``plan.at``. ``should_run`` says whether this
    process is the one to do it (in a cluster: the ACD leader's node). A day whose report file exists is not
    made again (a restart, or another node sharing the folder, did it already)."""

    def __init__(self, store: Store, plan: DailyReportPlan, should_run: Callable[[], bool] = lambda: True,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.plan = plan
        self.should_run = should_run
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def next_run(self, now: float) -> float:
        """The next ``plan.at`` after ``now`` (local time)."""
        today = dt.datetime.fromtimestamp(now)
        due = today.replace(hour=self.plan.at.hour, minute=self.plan.at.minute, second=0, microsecond=0)
        if due.timestamp() <= now:
            due += dt.timedelta(days=1)
        return due.timestamp()

    def run_once(self, now: float) -> DailyReport | None:
        """Make the report of the day before ``now``, unless it exists or another process makes it."""
        day = dt.date.fromtimestamp(now) - dt.timedelta(days=1)
        if not self.should_run() or (self.plan.out_dir / f"ivr-report-{day.isoformat()}.html").exists():
            return None
        report = daily_report(self.store, day, self.plan.out_dir, self.plan.options, self.plan.webhook,
                              self.plan.mail)
        log.info("daily report %s written to %s", day, self.plan.out_dir)
        return report

    def start(self) -> None:
        """Run in a daemon thread until :meth:`stop`."""
        def loop() -> None:
            due = self.next_run(self.clock())
            while not self._stop.wait(min(60.0, max(0.0, due - self.clock()))):
                if self.clock() < due:
                    continue  # woke early (long waits are cut in minutes: the clock may be changed)
                try:
                    self.run_once(self.clock())
                except Exception:  # a failing relay or webhook must not stop tomorrow's report
                    log.exception("daily report failed")
                due = self.next_run(self.clock())

        self._thread = threading.Thread(target=loop, name="ivr-daily-report", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
