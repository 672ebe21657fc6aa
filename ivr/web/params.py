"""Query parameters read defensively: a bad value is a 400 that says what is expected, never a 500."""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import PathConverter

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
