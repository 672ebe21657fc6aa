"""Throttling of password and API-token guessing, counted in the store so it holds across requests,
threads and processes.

Each failure is recorded under keys such as ``user:ann`` and ``ip:192.0.2.7``. A key with ``limit`` failures
within ``window`` seconds is locked until enough of them are older than the window; while it is locked
even the right password is refused, so guessing gets no faster than ``limit`` tries per window.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from ivr.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ThrottleConfig:
    """How many failures lock an account or a source address, and for how long they count."""

    per_account: int = 5
    per_source: int = 20
    window_seconds: float = 900.0


class Throttle:
    """Counts failed sign-ins per account and per source, and failed API tokens per source."""

    def __init__(self, store: Store, config: ThrottleConfig | None = None) -> None:
        self.store = store
        self.config = config or ThrottleConfig()

    def login_keys(self, name: str, source: str) -> list[tuple[str, int]]:
        """The keys (with their limits) a sign-in as ``name`` from ``source`` is counted under."""
        account = f"user:{name.strip().lower()[:64]}"
        return [(account, self.config.per_account), (f"ip:{source}", self.config.per_source)]

    def token_keys(self, source: str) -> list[tuple[str, int]]:
        """The keys an API token sent from ``source`` is counted under."""
        return [(f"token:{source}", self.config.per_source)]

    def retry_after(self, keys: list[tuple[str, int]], now: float | None = None) -> int:
        """Whole seconds until every key is below its limit again; 0 when none is locked."""
        now = time.time() if now is None else now
        wait = 0.0
        for key, limit in keys:
            failures = self.store.auth_failures(key, now - self.config.window_seconds)
            if len(failures) >= limit:
                wait = max(wait, failures[-limit] + self.config.window_seconds - now)
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, keys: list[tuple[str, int]], now: float | None = None) -> None:
        """Count one failure under each key."""
        now = time.time() if now is None else now
        self.store.add_auth_failure([key for key, _ in keys], now, now - self.config.window_seconds)

    def succeeded(self, key: str) -> None:
        """Forget the failures of ``key`` (an account that just signed in)."""
        self.store.clear_auth_failures(key)
