"""Fast tests of the SIP edge's pure parts: settings, SIP text helpers, channel buffers, caller scripts."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest

from ivr.audio.frame import AudioFrame
from ivr.errors import IvrError, SipError
from ivr.events import DtmfDigit, Hangup
from ivr.sip import RegistrationConfig, SipChannel, SipConfig
from ivr.sip.sipmsg import extension_headers, refer_target, request_uri, uri_user
from ivr.testing.sip_caller import Step, parse_script


class FakeControl:
    def __init__(self, accept: bool | None = True) -> None:
        self.accept = accept
        self.hangups = 0
        self.transfers: list[tuple[str, dict[str, str]]] = []

    def request_hangup(self, channel: SipChannel) -> None:
        self.hangups += 1

    def request_transfer(self, channel: SipChannel, target: str, headers: dict[str, str]) -> Future[bool]:
        self.transfers.append((target, headers))
        future: Future[bool] = Future()
        if self.accept is not None:
            future.set_result(self.accept)
        return future


def make_channel(control: FakeControl | None = None, rate: int = 8000) -> SipChannel:
    return SipChannel(control or FakeControl(), call_id="abc", caller="alice", called="100", sample_rate=rate,
                      transfer_timeout=0.1)


def test_config_lists_every_problem() -> None:
    bad = SipConfig(port=70000, transports=("udp", "sctp"), max_calls=0, allow_from=("10.0.0.0/8", "nonsense"),
                    ring_seconds=-1, registration=RegistrationConfig("pbx.example.com", "u", "p"))
    with pytest.raises(SipError) as info:
        bad.check()
    text = str(info.value)
    for fragment in ("port 70000", "'sctp'", "max_calls 0", "'nonsense'", "ring_seconds", "pbx.example.com"):
        assert fragment in text
    SipConfig().check()


def test_allow_list_matches_addresses_and_networks() -> None:
    cfg = SipConfig(allow_from=("10.1.0.0/16", "192.0.2.7", "::1"))
    assert cfg.is_allowed("10.1.2.3:5060")
    assert cfg.is_allowed("192.0.2.7")
    assert cfg.is_allowed("[::1]:5070")
    assert not cfg.is_allowed("10.2.0.1:5060")
    assert not cfg.is_allowed("garbage")
    assert SipConfig().is_allowed("203.0.113.9:5060")  # empty list: everyone


def test_registration_address_of_record() -> None:
    reg = RegistrationConfig("sip:pbx.example.com:5060", "ivr", "x")
    assert reg.address_of_record() == "sip:ivr@pbx.example.com:5060"
    assert RegistrationConfig("sip:pbx", "ivr", "x", id_uri="sip:help@acme").address_of_record() == "sip:help@acme"


def test_sip_text_helpers() -> None:
    assert uri_user('"Bob" <sip:+4930123@example.com;user=phone>') == "+4930123"
    assert uri_user("sip:example.com") == ""
    msg = ("INVITE sip:100@10.0.0.1:5060 SIP/2.0\r\nX-IVR-Intent: billing\r\nx-lower: 1\r\n"
           "To: <sip:100@h>\r\n\r\nv=0\r\n")
    assert request_uri(msg) == "sip:100@10.0.0.1:5060"
    assert extension_headers(msg) == {"X-IVR-Intent": "billing", "x-lower": "1"}
    assert request_uri("garbage") == ""
    assert refer_target("sip:agent@pbx", {"X-IVR-Intent": "order status", "X-IVR-Call-Id": "a&b"}) == (
        "<sip:agent@pbx?X-IVR-Intent=order%20status&X-IVR-Call-Id=a%26b>")
    link = "http://console:8080/api/context/c1/1/ab"  # ":" and "/" need no escaping in a header value
    assert refer_target("sip:a@pbx", {"X-IVR-Context-Url": link}) == f"<sip:a@pbx?X-IVR-Context-Url={link}>"
    long = refer_target("sip:a@pbx", {"X-IVR-Call-Id": "c1", "X-IVR-Slots": "x" * 300, "X-IVR-Intent": "agent"})
    assert long == "<sip:a@pbx?X-IVR-Call-Id=c1&X-IVR-Intent=agent>"  # what does not fit is left out


def test_channel_pads_outbound_audio_and_stops_on_barge_in() -> None:
    ch = make_channel()
    ch.play(b"\x01\x00" * 200)  # 25 ms at 8 kHz
    assert ch.playback_pending() == pytest.approx(0.025)
    first = ch.take_outbound(320)
    assert first == b"\x01\x00" * 160
    second = ch.take_outbound(320)
    assert second == b"\x01\x00" * 40 + bytes(240)  # the rest, then silence
    assert ch.take_outbound(320) == bytes(320)
    ch.play(bytes(16000))
    ch.stop_playback()
    assert ch.playback_pending() == 0


def test_channel_delivers_frames_silence_and_end() -> None:
    ch = make_channel()
    assert ch.receive_audio(0.01) is None  # nothing yet: timeout
    ch.push_inbound(b"\x02\x00" * 160)
    ch.push_inbound(None)  # the bridge had nothing: silence
    ch.push_inbound(b"\x01")  # a wrong size also counts as silence
    frames = [ch.receive_audio(0.1) for _ in range(3)]
    assert frames[0] == AudioFrame(b"\x02\x00" * 160, 8000)
    assert frames[1] == frames[2] == AudioFrame.silence(8000)
    waiter = threading.Thread(target=lambda: time.sleep(0.05) or ch.mark_ended(by_caller=True))
    waiter.start()
    started = time.monotonic()
    assert ch.receive_audio(5) is None  # woken by the hangup, not the timeout
    assert time.monotonic() - started < 1
    waiter.join()
    assert not ch.connected


def test_channel_control_events() -> None:
    ch = make_channel()
    for digit in ("5", "#", "x", "a"):
        ch.push_dtmf(digit)
    ch.mark_ended(by_caller=True)
    ch.mark_ended(by_caller=True)  # idempotent
    assert ch.poll_control() == [DtmfDigit("5"), DtmfDigit("#"), DtmfDigit("A"), Hangup()]
    assert ch.poll_control() == []


def test_channel_transfer_and_hangup() -> None:
    control = FakeControl(accept=True)
    ch = make_channel(control)
    assert not ch.transfer("support", {})  # queue names are the session's job
    assert ch.transfer("sip:agent@pbx", {"X-IVR-Intent": "billing"})
    assert ch.transferred_to == "sip:agent@pbx"
    assert not make_channel(FakeControl(accept=False)).transfer("sip:a@b", {})
    assert not make_channel(FakeControl(accept=None)).transfer("sip:a@b", {})  # no answer: timeout
    ch.hangup()
    assert control.hangups == 1
    ch.mark_ended(by_caller=False)
    ch.hangup()
    assert control.hangups == 1
    assert not ch.transfer("sip:agent@pbx", {})


def test_caller_script_parsing() -> None:
    assert parse_script("wait 1.5; dtmf 12#; dtmf-info 3 ;hangup") == [
        Step("wait", "1.5"), Step("dtmf", "12#"), Step("dtmf-info", "3"), Step("hangup")]
    for bad in ("wait soon", "play /no/such.wav", "dtmf 12x", "dance"):
        with pytest.raises(IvrError):
            parse_script(bad)
