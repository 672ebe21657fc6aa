"""The boundary between the ACD and telephony: offer a call to an agent, hear back how it went.

``ivr/sip`` implements :class:`AgentConnector` with pjsua2 (bridged: call the agent's URI with the context
headers and join the legs on answer; refer: blind-transfer the caller to the agent's URI). Tests use
:class:`ivr.queue.testing.FakeConnector`.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from ivr.store.masking import mask_sensitive


class OfferResult(enum.Enum):
    """How an offer ended, as the connector reports it."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    REJECTED = "rejected"  # busy or declined
    FAILED = "failed"  # unreachable, error


@dataclass(frozen=True)
class Offer:
    """One attempt to connect a waiting caller to one agent."""

    offer_id: str
    call_id: str
    queue: str
    agent: str
    uri: str
    mode: str  # 'bridged' or 'refer'
    ring_timeout: float
    headers: Mapping[str, str] = field(default_factory=dict)


ReportOffer = Callable[[str, OfferResult], None]


class AgentConnector(Protocol):
    """Rings agents. ``offer`` must return at once; the result comes later through ``report`` (any thread).

    The ACD calls ``offer`` and ``cancel`` outside its lock, one at a time and in the order it decided
    them; ``report`` may be called from within ``offer``. Still, ``report`` must not be called while
    holding a lock that ``offer`` or ``cancel`` also take (hand reports from media callbacks to a worker).
    """

    def offer(self, offer: Offer, report: ReportOffer) -> None:
        """Start ringing ``offer.uri`` (with ``offer.headers``); call ``report(offer.offer_id, result)`` once."""
        ...

    def cancel(self, offer_id: str) -> None:
        """Stop ringing (ring timeout, another agent answered, the caller hung up); no report needed after."""
        ...


_UNSAFE = re.compile(r"[^\x20-\x7e]|[\r\n]")


def _header_value(value: object, limit: int = 200) -> str:
    text = mask_sensitive(str(value))
    return _UNSAFE.sub("?", text)[:limit]


def context_headers(
    call_id: str, queue: str, priority: int, wait: float, context: Mapping[str, Any], context_url: str = ""
) -> dict[str, str]:
    """SIP headers carrying the caller's context to the agent's phone (ASCII, masked, length-limited)."""
    headers = {
        "X-IVR-Call-Id": _header_value(call_id),
        "X-IVR-Queue": _header_value(queue),
        "X-IVR-Priority": str(priority),
        "X-IVR-Wait": f"{wait:.0f}",
    }
    for key, header in (("caller", "X-IVR-Caller"), ("intent", "X-IVR-Intent"), ("flow", "X-IVR-Flow")):
        if context.get(key) not in (None, ""):
            headers[header] = (
                _UNSAFE.sub("?", str(context[key]))[:200] if key == "caller" else _header_value(context[key])
            )
    if isinstance(context.get("confidence"), int | float):
        headers["X-IVR-Confidence"] = f"{float(context['confidence']):.2f}"
    slots = context.get("slots")
    if isinstance(slots, Mapping) and slots:
        headers["X-IVR-Slots"] = _header_value(";".join(f"{k}={v}" for k, v in slots.items()), 500)
    if context_url:
        headers["X-IVR-Context-Url"] = _header_value(context_url)
    return headers
