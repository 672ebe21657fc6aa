"""Find the local microphone and speaker: list PortAudio devices, pick one by index or name, pick a rate.

Every failure is an ``AudioDeviceError`` that lists the devices that do exist and says how to choose one,
so ``ivr talk`` never shows a PortAudio traceback.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from ivr.errors import AudioDeviceError

Kind = Literal["input", "output"]

_HOW_TO_PICK = (
    "pick one with --input-device/--output-device (an index or part of the name); "
    "`ivr talk --list-devices` shows them"
)


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio device as the user sees it in ``--list-devices``."""

    index: int
    name: str
    hostapi: str
    inputs: int
    outputs: int
    default_rate: int
    default_input: bool = False
    default_output: bool = False

    def has(self, kind: Kind) -> bool:
        """Whether the device can record (``input``) or play (``output``)."""
        return (self.inputs if kind == "input" else self.outputs) > 0

    def describe(self) -> str:
        """One line: index, name, host API, channels and default rate, with the default markers."""
        marks = ("<" if self.default_input else " ") + (">" if self.default_output else " ")
        return (
            f"{marks} {self.index:>3}  {self.name}  ({self.hostapi}, {self.inputs} in, {self.outputs} out, "
            f"{self.default_rate} Hz)"
        )


def portaudio() -> ModuleType:
    """The ``sounddevice`` module, or AudioDeviceError when the PortAudio library is missing."""
    _quiet_alsa()
    try:
        import sounddevice
    except OSError as exc:  # sounddevice raises OSError when libportaudio cannot be loaded
        raise AudioDeviceError(
            f"cannot load the PortAudio library ({exc}); install it (Debian: apt-get install libportaudio2)"
        ) from None
    return sounddevice


_ALSA_HANDLER: object = None


def _quiet_alsa() -> None:
    """Stop alsa-lib printing to stderr ("ALSA lib pcm.c: underrun occurred", probing noise) over the
    live transcript; ivr reports device problems itself."""
    global _ALSA_HANDLER
    if _ALSA_HANDLER is not None:
        return
    try:
        asound = ctypes.CDLL(ctypes.util.find_library("asound") or "libasound.so.2")
    except OSError:  # no ALSA (macOS, Windows): nothing to quiet
        _ALSA_HANDLER = False
        return
    handler_type = ctypes.CFUNCTYPE(
        None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
    )
    _ALSA_HANDLER = handler_type(lambda *args: None)  # kept alive for as long as alsa-lib may call it
    asound.snd_lib_error_set_handler(_ALSA_HANDLER)


def rescan() -> None:
    """Re-read the device list (PortAudio only enumerates devices when it starts, e.g. after a sound
    server was started or a headset was plugged in)."""
    sd = portaudio()
    sd._terminate()
    sd._initialize()


def list_devices() -> list[DeviceInfo]:
    """Every audio device PortAudio can see, with the system defaults marked."""
    sd = portaudio()
    try:
        raw = sd.query_devices()
        hostapis = sd.query_hostapis()
        default_in, default_out = _defaults(sd)
    except sd.PortAudioError as exc:
        raise AudioDeviceError(f"cannot list audio devices: {exc}") from None
    devices = []
    for info in raw:
        index = int(info["index"])
        devices.append(
            DeviceInfo(
                index=index,
                name=str(info["name"]),
                hostapi=str(hostapis[info["hostapi"]]["name"]),
                inputs=int(info["max_input_channels"]),
                outputs=int(info["max_output_channels"]),
                default_rate=int(info["default_samplerate"]),
                default_input=index == default_in,
                default_output=index == default_out,
            )
        )
    return devices


def _defaults(sd: ModuleType) -> tuple[int, int]:
    device = sd.default.device
    try:
        return int(device[0]), int(device[1])
    except (TypeError, ValueError):  # a name set by the user in sd.default; resolve it
        return -1, -1


def format_device_list(devices: list[DeviceInfo]) -> str:
    """The device table printed by ``--list-devices`` and inside device errors."""
    if not devices:
        return "  (no audio devices found: is a sound card connected, or a sound server such as PulseAudio running?)"
    lines = [device.describe() for device in devices]
    lines.append("  (< default input, > default output)")
    return "\n".join(lines)


def resolve_device(spec: str | int | None, kind: Kind, devices: list[DeviceInfo] | None = None) -> DeviceInfo:
    """The device for ``spec``: None for the system default, an index, or a case-insensitive part of the
    name (an exact name wins over partial matches). Raises AudioDeviceError listing the devices."""
    devices = list_devices() if devices is None else devices
    usable = [d for d in devices if d.has(kind)]
    what = "microphone (input)" if kind == "input" else "speaker (output)"
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        default = next((d for d in usable if (d.default_input if kind == "input" else d.default_output)), None)
        if default is not None:
            return default
        if usable:
            return usable[0]
        raise AudioDeviceError(
            f"no {what} device found.\n{format_device_list(devices)}\n"
            f"connect a {'microphone or headset' if kind == 'input' else 'speaker or headset'} or start the "
            "sound server (PulseAudio or PipeWire), then check with `ivr talk --list-devices`"
        )
    text = str(spec).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        match = next((d for d in devices if d.index == index), None)
        if match is None:
            raise AudioDeviceError(
                f"there is no audio device number {index}.\n{format_device_list(devices)}\n{_HOW_TO_PICK}"
            )
        if not match.has(kind):
            raise AudioDeviceError(
                f"device {index} ({match.name}) has no {kind} channels; it cannot be the {what}.\n"
                f"{format_device_list(devices)}\n{_HOW_TO_PICK}"
            )
        return match
    exact = [d for d in usable if d.name.lower() == text.lower()]
    if exact:
        return exact[0]
    partial = [d for d in usable if text.lower() in d.name.lower()]
    if len(partial) == 1:
        return partial[0]
    if not partial:
        raise AudioDeviceError(
            f"no {what} device matches {text!r}.\n{format_device_list(devices)}\n{_HOW_TO_PICK}"
        )
    names = ", ".join(f"{d.index} ({d.name})" for d in partial)
    raise AudioDeviceError(f"{text!r} matches several {kind} devices: {names}; give the index instead")


def pick_rate(device: DeviceInfo, kind: Kind, wanted: int) -> int:
    """``wanted`` if the device can open a mono PCM16 stream at it, else the device's default rate (the
    channel then resamples). Raises AudioDeviceError if neither works."""
    sd = portaudio()
    check = sd.check_input_settings if kind == "input" else sd.check_output_settings
    problems = []
    for rate in dict.fromkeys((wanted, device.default_rate)):
        try:
            check(device=device.index, samplerate=rate, channels=1, dtype="int16")
            return rate
        except (sd.PortAudioError, ValueError) as exc:
            problems.append(f"{rate} Hz: {exc}")
    raise AudioDeviceError(
        f"cannot open {device.name} (device {device.index}) as a mono 16-bit {kind}: {'; '.join(problems)}; "
        f"{_HOW_TO_PICK}"
    )
