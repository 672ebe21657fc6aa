"""Agent queues (ACD): queues and agents from YAML, offers through an :class:`AgentConnector`."""

from __future__ import annotations

from ivr.queue.config import AcdConfig, AgentConfig, QueueConfig, load_queues, parse_queues
from ivr.queue.connector import AgentConnector, Offer, OfferResult, context_headers
from ivr.queue.engine import (
    AGENT_STATES,
    Acd,
    Announce,
    CallbackOffer,
    Connected,
    Overflowed,
    QueueError,
    QueueUpdate,
    Refused,
    Ticket,
)

__all__ = [
    "AGENT_STATES",
    "Acd",
    "AcdConfig",
    "AgentConfig",
    "AgentConnector",
    "Announce",
    "CallbackOffer",
    "Connected",
    "Offer",
    "OfferResult",
    "Overflowed",
    "QueueConfig",
    "QueueError",
    "QueueUpdate",
    "Refused",
    "Ticket",
    "context_headers",
    "load_queues",
    "parse_queues",
]
