"""The numbers a contact centre lives by, computed from stored calls and queue entries."""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from ivr.store import Store

TRANSFER_OUTCOMES = ("transferred", "transfer")


def day_bounds(day: dt.date) -> tuple[float, float]:
    """UNIX seconds of local midnight at the start and end of ``day``."""
    start = dt.datetime.combine(day, dt.time()).astimezone()
    return start.timestamp(), (start + dt.timedelta(days=1)).timestamp()


def percentile(values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile (``fraction`` 0..1) of ``values``; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


def _satisfaction(context: Mapping[str, Any]) -> float | None:
    for scope in (context, context.get("slots"), context.get("variables")):
        if isinstance(scope, Mapping) and "satisfaction" in scope:
            try:
                return float(scope["satisfaction"])
            except (TypeError, ValueError):
                return None
    return None


def figures(store: Store, since: float, until: float, service_level_seconds: float = 20.0) -> dict[str, Any]:
    """Calls, containment, transfer rate by intent, abandonment, waits, service level and satisfaction."""
    calls = store.calls_between(since, until)
    entries = store.queue_entries_between(since, until)
    by_call: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for e in entries:
        by_call[e["call_id"]].append(e)
    queued = set(by_call)
    transferred = queued | {c["id"] for c in calls if c["outcome"] in TRANSFER_OUTCOMES}
    ended = [c for c in calls if c["ended_at"] is not None]
    contained = [c for c in ended if c["id"] not in transferred]

    intents: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for c in calls:
        counts = intents[c["intent"] or "(none)"]
        counts[0] += 1
        counts[1] += c["id"] in transferred
    waits: list[float] = []
    answered = abandoned = within = 0
    for rows in by_call.values():
        first, last = rows[0], rows[-1]
        if last["answered_at"] is not None:
            wait = last["answered_at"] - first["enqueued_at"]
            waits.append(wait)
            answered += 1
            within += wait <= service_level_seconds
        elif last["state"] == "abandoned":
            abandoned += 1
    scores = [s for s in (_satisfaction(c["context"] or {}) for c in calls) if s is not None]
    return {
        "since": since,
        "until": until,
        "calls": len(calls),
        "ended": len(ended),
        "contained": len(contained),
        "containment": len(contained) / len(ended) if ended else None,
        "transferred": len(transferred & {c["id"] for c in calls}),
        "transfer_rate_by_intent": {
            intent: {"calls": n, "transferred": k, "rate": k / n} for intent, (n, k) in sorted(intents.items())
        },
        "queued": len(by_call),
        "answered": answered,
        "abandoned": abandoned,
        "abandonment": abandoned / len(by_call) if by_call else None,
        "wait_average": sum(waits) / len(waits) if waits else None,
        "wait_p90": percentile(waits, 0.9),
        "service_level_seconds": service_level_seconds,
        "service_level": within / (answered + abandoned) if answered + abandoned else None,
        "satisfaction_average": sum(scores) / len(scores) if scores else None,
        "satisfaction_responses": len(scores),
    }


def daily_trend(store: Store, days: int, today: dt.date, service_level_seconds: float = 20.0) -> list[dict[str, Any]]:
    """:func:`figures` for each of the last ``days`` days up to ``today``, oldest first, with a ``day`` key."""
    out = []
    for back in range(days - 1, -1, -1):
        day = today - dt.timedelta(days=back)
        since, until = day_bounds(day)
        out.append({"day": day.isoformat(), **figures(store, since, until, service_level_seconds)})
    return out


def hourly_calls(store: Store, day: dt.date) -> list[tuple[str, float]]:
    """Calls started in each hour of ``day`` (24 bars)."""
    since, until = day_bounds(day)
    counts = [0] * 24
    for c in store.calls_between(since, until):
        counts[dt.datetime.fromtimestamp(c["started_at"]).hour] += 1
    return [(f"{h:02d}", float(n)) for h, n in enumerate(counts)]
