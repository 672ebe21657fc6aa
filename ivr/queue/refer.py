"""Connects the ACD's agent offers to live SIP calls (blind REFER of the caller to the agent's phone)."""

from __future__ import annotations

import logging
import threading
from typing import Protocol

from ivr.queue.connector import Offer, OfferResult, ReportOffer

log = logging.getLogger(__name__)


class TransferableChannel(Protocol):
    """What the connector needs of a call's channel."""

    def transfer(self, target: str, headers: dict[str, str]) -> bool: ...


class ReferConnector:
    """Offers a waiting caller to an agent by REFERring the caller's call to the agent's SIP URI.

    The context travels in the offer's ``X-IVR-*`` headers. A REFER the caller's side accepts counts as
    answered (after a blind transfer the call is no longer ours to watch). Queues configured ``bridged``
    are connected the same way for now, and say so in the log.
    """

    def __init__(self) -> None:
        self._channels: dict[str, TransferableChannel] = {}
        self._lock = threading.Lock()
        self._warned_bridged = False

    def attach(self, call_id: str, channel: TransferableChannel) -> None:
        """Make a call reachable for offers while its caller waits in a queue."""
        with self._lock:
            self._channels[call_id] = channel

    def detach(self, call_id: str) -> None:
        """The call ended."""
        with self._lock:
            self._channels.pop(call_id, None)

    def offer(self, offer: Offer, report: ReportOffer) -> None:
        """Start the REFER in the background; report its outcome (never under the ACD's lock)."""
        with self._lock:
            channel = self._channels.get(offer.call_id)
        if offer.mode == "bridged" and not self._warned_bridged:
            self._warned_bridged = True
            log.warning("queue %s is configured 'bridged'; connecting by blind REFER", offer.queue)

        def run() -> None:
            if channel is None:
                report(offer.offer_id, OfferResult.FAILED)
                return
            try:
                accepted = channel.transfer(offer.uri, dict(offer.headers))
            except Exception:
                log.exception("REFER of call %s to %s failed", offer.call_id, offer.uri)
                accepted = False
            report(offer.offer_id, OfferResult.ANSWERED if accepted else OfferResult.FAILED)

        threading.Thread(target=run, name=f"ivr-offer-{offer.offer_id}", daemon=True).start()

    def cancel(self, offer_id: str) -> None:
        """A blind REFER cannot be taken back once sent; nothing to do."""
