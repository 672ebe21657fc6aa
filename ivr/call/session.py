"""The call session: runs one call of a flow over a Channel, through VAD → ASR → NLU → flow → TTS.

The flow interpreter decides; the session hands each of its actions to the part whose one job it is:
turn-taking (``turns``), playback, webhooks, recording, transfers and queue waiting, and writes the call
down through ``records``. The same session serves a SIP call, an audio-fixture replay and a local
microphone.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any, NoReturn, Protocol

from ivr.call import events as ev
from ivr.call.config import CallResult, SessionConfig
from ivr.call.line import CallEnded, CallLine, CallObserver
from ivr.call.playback import Playback
from ivr.call.queueing import QueueService
from ivr.call.recording import Recorder
from ivr.call.records import CallRecords, CallStore, Privacy
from ivr.call.taping import CallTape, RecordingPolicy
from ivr.call.transfer import Transfers
from ivr.call.turns import TurnTaker
from ivr.call.webhooks import Webhooks
from ivr.channel import Channel
from ivr.events import ControlEvent, Hangup, Transcript
from ivr.flow import actions as fa
from ivr.flow.prompts import system_prompts
from ivr.services import SpeechServices
from ivr.store.views import for_handoff

log = logging.getLogger(__name__)


class Interpreter(Protocol):
    """What the session needs of ``ivr.flow``'s per-call interpreter."""

    finished: bool

    def start(self) -> list[fa.FlowAction]: ...
    def handle(self, event: ControlEvent) -> list[fa.FlowAction]: ...
    def context(self) -> dict[str, Any]: ...
    def resume_at(self, node: str) -> list[fa.FlowAction]:
        """Continue the call at ``node`` after a transfer that could not happen (a queue overflowing to a
        flow node)."""
        ...


class CallSession:
    """Runs one call: give it a channel, an interpreter for the flow, and the shared speech services.
    ``language`` and ``prompts`` are the flow's (``Flow.language``, ``Flow.prompts``): the voice and the
    words of everything the session says on its own."""

    def __init__(
        self,
        channel: Channel,
        interpreter: Interpreter,
        services: SpeechServices,
        *,
        flow_name: str = "",
        language: str | None = None,
        prompts: Mapping[str, str] | None = None,
        store: CallStore | None = None,
        queues: QueueService | None = None,
        observer: CallObserver | None = None,
        config: SessionConfig | None = None,
        fallback_queue: str | None = None,
        recording: RecordingPolicy | None = None,
    ) -> None:
        """``fallback_queue``: the flow's (``global.fallback_queue``), where a failed transfer goes next;
        default: the server's ``SessionConfig.fallback_queue``. ``recording``: the flow records every call
        (after its announcement); it needs ``config.vault`` (no vault: the call is not recorded, logged)."""
        self.channel = channel
        self.interp = interpreter
        self.flow_name = flow_name
        self.config = config or SessionConfig()
        self.call_id = channel.call_id or uuid.uuid4().hex
        self.line = CallLine(channel, self.call_id, services, self.config, observer)
        self.records = CallRecords(store, self.call_id)
        self.recording = recording
        if self.config.vault is not None:
            self.line.tape = CallTape(self.config.vault, self.call_id, self.line.rate)
        elif recording is not None:
            log.warning("call %s: flow '%s' asks for call recording but the server keeps no recordings (no store)",
                        self.call_id, flow_name)
        self.privacy = Privacy(interpreter.context)
        self.playback = Playback(self.line, services.tts_for(language), system_prompts(language or "en", prompts),
                                 self.records, self.privacy)
        self.turns = TurnTaker(self.line, self.playback, self.records, self.privacy)
        self.webhooks = Webhooks(self.line, self.playback, self.records)
        self.recorder = Recorder(self.line, self.records, interpreter.handle)
        self.transfers = Transfers(self.line, self.playback, self.records, self.recorder, queues,
                                   fallback_queue or self.config.fallback_queue, interpreter.context,
                                   self._resume_at, self._start_recording)

    def run(self) -> CallResult:
        """Run the call to its end; never raises (errors end in the apology and a fallback)."""
        started = time.time()
        self.records.call_started(self.channel.caller, self.channel.called, self.flow_name, started)
        try:
            if self.recording is not None:
                self._start_recording(self.recording.announce)
            self._run_actions(self.interp.start())
        except CallEnded:
            pass  # the outcome was set where the call ended
        except Exception as exc:  # a failing call must never take down the server
            log.exception("call %s: unexpected error", self.call_id)
            self.line.notify(ev.CallFailed(at=self.line.now, error=repr(exc)))
            self._fallback()
        finally:
            self._finish()
        return self.line.result

    def _run_actions(self, initial: list[fa.FlowAction]) -> None:
        pending: deque[fa.FlowAction] = deque(initial)
        while pending:
            event = self._execute(pending.popleft())
            if event is None:
                continue
            if isinstance(event, Hangup):
                self.interp.handle(event)
                self.line.end("caller_hangup")
            pending.extend(self._handle(event))

    def _start_recording(self, announce: str, queue: str = "") -> None:
        """Say ``announce`` (if any) and start the call recording (no-op without a vault, or when it runs)."""
        tape = self.line.tape
        if tape is None or tape.recording:
            return
        if announce:
            self.playback.say_text(announce)
            self.line.drain_playback()
        tape.start(queue)

    def _resume_at(self, node: str) -> None:
        self._run_actions(self.interp.resume_at(node))

    def _handle(self, event: ControlEvent) -> list[fa.FlowAction]:
        actions = self.interp.handle(event)
        if isinstance(event, Transcript):
            ctx = self.interp.context()
            self.line.notify(ev.IntentFound(at=self.line.now, intent=ctx.get("intent"),
                                            confidence=ctx.get("confidence")))
            self.records.caller_turn(self.privacy.text(self.privacy.answer(event.text)), ctx.get("intent"),
                                     ctx.get("confidence"))
        return actions

    def _execute(self, action: fa.FlowAction) -> ControlEvent | None:
        if isinstance(action, fa.Say):
            self.playback.say(action)
            return None
        if isinstance(action, fa.Listen):
            return self.turns.listen(action)
        if isinstance(action, fa.HttpRequest):
            return self.webhooks.request(action)
        if isinstance(action, fa.Record):
            return self.recorder.record(action)
        if isinstance(action, fa.RecordingControl):
            if self.line.tape is not None:
                (self.line.tape.pause if action.pause else self.line.tape.resume)("flow")
            return None
        if isinstance(action, fa.Transfer):
            self.transfers.transfer(action)
            return None
        if isinstance(action, fa.KnowledgeLookup):
            self._question(action)
            return None
        if isinstance(action, fa.Hangup):
            self._hangup(action.reason)
        raise TypeError(f"unknown flow action {action!r}")

    def _question(self, lookup: fa.KnowledgeLookup) -> None:
        """Report and record a knowledge lookup, its question masked as the caller's turn is."""
        question = self.privacy.text(self.privacy.answer(lookup.question))
        event: ev.CallEvent
        if lookup.entry is not None:
            event = ev.QuestionAnswered(at=self.line.now, question=question, entry=lookup.entry,
                                        confidence=lookup.confidence, node=lookup.node)
        else:
            event = ev.QuestionUnanswered(at=self.line.now, question=question, best=lookup.best,
                                          confidence=lookup.confidence, node=lookup.node)
        self.line.notify(event)
        self.records.event(event)

    def _hangup(self, reason: str) -> NoReturn:
        self.line.drain_playback()
        self.line.notify(ev.BotHungUp(at=self.line.now, reason=reason))
        self.channel.hangup()
        self.line.end(reason or "completed")

    def _fallback(self) -> None:
        """After an unexpected error: apologise and transfer to the fallback queue (or hang up)."""
        try:
            self.playback.say_text(self.playback.prompts["error"])
            self.transfers.transfer(fa.Transfer(queue=self.transfers.fallback_queue))
        except CallEnded:
            pass
        except Exception:
            log.exception("call %s: fallback failed; hanging up", self.call_id)
            self.line.result.outcome = "error"
            try:
                self.channel.hangup()
            except Exception:
                log.exception("call %s: hangup failed", self.call_id)
        else:
            self.line.result.outcome = "error"

    def _finish(self) -> None:
        tape = self.line.tape
        written = tape.close() if tape is not None else None
        if tape is not None and written is not None:
            self.records.recording("call", str(written.path), written.duration, tape.queue)
        result = self.line.result
        try:
            context = self.interp.context()
        except Exception:
            log.exception("call %s: reading the flow context failed", self.call_id)
            context = {}
        result.context = context
        self.records.context(for_handoff({**context, "call_id": self.call_id}))
        self.records.call_ended(result.outcome)
        self.line.notify(ev.CallFinished(at=self.line.now, outcome=result.outcome, context=for_handoff(context)))
