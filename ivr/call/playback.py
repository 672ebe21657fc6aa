"""Prompt playback: what the bot says (synthesized or recorded), and the turn latency it ends."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

from ivr.call import events as ev
from ivr.call.line import CallLine
from ivr.call.records import CallRecords, Privacy
from ivr.flow import actions as fa
from ivr.speech.interfaces import Synthesizer


class Playback:
    """Plays the flow's prompts on the line. The first audio of a reply ends the caller's turn latency
    (from the end of their speech, ``turn_ended``, to the moment the reply starts playing)."""

    def __init__(self, line: CallLine, tts: Synthesizer, prompts: Mapping[str, str], records: CallRecords,
                 privacy: Privacy) -> None:
        self.line = line
        self.tts = tts
        self.prompts = prompts
        """What the bot says on its own (apology, voicemail, queue announcements), in the flow's language."""
        self.records = records
        self.privacy = privacy
        self.barge_in = True
        """Whether the prompt playing now may be interrupted by the caller."""
        self.turn_ended: float | None = None
        """When the caller's last turn ended (``time.perf_counter``), until the reply's first audio."""

    def say(self, action: fa.Say) -> None:
        """Queue the prompt for playback (returns once it is queued, not played)."""
        line = self.line
        self.barge_in = action.barge_in
        chunks: Iterable[bytes]
        if action.audio:
            chunks = [line.services.load_prompt(action.audio, line.rate)]
        else:
            chunks = self.tts.stream(action.text, line.rate)
        shown = self.privacy.text(action.text)
        hidden = shown != action.text  # reads back a card number or a secret: kept out of the call recording
        first = True
        for chunk in chunks:
            if first:
                self._first_reply_audio()
                first = False
            line.play(chunk, hidden=hidden)
        line.notify(ev.PromptPlayed(at=line.now, text=action.text, audio=action.audio, barge_in=action.barge_in))
        self.records.bot_turn(shown or f"[audio {action.audio}]")

    def say_text(self, text: str) -> None:
        """Say something of the bot's own (apology, voicemail, announcements): no barge-in."""
        self.say(fa.Say(text, barge_in=False))

    def _first_reply_audio(self) -> None:
        if self.turn_ended is None:
            return
        latency = time.perf_counter() - self.turn_ended
        self.line.result.turn_latencies.append(latency)
        self.line.notify(ev.TurnLatency(at=self.line.now, seconds=latency))
        self.turn_ended = None
