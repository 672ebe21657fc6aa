"""POST a transferred caller's context to a CRM URL, in a background thread with retries and backoff.

Never blocks the call: ``notify`` only queues the call id; the worker reads the context from the store,
masks it as for anyone outside the call (the CRM gets the full context through ``context_url``, the
signed link also sent as ``X-IVR-Context-Url``), and retries on errors and 5xx answers.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import requests

from ivr.store import Store
from ivr.store.views import call_view

log = logging.getLogger(__name__)


def call_payload(store: Store, call_id: str, *, handling: bool = False) -> dict[str, Any] | None:
    """What a CRM receives about a call: ids, numbers, flow, context and transcript. Masked as for anyone
    (the webhook), or ``handling``: as the agent on the call sees it (the signed context link)."""
    call = store.get_call(call_id)
    if call is None:
        return None
    shown = call_view(call, handling=handling)
    entry = shown["queue_entries"][-1] if shown["queue_entries"] else {}
    return {
        "call_id": call["id"],
        "caller": call["caller"],
        "called": call["called"],
        "flow": call["flow"],
        "started_at": call["started_at"],
        "intent": call["intent"],
        "queue": entry.get("queue"),
        "priority": entry.get("priority"),
        "enqueued_at": entry.get("enqueued_at"),
        "context": {**(entry.get("context") or {}), **(shown["context"] or {})},
        "transcript": [{"at": t["at"], "speaker": t["speaker"], "text": t["text"]} for t in shown["turns"]],
    }


class CrmWebhook:
    """Delivers call contexts to ``url``; ``retries`` extra attempts with doubling ``backoff`` seconds."""

    def __init__(
        self,
        store: Store,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        retries: int = 4,
        backoff: float = 1.0,
        timeout: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        context_url: Callable[[str], str] | None = None,
    ) -> None:
        self.store, self.url = store, url
        self.context_url = context_url
        self.headers = dict(headers or {})
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self._sleep = sleep
        self._queue: queue.Queue[str | None] = queue.Queue(maxsize=10_000)
        self.delivered = 0
        self.failed = 0
        self._thread = threading.Thread(target=self._run, name="crm-webhook", daemon=True)
        self._thread.start()

    def notify(self, call_id: str) -> None:
        """Queue a delivery (returns at once; drops it with a warning if the backlog is full)."""
        try:
            self._queue.put_nowait(call_id)
        except queue.Full:
            log.warning("CRM webhook backlog full; context of call %s not sent", call_id)

    def on_acd_event(self, event: dict[str, Any]) -> None:
        """ACD listener: deliver the context when a caller joins a queue."""
        if event.get("type") == "enqueued" and "overflow_from" not in event:
            self.notify(str(event["call_id"]))

    def close(self, timeout: float = 5.0) -> None:
        """Finish queued deliveries (up to ``timeout``) and stop the worker."""
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            call_id = self._queue.get()
            if call_id is None:
                return
            try:
                self._deliver(call_id)
            except Exception:
                log.exception("CRM webhook for call %s failed", call_id)
                self.failed += 1

    def _deliver(self, call_id: str) -> None:
        payload = call_payload(self.store, call_id)
        if payload is None:
            return
        link = self.context_url(call_id) if self.context_url is not None else ""
        if link:
            payload["context_url"] = link
        delay = self.backoff
        for attempt in range(self.retries + 1):
            try:
                resp = requests.post(self.url, json=payload, headers=self.headers, timeout=self.timeout)
                if resp.status_code < 500:
                    if resp.status_code >= 400:
                        log.warning("CRM webhook refused call %s: HTTP %d", call_id, resp.status_code)
                        self.failed += 1
                    else:
                        self.delivered += 1
                    return
                problem = f"HTTP {resp.status_code}"
            except requests.RequestException as exc:
                problem = str(exc)
            if attempt < self.retries:
                log.info("CRM webhook for call %s: %s; retrying in %.1fs", call_id, problem, delay)
                self._sleep(delay)
                delay *= 2
        log.warning("CRM webhook gave up on call %s after %d attempts: %s", call_id, self.retries + 1, problem)
        self.failed += 1
