"""A scripted SIP caller (pjsua2) for testing a hotline: dial, speak WAV fixtures, press keys, record the bot.

pjsua2 allows one Endpoint per process, so the caller always runs in a process of its own:

    python -m ivr.testing.sip_caller sip:100@127.0.0.1:5060 \\
        --script "wait 1; play hello.wav; dtmf 12; dtmf-info 3; wait 2; hangup" --record bot.wav

It prints one JSON line describing the call (status, set-up time, codec, transfer target, who hung up).
From Python, ``place_call(...)`` runs that command and returns a ``CallerResult``.

Script steps, separated by ``;``: ``wait SECONDS``, ``play FILE.wav``, ``dtmf DIGITS`` (RFC 4733),
``dtmf-info DIGITS`` (SIP INFO), ``hangup``. The script stops early when the far end hangs up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import wave
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ivr.errors import IvrError
from ivr.testing.pjsua_peer import start_peer_endpoint

CODEC_IDS = {"PCMU": "PCMU/8000/1", "PCMA": "PCMA/8000/1", "G722": "G722/16000/1", "SPEEX": "speex/8000/1",
             "GSM": "GSM/8000/1"}


@dataclass
class CallerResult:
    """What the caller saw of one call."""

    status: int = 0
    """Final SIP status of the INVITE (200 if answered, else the rejection code; 0 if none)."""
    reason: str = ""
    connected: bool = False
    setup_ms: float = 0.0
    """Time from sending the INVITE to receiving 200 OK."""
    codec: str = ""
    ended_by: str = ""
    """'remote' if the far end hung up, 'local' if the script did, '' if the call never connected."""
    transfer_target: str = ""
    """The Refer-To URI of a REFER received (with any embedded headers), '' if none."""
    duration: float = 0.0
    error: str = ""
    steps_done: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Step:
    """One script step: ``kind`` is wait, play, dtmf, dtmf-info or hangup."""

    kind: str
    arg: str = ""


def parse_script(text: str) -> list[Step]:
    """Parse ``"wait 1; play a.wav; dtmf 12; hangup"`` into steps; raises IvrError on a bad step."""
    steps: list[Step] = []
    for raw in text.split(";"):
        part = raw.strip()
        if not part:
            continue
        kind, _, arg = part.partition(" ")
        kind, arg = kind.lower(), arg.strip()
        if kind == "wait":
            try:
                float(arg)
            except ValueError:
                raise IvrError(f"script step {part!r}: wait needs seconds, e.g. 'wait 1.5'") from None
        elif kind == "play":
            if not Path(arg).is_file():
                raise IvrError(f"script step {part!r}: no such WAV file {arg!r}")
        elif kind in ("dtmf", "dtmf-info"):
            if not arg or any(c not in "0123456789*#ABCDabcd" for c in arg):
                raise IvrError(f"script step {part!r}: give digits 0-9, *, #, A-D")
        elif kind != "hangup":
            raise IvrError(f"script step {part!r}: unknown step; use wait, play, dtmf, dtmf-info or hangup")
        steps.append(Step(kind, arg))
    return steps


def _wav_seconds(path: str) -> float:
    with wave.open(path, "rb") as wav:
        return wav.getnframes() / float(wav.getframerate())


def run_call(uri: str, steps: list[Step], *, record: str = "", codecs: tuple[str, ...] = ("PCMU",),
             bind: str = "127.0.0.1", accept_transfer: bool = True, answer_timeout: float = 10.0,
             linger: float = 0.0, contact: str = "") -> CallerResult:
    """Place one call in this process (which must not hold another pjsua2 Endpoint) and run ``steps``;
    ``contact`` forces the INVITE's Contact (where the far end would call back)."""
    import pjsua2 as pj

    result = CallerResult()
    state: dict[str, object] = {"media": False, "disconnected": False, "local_hangup": False}

    class Caller(pj.Call):
        def onCallState(self, prm: pj.OnCallStateParam) -> None:
            info = self.getInfo()
            if info.state in (pj.PJSIP_INV_STATE_CONNECTING, pj.PJSIP_INV_STATE_CONFIRMED) and not result.connected:
                result.connected = True
                result.status = 200
                result.setup_ms = (time.perf_counter() - started) * 1000.0
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                if not result.connected:
                    result.status = int(info.lastStatusCode)
                    result.reason = str(info.lastReason)
                else:
                    result.ended_by = "local" if state["local_hangup"] else "remote"
                state["disconnected"] = True

        def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
            info = self.getInfo()
            for i, media in enumerate(info.media):
                if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                    stream = self.getStreamInfo(i)
                    result.codec = f"{stream.codecName}/{stream.codecClockRate}"
                    state["audio"] = self.getAudioMedia(i)
                    state["media"] = True

        def onCallTransferRequest(self, prm: pj.OnCallTransferRequestParam) -> None:
            result.transfer_target = str(prm.dstUri)
            prm.statusCode = 202 if accept_transfer else 603

    ep = start_peer_endpoint("ivr-test-caller")
    wanted = [CODEC_IDS.get(c.upper(), c) for c in codecs]
    for codec in ep.codecEnum2():
        prio = 200 - wanted.index(codec.codecId) if codec.codecId in wanted else 0
        ep.codecSetPriority(codec.codecId, prio)
    tcfg = pj.TransportConfig()
    tcfg.port = 0
    tcfg.boundAddress = bind
    lowered = uri.lower()
    if ";transport=tls" in lowered or lowered.startswith("sips:"):
        transport = pj.PJSIP_TRANSPORT_TLS
        tcfg.tlsConfig.method = pj.PJSIP_TLSV1_2_METHOD
        tcfg.tlsConfig.verifyServer = False  # test certificates are self-signed
    elif ";transport=tcp" in lowered:
        transport = pj.PJSIP_TRANSPORT_TCP
    else:
        transport = pj.PJSIP_TRANSPORT_UDP
    ep.transportCreate(transport, tcfg)
    ep.libStart()
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:caller@{bind}"
    acfg.mediaConfig.transportConfig.boundAddress = bind
    if contact:
        acfg.sipConfig.contactForced = f"<{contact}>"
    account = pj.Account()
    account.create(acfg, True)

    def pump(seconds: float) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end and not state["disconnected"]:
            ep.libHandleEvents(5)

    call = Caller(account)
    recorder = None
    player = None
    began = time.monotonic()
    try:
        prm = pj.CallOpParam(True)
        prm.opt.audioCount = 1
        prm.opt.videoCount = 0
        started = time.perf_counter()
        call.makeCall(uri, prm)
        deadline = time.monotonic() + answer_timeout
        while not state["media"] and not state["disconnected"] and time.monotonic() < deadline:
            ep.libHandleEvents(5)
        if state["media"] and not state["disconnected"]:
            audio = state["audio"]
            # Like a phone, always send audio (silence from the null device): a stream nothing feeds sends
            # no RTP at all, and then no RFC 4733 digits either.
            ep.audDevManager().getCaptureDevMedia().startTransmit(audio)
            if record:
                recorder = pj.AudioMediaRecorder()
                recorder.createRecorder(record)
                audio.startTransmit(recorder)  # type: ignore[attr-defined]
            for step in steps:
                if state["disconnected"]:
                    break
                if step.kind == "wait":
                    pump(float(step.arg))
                elif step.kind == "play":
                    player = pj.AudioMediaPlayer()
                    player.createPlayer(step.arg, pj.PJMEDIA_FILE_NO_LOOP)
                    player.startTransmit(audio)
                    pump(_wav_seconds(step.arg))
                    if not state["disconnected"]:
                        player.stopTransmit(audio)
                    player = None
                elif step.kind == "dtmf":
                    for digit in step.arg:
                        call.dialDtmf(digit)
                        pump(0.35)
                elif step.kind == "dtmf-info":
                    for digit in step.arg:
                        dprm = pj.CallSendDtmfParam()
                        dprm.method = pj.PJSUA_DTMF_METHOD_SIP_INFO
                        dprm.digits = digit
                        call.sendDtmf(dprm)
                        pump(0.35)
                elif step.kind == "hangup":
                    state["local_hangup"] = True
                    call.hangup(pj.CallOpParam(True))
                    pump(1.0)
                result.steps_done.append(f"{step.kind} {step.arg}".strip())
            if not state["disconnected"]:
                state["local_hangup"] = True
                call.hangup(pj.CallOpParam(True))
        elif not state["disconnected"]:
            result.error = f"no answer within {answer_timeout} s"
            call.hangup(pj.CallOpParam(True))
        end = time.monotonic() + 2.0
        while not state["disconnected"] and time.monotonic() < end:
            ep.libHandleEvents(5)
        linger_end = time.monotonic() + linger  # e.g. let a transferred call reach its target
        while time.monotonic() < linger_end:
            ep.libHandleEvents(5)
    except pj.Error as exc:
        result.error = str(exc.info())
    finally:
        result.duration = time.monotonic() - began
        state.clear()
        recorder = None  # closing the recorder finalises the WAV header
        player = None
        ep.hangupAllCalls()
        for _ in range(20):
            ep.libHandleEvents(5)
        del call
        account.shutdown()
        del account
        ep.libDestroy()
    return result


def place_call(uri: str, script: str = "", *, record: str | Path = "", codecs: tuple[str, ...] = ("PCMU",),
               bind: str = "127.0.0.1", accept_transfer: bool = True, linger: float = 0.0,
               timeout: float = 60.0, contact: str = "") -> CallerResult:
    """Run the caller in a child process (one pjsua2 Endpoint per process) and return what it saw."""
    cmd = [sys.executable, "-m", "ivr.testing.sip_caller", uri, "--script", script, "--codecs", ",".join(codecs),
           "--bind", bind, "--linger", str(linger), "--json"]
    if record:
        cmd += ["--record", str(record)]
    if not accept_transfer:
        cmd.append("--reject-transfer")
    if contact:
        cmd += ["--contact", contact]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ})
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return CallerResult(**json.loads(line))
    raise IvrError(f"the SIP caller failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m ivr.testing.sip_caller", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("uri", help="SIP URI to call, e.g. sip:100@127.0.0.1:5060 (;transport=tcp or tls)")
    parser.add_argument("--script", default="wait 3", help="steps separated by ';' (see above)")
    parser.add_argument("--record", default="", help="write what the far end says to this WAV (16 kHz)")
    parser.add_argument("--codecs", default="PCMU", help="codecs to offer in order, e.g. G722,PCMU")
    parser.add_argument("--bind", default="127.0.0.1", help="local address to call from")
    parser.add_argument("--linger", type=float, default=0.0, help="seconds to stay up after the call ends")
    parser.add_argument("--reject-transfer", action="store_true", help="answer a REFER with 603")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON line")
    parser.add_argument("--contact", default="", help="the Contact URI to send (where a callback would go)")
    args = parser.parse_args(argv)
    try:
        steps = parse_script(args.script)
    except IvrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    result = run_call(args.uri, steps, record=args.record, codecs=tuple(args.codecs.split(",")), bind=args.bind,
                      accept_transfer=not args.reject_transfer, linger=args.linger, contact=args.contact)
    if args.json:
        print(json.dumps(asdict(result)), flush=True)
    else:
        for key, value in asdict(result).items():
            print(f"{key}: {value}")
    return 0 if result.connected else 1


if __name__ == "__main__":
    sys.exit(main())
