"""Recording a caller's message (a flow's ``record`` node, or voicemail)."""

from __future__ import annotations

import time
from collections.abc import Callable

from ivr.audio.frame import AudioFrame, pcm_from_frames
from ivr.audio.wavfile import write_wav
from ivr.call import events as ev
from ivr.call.line import FRAME_SECONDS, CallLine
from ivr.call.records import CallRecords
from ivr.events import ControlEvent, DtmfDigit, Hangup, RecordingFinished, SpeechEnded, SpeechStarted
from ivr.flow import actions as fa


class Recorder:
    """Records the caller until they stop speaking, press the terminator, hang up or run out of time.
    ``tell_flow`` hears of a recording the caller hung up on (the call ends there, the message is kept)."""

    def __init__(self, line: CallLine, records: CallRecords, tell_flow: Callable[[ControlEvent], object]) -> None:
        self.line = line
        self.records = records
        self.tell_flow = tell_flow

    def record(self, action: fa.Record) -> RecordingFinished:
        """Record one message into ``recordings_dir`` (a private WAV file)."""
        line = self.line
        line.drain_playback()
        if action.beep:
            line.channel.play(line.services.beep(line.rate))
            line.drain_playback()
        vad = line.services.new_endpointer(
            line.rate,
            fa.Listen(
                no_input_timeout=action.max_seconds, end_silence=action.end_silence, max_speech=action.max_seconds
            ),
            start_at=line.now,
        )
        line.notify(ev.Listening(at=line.now, record=True))
        frames: list[AudioFrame] = []
        started = line.now
        heard = hung_up = False
        while line.now - started < action.max_seconds:
            frame = line.next_frame()
            event = line.take_control()
            if isinstance(event, Hangup):
                hung_up = True
                break  # keep what the caller said before hanging up
            if isinstance(event, DtmfDigit) and action.terminator in event.digit:
                break
            if frame is None:
                continue
            frames.append(frame)
            events = vad.process(frame)
            heard = heard or any(isinstance(e, SpeechStarted) for e in events)
            if heard and any(isinstance(e, SpeechEnded) for e in events):
                break
        path = f"{line.config.recordings_dir}/{line.call_id}-{int(time.time())}.wav"
        write_wav(path, pcm_from_frames(frames), line.rate, private=True)
        duration = len(frames) * FRAME_SECONDS
        recorded = ev.MessageRecorded(at=line.now, path=path, duration=duration)
        line.notify(recorded)
        self.records.event(recorded)
        finished = RecordingFinished(path, duration)
        if hung_up:
            self.tell_flow(finished)
            line.end("caller_hangup")
        return finished
