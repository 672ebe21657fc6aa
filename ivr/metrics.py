"""Prometheus metrics of a running server (``/metrics``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric

from ivr.call.events import CallEvent, CallFinished, RecognitionTimed, TurnLatency

if TYPE_CHECKING:
    from ivr.call.line import CallObserver

LATENCY_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0)


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
