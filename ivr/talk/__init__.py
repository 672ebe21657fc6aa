"""Talk to a flow through the local microphone and speakers (``ivr talk``), with a live transcript."""

from __future__ import annotations

from ivr.talk.channel import LocalAudioChannel
from ivr.talk.devices import DeviceInfo, format_device_list, list_devices, resolve_device
from ivr.talk.screen import TranscriptScreen

__all__ = [
    "DeviceInfo",
    "LocalAudioChannel",
    "TranscriptScreen",
    "format_device_list",
    "list_devices",
    "resolve_device",
]
