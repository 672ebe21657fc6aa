"""Server-sent events for live console views.

Events pushed by the ACD of this process arrive at once; a change made by another process (the store
is shared) is noticed by polling a cheap store fingerprint every second. Event data carries no caller
data, only what changed; pages then fetch the updated fragment with their own authorisation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from typing import Any

from ivr.queue import Acd
from ivr.store import Store

log = logging.getLogger(__name__)

_SAFE_KEYS = ("type", "call_id", "queue", "agent", "state")


class LiveBroker:
    """Fans ACD events out to each connected browser's event stream."""

    def __init__(self, store: Store, acd: Acd | None, poll_interval: float = 1.0, keepalive: float = 15.0) -> None:
        self.store = store
        self.poll_interval = poll_interval
        self.keepalive = keepalive
        self._clients: set[queue.Queue[dict[str, Any]]] = set()
        self._lock = threading.Lock()
        self._closed = threading.Event()
        if acd is not None:
            acd.subscribe(self.publish)

    def publish(self, event: dict[str, Any]) -> None:
        """Queue an event for every client (never blocks: a slow client just drops events)."""
        slim = {k: event[k] for k in _SAFE_KEYS if k in event}
        with self._lock:
            clients = list(self._clients)
        for q in clients:
            with contextlib.suppress(queue.Full):
                q.put_nowait(slim)

    def close(self) -> None:
        """End every stream within a poll interval (the server is stopping: free its worker threads)."""
        self._closed.set()

    def client_count(self) -> int:
        """Browsers connected now."""
        with self._lock:
            return len(self._clients)

    def stream(self) -> Iterator[str]:
        """The text/event-stream body for one client."""
        q: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=200)
        with self._lock:
            self._clients.add(q)
        try:
            yield "retry: 2000\n\n"
            fingerprint = self.store.live_fingerprint()
            quiet_since = time.monotonic()
            while not self._closed.is_set():
                try:
                    event = q.get(timeout=self.poll_interval)
                except queue.Empty:
                    current = self.store.live_fingerprint()
                    if current != fingerprint:
                        fingerprint = current
                        quiet_since = time.monotonic()
                        yield 'event: change\ndata: {"type": "store"}\n\n'
                    elif time.monotonic() - quiet_since > self.keepalive:
                        quiet_since = time.monotonic()
                        yield ": keepalive\n\n"  # also detects a closed browser
                    continue
                fingerprint = self.store.live_fingerprint()
                quiet_since = time.monotonic()
                yield f"event: change\ndata: {json.dumps(event)}\n\n"
        finally:
            with self._lock:
                self._clients.discard(q)
