"""Erasing calls: one on request (``ivr calls erase ID``), and every call older than the retention time
(``ivr serve --retention-days N``: at start, then once a day, in a background thread)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from ivr.store.store import Store

log = logging.getLogger(__name__)

DAY = 86400.0


def erase_call(store: Store, call_id: str, *, everything: bool = True, at: float | None = None) -> bool:
    """Erase a call's transcript, context, events and recordings (``everything``: also the agents' notes
    and the caller's number); False when there is no such call."""
    recordings = store.erase_call(call_id, time.time() if at is None else at, everything=everything)
    if recordings is None:
        return False
    for path in recordings:
        try:
            Path(path).unlink(missing_ok=True)
        except OSError as exc:
            log.warning("call %s: cannot delete the recording %s: %s", call_id, path, exc)
    return True


def purge_older_than(store: Store, days: float, now: float | None = None) -> int:
    """Erase the transcripts, contexts and recordings of ended calls that started more than ``days`` ago
    (their times, outcomes, queues and caller numbers stay for the figures); returns how many."""
    before = (time.time() if now is None else now) - days * DAY
    erased = 0
    while True:
        batch = store.calls_to_purge(before)
        for call_id in batch:
            erase_call(store, call_id, everything=False)
        erased += len(batch)
        if len(batch) < 500:
            break
    return erased


class RetentionPurger:
    """Runs :func:`purge_older_than` at start and then every ``interval`` seconds (a day) until stopped."""

    def __init__(self, store: Store, days: float, interval: float = DAY,
                 clock: Callable[[], float] = time.time) -> None:
        self.store, self.days, self.interval, self.clock = store, days, interval, clock
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ivr-retention", daemon=True)

    def start(self) -> None:
        """Purge now (in the background) and then once per interval."""
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (a purge under way finishes its current batch)."""
        self._stop.set()
        self._thread.join(5.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                erased = purge_older_than(self.store, self.days, self.clock())
                if erased:
                    log.info("retention: erased the transcripts and recordings of %d call(s) older than %g days",
                             erased, self.days)
            except Exception:  # a failing purge must not stop the server; it is tried again tomorrow
                log.exception("retention purge failed")
            self.runs += 1
            self._stop.wait(self.interval)
