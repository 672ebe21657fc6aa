"""`ivr talk` pieces with a fake PortAudio: device lookup, the local channel's audio paths, the transcript
screen, and a real CallSession driven through the channel by a fake sound card clock."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from ivr.audio.frame import AudioFrame
from ivr.audio.wavfile import read_wav
from ivr.call import CallSession
from ivr.call import events as ev
from ivr.errors import AudioDeviceError
from ivr.events import ControlEvent, DtmfDigit, Hangup, Transcript
from ivr.flow import actions as fa
from ivr.services import SpeechServices
from ivr.speech.interfaces import RecognizerCapabilities
from ivr.talk import devices as devmod
from ivr.talk.channel import LocalAudioChannel
from ivr.talk.devices import DeviceInfo, format_device_list, pick_rate, resolve_device
from ivr.talk.screen import TranscriptScreen

OK = SimpleNamespace(input_overflow=False, output_underflow=False)


class FakeStream:
    """Stands in for sounddevice.RawInputStream / RawOutputStream: keeps the settings and the callback."""

    def __init__(self, owner: FakePortAudio, kind: str, **kwargs: Any) -> None:
        self.kind = kind
        self.settings = kwargs
        self.callback = kwargs["callback"]
        self.latency = 0.04
        self.states = ["new"]
        owner.streams[kind] = self

    @property
    def state(self) -> str:
        return self.states[-1]

    def start(self) -> None:
        self.states.append("started")

    def stop(self) -> None:
        self.states.append("stopped")

    def abort(self) -> None:
        self.states.append("aborted")

    def close(self) -> None:
        self.states.append("closed")


class FakePortAudio:
    """The part of the sounddevice module ivr.talk uses, over a made-up device list."""

    class PortAudioError(Exception):
        pass

    def __init__(self, devices: list[dict[str, Any]], default: tuple[int, int] = (0, 0),
                 rates: Sequence[int] = (16000, 8000, 48000)) -> None:
        self.devices = devices
        self.default = SimpleNamespace(device=list(default))
        self.rates = set(rates)
        self.streams: dict[str, FakeStream] = {}

    def query_devices(self) -> list[dict[str, Any]]:
        return self.devices

    def query_hostapis(self) -> tuple[dict[str, Any], ...]:
        return ({"name": "ALSA"},)

    def _check(self, device: int, samplerate: int, channels: int, dtype: str) -> None:
        if samplerate not in self.rates:
            raise self.PortAudioError("Invalid sample rate [PaErrorCode -9997]")

    check_input_settings = _check
    check_output_settings = _check

    def RawInputStream(self, **kwargs: Any) -> FakeStream:
        return FakeStream(self, "input", **kwargs)

    def RawOutputStream(self, **kwargs: Any) -> FakeStream:
        return FakeStream(self, "output", **kwargs)


def device(index: int, name: str, ins: int = 2, outs: int = 2, rate: int = 48000) -> dict[str, Any]:
    return {"index": index, "name": name, "hostapi": 0, "max_input_channels": ins,
            "max_output_channels": outs, "default_samplerate": float(rate)}


LAPTOP = [
    device(0, "HDA Intel PCH: ALC3246 Analog (hw:0,0)"),
    device(1, "USB Headset: Audio (hw:1,0)", rate=44100),
    device(2, "HDMI 0 (hw:0,3)", ins=0),
    device(3, "pulse"),
    device(4, "default"),
]


@pytest.fixture
def fake_pa(monkeypatch: pytest.MonkeyPatch) -> Callable[..., FakePortAudio]:
    def install(devices: list[dict[str, Any]] = LAPTOP, default: tuple[int, int] = (4, 4),
                rates: Sequence[int] = (16000, 8000, 48000, 44100)) -> FakePortAudio:
        fake = FakePortAudio(devices, default, rates)
        monkeypatch.setattr(devmod, "portaudio", lambda: fake)
        monkeypatch.setattr("ivr.talk.channel.portaudio", lambda: fake)
        return fake

    return install


def tone(freq: float, seconds: float, rate: int, level: float = 0.3) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (level * 32767 * np.sin(2 * np.pi * freq * t)).astype("<i2")


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def pull(stream: FakeStream, nbytes: int) -> bytes:
    out = bytearray(nbytes)
    stream.callback(memoryview(out), nbytes // 2, None, OK)
    return bytes(out)


# ------------------------------------------------------------------ devices


def test_devices_are_found_by_index_or_part_of_the_name(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake_pa()
    assert resolve_device(None, "input").name == "default"
    assert resolve_device("1", "input").name.startswith("USB Headset")
    assert resolve_device("usb head", "output").index == 1  # case-insensitive part of the name
    assert resolve_device("pulse", "input").index == 3
    assert resolve_device("HDMI", "output").index == 2


def test_an_exact_name_wins_and_an_ambiguous_one_asks_for_the_index(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake_pa([device(0, "pulse"), device(1, "pulse monitor"), device(2, "hw (hw:0,0)"), device(3, "hw (hw:1,0)")])
    assert resolve_device("pulse", "input").index == 0
    with pytest.raises(AudioDeviceError, match=r"'hw' matches several input devices: 2 \(hw \(hw:0,0\)\), 3"):
        resolve_device("hw", "input")


def test_a_missing_device_lists_what_exists_and_how_to_pick(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake_pa()
    with pytest.raises(AudioDeviceError) as err:
        resolve_device("bluetooth", "input")
    message = str(err.value)
    assert "no microphone (input) device matches 'bluetooth'" in message
    assert "USB Headset: Audio (hw:1,0)" in message and "HDMI 0" in message
    assert "--input-device" in message and "--list-devices" in message


def test_a_device_that_cannot_record_is_refused_by_index(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake_pa()
    with pytest.raises(AudioDeviceError, match=r"device 2 \(HDMI 0 \(hw:0,3\)\) has no input channels"):
        resolve_device(2, "input")
    with pytest.raises(AudioDeviceError, match="there is no audio device number 9"):
        resolve_device("9", "output")


def test_no_devices_at_all_says_to_connect_one(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake_pa([], default=(-1, -1))
    with pytest.raises(AudioDeviceError) as err:
        resolve_device(None, "output")
    assert "no speaker (output) device found" in str(err.value)
    assert "no audio devices found" in str(err.value)
    assert "start the sound server" in str(err.value)


def test_the_device_list_marks_the_defaults(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake_pa(default=(1, 0))
    text = format_device_list(devmod.list_devices())
    lines = text.splitlines()
    assert lines[0].startswith(" >") and "HDA Intel" in lines[0]
    assert lines[1].startswith("< ") and "USB Headset" in lines[1] and "44100 Hz" in lines[1]
    assert "(ALSA, 0 in, 2 out, 48000 Hz)" in lines[2]


def test_a_rate_the_device_lacks_falls_back_to_its_own(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake_pa(rates=(44100,))
    headset = DeviceInfo(1, "USB Headset", "ALSA", 1, 2, 44100)
    assert pick_rate(headset, "input", 16000) == 44100
    odd = DeviceInfo(5, "Odd", "ALSA", 1, 1, 96000)
    with pytest.raises(AudioDeviceError, match=r"cannot open Odd .* 16000 Hz: Invalid sample rate"):
        pick_rate(odd, "output", 16000)


# ------------------------------------------------------------------ channel


def test_microphone_blocks_of_any_size_become_20ms_frames_in_order(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake = fake_pa()
    audio = tone(300, 0.5, 16000)
    with LocalAudioChannel(16000, "pulse", "pulse", keyboard=False) as channel:
        assert fake.streams["input"].settings["samplerate"] == 16000
        mic = fake.streams["input"].callback
        position = 0
        for size in [100, 500, 40, 1000, 2360, 3000, 1000]:  # 8000 samples in uneven blocks
            mic(audio[position : position + size].tobytes(), size, None, OK)
            position += size
        frames = []
        while (frame := channel.receive_audio(0.01)) is not None:
            frames.append(frame)
    assert len(frames) == 25 and all(f.sample_rate == 16000 for f in frames)
    assert b"".join(f.pcm for f in frames) == audio.tobytes()


def test_a_48k_device_is_resampled_both_ways(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake = fake_pa(rates=(48000,))
    with LocalAudioChannel(16000, 0, 0, keyboard=False) as channel:
        assert (channel.input_rate, channel.output_rate) == (48000, 48000)
        assert fake.streams["input"].settings["samplerate"] == 48000
        mic = fake.streams["input"].callback
        caller = tone(440, 1.0, 48000)
        for start in range(0, len(caller), 960):
            mic(caller[start : start + 960].tobytes(), 960, None, OK)
        frames = []
        while (frame := channel.receive_audio(0.01)) is not None:
            frames.append(frame)
        heard = np.concatenate([f.samples() for f in frames])
        assert 47 <= len(frames) <= 50  # one second, less the resampler's delay
        assert abs(peak_frequency(heard[1600:], 16000) - 440) < 5

        channel.play(tone(1000, 0.5, 16000).tobytes())
        assert channel.playback_pending() == pytest.approx(0.5, abs=0.02)
        speaker = fake.streams["output"]
        played = np.frombuffer(b"".join(pull(speaker, 1920) for _ in range(30)), "<i2")
        assert channel.playback_pending() == 0
    sound = played[np.abs(played) > 500]
    assert len(sound) > 0.4 * 48000 * 0.9  # roughly half a second at 48 kHz…
    assert abs(peak_frequency(played[:24000], 48000) - 1000) < 5  # …of the same tone
    assert not played[-4800:].any()  # then silence


def test_the_speaker_plays_silence_when_idle_and_stops_on_barge_in(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake = fake_pa()
    with LocalAudioChannel(16000, keyboard=False) as channel:
        speaker = fake.streams["output"]
        assert pull(speaker, 640) == bytes(640)
        channel.play(tone(500, 1.0, 16000).tobytes())
        assert any(pull(speaker, 640))
        assert channel.playback_pending() == pytest.approx(0.98, abs=0.001)
        channel.stop_playback()
        assert channel.playback_pending() == 0
        assert pull(speaker, 640) == bytes(640)
    assert speaker.state == "closed"


def test_the_microphone_callback_never_waits_for_a_slow_reader(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake = fake_pa()
    with LocalAudioChannel(16000, keyboard=False, max_queued_seconds=0.2) as channel:
        mic = fake.streams["input"].callback
        started = time.perf_counter()
        for n in range(100):  # two seconds of audio, nobody reading
            mic(np.full(320, n, "<i2").tobytes(), 320, None, OK)
        assert time.perf_counter() - started < 0.5
        assert channel.dropped_frames == 90
        first = channel.receive_audio(0.01)
        assert first is not None and first.samples()[0] == 90  # the newest audio was kept


def test_keys_ctrl_c_and_hangup_reach_the_session_as_events(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake_pa()
    with LocalAudioChannel(16000, keyboard=False) as channel:
        channel.press("1x#")
        channel.interrupt()
        assert channel.poll_control() == [DtmfDigit("1"), DtmfDigit("#"), Hangup()]
        assert channel.poll_control() == []
        channel.hangup()
        assert channel.receive_audio(0.01) is None
        channel.interrupt()
        assert channel.poll_control() == []


def test_the_bot_falls_silent_when_the_caller_hangs_up(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake = fake_pa()
    with LocalAudioChannel(16000, keyboard=False) as channel:
        channel.play(bytes(32000))
        channel.interrupt()
    assert channel.playback_pending() == 0
    assert fake.streams["output"].states == ["new", "started", "aborted", "closed"]


def test_the_bots_last_words_play_out_when_the_bot_ends_the_call(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake = fake_pa()
    with LocalAudioChannel(16000, keyboard=False) as channel:
        speaker = fake.streams["output"]
        channel.play(tone(400, 0.2, 16000).tobytes())
        channel.hangup()
        threading.Timer(0.1, lambda: [pull(speaker, 640) for _ in range(10)]).start()
    assert channel.playback_pending() == 0
    assert speaker.states == ["new", "started", "stopped", "closed"]


def test_transfer_shows_where_the_call_would_go(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake_pa()
    said: list[str] = []
    with LocalAudioChannel(16000, keyboard=False, announce=said.append) as channel:
        assert channel.transfer("billing", {"X-IVR-Intent": "billing", "X-IVR-Slot-Order": "12345"})
        assert channel.receive_audio(0.01) is None
    assert said == [
        "the call would now be transferred to billing with:\n    X-IVR-Intent: billing\n    X-IVR-Slot-Order: 12345"
    ]


def test_half_duplex_mutes_the_microphone_while_the_bot_speaks(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake = fake_pa()
    with LocalAudioChannel(16000, keyboard=False, half_duplex=True) as channel:
        mic, speaker = fake.streams["input"].callback, fake.streams["output"]
        loud = tone(300, 0.02, 16000).tobytes()
        channel.play(bytes(6400))
        mic(loud, 320, None, OK)
        frame = channel.receive_audio(0.01)
        assert frame is not None and not any(frame.pcm)
        pull(speaker, 6400)
        channel._last_bot_audio = 0.0  # long ago: the echo has died away
        mic(loud, 320, None, OK)
        frame = channel.receive_audio(0.01)
        assert frame is not None and frame.pcm == loud


def test_a_device_that_will_not_open_is_a_clear_error(fake_pa: Callable[..., FakePortAudio],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_pa()

    def busy(**kwargs: Any) -> FakeStream:
        raise fake.PortAudioError("Device unavailable [PaErrorCode -9985]")

    monkeypatch.setattr(fake, "RawInputStream", busy)
    with pytest.raises(AudioDeviceError) as err:
        LocalAudioChannel(16000, "usb", "usb", keyboard=False).open()
    assert "Device unavailable" in str(err.value) and "USB Headset" in str(err.value)
    assert fake.streams["output"].state == "closed"


# ------------------------------------------------------------------- screen


def test_the_screen_shows_the_conversation_without_colours_off_a_terminal() -> None:
    out = io.StringIO()
    screen = TranscriptScreen(out)
    for event in [
        ev.PromptPlayed(at=0.0, text="How can I help?"),
        ev.Listening(at=0.0, speech=True, dtmf=True),
        ev.CallerSpeaking(at=1.2),
        ev.PartialHeard(at=1.5, text="talk to"),
        ev.PartialHeard(at=1.6, text="talk to"),
        ev.BargedIn(at=1.6, by="speech"),
        ev.CallerSaid(at=2.1, text="talk to a person", confidence=0.91, endpoint="silence"),
        ev.IntentFound(at=2.1, intent="agent", confidence=0.87),
        ev.KeysPressed(at=3.0, digits="12#"),
        ev.TransferStarted(at=4.0, target="support", queue="support", uri=None,
                           context={"intent": "agent", "slots": {"order": "12"}}),
        ev.CallFinished(at=4.0, outcome="transferred"),
    ]:
        screen.on_event(event)
    assert out.getvalue().splitlines() == [
        "[   0.0s] bot     › How can I help?",
        "[   0.0s]         (listening: speak or press keys)",
        "[   1.5s] caller  ~ talk to",
        "[   1.6s]         (barge-in by speech: prompt stopped)",
        "[   2.1s] caller  » talk to a person  [asr 0.91]",
        "[   2.1s] intent  agent (0.87)",
        "[   3.0s] caller  # keys 12#",
        "[   4.0s] transfer → support  (intent=agent, order=12)",
        "[   4.0s] call ended: transferred",
    ]
    assert "\033[" not in out.getvalue()


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_partials_overwrite_one_line_and_colours_are_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    out = FakeTty()
    screen = TranscriptScreen(out)
    screen.on_event(ev.PartialHeard(at=1.0, text="where"))
    screen.on_event(ev.PartialHeard(at=1.2, text="where is my"))
    screen.on_event(ev.CallerSaid(at=1.5, text="where is my order", confidence=0.8, endpoint="silence"))
    text = out.getvalue()
    assert text.count("\n") == 1  # the partials shared the final line
    assert text.count("\r\033[K") == 3
    assert "\033[32m[   1.5s] caller  » where is my order  [asr 0.80]\033[0m\n" in text
    monkeypatch.setenv("NO_COLOR", "1")
    assert TranscriptScreen(FakeTty()).color is False


# ------------------------------------------------- a call over a fake sound card


class FakeSoundCard:
    """Drives the channel's callbacks in real time like PortAudio: the caller's audio is fed after the bot
    starts listening and its prompt has played, and the bot's audio is collected."""

    def __init__(self, fake: FakePortAudio, channel: LocalAudioChannel) -> None:
        self.fake = fake
        self.channel = channel
        self.caller_audio = b""
        self.bot_audio = bytearray()
        self.speak_at_listen: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def on_event(self, event: ev.CallEvent) -> None:
        if isinstance(event, ev.Listening) and self.speak_at_listen:
            self.caller_audio = self.speak_at_listen.pop(0)

    def _run(self) -> None:
        mic = self.fake.streams["input"].callback
        speaker = self.fake.streams["output"]
        tick = time.perf_counter()
        while not self._stop.is_set():
            chunk = bytes(640)
            if self.caller_audio and self.channel.playback_pending() == 0:
                chunk = self.caller_audio[:640].ljust(640, b"\0")
                self.caller_audio = self.caller_audio[640:]
            mic(chunk, 320, None, OK)
            self.bot_audio += pull(speaker, 640)
            tick += 0.005  # four times faster than real time keeps the test short
            time.sleep(max(0.0, tick - time.perf_counter()))

    def __enter__(self) -> FakeSoundCard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class OneQuestionFlow:
    """Greets, asks one question, and transfers to the queue named by what the caller said."""

    finished = False

    def __init__(self) -> None:
        self.events: list[ControlEvent] = []

    def start(self) -> list[fa.FlowAction]:
        return [fa.Say("Thanks for calling."), fa.Listen(no_input_timeout=20.0)]

    def handle(self, event: ControlEvent) -> list[fa.FlowAction]:
        self.events.append(event)
        if isinstance(event, Transcript):
            return [fa.Transfer(queue="support")]
        if isinstance(event, DtmfDigit):
            return [fa.Hangup("keyed")]
        return []

    def context(self) -> dict[str, Any]:
        said = next((e.text for e in self.events if isinstance(e, Transcript)), None)
        return {"intent": "agent" if said else None, "confidence": 0.9 if said else None, "flow": "one_question"}


class EchoAsr:
    """'Recognises' every utterance as the same sentence, after checking it heard some audio."""

    name = "fake"
    capabilities = RecognizerCapabilities()

    def new_recognizer(self, sample_rate: int, grammar: Sequence[str] | None = None) -> Any:
        class Rec:
            capabilities = RecognizerCapabilities(partials=True)
            frames = 0

            def accept(self, frame: AudioFrame) -> Transcript | None:
                self.frames += 1
                return Transcript("talk to", 0.5, final=False) if self.frames == 30 else None

            def finish(self) -> Transcript:
                return Transcript("talk to a person" if self.frames > 40 else "", 0.93)

            def reset(self) -> None:
                self.frames = 0

        return Rec()


class QuietTts:
    def synthesize(self, text: str, sample_rate: int) -> bytes:
        return tone(200, 0.1 * len(text.split()), sample_rate).tobytes()

    def stream(self, text: str, sample_rate: int) -> Iterator[bytes]:
        yield self.synthesize(text, sample_rate)


def test_a_call_runs_through_the_local_channel(fake_pa: Callable[..., FakePortAudio],
                                                 espeak_wav: Callable[..., Path]) -> None:
    fake = fake_pa()
    services = SpeechServices(asr=EchoAsr(), tts=QuietTts())
    out = io.StringIO()
    screen = TranscriptScreen(out)
    said: list[str] = []
    speech = read_wav(espeak_wav("I would like to talk to a person"), 16000).pcm
    try:
        with LocalAudioChannel(16000, keyboard=False, announce=said.append) as channel:
            card = FakeSoundCard(fake, channel)
            card.speak_at_listen.append(speech)

            def observer(event: ev.CallEvent) -> None:
                card.on_event(event)
                screen.on_event(event)

            with card:
                result = CallSession(channel, OneQuestionFlow(), services, flow_name="one_question",
                                     observer=SimpleNamespace(on_event=observer)).run()
    finally:
        services.shutdown()
    lines = out.getvalue()
    assert result.outcome == "transferred" and result.transfer_target == "support"
    assert "bot     › Thanks for calling." in lines
    assert "caller  ~ talk to" in lines
    assert "caller  » talk to a person  [asr 0.93]" in lines
    assert "intent  agent (0.90)" in lines
    assert "transfer → support  (intent=agent)" in lines
    assert said and said[0].startswith("the call would now be transferred to support with:")
    assert "X-IVR-Intent: agent" in said[0]
    assert np.abs(np.frombuffer(bytes(card.bot_audio), "<i2")).max() > 5000  # the greeting reached the speaker


def test_ctrl_c_hangs_up_the_call(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake = fake_pa()
    services = SpeechServices(asr=EchoAsr(), tts=QuietTts())
    flow = OneQuestionFlow()
    try:
        with LocalAudioChannel(16000, keyboard=False) as channel, FakeSoundCard(fake, channel):
            threading.Timer(0.3, channel.interrupt).start()
            started = time.perf_counter()
            result = CallSession(channel, flow, services).run()
    finally:
        services.shutdown()
    assert result.outcome == "caller_hangup"
    assert time.perf_counter() - started < 2.0
    assert isinstance(flow.events[-1], Hangup)


def test_a_key_typed_on_the_terminal_reaches_the_flow(fake_pa: Callable[..., FakePortAudio]) -> None:
    fake = fake_pa()
    services = SpeechServices(asr=EchoAsr(), tts=QuietTts())
    flow = OneQuestionFlow()
    try:
        with LocalAudioChannel(16000, keyboard=False) as channel, FakeSoundCard(fake, channel):
            threading.Timer(0.5, channel.press, args=("5",)).start()
            result = CallSession(channel, flow, services).run()
    finally:
        services.shutdown()
    assert result.outcome == "keyed"
    assert DtmfDigit("5") in flow.events


# -------------------------------------------------------------------- keys


def test_keys_typed_on_a_terminal_are_dtmf_and_the_terminal_is_restored() -> None:
    import os
    import termios

    from ivr.talk.keys import TerminalKeys

    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    pressed: list[str] = []
    try:
        with TerminalKeys(pressed.append, fd=slave) as keys:
            assert keys.active
            assert not termios.tcgetattr(slave)[3] & termios.ICANON  # no Enter needed
            os.write(master, b"1x2a#*")
            deadline = time.monotonic() + 2
            while len(pressed) < 5 and time.monotonic() < deadline:
                time.sleep(0.01)
        assert pressed == ["1", "2", "A", "#", "*"]
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(master)
        os.close(slave)


def test_keys_are_not_read_when_stdin_is_not_a_terminal() -> None:
    import os

    from ivr.talk.keys import TerminalKeys

    read, write = os.pipe()
    try:
        with TerminalKeys(lambda key: None, fd=read) as keys:
            assert not keys.active
    finally:
        os.close(read)
        os.close(write)


# --------------------------------------------------------------------- CLI


def test_talk_needs_a_flow_and_well_formed_variables(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from ivr.cli.talk import talk

    runner = CliRunner()
    missing = runner.invoke(talk, [])
    assert missing.exit_code == 2 and "give the FLOW file to talk to (or --list-devices)" in missing.output
    nowhere = runner.invoke(talk, [str(tmp_path / "nope.yaml")])
    assert nowhere.exit_code == 2 and "no such flow file" in nowhere.output
    flow = tmp_path / "flow.yaml"
    flow.write_text("version: 1\n")
    bad = runner.invoke(talk, [str(flow), "--var", "api base"])
    assert bad.exit_code == 2 and "'api base' is not NAME=VALUE" in bad.output
