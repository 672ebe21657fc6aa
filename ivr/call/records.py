"""What a call writes down: a typed writer to the store, and the masking of what may be written."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from ivr.call.events import CallEvent
from ivr.store.masking import mask_sensitive
from ivr.store.views import SECRET_MASK, text_for_handoff

log = logging.getLogger(__name__)


class CallStore(Protocol):
    """The part of ``ivr.store`` a call writes to (each write is durable when it returns)."""

    def start_call(self, call_id: str, caller: str, called: str, flow: str, started_at: float) -> None: ...
    def mark_answered(self, call_id: str, at: float) -> None: ...
    def add_turn(
        self,
        call_id: str,
        at: float,
        speaker: str,
        text: str,
        intent: str | None = None,
        confidence: float | None = None,
    ) -> None: ...
    def add_event(self, call_id: str, at: float, kind: str, data: dict[str, Any]) -> None: ...
    def set_context(self, call_id: str, context: dict[str, Any]) -> None: ...
    def end_call(self, call_id: str, at: float, outcome: str) -> None: ...
    def add_recording(self, call_id: str, at: float, kind: str, path: str, duration: float,
                      queue: str = "") -> int: ...


class CallRecords:
    """Writes one call to the store (when there is one). A failing store is logged, never fatal to the
    call: the caller matters more than the record of the call."""

    def __init__(self, store: CallStore | None, call_id: str) -> None:
        self.store = store
        self.call_id = call_id

    def call_started(self, caller: str, called: str, flow: str, at: float) -> None:
        """The call was answered by the bot at ``at`` (wall clock)."""
        self._write("start_call", lambda s: s.start_call(self.call_id, caller, called, flow, at))
        self._write("mark_answered", lambda s: s.mark_answered(self.call_id, at))

    def bot_turn(self, text: str) -> None:
        """Something the bot said (already masked)."""
        self._write("add_turn", lambda s: s.add_turn(self.call_id, time.time(), "bot", text))

    def caller_dtmf(self, text: str) -> None:
        """Keys the caller pressed (already masked)."""
        self._write("add_turn", lambda s: s.add_turn(self.call_id, time.time(), "caller", text))

    def caller_turn(self, text: str, intent: str | None, confidence: float | None) -> None:
        """What the caller said (already masked) and what the flow made of it."""
        self._write("add_turn", lambda s: s.add_turn(self.call_id, time.time(), "caller", text, intent, confidence))

    def event(self, event: CallEvent) -> None:
        """Something that happened in the call (a webhook, a transfer, a recording …), under its name with
        its fields (the store keeps its own wall-clock time, not the call clock's ``at``)."""
        data = event.data()
        del data["at"]
        self._write("add_event", lambda s: s.add_event(self.call_id, time.time(), event.name, data))

    def recording(self, kind: str, path: str, duration: float, queue: str = "") -> None:
        """A recording of the call was saved at ``path`` ('call', 'voicemail' or 'message')."""
        self._write("add_recording", lambda s: s.add_recording(self.call_id, time.time(), kind, path, duration,
                                                               queue))

    def context(self, context: dict[str, Any]) -> None:
        """What the bot learned, as it may be handed on (already masked)."""
        self._write("set_context", lambda s: s.set_context(self.call_id, context))

    def call_ended(self, outcome: str) -> None:
        """The call is over."""
        self._write("end_call", lambda s: s.end_call(self.call_id, time.time(), outcome))

    def _write(self, what: str, write: Callable[[CallStore], object]) -> None:
        if self.store is None:
            return
        try:
            write(self.store)
        except Exception:
            log.exception("call %s: store.%s failed", self.call_id, what)


class Privacy:
    """What of a call may be written down or reported: card numbers to their last 4 digits, secrets not at
    all. ``context`` gives the flow's collected values (masked wherever they appear in a prompt)."""

    def __init__(self, context: Callable[[], dict[str, Any]]) -> None:
        self._context = context
        self.answer_sensitive = ""
        """The current question's answer is a 'card' number or a 'secret' ('' when neither)."""

    def text(self, text: str) -> str:
        """``text`` as it may be written down: card numbers to their last 4 digits, and the values the flow
        collected as a ``card`` or a ``secret`` masked wherever they appear (a prompt reading one back)."""
        try:
            context = self._context()
        except Exception:
            context = {}
        return text_for_handoff(text, context)

    def answer(self, text: str) -> str:
        """What may be written or reported of the caller's answer: all of it, but the digits of a card
        number (last 4 kept) and nothing of a secret."""
        if self.answer_sensitive == "secret":
            return SECRET_MASK if text else text
        if self.answer_sensitive == "card":
            return mask_sensitive(text)
        return text
