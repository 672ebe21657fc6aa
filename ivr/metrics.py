"""Prometheus metrics of a running server (``/metrics``)."""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ivr.call.events import CallEvent, CallFinished, RecognitionTimed, TurnLatency

if TYPE_CHECKING:
    from ivr.call.line import CallObserver
    from ivr.queue.config import AcdConfig
    from ivr.store import Store

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)
SERVICE_LEVEL_WINDOW = 3600.0
"""Seconds back from the scrape that ``ivr_queue_service_level`` covers (a rolling hour)."""
LINE_STATES = ("waiting", "offering")
"""Queue entries of callers waiting on the line (callback entries are ``ivr.queue.engine.CALLBACK_STATES``)."""


class Metrics:
    """The server's counters and histograms, in their own registry (so tests can run several servers)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.active_calls = Gauge("ivr_active_calls", "Calls admitted and not over (ringing or answered)",
                                  registry=self.registry)
        self.calls = Counter("ivr_calls", "Finished calls by outcome", ["outcome"], registry=self.registry)
        self.turn_latency = Histogram(
            "ivr_turn_latency_seconds",
            "End of the caller's speech to the first audio of the reply",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.asr_seconds = Histogram(
            "ivr_asr_seconds", "Time from the endpoint to the final transcript", buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.flow_reloads = Counter("ivr_flow_reloads", "Flow files reloaded", ["result"], registry=self.registry)

    def watch_sip(self, active_calls: Callable[[], int], rejections: Callable[[], dict[str, int]]) -> None:
        """Read the SIP side's call count and refusals (by reason) at every scrape."""
        self.active_calls.set_function(active_calls)
        self.registry.register(_RejectionsCollector(rejections))

    def watch_queues(self, store: Store, config: AcdConfig, clock: Callable[[], float]) -> None:
        """Report the queues and agents at every scrape, read from the store (so every node of a cluster
        shows the whole ACD)."""
        self.registry.register(QueueCollector(store, config, clock))

    def observer(self) -> MetricsObserver:
        """A call observer that feeds these metrics."""
        return MetricsObserver(self)

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class _RejectionsCollector:
    """``ivr_calls_rejected_total{reason}``: read from the SIP side when scraped."""

    def __init__(self, read: Callable[[], dict[str, int]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily("ivr_calls_rejected", "Calls and requests refused, by reason", labels=["reason"])
        for reason, count in sorted(self._read().items()):
            family.add_metric([reason], count)
        yield family


class QueueCollector:
    """Per-queue waiting callers, longest wait, agents by state, service level and opening hours, read from
    the store when scraped."""

    def __init__(self, store: Store, config: AcdConfig, clock: Callable[[], float],
                 window: float = SERVICE_LEVEL_WINDOW) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self.window = window

    def collect(self) -> Iterator[Metric]:
        """The queue families; none when the store cannot be read (the scrape keeps the other metrics)."""
        from ivr.queue.engine import AGENT_STATES, CALLBACK_STATES

        now = self.clock()
        try:
            live = self.store.live_queue_rows()
            stored = self.store.load_agent_states()
            recent = self.store.queue_entries_between(now - self.window, now + 1)
        except Exception:
            log.exception("queue metrics: the store could not be read")
            return
        queues = sorted(self.config.queues)
        waiting = GaugeMetricFamily("ivr_queue_waiting", "Callers waiting on the line in the queue (an agent's "
                                    "phone may be ringing for them)", labels=["queue"])
        callbacks = GaugeMetricFamily("ivr_queue_callbacks_waiting", "Callers who hung up for a callback and keep "
                                      "their place in the queue (being called back too)", labels=["queue"])
        longest = GaugeMetricFamily("ivr_queue_longest_wait_seconds", "How long the longest-waiting caller of "
                                    "the queue, on the line or for a callback, has waited since joining (0: nobody "
                                    "waits)", labels=["queue"])
        longest_callback = GaugeMetricFamily("ivr_queue_callbacks_longest_wait_seconds", "How long the longest-"
                                             "waiting callback of the queue has waited since its caller joined (0: "
                                             "none)", labels=["queue"])
        for queue in queues:
            on_line = [now - r["enqueued_at"] for r in live if r["queue"] == queue and r["state"] in LINE_STATES]
            held = [now - r["enqueued_at"] for r in live if r["queue"] == queue and r["state"] in CALLBACK_STATES]
            waiting.add_metric([queue], len(on_line))
            callbacks.add_metric([queue], len(held))
            longest.add_metric([queue], max(on_line + held, default=0.0))
            longest_callback.add_metric([queue], max(held, default=0.0))
        yield from (waiting, callbacks, longest, longest_callback)
        state_of = {name: (stored[name]["state"] if name in stored else "offline") for name in self.config.agents}
        overall = GaugeMetricFamily("ivr_agents", "Agents by state", labels=["state"])
        totals = Tally(state_of.values())
        for state in AGENT_STATES:
            overall.add_metric([state], totals[state])
        yield overall
        per_queue = GaugeMetricFamily("ivr_queue_agents", "Agents who take the queue's calls, by state (an "
                                      "agent of several queues counts in each)", labels=["queue", "state"])
        for queue in queues:
            counts = Tally(state_of[a.name] for a in self.config.members(queue))
            for state in AGENT_STATES:
                per_queue.add_metric([queue, state], counts[state])
        yield per_queue
        yield self._service_level(queues, recent)
        is_open = GaugeMetricFamily("ivr_queue_open", "1 while the queue takes callers (inside its hours), "
                                    "else 0", labels=["queue"])
        for queue in queues:
            is_open.add_metric([queue], 1.0 if self.config.queues[queue].is_open(now) else 0.0)
        yield is_open

    def _service_level(self, queues: list[str], recent: list[dict[str, Any]]) -> Metric:
        seconds = self.config.service_level_seconds
        family = GaugeMetricFamily(
            "ivr_queue_service_level",
            f"Share of the queue's callers of the last {self.window / 3600:g} h (by the time they joined) answered "
            f"within {seconds:g} s, of those answered or abandoned (0..1; absent without such callers)",
            labels=["queue"],
        )
        for queue in queues:
            rows = [r for r in recent if r["queue"] == queue]
            answered = [r["answered_at"] - r["enqueued_at"] for r in rows if r["answered_at"] is not None]
            abandoned = sum(1 for r in rows if r["answered_at"] is None and r["state"] == "abandoned")
            if answered or abandoned:
                family.add_metric([queue], sum(1 for w in answered if w <= seconds) / (len(answered) + abandoned))
        return family


class MetricsObserver:
    """Turns session events into metric updates."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def on_event(self, event: CallEvent) -> None:
        """Record turn latency, recognition time and the call outcome."""
        if isinstance(event, TurnLatency):
            self.metrics.turn_latency.observe(event.seconds)
        elif isinstance(event, RecognitionTimed):
            self.metrics.asr_seconds.observe(event.seconds)
        elif isinstance(event, CallFinished):
            self.metrics.calls.labels(outcome=event.outcome or "unknown").inc()


class FanOut:
    """Sends each session event to several observers."""

    def __init__(self, *observers: CallObserver | None) -> None:
        self.observers = [o for o in observers if o is not None]

    def on_event(self, event: CallEvent) -> None:
        """Forward to every observer."""
        for observer in self.observers:
            observer.on_event(event)
