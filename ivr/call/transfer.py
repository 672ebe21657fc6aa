"""Handing the caller on: to an agent queue or a SIP URI, then the fallback queue, then voicemail; the
caller is never hung up on silently."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ivr.call import events as ev
from ivr.call.line import CallLine
from ivr.call.playback import Playback
from ivr.call.queueing import QueueService, QueueWait
from ivr.call.recording import Recorder
from ivr.call.records import CallRecords
from ivr.flow import actions as fa
from ivr.handoff import context_headers
from ivr.store.views import for_handoff

log = logging.getLogger(__name__)


class Transfers:
    """Executes the flow's ``Transfer`` for one call. A transfer that fails (unknown queue, no agent
    reachable, SIP failure) is logged as an error and goes on to the fallback queue, then voicemail.
    ``context`` gives what the bot learned (handed on with the call); ``resume_at`` continues the flow
    at a node (a queue overflowing into the flow); ``start_recording(announce, queue)`` starts the call
    recording for a queue that records its calls."""

    def __init__(self, line: CallLine, playback: Playback, records: CallRecords, recorder: Recorder,
                 queues: QueueService | None, fallback_queue: str, context: Callable[[], dict[str, Any]],
                 resume_at: Callable[[str], None], start_recording: Callable[[str, str], None]) -> None:
        self.line = line
        self.playback = playback
        self.records = records
        self.recorder = recorder
        self.fallback_queue = fallback_queue
        self.context = context
        self.resume_at = resume_at
        self.queue_wait = (QueueWait(line, queues, playback, records, self.voicemail, resume_at, start_recording)
                           if queues is not None else None)

    def transfer(self, action: fa.Transfer) -> None:
        """Hand the caller to the action's queue or URI (or fall back); the bot's part of the call ends."""
        line = self.line
        target = action.queue or action.uri or self.fallback_queue
        # Cards keep their last 4 digits and secrets are masked before anything leaves the bot.
        context = for_handoff({**self.context(), **action.context, "call_id": line.call_id})
        self.records.context(context)
        line.drain_playback()
        failure = self._try(target, action.uri is not None, context)
        if failure is not None:
            self._failed(target, failure, context)
        if self.queue_wait is not None and self.queue_wait.agent_left:
            self._after_agent(action.after_agent)
        line.end(line.result.outcome)

    def _after_agent(self, node: str | None) -> None:
        """The agent hung up first: the flow goes on at ``node`` (a survey), or the call ends."""
        line = self.line
        assert self.queue_wait is not None
        left = ev.AgentLeft(at=line.now, agent=self.queue_wait.agent, resumes_at=node or "")
        line.notify(left)
        self.records.event(left)
        if node is None:
            line.channel.hangup()
            return
        self.resume_at(node)  # runs the flow on; its end ends the call

    def voicemail(self, queue: str = "") -> None:
        """The last resort: take a message (for ``queue``'s voicemail inbox), thank the caller and hang up."""
        line = self.line
        self.playback.say_text(self.playback.prompts["voicemail"])
        try:
            self.recorder.record(fa.Record(max_seconds=120, end_silence=4.0), "voicemail",
                                 queue or line.result.transfer_target or self.fallback_queue)
        finally:
            line.result.outcome = "voicemail"  # hanging up is how most callers end a message
        self.playback.say_text(self.playback.prompts["voicemail_thanks"])
        line.drain_playback()
        line.channel.hangup()

    def _failed(self, target: str, failure: str, context: dict[str, Any]) -> None:
        line = self.line
        fallback = self.fallback_queue if self.fallback_queue != target else None
        log.error("call %s: transfer to %s failed (%s); %s", line.call_id, target, failure,
                  f"trying fallback queue {fallback}" if fallback else "taking a voicemail")
        failed = ev.TransferFailed(at=line.now, target=target, error=failure)
        line.notify(failed)
        self.records.event(failed)
        line.stop_playback()
        self.playback.say_text(self.playback.prompts["transfer_failed"])
        if fallback:
            context = {**context, "fallback_reason": f"transfer to {target} failed", "error": failure}
            again = self._try(fallback, False, context)
            if again is None:
                return
            log.error("call %s: transfer to fallback queue %s failed (%s); taking a voicemail",
                      line.call_id, fallback, again)
            line.notify(ev.TransferFailed(at=line.now, target=fallback, error=again))
        self.voicemail()

    def _try(self, target: str, is_uri: bool, context: dict[str, Any]) -> str | None:
        """Transfer once; None when the caller was handed on (or the call ended meanwhile), else why not."""
        line = self.line
        line.notify(ev.TransferStarted(at=line.now, target=target, queue=None if is_uri else target,
                                       uri=target if is_uri else None, context=context))
        line.result.transfer_target = target
        if not is_uri and self.queue_wait is not None:
            if not self.queue_wait.queues.has_queue(target):
                return f"unknown queue '{target}'"
            return self.queue_wait.wait(target, context)
        link = line.config.context_url(line.call_id) if line.config.context_url else ""
        try:
            accepted = line.channel.transfer(target, context_headers(context, context_url=link))
            failure = None if accepted else "the transfer was refused"
        except Exception as exc:  # a SIP stack error is one more way a transfer fails
            accepted, failure = False, f"the transfer raised {exc!r}"
        self.records.event(ev.TransferSent(at=line.now, target=target, accepted=accepted))
        line.result.outcome = "transferred" if accepted else "transfer_failed"
        return failure
