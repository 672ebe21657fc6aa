"""Cheap benchmark callers: one SIPp process replaying each caller's whole side of the call from a pcap.

A pjsua2 caller costs a process and a conference bridge per call, which on a small machine competes
with the server it measures. SIPp (Debian ``sip-tester``) runs all calls in one C process: each call
sends an INVITE offering PCMU and RFC 4733 telephone-events, and after the 200 OK replays one pcap that
holds the caller's entire side of the call as 20 ms RTP packets: silence while prompts play, the
fixture WAVs as G.711 u-law speech, key presses as telephone-events. Then it hangs up (or waits for the
bot to), so the script is the same as the pjsua2 caller's (``ivr.bench.calls``).

``caller_rtp(steps)`` builds the packets, ``write_pcap`` stores them, ``sipp_scenario`` writes the XML,
and ``run_sipp_callers`` runs SIPp and reads its per-call set-up times and failed-call count.
"""

from __future__ import annotations

import csv
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ivr.audio.wavfile import read_wav
from ivr.errors import IvrError

RATE = 8000
FRAME_SAMPLES = 160  # 20 ms at 8 kHz
ULAW_SILENCE = b"\xff" * FRAME_SAMPLES
PCMU = 0
TELEPHONE_EVENT = 101
DTMF_EVENTS = {**{str(d): d for d in range(10)}, "*": 10, "#": 11, "A": 12, "B": 13, "C": 14, "D": 15}
DIGIT_FRAMES = 8  # 160 ms tone per key, then the end packet (sent three times, as RFC 4733 asks)
DIGIT_GAP_FRAMES = 9  # 180 ms of silence between keys (about pjsua2's pacing)


class SippError(IvrError):
    """SIPp is missing or could not run the benchmark calls."""


def ulaw_encode(pcm16: np.ndarray) -> bytes:
    """G.711 u-law encode int16 samples."""
    x = pcm16.astype(np.int32)
    sign = np.where(x < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(x), 32635) + 0x84
    exponent = np.floor(np.log2(magnitude)).astype(np.int32) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return (~(sign | (exponent << 4) | mantissa) & 0xFF).astype(np.uint8).tobytes()


@dataclass
class RtpTrack:
    """The caller's RTP packets with their send times (seconds from the start of the call)."""

    ssrc: int = 0x1BE70001
    packets: list[tuple[float, bytes]] = field(default_factory=list)
    _seq: int = 0
    _frames: int = 0  # 20 ms slots used so far: the send clock and the RTP clock

    @property
    def seconds(self) -> float:
        """Length of the track."""
        return self._frames * FRAME_SAMPLES / RATE

    def _packet(self, payload_type: int, payload: bytes, timestamp: int, marker: bool = False) -> None:
        header = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | payload_type, self._seq & 0xFFFF,
                             timestamp & 0xFFFFFFFF, self.ssrc)
        self._seq += 1
        self.packets.append((self._frames * FRAME_SAMPLES / RATE, header + payload))

    def audio(self, ulaw: bytes) -> None:
        """Append u-law audio (padded with silence to whole 20 ms packets)."""
        for i in range(0, len(ulaw), FRAME_SAMPLES):
            chunk = ulaw[i : i + FRAME_SAMPLES]
            self._packet(PCMU, chunk + ULAW_SILENCE[len(chunk) :], self._frames * FRAME_SAMPLES)
            self._frames += 1

    def silence(self, seconds: float) -> None:
        """Append ``seconds`` of silence (continuous RTP, as a phone without silence suppression sends)."""
        self.audio(ULAW_SILENCE * round(seconds * RATE / FRAME_SAMPLES))

    def digit(self, key: str) -> None:
        """Append one RFC 4733 key press followed by a short gap."""
        event = DTMF_EVENTS[key.upper()]
        stamp = self._frames * FRAME_SAMPLES
        for i in range(DIGIT_FRAMES):
            duration = (i + 1) * FRAME_SAMPLES
            self._packet(TELEPHONE_EVENT, struct.pack("!BBH", event, 10, duration), stamp, marker=i == 0)
            self._frames += 1
        for _ in range(3):
            end = struct.pack("!BBH", event, 0x80 | 10, DIGIT_FRAMES * FRAME_SAMPLES)
            self._packet(TELEPHONE_EVENT, end, stamp)
        self.silence(DIGIT_GAP_FRAMES * FRAME_SAMPLES / RATE)


def caller_rtp(script: str) -> RtpTrack:
    """The RTP of a caller script (``wait S; play FILE.wav; dtmf 123#; hangup``; see ``ivr.testing.sip_caller``).

    ``hangup`` ends the track; everything after it is ignored.
    """
    track = RtpTrack()
    for raw in script.split(";"):
        kind, _, arg = raw.strip().partition(" ")
        arg = arg.strip()
        if kind == "wait":
            track.silence(float(arg))
        elif kind == "play":
            samples = np.frombuffer(read_wav(arg, RATE).pcm, dtype="<i2")
            track.audio(ulaw_encode(samples))
        elif kind == "dtmf":
            for key in arg:
                track.digit(key)
        elif kind == "hangup":
            break
        elif kind:
            raise SippError(f"script step {raw.strip()!r} cannot be replayed by SIPp; use wait, play, dtmf, hangup")
    return track


def _ip_checksum(header: bytes) -> int:
    total = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def write_pcap(path: Path, track: RtpTrack, src: str = "127.0.0.1", dst: str = "127.0.0.2",
               ports: tuple[int, int] = (40000, 40002)) -> None:
    """Store the track as a pcap (Ethernet/IPv4/UDP; SIPp rewrites addresses and ports when it replays)."""
    import socket

    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    for index, (at, rtp) in enumerate(track.packets):
        udp = struct.pack("!HHHH", ports[0], ports[1], 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), index & 0xFFFF, 0, 64, 17, 0, s, d)
        ip = ip[:10] + struct.pack("!H", _ip_checksum(ip)) + ip[12:]
        frame = b"\x00" * 12 + b"\x08\x00" + ip + udp
        micros = round(at * 1e6)
        out.append(struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)) + frame)
    path.write_bytes(b"".join(out))


_SCENARIO = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<!-- Generated by ivr.bench.sipp: a caller that speaks a pcap (PCMU + telephone-events) and {ending}. -->
<scenario name="ivr bench caller">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "bench" <sip:bench[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: sip:bench@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=bench 53655765 2353687637 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0 101
      a=rtpmap:0 PCMU/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-15
      a=ptime:20
      a=sendrecv
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rtd="1" rrs="true"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "bench" <sip:bench[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: sip:bench@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>
{ending_xml}
</scenario>
"""

_CALLER_HANGS_UP = """  <pause milliseconds="{pause_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      [routes]
      From: "bench" <sip:bench[call_number]@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: sip:bench@[local_ip]:[local_port]
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>"""

_BOT_HANGS_UP = """  <recv request="BYE" timeout="{timeout_ms}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: sip:bench@[local_ip]:[local_port]
      Content-Length: 0

    ]]>
  </send>"""


def sipp_scenario(path: Path, pcap: Path, seconds: float, caller_hangs_up: bool) -> None:
    """Write the scenario: INVITE, replay ``pcap`` (``seconds`` long), then BYE (or wait for the bot's BYE)."""
    if caller_hangs_up:
        ending, tail = "hangs up", _CALLER_HANGS_UP.format(pause_ms=round(seconds * 1000))
    else:
        ending, tail = "waits for the bot to hang up", _BOT_HANGS_UP.format(timeout_ms=round((seconds + 30) * 1000))
    path.write_text(_SCENARIO.format(ending=ending, pcap=pcap, ending_xml=tail))


@dataclass
class SippResult:
    """What SIPp saw: answered and failed calls and each call's INVITE → 200 OK time."""

    successful: int
    failed: int
    setup_ms: list[float]
    returncode: int
    errors: str = ""


def _stat_counts(path: Path) -> tuple[int, int]:
    rows = list(csv.DictReader(path.read_text(errors="replace").splitlines(), delimiter=";"))
    if not rows:
        return 0, 0
    last = rows[-1]
    return int(last.get("SuccessfulCall(C)", 0) or 0), int(last.get("FailedCall(C)", 0) or 0)


def run_sipp_callers(target: str, service: str, script: str, calls: int, stagger: float, work: Path,
                     bind: str, caller_hangs_up: bool = True, timeout: float = 300.0) -> SippResult:
    """Run ``calls`` SIPp calls to ``service@target`` (``host:port``), one every ``stagger`` s, each replaying
    ``script``; waits for all of them to end. SIPp replays RTP from a raw socket, so this needs root."""
    sipp = shutil.which("sipp")
    if sipp is None:
        raise SippError("sipp is not installed; apt-get install sip-tester (or use --callers pjsua2)")
    work.mkdir(parents=True, exist_ok=True)
    track = caller_rtp(script)
    pcap = work / "caller.pcap"
    write_pcap(pcap, track)
    scenario = work / "caller.xml"
    sipp_scenario(scenario, pcap, track.seconds, caller_hangs_up)
    period_ms = max(1, round(stagger * 1000))
    cmd = [sipp, target, "-sf", str(scenario), "-s", service, "-i", bind, "-mi", bind, "-p", "0",
           "-mp", "41000", "-m", str(calls), "-l", str(calls), "-r", "1", "-rp", str(period_ms),
           "-nostdin", "-timeout", f"{int(timeout)}s", "-timeout_error", "-trace_err", "-trace_stat",
           "-fd", "1", "-trace_rtt", "-rtt_freq", "1", "-max_recv_loops", "100"]
    try:
        proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True, timeout=timeout + 30)
    except subprocess.TimeoutExpired:
        raise SippError(f"SIPp did not finish {calls} calls within {timeout + 30:.0f} s") from None
    setups: list[float] = []
    for rtt in work.glob("*_rtt.csv"):
        for row in csv.DictReader(rtt.read_text(errors="replace").splitlines(), delimiter=";"):
            value = row.get("response_time") or row.get("response_time_ms")
            if value:
                setups.append(float(value))
    successful = failed = 0
    for stat in work.glob("*_.csv"):
        successful, failed = _stat_counts(stat)
    errors = "".join(p.read_text(errors="replace")[-2000:] for p in work.glob("*errors.log"))
    if successful + failed == 0 and proc.returncode not in (0, 1):
        raise SippError(f"SIPp failed (exit {proc.returncode}): {(proc.stderr or proc.stdout)[-1500:]}")
    return SippResult(successful, failed, setups, proc.returncode, errors[-2000:])
