"""A Channel on the local microphone and speakers, so a flow can be tried by talking to it.

PortAudio (through sounddevice) calls back on its own real-time thread every 20 ms; the callbacks only
move bytes: the input side cuts the microphone stream into ``AudioFrame``s and queues them without ever
waiting, the output side takes what is queued for playback and fills the rest with silence. A device that
cannot run at the call's rate is opened at its own default rate and converted with a streaming soxr
resampler in each direction.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import soxr

from ivr.audio.frame import AudioFrame, check_rate, samples_per_frame
from ivr.channel import ChannelCapabilities
from ivr.errors import AudioDeviceError
from ivr.events import ControlEvent, DtmfDigit, Hangup
from ivr.talk.devices import DeviceInfo, format_device_list, list_devices, pick_rate, portaudio, resolve_device
from ivr.talk.keys import DTMF_KEYS, TerminalKeys

log = logging.getLogger(__name__)

ECHO_TAIL = 0.25  # seconds the microphone stays muted after the bot's audio stops (half duplex)


class _Converter:
    """Streaming PCM16 rate conversion (identity when the rates match)."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = from_rate
        self.to_rate = to_rate
        self._stream = (
            soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16", quality="HQ") if from_rate != to_rate else None
        )

    def __call__(self, pcm: bytes) -> bytes:
        if self._stream is None:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        return np.asarray(self._stream.resample_chunk(samples), dtype="<i2").tobytes()

    def reset(self) -> None:
        if self._stream is not None:
            self._stream.clear()


class LocalAudioChannel:
    """One 'call' between the person at this computer and a flow, over the local sound devices.

    Devices are given by index or part of the name (None: the system default). Use it as a context
    manager, or call ``open``/``close``. ``interrupt`` (wired to Ctrl-C) hangs up like a caller would;
    ``press`` sends DTMF keys, and with ``keyboard`` the keys typed on the terminal do too.
    """

    capabilities = ChannelCapabilities(realtime=True)

    def __init__(
        self,
        sample_rate: int = 16000,
        input_device: str | int | None = None,
        output_device: str | int | None = None,
        *,
        caller: str = "local",
        called: str = "",
        keyboard: bool = True,
        half_duplex: bool = False,
        announce: Callable[[str], None] | None = None,
        max_queued_seconds: float = 10.0,
    ) -> None:
        check_rate(sample_rate)
        self.sample_rate = sample_rate
        self.caller = caller
        self.called = called
        self.call_id = uuid.uuid4().hex[:16]
        self.half_duplex = half_duplex
        self.input_spec = input_device
        self.output_spec = output_device
        self.input_device: DeviceInfo | None = None
        self.output_device: DeviceInfo | None = None
        self.input_rate = sample_rate
        self.output_rate = sample_rate
        self.transfers: list[tuple[str, dict[str, str]]] = []
        self.ended = False
        self.caller_hung_up = False
        self.dropped_frames = 0
        self.overflows = 0
        self.underflows = 0
        self._announce = announce or print
        self._use_keyboard = keyboard
        self._keys: TerminalKeys | None = None
        self._frame_bytes = samples_per_frame(sample_rate) * 2
        self._frames: queue.Queue[AudioFrame] = queue.Queue(maxsize=int(max_queued_seconds * 50))
        self._pending_in = bytearray()
        self._outbound = bytearray()
        self._out_lock = threading.Lock()
        self._control: deque[ControlEvent] = deque()
        self._to_device = _Converter(sample_rate, sample_rate)
        self._from_device = _Converter(sample_rate, sample_rate)
        self._last_bot_audio = 0.0
        self._input_stream: Any = None
        self._output_stream: Any = None
        self._stream_error: str | None = None

    # ------------------------------------------------------------ lifecycle

    def open(self) -> LocalAudioChannel:
        """Find the devices, open both streams and start them (raises AudioDeviceError)."""
        sd = portaudio()
        devices = list_devices()
        self.input_device = resolve_device(self.input_spec, "input", devices)
        self.output_device = resolve_device(self.output_spec, "output", devices)
        self.input_rate = pick_rate(self.input_device, "input", self.sample_rate)
        self.output_rate = pick_rate(self.output_device, "output", self.sample_rate)
        self._from_device = _Converter(self.input_rate, self.sample_rate)
        self._to_device = _Converter(self.sample_rate, self.output_rate)
        try:
            self._output_stream = sd.RawOutputStream(
                samplerate=self.output_rate,
                blocksize=self.output_rate // 50,
                device=self.output_device.index,
                channels=1,
                dtype="int16",
                latency="high",
                callback=self._on_output,
            )
            self._input_stream = sd.RawInputStream(
                samplerate=self.input_rate,
                blocksize=self.input_rate // 50,
                device=self.input_device.index,
                channels=1,
                dtype="int16",
                latency="high",
                callback=self._on_input,
                finished_callback=self._on_input_finished,
            )
            self._output_stream.start()
            self._input_stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            self.close()
            raise AudioDeviceError(
                f"cannot open the audio devices (input {self.input_device.index}: {self.input_device.name}, "
                f"output {self.output_device.index}: {self.output_device.name}): {exc}.\n"
                f"{format_device_list(devices)}\n"
                "pick others with --input-device/--output-device (an index or part of the name)"
            ) from None
        if self._use_keyboard:
            self._keys = TerminalKeys(self.press).start()
        return self

    def close(self) -> None:
        """Let the bot's last words play out (unless the caller hung up), stop the streams and give the
        terminal back."""
        if self._keys is not None:
            self._keys.stop()
            self._keys = None
        self.ended = True
        if self.caller_hung_up:
            self.stop_playback()
        for stream, drain in ((self._input_stream, False), (self._output_stream, not self.caller_hung_up)):
            if stream is None:
                continue
            try:
                if drain:
                    deadline = time.monotonic() + min(self.playback_pending(), 30.0) + 0.5
                    while self.playback_pending() > 0 and time.monotonic() < deadline:
                        time.sleep(0.02)
                    stream.stop()  # returns once the device has played its buffers
                else:
                    stream.abort()
                stream.close()
            except Exception:  # closing must never hide the call's own result
                log.exception("closing an audio stream failed")
        self._input_stream = self._output_stream = None

    def __enter__(self) -> LocalAudioChannel:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def keyboard_active(self) -> bool:
        """Whether keys typed on the terminal are sent as DTMF."""
        return self._keys is not None and self._keys.active

    # ---------------------------------------------------- caller-side input

    def interrupt(self) -> None:
        """The person hung up (Ctrl-C): the session sees a Hangup event and the bot falls silent."""
        if not self.ended:
            self.caller_hung_up = True
            self._control.append(Hangup())

    def press(self, keys: str) -> None:
        """Send DTMF keys (0-9, *, #, A-D); anything else is ignored."""
        for key in keys.upper():
            if key in DTMF_KEYS:
                self._control.append(DtmfDigit(key))

    # -------------------------------------------------- PortAudio callbacks

    def _on_input(self, indata: Any, frames: int, time_info: Any, status: Any) -> None:
        """Microphone audio → 20 ms frames on the queue. Runs on PortAudio's thread: never waits."""
        if status.input_overflow:
            self.overflows += 1
        try:
            self._pending_in += self._from_device(bytes(indata))
            size = self._frame_bytes
            while len(self._pending_in) >= size:
                frame = AudioFrame(bytes(self._pending_in[:size]), self.sample_rate)
                del self._pending_in[:size]
                try:
                    self._frames.put_nowait(frame)
                except queue.Full:  # nobody is reading: keep the newest audio
                    self.dropped_frames += 1
                    try:
                        self._frames.get_nowait()
                        self._frames.put_nowait(frame)
                    except (queue.Empty, queue.Full):
                        pass
        except Exception as exc:  # an exception here would silently kill the stream
            self._stream_error = f"microphone processing failed: {exc!r}"

    def _on_input_finished(self) -> None:
        if not self.ended:
            self._stream_error = self._stream_error or "the microphone stream stopped"

    def _on_output(self, outdata: Any, frames: int, time_info: Any, status: Any) -> None:
        """Queued bot audio → the speaker, silence when there is none. Runs on PortAudio's thread."""
        if status.output_underflow:
            self.underflows += 1
        need = len(outdata)
        with self._out_lock:
            chunk = bytes(self._outbound[:need])
            del self._outbound[:need]
        if chunk:
            self._last_bot_audio = time.monotonic()
        outdata[: len(chunk)] = chunk
        if len(chunk) < need:
            outdata[len(chunk) :] = bytes(need - len(chunk))

    # --------------------------------------------------------------- channel

    def receive_audio(self, timeout: float) -> AudioFrame | None:
        """The next 20 ms from the microphone (silence while the bot speaks in half-duplex mode)."""
        if self.ended:
            return None
        if self._stream_error is not None:
            self._announce(f"audio device problem: {self._stream_error}; ending the call")
            self._stream_error = None
            self._control.append(Hangup())
            return None
        try:
            frame = self._frames.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        if self.half_duplex and self._bot_audible():
            return AudioFrame.silence(self.sample_rate)
        return frame

    def poll_control(self) -> list[ControlEvent]:
        """Keys pressed and Ctrl-C since the last poll."""
        events: list[ControlEvent] = []
        while self._control:
            events.append(self._control.popleft())
        return events

    def play(self, pcm: bytes) -> None:
        """Queue the bot's PCM16 audio (at the call rate) for the speaker."""
        converted = self._to_device(pcm)
        with self._out_lock:
            self._outbound += converted

    def stop_playback(self) -> None:
        """Barge-in: drop whatever the bot had left to say."""
        with self._out_lock:
            self._outbound.clear()
        self._to_device.reset()

    def playback_pending(self) -> float:
        """Seconds of bot audio not yet handed to the speaker."""
        with self._out_lock:
            return len(self._outbound) / 2 / self.output_rate

    def transfer(self, target: str, headers: dict[str, str]) -> bool:
        """There is no switch here: show where the call would go and what the agent would get."""
        self.transfers.append((target, dict(headers)))
        lines = [f"the call would now be transferred to {target} with:"]
        lines += [f"    {name}: {value}" for name, value in headers.items()]
        self._announce("\n".join(lines))
        self.ended = True
        return True

    def hangup(self) -> None:
        """The bot ended the call."""
        self.ended = True

    @property
    def connected(self) -> bool:
        """False once the bot hung up or transferred the call, or the channel was closed."""
        return not self.ended

    def _bot_audible(self) -> bool:
        if self.playback_pending() > 0:
            return True
        latency = float(self._output_stream.latency) if self._output_stream is not None else 0.0
        return time.monotonic() - self._last_bot_audio < latency + ECHO_TAIL
