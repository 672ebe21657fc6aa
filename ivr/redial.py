"""Calling a number again: the retry rule and the per-number daily limit that callbacks (the ACD) and outbound
calls (``ivr.outbound``) share, so both follow one rule."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

DAY = 86400.0
"""Days are counted in UTC, from the epoch."""
OUTBOUND_CALLS_PER_DAY = 5
"""Outbound calls (``POST /api/calls/outbound`` requests, not tries) a number gets a day unless the server is
configured otherwise (``ivr serve --outbound-per-day``)."""


@dataclass(frozen=True)
class RetryPolicy:
    """Try an unanswered call again ``retries`` times, ``retry_after`` seconds apart."""

    retries: int = 0
    retry_after: float = 0.0

    @property
    def attempts(self) -> int:
        """Tries in all, the first one included."""
        return self.retries + 1

    def next_attempt_at(self, attempts: int, now: float) -> float | None:
        """When to try again after ``attempts`` tries that all failed; None once the retries are spent."""
        if attempts > self.retries:
            return None
        return now + self.retry_after


class DailyCounts:
    """Calls asked for per number and day, to hold each number to a daily limit.

    Not thread-safe: its users (the ACD, ``OutboundCalls``) call it under their own lock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._counts: dict[tuple[str, int], int] = {}

    def today(self, number: str) -> int:
        """Calls to ``number`` counted today."""
        return self._counts.get((number, self._day()), 0)

    def allows(self, number: str, limit: int) -> bool:
        """Whether ``number`` may have one more call today under ``limit``."""
        return self.today(number) < limit

    def add(self, number: str) -> None:
        """Count one more call to ``number`` today (older days are forgotten)."""
        day = self._day()
        self._counts = {key: n for key, n in self._counts.items() if key[1] == day}
        self._counts[(number, day)] = self._counts.get((number, day), 0) + 1

    def load(self, counts: Mapping[str, int]) -> None:
        """Replace the counts with today's ``counts`` by number (read back from the store on a restart)."""
        day = self._day()
        self._counts = {(number, day): n for number, n in counts.items()}

    def _day(self) -> int:
        return int(self.clock() // DAY)
