"""Business hours: weekly opening times, holidays with their own hours, in one IANA time zone.

A calendar answers one question, :meth:`Calendar.is_open` at a Unix time, so the clock stays the caller's
(the ACD's, the server's, a test's :class:`~ivr.testing.fakes.FakeClock`). Times are local wall-clock times
of the calendar's zone, daylight saving included. A range ending before it starts (``22:00-02:00``) runs
past midnight into the next morning, whatever that day is; a holiday replaces the weekday's ranges that
start on its date.

Calendars are written in the queues file (``calendars:``, or a queue's own ``hours:``) and read by
:func:`parse_calendar`, which reports every problem with its position.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ivr.yamlsource import Y

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_RANGE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")
_EXAMPLE = 'for example "08:00-18:00", a list such as ["08:00-12:00", "13:00-17:00"], or closed'
CALENDAR_KEYS = frozenset({"timezone", "weekly", "holidays"})

Report = Callable[[Y, str], None]
"""Called with the node a problem is at and what to do about it."""


@dataclass(frozen=True)
class TimeRange:
    """Open from ``start`` to ``end``, minutes after local midnight; ``end <= start`` runs past midnight."""

    start: int
    end: int

    @property
    def overnight(self) -> bool:
        """Whether the range ends on the next day."""
        return self.end <= self.start

    def __str__(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


Day = tuple[TimeRange, ...]


@dataclass(frozen=True)
class Calendar:
    """Opening hours: ranges per weekday (0 = Monday), holiday dates with their own (often no) ranges."""

    name: str
    timezone: str = "UTC"
    weekly: Mapping[int, Day] = field(default_factory=dict)
    holidays: Mapping[dt.date, Day] = field(default_factory=dict)

    def is_open(self, at: float) -> bool:
        """Whether the calendar is open at Unix time ``at``."""
        local = dt.datetime.fromtimestamp(at, ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        today, yesterday = local.date(), local.date() - dt.timedelta(days=1)
        for r in self._ranges(today):
            if r.start <= minute and (r.overnight or minute < r.end):
                return True
        return any(r.overnight and minute < r.end for r in self._ranges(yesterday))

    def _ranges(self, day: dt.date) -> Day:
        if day in self.holidays:
            return self.holidays[day]
        return self.weekly.get(day.weekday(), ())


def parse_calendar(name: str, node: Y, report: Report) -> Calendar:
    """A calendar from its YAML mapping (``timezone``, ``weekly``, ``holidays``); problems go to ``report``
    and the calendar returned leaves the bad parts out."""
    if node.kind != "map":
        report(node, f"calendar {name!r} must be a mapping with timezone:, weekly: and holidays:")
        return Calendar(name)
    for key, (key_node, _) in node.entries.items():
        if key not in CALENDAR_KEYS:
            report(key_node, f"unknown key {key!r} in calendar {name!r}; expected one of: "
                             f"{', '.join(sorted(CALENDAR_KEYS))}")
    timezone = _timezone(name, node, report)
    weekly: dict[int, Day] = {}
    week = node.get("weekly")
    if week is None:
        report(node, f"calendar {name!r} needs weekly: opening hours, for example weekly: {{mon-fri: 08:00-18:00}}")
    elif week.kind != "map":
        report(week, "weekly must map days (mon, tue, … sun, or a span such as mon-fri) to hours, " + _EXAMPLE)
    else:
        for key, (key_node, value) in week.entries.items():
            days = _days(key)
            if days is None:
                report(key_node, f"unknown day {key!r}; use {', '.join(DAYS)} or a span such as mon-fri")
                continue
            for d in days:
                if d in weekly:
                    report(key_node, f"{DAYS[d]} is given twice in weekly of calendar {name!r}")
            ranges = _ranges(value, report)
            weekly.update({d: ranges for d in days})
    holidays: dict[dt.date, Day] = {}
    raw = node.get("holidays")
    if raw is not None and raw.kind != "map":
        report(raw, "holidays must map dates (2026-12-25) to closed or their own hours, " + _EXAMPLE)
    elif raw is not None:
        for key, (key_node, value) in raw.entries.items():
            try:
                day = dt.date.fromisoformat(key)
            except ValueError:
                report(key_node, f"holiday {key!r} is not a date; write it as YYYY-MM-DD, for example 2026-12-25")
                continue
            holidays[day] = _ranges(value, report)
    return Calendar(name, timezone, weekly, holidays)


def _timezone(name: str, node: Y, report: Report) -> str:
    value = node.get("timezone")
    if value is None:
        report(node, f"calendar {name!r} needs timezone: an IANA zone name such as Europe/Berlin or America/New_York")
        return "UTC"
    zone = value.scalar
    try:
        if not isinstance(zone, str) or not zone:
            raise ValueError
        ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError):
        report(value, f"unknown time zone {value.plain()!r}; use an IANA name such as Europe/Berlin, "
                      "America/New_York or UTC")
        return "UTC"
    return zone


def _days(key: str) -> list[int] | None:
    parts = key.strip().lower().split("-")
    if not 1 <= len(parts) <= 2 or any(p not in DAYS for p in parts):
        return None
    first, last = DAYS.index(parts[0]), DAYS.index(parts[-1])
    return [(first + i) % 7 for i in range((last - first) % 7 + 1)]


def _ranges(node: Y, report: Report) -> Day:
    if node.kind == "scalar" and isinstance(node.scalar, str) and node.scalar.strip().lower() == "closed":
        return ()
    items = node.items if node.kind == "seq" else [node]
    out: list[TimeRange] = []
    for item in items:
        parsed = _range(item.scalar) if item.kind == "scalar" else None
        if parsed is None:
            report(item, f"bad opening hours {item.plain()!r}: write HH:MM-HH:MM (00:00 to 24:00), " + _EXAMPLE)
        else:
            out.append(parsed)
    return tuple(out)


def _range(text: object) -> TimeRange | None:
    match = _RANGE.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if m1 > 59 or m2 > 59 or start >= 24 * 60 or end > 24 * 60 or (start == end % (24 * 60) and end != 24 * 60):
        return None
    return TimeRange(start, end % (24 * 60))


class OpenCheck:
    """``open(name)`` in flow templates: whether the calendar (or the queue's hours) ``name`` is open now.

    ``hours`` maps every name a flow may pass to its calendar (None: always open); ``clock`` gives Unix time.
    """

    def __init__(self, hours: Mapping[str, Calendar | None], clock: Callable[[], float]) -> None:
        self.hours = dict(hours)
        self.clock = clock

    def __call__(self, name: object) -> bool:
        if not isinstance(name, str) or name not in self.hours:
            known = ", ".join(sorted(self.hours)) or "none"
            raise LookupError(f"open({name!r}): no calendar or queue of that name; known: {known}")
        calendar = self.hours[name]
        return calendar is None or calendar.is_open(self.clock())
