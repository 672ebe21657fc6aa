"""Query parameters read defensively: a bad value is a 400 that says what is expected, never a 500."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import PathConverter

from ivr.reports.drill import FIGURES, CallFilter
from ivr.reports.periods import day_bounds

# Dates whose day bounds and 90-day trends stay inside what datetime and UNIX timestamps can represent.
FIRST_DAY = dt.date(1971, 1, 1)
LAST_DAY = dt.date(9998, 12, 31)
_UNSAFE_NEXT = re.compile(r"[\x00-\x20\x7f\\]")


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """The whole-number query parameter ``name`` in [low, high], or ``default`` when absent."""
    text = request.args.get(name)
    if text is None or text == "":
        return default
    if not re.fullmatch(r"[+-]?\d{1,18}", text.strip()) or not low <= int(text) <= high:
        raise BadRequest(f"{name} must be a whole number from {low} to {high}")
    return int(text)


def float_arg(name: str) -> float | None:
    """The finite number query parameter ``name`` (UNIX seconds), or None when absent."""
    text = request.args.get(name)
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a number (UNIX seconds)")
    return value


def day_arg(name: str = "day") -> dt.date:
    """The date query parameter ``name`` (YYYY-MM-DD), today when absent."""
    text = request.args.get(name)
    if text is None or text == "":
        return dt.date.today()
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = dt.date.min
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) or not FIRST_DAY <= day <= LAST_DAY:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD from {FIRST_DAY} to {LAST_DAY}")
    return day


MAX_RANGE_DAYS = 92


def day_range_args() -> tuple[dt.date, dt.date]:
    """The days ``since`` to ``until`` (YYYY-MM-DD, both included; ``day`` is the older name of ``since``):
    today when absent, ``until`` defaulting to ``since``; at most :data:`MAX_RANGE_DAYS` days."""
    first = day_arg("since") if request.args.get("since") else day_arg("day")
    last = day_arg("until") if request.args.get("until") else first
    if last < first:
        raise BadRequest("until must be the same day as since or later")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise BadRequest(f"a range can span at most {MAX_RANGE_DAYS} days")
    return first, last


FILTER_TEXTS = ("queue", "agent", "intent", "flow")


def call_filter_args() -> tuple[CallFilter | None, dict[str, str]]:
    """The call records' figure filters (docs/console.md): days ``since`` to ``until`` (YYYY-MM-DD; either
    alone is open-ended), ``figure`` (one of :data:`ivr.reports.drill.FIGURES`), ``queue``, ``agent``,
    ``intent``, ``flow`` (exact names) and ``hour`` (0-23). Returns the filter (None when none is given) and
    the values given, to keep in links."""
    shown: dict[str, str] = {}
    for name in ("since", "until"):
        if request.args.get(name):
            shown[name] = day_arg(name).isoformat()
    figure = request.args.get("figure", "")
    if figure:
        if figure not in FIGURES:
            raise BadRequest(f"figure must be one of {', '.join(FIGURES)}")
        shown["figure"] = figure
    for name in FILTER_TEXTS:
        value = request.args.get(name, "")
        if len(value) > 200:
            raise BadRequest(f"{name} must be at most 200 characters")
        if value:
            shown[name] = value
    hour = int_arg("hour", -1, 0, 23)
    if hour >= 0:
        shown["hour"] = str(hour)
    if not shown:
        return None, shown
    first = dt.date.fromisoformat(shown.get("since", FIRST_DAY.isoformat()))
    last = dt.date.fromisoformat(shown.get("until", LAST_DAY.isoformat()))
    if last < first:
        raise BadRequest("until must be the same day as since or later")
    call_filter = CallFilter(day_bounds(first)[0], day_bounds(last)[1], figure=figure, queue=shown.get("queue", ""),
                             agent=shown.get("agent", ""), intent=shown.get("intent", ""),
                             flow=shown.get("flow", ""), hour=hour if hour >= 0 else None)
    return call_filter, shown


def json_object() -> dict[str, Any]:
    """The request's JSON body, which must be an object ({} when there is none)."""
    body = request.get_json(silent=True)
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise BadRequest("send a JSON object")
    return body


def safe_next(target: str | None) -> str:
    """``target`` if it is a path on this site, else ''.

    Browsers drop tabs and newlines inside URLs and treat backslashes as slashes, so ``/\\t/evil`` would
    become ``//evil`` (another site): any whitespace, control character or backslash is refused outright.
    """
    if not target or _UNSAFE_NEXT.search(target) or not target.startswith("/") or target.startswith("//"):
        return ""
    return target


class CallIdConverter(PathConverter):
    """A URL part that may hold any character, '/' too (SIP Call-IDs may contain and even start with one)."""

    regex = ".+?"
    part_isolating = False
