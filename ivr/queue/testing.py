"""Helpers to test queue logic without telephony: a settable clock and a scriptable connector."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from ivr.queue.connector import Offer, OfferResult, ReportOffer


class FakeClock:
    """A clock that moves only when told (``advance``); pass ``clock`` to :class:`~ivr.queue.engine.Acd`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass
class FakeConnector:
    """Records offers; the test answers, rejects or lets them ring. ``auto`` answers agents at once by name
    (value: an OfferResult)."""

    auto: dict[str, OfferResult] = field(default_factory=dict)
    offers: list[Offer] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    _reports: dict[str, ReportOffer] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def offer(self, offer: Offer, report: ReportOffer) -> None:
        """Record the offer, and report at once if the agent is in ``auto``."""
        with self._lock:
            self.offers.append(offer)
            self._reports[offer.offer_id] = report
        if offer.agent in self.auto:
            self.report(offer.offer_id, self.auto[offer.agent])

    def cancel(self, offer_id: str) -> None:
        """Record the cancel; the offer can no longer be answered."""
        with self._lock:
            self.cancelled.append(offer_id)
            self._reports.pop(offer_id, None)

    def ringing(self) -> list[Offer]:
        """Offers neither reported nor cancelled."""
        with self._lock:
            return [o for o in self.offers if o.offer_id in self._reports]

    def ringing_agents(self) -> list[str]:
        """Names of agents whose phone rings now."""
        return [o.agent for o in self.ringing()]

    def report(self, offer_id: str, result: OfferResult) -> None:
        """Report an offer's result to the ACD."""
        with self._lock:
            report = self._reports.pop(offer_id, None)
        if report is not None:
            report(offer_id, result)

    def answer(self, agent: str) -> Offer:
        """The agent picks up the call ringing on their phone."""
        offer = next(o for o in self.ringing() if o.agent == agent)
        self.report(offer.offer_id, OfferResult.ANSWERED)
        return offer

    def reject(self, agent: str, result: OfferResult = OfferResult.REJECTED) -> None:
        """The agent declines (or the phone fails)."""
        offer = next(o for o in self.ringing() if o.agent == agent)
        self.report(offer.offer_id, result)
