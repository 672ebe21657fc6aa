"""Days and hours in local time as UNIX-second bounds (a day is 23 or 25 hours across a DST change)."""

from __future__ import annotations

import datetime as dt

from ivr.errors import IvrError

FIRST_DAY = dt.date(1971, 1, 1)
LAST_DAY = dt.date(9998, 12, 31)


class ReportError(IvrError):
    """A report was asked for with a bad date or range, or could not be written or sent."""


def parse_day(text: str, what: str = "date") -> dt.date:
    """A date written YYYY-MM-DD (between 1971 and 9998)."""
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is None or len(text) != 10 or not FIRST_DAY <= day <= LAST_DAY:
        raise ReportError(f"{what} must be a date YYYY-MM-DD from {FIRST_DAY} to {LAST_DAY}, not {text!r}")
    return day


def day_bounds(day: dt.date) -> tuple[float, float]:
    """UNIX seconds of local midnight at the start and end of ``day``."""
    start = dt.datetime.combine(day, dt.time()).astimezone()
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time()).astimezone()
    return start.timestamp(), end.timestamp()


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]
