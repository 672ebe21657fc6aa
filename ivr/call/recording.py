"""Recording a caller's message (a flow's ``record`` node, or voicemail): sealed under the data key when
the server has a vault (``SessionConfig.vault``), else a private WAV file (replays, the local talk mode)."""

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

    def record(self, action: fa.Record, kind: str = "message", queue: str = "") -> RecordingFinished:
        """Record one message into ``recordings_dir``; ``kind`` is 'message' (a flow's ``record`` node) or
        'voicemail' (left for ``queue``), as the store and the console's voicemail inbox list it."""
        line = self.line
        line.drain_playback()
        if action.beep:
            line.play(line.services.beep(line.rate))
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
        path = self._save(pcm_from_frames(frames), kind)
        duration = len(frames) * FRAME_SECONDS
        recorded = ev.MessageRecorded(at=line.now, path=path, duration=duration)
        line.notify(recorded)
        self.records.event(recorded)
        self.records.recording(kind, path, duration, queue)
        finished = RecordingFinished(path, duration)
        if hung_up:
            self.tell_flow(finished)
            line.end("caller_hangup")
        return finished

    def _save(self, pcm: bytes, kind: str) -> str:
        line = self.line
        vault = line.config.vault
        if vault is None:
            path = f"{line.config.recordings_dir}/{line.call_id}-{int(time.time())}.wav"
            write_wav(path, pcm, line.rate, private=True)
            return path
        writer = vault.new_file(line.call_id, kind, line.rate)
        writer.write(pcm)
        writer.close()
        return str(writer.path)
