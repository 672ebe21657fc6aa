"""The SIPp load generator of ``ivr bench calls``: the caller's RTP as a pcap, and real calls with it."""

from __future__ import annotations

import itertools
import os
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from ivr.bench.sipp import (
    FRAME_SAMPLES,
    PCMU,
    TELEPHONE_EVENT,
    SippError,
    caller_rtp,
    run_sipp_callers,
    ulaw_encode,
    write_pcap,
)
from ivr.bench.wire import _ulaw_table

FIXTURES = Path(__file__).parent.parent / "audio_fixtures" / "hotline"


def test_ulaw_encoding_decodes_back_within_g711_precision() -> None:
    x = (np.sin(np.arange(4000) / 7.0) * 20000).astype(np.int16)
    x = np.concatenate([x, np.array([0, 1, -1, 100, -100], np.int16)])
    decoded = _ulaw_table()[np.frombuffer(ulaw_encode(x), np.uint8)]
    assert np.all(np.abs(decoded - x) <= 0.04 * np.abs(x) + 8)
    loudest = _ulaw_table()[np.frombuffer(ulaw_encode(np.array([32767, -32768], np.int16)), np.uint8)]
    assert list(loudest) == [32124, -32124]  # G.711's largest magnitude
    assert ulaw_encode(np.zeros(3, np.int16)) == b"\xff\xff\xff"


def test_caller_rtp_is_a_continuous_20ms_stream_with_speech_and_key_presses() -> None:
    track = caller_rtp(f"wait 1; play {FIXTURES / 'yes.wav'}; dtmf 1#; hangup; wait 5")
    times = [at for at, _ in track.packets]
    headers = [struct.unpack("!BBHII", rtp[:12]) for _, rtp in track.packets]
    assert all(b - a in (0.0, 0.02) or abs(b - a - 0.02) < 1e-9 for a, b in itertools.pairwise(times))
    assert [h[2] for h in headers] == list(range(len(headers)))  # sequence numbers
    audio = [(h, rtp) for h, (_, rtp) in zip(headers, track.packets, strict=True) if h[1] & 0x7F == PCMU]
    assert audio[49][1][12:] == b"\xff" * FRAME_SAMPLES  # the first second is silence
    assert any(rtp[12:] != b"\xff" * FRAME_SAMPLES for _, rtp in audio[50:]), "the WAV is in the stream"
    events = [(h, rtp[12:]) for h, (_, rtp) in zip(headers, track.packets, strict=True)
              if h[1] & 0x7F == TELEPHONE_EVENT]
    keys = [payload[0] for h, payload in events if h[1] & 0x80]  # marker bit: a new key press
    assert keys == [1, 11]
    ends = [payload for _, payload in events if payload[1] & 0x80]
    assert len(ends) == 6  # each key's end packet three times
    assert 3.0 < track.seconds < 5.0  # nothing after hangup


def test_caller_rtp_refuses_steps_it_cannot_replay() -> None:
    with pytest.raises(SippError, match="dtmf-info"):
        caller_rtp("wait 1; dtmf-info 5")


def test_pcap_file_has_one_udp_packet_per_rtp_packet(tmp_path: Path) -> None:
    track = caller_rtp("wait 0.1; dtmf 5")
    path = tmp_path / "c.pcap"
    write_pcap(path, track)
    data = path.read_bytes()
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert magic == 0xA1B2C3D4 and linktype == 1
    offset, count = 24, 0
    while offset < len(data):
        _, _, length, _ = struct.unpack("<IIII", data[offset : offset + 16])
        frame = data[offset + 16 : offset + 16 + length]
        assert frame[12:14] == b"\x08\x00" and frame[14 + 9] == 17  # IPv4, UDP
        assert frame[14 + 20 + 8 :] == track.packets[count][1]
        offset += 16 + length
        count += 1
    assert count == len(track.packets)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("sipp") is None or os.geteuid() != 0,
                    reason="needs sipp (sip-tester) and root for SIPp's raw-socket RTP replay")
def test_sipp_callers_speak_and_press_keys_to_a_real_sip_server(tmp_path: Path) -> None:
    from ivr.sip import SipConfig, SipServer
    from ivr.sip.echo import EchoBot

    bot = EchoBot()
    server = SipServer(SipConfig(port=0, log_level=0), on_call=bot)
    server.start()
    try:
        script = f"wait 0.5; play {FIXTURES / 'yes.wav'}; dtmf 42#; wait 0.5; hangup"
        result = run_sipp_callers(f"127.0.0.1:{server.port}", "100", script, calls=2, stagger=0.3,
                                  work=tmp_path, bind="127.0.0.1")
    finally:
        server.stop()
    assert (result.successful, result.failed) == (2, 0), result.errors
    assert len(result.setup_ms) == 2 and max(result.setup_ms) < 500
    assert len(bot.calls) == 2
    for call in bot.calls:
        assert call.codec == "PCMU/8000"
        assert call.voiced_frames > 25  # 'yes' is about a second of speech
        assert call.digits == "42#"
        assert call.hung_up_by_caller


def test_the_calls_bench_copies_each_demo_flow_with_its_knowledge_files(tmp_path: Path) -> None:
    from ivr.bench.calls import FLOWS, copy_demo_flow
    from ivr.flow.loader import load_flow

    for name in FLOWS:  # the hotline answers FAQs from flows/knowledge/: missing, the bench's server refused it
        load_flow(copy_demo_flow(name, tmp_path / "flows"), classifier_factory=None)
