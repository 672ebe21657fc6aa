"""One call of a flow: a small ``CallSession`` that hands the flow interpreter's actions to parts with one
job each (turn-taking, playback, webhooks, recording, transfers and queue waiting, records)."""

from __future__ import annotations

from ivr.call.config import CallResult, SessionConfig
from ivr.call.line import CallObserver
from ivr.call.queueing import QueueService
from ivr.call.records import CallStore
from ivr.call.session import CallSession, Interpreter

__all__ = ["CallObserver", "CallResult", "CallSession", "CallStore", "Interpreter", "QueueService", "SessionConfig"]
