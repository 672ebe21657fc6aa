"""What callers hear, measured on the wire: an RTP capture on the loopback interface and its analysis.

``RtpCapture`` records every RTP packet to or from one address (kernel timestamps, so a busy capture
thread does not distort timing). ``WireCall`` pairs the caller's stream with the bot's and answers the
questions a caller would ask: when did I stop talking, when did the bot answer, did the bot go quiet
when I talked over it, were there holes in its audio. It needs CAP_NET_RAW (root) to open the capture.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import struct
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from ivr.errors import IvrError

ETH_P_ALL = 0x0003
SO_TIMESTAMPNS = 35
PACKET_OUTGOING = 4
FRAME_SECONDS = 0.02
VOICED_LEVEL = 150.0
"""Mean absolute sample value (PCM16) above which a packet carries speech rather than silence."""


def _ulaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(sign != 0, -magnitude, magnitude).astype(np.float32)


def _alaw_table() -> np.ndarray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0))
    return np.where(sign != 0, magnitude, -magnitude).astype(np.float32)


_DECODE = {0: _ulaw_table(), 8: _alaw_table()}


@dataclass(frozen=True)
class RtpPacket:
    """One captured RTP packet: kernel time, payload type, and its loudness (-1 when not G.711)."""

    at: float
    payload_type: int
    level: float

    @property
    def voiced(self) -> bool:
        """True if the packet carries audible audio."""
        return self.level >= VOICED_LEVEL


@dataclass
class WireStream:
    """The packets one side sent (``src`` → ``dst``, both ``ip:port``)."""

    src: str
    dst: str
    packets: list[RtpPacket] = field(default_factory=list)

    def audio(self) -> list[RtpPacket]:
        """Audio packets only (no RFC 4733 telephone-events)."""
        return [p for p in self.packets if p.payload_type in _DECODE or p.payload_type == 9]

    def gaps(self, over: float = 0.04) -> list[float]:
        """Inter-packet gaps longer than ``over`` seconds while the stream ran (seconds)."""
        times = [p.at for p in self.audio()]
        return [b - a for a, b in itertools.pairwise(times) if b - a > over]


@dataclass
class WireCall:
    """The two RTP streams of one call, seen from the caller's side."""

    caller: WireStream
    bot: WireStream

    def speech_ends(self, min_pause: float = 0.8, min_speech: float = 0.2) -> list[float]:
        """When each stretch of the caller's speech ended (a stretch: voiced packets with pauses shorter
        than ``min_pause``, at least ``min_speech`` long)."""
        return [end for start, end in _stretches(self.caller.audio(), min_pause) if end - start >= min_speech]

    def speech_starts(self, min_pause: float = 0.8, min_speech: float = 0.2) -> list[float]:
        """When each stretch of the caller's speech began."""
        return [start for start, end in _stretches(self.caller.audio(), min_pause) if end - start >= min_speech]

    def first_bot_audio_after(self, at: float) -> float | None:
        """Time of the bot's first voiced packet after ``at``."""
        return next((p.at for p in self.bot.audio() if p.at > at and p.voiced), None)

    def bot_silent_between(self, start: float, end: float) -> bool:
        """True if the bot sent no voiced packet in [start, end]."""
        return not any(start <= p.at <= end and p.voiced for p in self.bot.audio())

    def turn_latencies(self, quiet_before: float = 0.3) -> list[float]:
        """End of each caller utterance → first voiced reply packet, for utterances the bot did not talk
        over (it was quiet for ``quiet_before`` s before the end): the turn latency on the wire."""
        latencies = []
        for end in self.speech_ends():
            if not self.bot_silent_between(end - quiet_before, end):
                continue
            reply = self.first_bot_audio_after(end)
            if reply is not None:
                latencies.append(reply - end)
        return latencies

    def bot_went_quiet_after(self, at: float, hold: float = 1.0) -> float | None:
        """When the bot's audio stopped after ``at``: the first silent packet followed by ``hold`` seconds of
        silence (how a caller notices the prompt stopped)."""
        audio = [p for p in self.bot.audio() if p.at >= at]
        for i, packet in enumerate(audio):
            if packet.voiced:
                continue
            window = [p for p in audio[i:] if p.at <= packet.at + hold]
            if window and window[-1].at >= packet.at + hold - 2 * FRAME_SECONDS and not any(p.voiced for p in window):
                return packet.at
        return None


def _stretches(packets: list[RtpPacket], min_pause: float) -> list[tuple[float, float]]:
    stretches: list[tuple[float, float]] = []
    start = end = None
    for packet in packets:
        if not packet.voiced:
            continue
        if end is not None and packet.at - end < min_pause:
            end = packet.at + FRAME_SECONDS
            continue
        if start is not None and end is not None:
            stretches.append((start, end))
        start, end = packet.at, packet.at + FRAME_SECONDS
    if start is not None and end is not None:
        stretches.append((start, end))
    return stretches


class RtpCapture:
    """Captures RTP to and from ``address`` on the loopback interface until ``stop()``.

    Use as a context manager. Raises IvrError when the capture cannot be opened (it needs CAP_NET_RAW).
    """

    def __init__(self, address: str, interface: str = "lo") -> None:
        self.address = socket.inet_aton(address)
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
            self._sock.bind((interface, 0))
        except (OSError, AttributeError) as exc:
            raise IvrError(f"cannot capture packets on {interface} ({exc}); measuring on the wire needs "
                           "CAP_NET_RAW: run as root or `setcap cap_net_raw+ep` on the Python binary") from None
        self._sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        self._sock.settimeout(0.2)
        self.streams: dict[tuple[str, str], WireStream] = {}
        self._raw: dict[tuple[str, str], list[tuple[float, int, bytes]]] = defaultdict(list)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ivr-rtp-capture", daemon=True)

    def __enter__(self) -> RtpCapture:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop capturing and decode what was captured into ``streams``."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(2)
            with contextlib.suppress(OSError):
                self._sock.close()
            self._decode()

    def _run(self) -> None:
        wanted = self.address
        while not self._stop.is_set():
            try:
                data, ancillary, _, addr = self._sock.recvmsg(2048, 64)
            except TimeoutError:
                continue
            except OSError:
                return
            if addr[2] == PACKET_OUTGOING or len(data) < 14 + 20 + 8 + 12 or data[12:14] != b"\x08\x00":
                continue
            ip = data[14:]
            if ip[9] != 17 or (ip[12:16] != wanted and ip[16:20] != wanted):
                continue
            header = (ip[0] & 0x0F) * 4
            udp = ip[header:]
            rtp = udp[8:]
            if len(rtp) < 12 or rtp[0] >> 6 != 2:
                continue
            at = time.time()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    at = seconds + nanos / 1e9
            src_port, dst_port = struct.unpack("!HH", udp[:4])
            key = (f"{socket.inet_ntoa(ip[12:16])}:{src_port}", f"{socket.inet_ntoa(ip[16:20])}:{dst_port}")
            self._raw[key].append((at, rtp[1] & 0x7F, bytes(rtp[12 + 4 * (rtp[0] & 0x0F):])))

    def _decode(self) -> None:
        for (src, dst), raw in self._raw.items():
            stream = WireStream(src, dst)
            for at, pt, payload in raw:
                table = _DECODE.get(pt)
                level = -1.0
                if table is not None and payload:
                    level = float(np.abs(table[np.frombuffer(payload, np.uint8)]).mean())
                stream.packets.append(RtpPacket(at, pt, level))
            self.streams[(src, dst)] = stream

    def calls(self) -> list[WireCall]:
        """The captured calls: each stream from the capture address paired with the stream back to it."""
        address = socket.inet_ntoa(self.address)
        calls = []
        for (src, dst), stream in self.streams.items():
            if src.rsplit(":", 1)[0] != address:
                continue
            back = self.streams.get((dst, src))
            if back is not None:
                calls.append(WireCall(caller=stream, bot=back))
        return sorted(calls, key=lambda c: c.caller.packets[0].at if c.caller.packets else 0.0)
