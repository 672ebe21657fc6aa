"""Turn-taking: listening for the caller's answer (speech or keys), barge-in over a playing prompt,
endpointing, speculative recognition during a pause, and the final transcript."""

from __future__ import annotations

import time
from concurrent.futures import Future

from ivr.audio.frame import AudioFrame
from ivr.call import events as ev
from ivr.call.line import FRAME_SECONDS, CallLine
from ivr.call.playback import Playback
from ivr.call.records import CallRecords, Privacy
from ivr.events import ControlEvent, DtmfDigit, Hangup, NoInput, SpeechEnded, SpeechStarted, Transcript
from ivr.flow import actions as fa
from ivr.speech.interfaces import Endpointer, Recognizer


class TurnTaker:
    """Waits for the caller's answer to a ``Listen`` and turns it into exactly one event for the flow."""

    def __init__(self, line: CallLine, playback: Playback, records: CallRecords, privacy: Privacy) -> None:
        self.line = line
        self.playback = playback
        self.records = records
        self.privacy = privacy
        self._speculation: tuple[Future[Transcript], float] | None = None

    def listen(self, action: fa.Listen) -> ControlEvent:
        """Wait for the caller's answer; returns exactly one event for the interpreter. The call recording
        (if any) is paused while a ``card`` or ``secret`` answer is listened to: its speech and key tones
        are never recorded."""
        tape = self.line.tape
        if tape is None or not action.sensitive:
            return self._listen(action)
        tape.pause("sensitive")
        try:
            return self._listen(action)
        finally:
            tape.resume("sensitive")

    def _listen(self, action: fa.Listen) -> ControlEvent:
        line = self.line
        channel = line.channel
        services = line.services
        self.privacy.answer_sensitive = action.sensitive
        line.notify(ev.Listening(at=line.now, speech=action.speech, dtmf=action.dtmf, grammar=action.grammar))
        # The endpointer starts with the first frame after the prompt (its no-input timer with it), on the
        # call clock; the barge-in detector listens while the prompt plays.
        vad: Endpointer | None = None
        barge = services.new_barge_in_detector(line.rate, start_at=line.now)
        recognizer: Recognizer | None = None
        self._speculation = None
        digits = ""
        last_digit_at = 0.0
        waiting_since: float | None = None  # call time when the prompt finished and the timer started
        while True:
            frame = line.next_frame()
            event = line.take_control()
            while event is not None:
                if isinstance(event, Hangup):
                    return event
                if isinstance(event, DtmfDigit) and action.dtmf:
                    if channel.playback_pending() > 0 and self.playback.barge_in:
                        line.stop_playback()
                        line.notify(ev.BargedIn(at=line.now, by="dtmf"))
                    for key in event.digit:
                        if key == action.dtmf_terminator:
                            if digits:
                                return self._digits(digits)
                            continue
                        digits += key
                        last_digit_at = line.now
                        if len(digits) >= action.dtmf_max_digits:
                            return self._digits(digits)
                event = line.take_control()
            if digits and line.now - last_digit_at >= action.dtmf_inter_digit_timeout:
                return self._digits(digits)
            if frame is None:
                continue
            playing = channel.playback_pending() > 0
            if playing and recognizer is None:
                if action.speech and self.playback.barge_in and barge.process(frame):
                    line.stop_playback()
                    line.notify(ev.BargedIn(at=line.now, by="speech"))
                    recognizer = self._start_recognizer(action, barge.preroll())
                    vad = services.new_endpointer(line.rate, action, start_at=line.now)
                    vad.force_speech(line.now)
                continue
            if waiting_since is None:
                waiting_since = line.now
            if vad is None:
                vad = services.new_endpointer(line.rate, action, start_at=line.now - FRAME_SECONDS)
            if digits:
                continue
            if not action.speech:
                if line.now - waiting_since >= action.no_input_timeout:
                    return self._no_input()
                continue
            for vad_event in vad.process(frame):
                if isinstance(vad_event, SpeechStarted) and recognizer is None:
                    line.notify(ev.CallerSpeaking(at=line.now))
                    recognizer = self._start_recognizer(action, vad.preroll())
                    continue
                if isinstance(vad_event, SpeechEnded):
                    if recognizer is None:
                        recognizer = self._start_recognizer(action, vad.preroll())
                    return self._final_transcript(recognizer, vad_event)
                if isinstance(vad_event, NoInput):
                    return self._no_input()
            if recognizer is not None:
                partial = recognizer.accept(frame)
                if partial is not None and partial.text:
                    line.notify(ev.PartialHeard(at=line.now, text=partial.text))
                early = self._speculate(recognizer, vad.trailing_silence, action)
                if early is not None:
                    return early
            elif line.now - waiting_since >= action.no_input_timeout:
                return self._no_input()

    def _start_recognizer(self, action: fa.Listen, preroll: list[AudioFrame]) -> Recognizer:
        line = self.line
        recognizer = line.services.asr.new_recognizer(line.rate, list(action.grammar) if action.grammar else None)
        for frame in preroll:
            recognizer.accept(frame)
        return recognizer

    def _speculate(self, recognizer: Recognizer, silence: float, action: fa.Listen) -> Transcript | None:
        """Once the caller pauses (``early_silence_*``), look at what was said so far (``peek``); a
        complete-sounding result (a grammar phrase, or a sentence end) ends the turn without waiting for
        the full end-of-speech silence. Speech resuming discards the look.

        Per-utterance engines (whisper) peek in the worker pool on a live call; a replay peeks at once,
        as if the machine kept up, and counts the peek's time in the turn latency.
        """
        line = self.line
        config = line.config
        if not recognizer.capabilities.peek:
            return None
        if silence < config.speculate_after:
            if self._speculation is not None:
                self._speculation[0].cancel()  # the caller spoke again: a look not started yet is not needed
            self._speculation = None
            return None
        if self._speculation is None:
            started = time.perf_counter()
            future: Future[Transcript]
            if line.realtime:
                if line.services.backlog >= config.speculate_max_backlog:
                    return None  # busy: try again on the next frame of the pause
                future = line.services.submit(recognizer.peek)
            else:
                future = Future()
                future.set_result(recognizer.peek())
            self._speculation = (future, started - silence)
        future, speech_end = self._speculation
        wait = config.early_silence_phrase if action.grammar else config.early_silence_sentence
        if silence < wait or not future.done():
            return None
        transcript = future.result()
        text = transcript.text.rstrip()
        if not text or not (action.grammar or text[-1] in ".?!"):
            return None
        if action.grammar and any(p.startswith(text + " ") for p in action.grammar):
            return None  # "상담원" may be the start of "상담원 연결": wait for the end of speech
        if recognizer.capabilities.streaming:
            transcript = recognizer.finish()  # the peek was a partial result: the final one has confidences
        # Recognition time of an early-ended turn: from the start of its speculative pass (the ASR metric).
        line.notify(ev.RecognitionTimed(at=line.now,
                                        seconds=max(0.0, time.perf_counter() - speech_end - config.speculate_after)))
        # On a live call both estimates agree; in a replay the second accounts for the pause still needed.
        return self._commit(transcript, "early", min(speech_end, time.perf_counter() - silence))

    def _final_transcript(self, recognizer: Recognizer, ended: SpeechEnded) -> Transcript:
        line = self.line
        silence = max(0.0, line.now - ended.at) if ended.reason == "silence" else 0.0
        started = time.perf_counter()
        future: Future[Transcript]
        if self._speculation is not None and not recognizer.capabilities.streaming:
            future = self._speculation[0]  # the caller stayed silent since: it heard the whole utterance
        else:
            future = line.services.submit(recognizer.finish)
        transcript = line.wait(future)
        line.notify(ev.RecognitionTimed(at=line.now, seconds=time.perf_counter() - started))
        return self._commit(transcript, "silence", started - silence)

    def _commit(self, transcript: Transcript, how: str, speech_end_wall: float) -> Transcript:
        """The caller's turn is over; ``speech_end_wall`` is when their speech ended on the wall clock (for
        the turn latency: from there to the first audio of the reply)."""
        self.playback.turn_ended = speech_end_wall
        self._speculation = None
        self.line.notify(ev.CallerSaid(at=self.line.now, text=self.privacy.answer(transcript.text),
                                       confidence=transcript.confidence, endpoint=how))
        return transcript

    def _digits(self, digits: str) -> DtmfDigit:
        masked = self.privacy.answer(digits)
        self.line.notify(ev.KeysPressed(at=self.line.now, digits=masked))
        self.records.caller_dtmf(f"[DTMF {masked}]")
        self.playback.turn_ended = time.perf_counter()
        return DtmfDigit(digits)

    def _no_input(self) -> NoInput:
        self.line.notify(ev.NoInputHeard(at=self.line.now))
        return NoInput()
