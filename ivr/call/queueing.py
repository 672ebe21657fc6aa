"""Waiting in an agent queue: music on hold, announcements, an agent answering, overflow, being refused, or
hanging up to be called back."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ivr.call import events as ev
from ivr.call.line import CallEnded, CallLine
from ivr.call.playback import Playback
from ivr.call.records import CallRecords
from ivr.flow.prompts import callback_offer, queue_announcement
from ivr.queue.engine import Announce, CallbackOffer, Connected, Overflowed, QueueUpdate, Refused, Ticket


class QueueService(Protocol):
    """The part of ``ivr.queue.Acd`` a call uses while its caller waits for an agent."""

    def enqueue(self, call_id: str, queue: str, priority: int | None = None,
                context: dict[str, Any] | None = None) -> Ticket: ...
    def poll(self, call_id: str) -> list[QueueUpdate]: ...
    def abandon(self, call_id: str) -> None: ...
    def call_finished(self, call_id: str) -> None: ...
    def has_queue(self, name: str) -> bool: ...
    def request_callback(self, call_id: str, number: str) -> bool: ...


class QueueWait:
    """Holds one caller in agent queues until an agent takes the call, the queue overflows or gives the
    call back, or the caller gives up. An overflow to voicemail calls ``voicemail``; one to a flow node
    calls ``resume_at`` (the flow goes on there)."""

    def __init__(self, line: CallLine, queues: QueueService, playback: Playback, records: CallRecords,
                 voicemail: Callable[[str], None], resume_at: Callable[[str], None],
                 start_recording: Callable[[str, str], None] | None = None) -> None:
        self.line = line
        self.queues = queues
        self.playback = playback
        self.records = records
        self.voicemail = voicemail
        self.resume_at = resume_at
        self.start_recording = start_recording
        self.agent_left = False
        """The last wait ended with the agent hanging up a bridged call while the caller stayed."""
        self.agent = ""
        """The agent who took the call in the last wait."""

    def wait(self, queue: str, context: dict[str, Any]) -> str | None:
        """Hold the caller in ``queue``: music on hold, announcements, until an agent takes the call (the
        connector transfers or bridges it), the queue overflows, or the caller gives up. Returns why no
        agent could be reached, or None."""
        line = self.line
        channel = line.channel
        self.agent_left, self.agent = False, ""
        number = callback_number(channel, context)
        try:
            ticket = self.queues.enqueue(line.call_id, queue, None,
                                         {**context, "callback_number": number} if number else context)
        except Exception as exc:
            return f"the queue refused the call: {exc}"
        self.records.event(ev.CallQueued(at=line.now, queue=queue, position=ticket.position))
        record = ticket.record
        if record and self.start_recording is not None and line.tape is not None and not line.tape.recording:
            self.playback.say_text(record)  # announced as the caller joins; recorded from the agent's answer
        hold = line.services.load_prompt(ticket.music_on_hold, line.rate) if ticket.music_on_hold else None
        hold = hold or line.services.hold_music(line.rate)
        callback_key = ""  # the key that asks for a callback, once offered
        while True:
            try:
                line.next_frame(timeout=0.1)
                if callback_key and callback_key in line.take_digits() and self._call_back(queue, context):
                    return None  # before a hangup right after the key: the caller chose the callback
                line.check_hangup()
            except CallEnded:
                self.queues.abandon(line.call_id)
                line.result.outcome = "abandoned"
                raise
            if not line.connected:
                self.queues.call_finished(line.call_id)
                return None
            for update in self.queues.poll(line.call_id):
                if isinstance(update, Announce):
                    line.stop_playback()
                    text = queue_announcement(self.playback.prompts, update.template, update.position, update.wait,
                                              update.queue or queue)
                    self.playback.say_text(text)
                elif isinstance(update, Connected):
                    line.stop_playback()
                    connected = ev.AgentConnected(at=line.now, agent=update.agent, uri=update.uri, mode=update.mode)
                    line.notify(connected)
                    self.records.event(connected)
                    line.result.outcome = "transferred"
                    line.result.transfer_target = update.uri
                    self.agent = update.agent
                    if record is not None and self.start_recording is not None:
                        self.start_recording("", queue)
                    self._stay_until_agent_call_ends(update.mode)
                    return None
                elif isinstance(update, Overflowed):
                    return self._overflow(update, context)
                elif isinstance(update, CallbackOffer):
                    line.stop_playback()
                    line.take_digits()  # keys pressed before the offer don't answer it
                    callback_key = update.key
                    self.playback.say_text(callback_offer(self.playback.prompts, update.key, update.wait))
                elif isinstance(update, Refused):
                    line.stop_playback()
                    return f"queue {update.queue} gave the call back: {update.detail}"
            if channel.playback_pending() < 0.2:
                line.play(hold)

    def _call_back(self, queue: str, context: dict[str, Any]) -> bool:
        """The caller pressed the callback key: keep their place as a callback entry, confirm, hang up."""
        line = self.line
        number = callback_number(line.channel, context)
        if not self.queues.request_callback(line.call_id, number):
            return False  # over the day's limit or already leaving the queue: the caller waits on
        line.stop_playback()
        requested = ev.CallbackRequested(at=line.now, queue=queue, number=number)
        line.notify(requested)
        self.records.event(requested)
        try:
            self.playback.say_text(self.playback.prompts["callback_confirmed"])
            line.drain_playback()
            line.channel.hangup()
        except CallEnded:
            pass  # the caller hung up without waiting for the confirmation: the callback stands
        line.result.outcome = "callback_requested"
        return True

    def _stay_until_agent_call_ends(self, mode: str) -> None:
        """A bridged agent call keeps this call's channel up until either side hangs up (``agent_left``: the
        agent did, the caller is still here)."""
        if mode != "bridged":
            return
        line = self.line
        try:
            while line.connected:
                line.next_frame(timeout=0.2)
                line.check_hangup()
                if line.take_agent_left():
                    self.agent_left = True
                    return
        except CallEnded:
            line.result.outcome = "transferred"  # either side hanging up ends a call an agent took
        finally:
            self.queues.call_finished(line.call_id)

    def _overflow(self, update: Overflowed, context: dict[str, Any]) -> str | None:
        """Follow a queue's overflow rule; returns why no agent was reached when the rule leads nowhere."""
        line = self.line
        overflowed = ev.QueueOverflowed(at=line.now, kind=update.kind, target=update.target, reason=update.reason)
        self.records.event(overflowed)
        line.notify(overflowed)
        line.stop_playback()
        if update.kind == "queue":
            return self.wait(update.target, context)
        if update.kind == "voicemail":
            self.voicemail(update.target)
            return None
        if update.kind == "node":
            line.result.outcome = "completed"
            self.resume_at(update.target)
            return None
        return f"no agent reachable in queue {update.target or 'the queue'} ({update.reason})"


def callback_number(channel: object, context: dict[str, Any]) -> str:
    """Whom to call back: the caller's SIP URI where the channel knows the caller's contact address
    (``sip:user@host:port``), else the caller's number as the call presented it (the dialer routes it)."""
    caller = str(getattr(channel, "caller", "") or context.get("caller") or "")
    if caller.startswith(("sip:", "sips:", "tel:")):
        return caller
    contact = str(getattr(channel, "contact", "") or "")
    return contact or caller
