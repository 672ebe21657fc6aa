"""A scripted agent phone (pjsua2 in a process of its own): rings, answers after N seconds, ignores or declines.

Tests and benchmarks of the agent queues need real SIP phones for the agents. One process is one phone
listening on a loopback port; every user part reaches it (``sip:alice@127.0.0.1:PORT``). It is steered by
JSON lines on stdin and reports JSON lines on stdout:

    python -m ivr.testing.sip_agent --port 0
    → {"event": "ready", "port": 40123}
    ← {"cmd": "mode", "mode": "answer", "after": 1.0, "play": "agent.wav", "record": "heard.wav"}
    → {"event": "incoming", "user": "alice", "headers": {"X-IVR-Call-Id": ...}, "at": 1700000000.123}
    → {"event": "answered", ...}   → {"event": "ended", "answered": true, "by": "remote", "code": 200, ...}

Modes: ``answer`` (after ``after`` seconds; optionally ``play`` a WAV to the caller, ``record`` what it
hears, ``hangup_after`` seconds of talk, send ``dtmf`` digits ``dtmf_after`` seconds after answering),
``ignore`` (ring until the caller gives up) and ``decline`` (answer ``code``, default 486 Busy Here).
Commands: ``mode``, ``hangup`` (end the current call), ``quit``.
From Python, :class:`AgentPhone` runs the process and waits for its events.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from ivr.errors import IvrError
from ivr.testing.pjsua_peer import start_peer_endpoint

Event = dict[str, Any]


class AgentPhone:
    """One agent phone process; ``uri(user)`` is its address, ``events`` everything it reported."""

    def __init__(self, bind: str = "127.0.0.1", startup_timeout: float = 10.0) -> None:
        self.bind = bind
        self.events: list[Event] = []
        self._cond = threading.Condition()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "ivr.testing.sip_agent", "--bind", bind, "--port", "0"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, name="sip-agent-reader", daemon=True)
        self._reader.start()
        ready = self.wait_for("ready", timeout=startup_timeout)
        if ready is None:
            self.close()
            raise IvrError("the agent phone did not start; run `python -m ivr.testing.sip_agent` to see why")
        self.port: int = int(ready["port"])

    def uri(self, user: str) -> str:
        """The SIP URI that rings this phone as ``user``."""
        return f"sip:{user}@{self.bind}:{self.port}"

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            if not line.startswith("{"):
                continue
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                with self._cond:
                    self.events.append(event)
                    self._cond.notify_all()

    def send(self, **command: Any) -> None:
        """Send one command (see the module docstring)."""
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(command) + "\n")
        self._proc.stdin.flush()

    def set_mode(self, mode: str, **options: Any) -> None:
        """``answer`` (after=, play=, record=, hangup_after=), ``ignore`` or ``decline`` (code=)."""
        self.send(cmd="mode", mode=mode, **options)

    def hangup(self) -> None:
        """Hang up the call in progress (as the agent)."""
        self.send(cmd="hangup")

    def clear(self) -> None:
        """Forget the events seen so far."""
        with self._cond:
            self.events = [e for e in self.events if e.get("event") == "ready"]

    def seen(self, kind: str, predicate: Callable[[Event], bool] | None = None) -> list[Event]:
        """Events of ``kind`` so far (matching ``predicate``)."""
        with self._cond:
            return [e for e in self.events if e.get("event") == kind and (predicate is None or predicate(e))]

    def wait_for(self, kind: str, timeout: float = 10.0, predicate: Callable[[Event], bool] | None = None,
                 count: int = 1) -> Event | None:
        """The ``count``-th event of ``kind`` (matching ``predicate``), waiting up to ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [e for e in self.events if e.get("event") == kind and (predicate is None or predicate(e))]
                if len(found) >= count:
                    return found[count - 1]
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._proc.poll() is not None:
                    return None
                self._cond.wait(remaining)

    def close(self) -> None:
        """Stop the phone process."""
        if self._proc.poll() is None:
            with contextlib.suppress(OSError, ValueError):
                self.send(cmd="quit")
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(2)
        self._reader.join(2)

    def __enter__(self) -> AgentPhone:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------ the phone process


def run_phone(bind: str, port: int) -> None:
    """Run the phone in this process (which must not hold another pjsua2 Endpoint) until ``quit``."""
    import pjsua2 as pj

    from ivr.sip.sipmsg import extension_headers, request_uri, uri_user

    def emit(event: str, **data: Any) -> None:
        print(json.dumps({"event": event, "at": time.time(), **data}), flush=True)

    commands: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()

    def read_stdin() -> None:
        for line in sys.stdin:
            with contextlib.suppress(ValueError):
                commands.put(json.loads(line))
        commands.put({"cmd": "quit"})

    threading.Thread(target=read_stdin, daemon=True).start()
    mode: dict[str, Any] = {"mode": "answer", "after": 0.0}
    timers: list[tuple[float, Callable[[], None]]] = []
    state: dict[str, Any] = {"call": None}
    live: set[Any] = set()  # Call objects stay referenced until their DISCONNECTED callback

    class PhoneCall(pj.Call):
        def __init__(self, account: pj.Account, call_id: int, user: str, settings: dict[str, Any]) -> None:
            super().__init__(account, call_id)
            self.user = user
            self.settings = settings
            self.answered = False
            self.local_hangup = False
            self.recorder: Any = None
            self.player: Any = None
            self.on_device = False

        def onCallState(self, prm: pj.OnCallStateParam) -> None:
            info = self.getInfo()
            if info.state == pj.PJSIP_INV_STATE_CONFIRMED and not self.answered:
                self.answered = True
                emit("answered", user=self.user, sip_call_id=info.callIdString)
                talk = self.settings.get("hangup_after")
                if talk is not None:
                    timers.append((time.monotonic() + float(talk), lambda: hang_up(self)))
                digits = self.settings.get("dtmf")
                if digits:
                    timers.append((time.monotonic() + float(self.settings.get("dtmf_after", 1.0)),
                                   lambda: send_dtmf(self, str(digits))))
            elif info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                emit("ended", user=self.user, sip_call_id=info.callIdString, answered=self.answered,
                     by="local" if self.local_hangup else "remote", code=int(info.lastStatusCode),
                     seconds=float(info.connectDuration.sec + info.connectDuration.msec / 1000.0))
                self.recorder = None  # closing the recorder finalises its WAV header
                self.player = None
                if state["call"] is self:
                    state["call"] = None
                live.discard(self)  # pjsua2 allows deleting a Call in its DISCONNECTED callback

        def onCallMediaState(self, prm: pj.OnCallMediaStateParam) -> None:
            info = self.getInfo()
            for index, media in enumerate(info.media):
                if media.type != pj.PJMEDIA_TYPE_AUDIO or media.status != pj.PJSUA_CALL_MEDIA_ACTIVE:
                    continue
                audio = self.getAudioMedia(index)
                if not self.on_device:
                    # Like a real phone, the call always has a speaker and a microphone. Without any
                    # connection pjsua closes the (null) sound device after sndAutoCloseTime (1 s), the
                    # conference clock stops, and the stream never sends the RFC 4733 digits dialDtmf queued.
                    self.on_device = True
                    devices = pj.Endpoint.instance().audDevManager()
                    audio.startTransmit(devices.getPlaybackDevMedia())
                    devices.getCaptureDevMedia().startTransmit(audio)
                if self.settings.get("record") and self.recorder is None:
                    self.recorder = pj.AudioMediaRecorder()
                    self.recorder.createRecorder(str(self.settings["record"]))
                    audio.startTransmit(self.recorder)
                if self.settings.get("play") and self.player is None:
                    self.player = pj.AudioMediaPlayer()
                    self.player.createPlayer(str(self.settings["play"]), pj.PJMEDIA_FILE_NO_LOOP)
                    self.player.startTransmit(audio)
                break

    def hang_up(call: PhoneCall, code: int = 0) -> None:
        with contextlib.suppress(pj.Error):
            info = call.getInfo()
            if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
                return
            call.local_hangup = True
            prm = pj.CallOpParam()
            if code:
                prm.statusCode = code
            call.hangup(prm)

    def send_dtmf(call: PhoneCall, digits: str) -> None:
        with contextlib.suppress(pj.Error):
            if call.getInfo().state == pj.PJSIP_INV_STATE_CONFIRMED:
                call.dialDtmf(digits)  # RFC 4733
                emit("dtmf_sent", user=call.user, digits=digits)

    def answer(call: PhoneCall) -> None:
        with contextlib.suppress(pj.Error):
            if call.getInfo().state in (pj.PJSIP_INV_STATE_INCOMING, pj.PJSIP_INV_STATE_EARLY):
                prm = pj.CallOpParam()
                prm.statusCode = 200
                call.answer(prm)

    class PhoneAccount(pj.Account):
        def onIncomingCall(self, prm: pj.OnIncomingCallParam) -> None:
            message = prm.rdata.wholeMsg
            user = uri_user(request_uri(message))
            settings = dict(mode)
            call = PhoneCall(self, prm.callId, user, settings)
            live.add(call)
            info = call.getInfo()
            emit("incoming", user=user, sip_call_id=info.callIdString, headers=extension_headers(message),
                 source=str(prm.rdata.srcAddress))
            reply = pj.CallOpParam()
            if state["call"] is not None:  # one call at a time, like a desk phone
                reply.statusCode = 486
                call.hangup(reply)
                return
            if settings["mode"] == "decline":
                reply.statusCode = int(settings.get("code", 486))
                call.hangup(reply)
                return
            state["call"] = call
            reply.statusCode = 180
            call.answer(reply)
            emit("ringing", user=user, sip_call_id=info.callIdString)
            if settings["mode"] == "answer":
                timers.append((time.monotonic() + float(settings.get("after", 0.0)), lambda: answer(call)))

    def fire_due_timers() -> None:
        # A function of its own, so no frame variable keeps a fired timer (and its Call) alive.
        now = time.monotonic()
        due = [t for t in timers if t[0] <= now]
        timers[:] = [t for t in timers if t[0] > now]
        for _, action in due:
            action()

    ep = start_peer_endpoint("ivr-test-agent")
    tcfg = pj.TransportConfig()
    tcfg.port = port
    tcfg.boundAddress = bind
    tid = ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
    bound = int(ep.transportGetInfo(tid).localName.rsplit(":", 1)[1])
    ep.libStart()
    acfg = pj.AccountConfig()
    acfg.idUri = f"sip:agent@{bind}:{bound}"
    acfg.mediaConfig.transportConfig.boundAddress = bind
    account = PhoneAccount()
    account.create(acfg, True)
    emit("ready", port=bound)
    try:
        running = True
        while running:
            while True:
                try:
                    command = commands.get_nowait()
                except queue.Empty:
                    break
                kind = command.get("cmd")
                if kind == "quit":
                    running = False
                elif kind == "mode":
                    mode = {k: v for k, v in command.items() if k != "cmd"}
                elif kind == "hangup" and state["call"] is not None:
                    hang_up(state["call"])
            ep.libHandleEvents(5)
            fire_due_timers()
    finally:
        ep.hangupAllCalls()
        for _ in range(40):
            ep.libHandleEvents(5)
        state.clear()
        live.clear()
        timers.clear()  # their closures hold Calls, which must be gone before libDestroy
        account.shutdown()
        del account
        ep.libDestroy()


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m ivr.testing.sip_agent", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=0, help="UDP port (0: any free port, printed when ready)")
    args = parser.parse_args(argv)
    run_phone(args.bind, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main())
