"""A pjsua2 worker process: one ``SipServer`` endpoint whose calls are run by the node's server process.

Started by ``ivr.sip.workers.WorkerPool`` as ``python -m ivr.sip.worker FD``, with one end of a socket pair
as its pipe (typed messages, ``ivr.sip.wire``). The endpoint listens where the edge sends calls, asks the
server's admission about every INVITE, and mirrors each answered call over the pipe: caller frames and the
playback state go up once per 20 ms tick for all calls; prompt audio and commands come down.

The worker moves audio with one sender thread polling every call each tick rather than a thread per call
waiting on each frame: fewer wake-ups and pipe messages, and less contention for the GIL with pjmedia's
clock thread, whose callbacks into Python must run on time or the bot's RTP stutters. The same thread
sends a heartbeat every second while the SIP thread keeps turning; the server replaces a silent worker.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from multiprocessing.connection import Connection

from ivr.errors import SipError
from ivr.events import DtmfDigit
from ivr.sip import wire
from ivr.sip.admission import IncomingCall, Verdict
from ivr.sip.channel import SipChannel
from ivr.sip.server import SipServer

log = logging.getLogger("ivr.sip.worker")

ADMIT_TIMEOUT = 2.0
"""Seconds the SIP thread waits for the server's admission verdict before refusing with 503."""
HEARTBEAT_SECONDS = 1.0
TICK = 0.02


class RemoteAdmission:
    """Admission asked over the pipe: the SIP thread blocks until the server's verdict arrives."""

    def __init__(self, pipe: wire.WorkerPipe) -> None:
        self._pipe = pipe
        self._ids = itertools.count(1)
        self._waiting: dict[int, Future[Verdict]] = {}
        self._lock = threading.Lock()

    def admit(self, call: IncomingCall) -> Verdict:
        """Ask the server; 503 if it does not answer in time (a late ticket is handed back at once)."""
        request = next(self._ids)
        future: Future[Verdict] = Future()
        with self._lock:
            self._waiting[request] = future
        if not self._pipe.send(wire.AdmitRequest(request, call)):
            return Verdict(code=503, outcome="rejected_shutdown")
        try:
            return future.result(ADMIT_TIMEOUT)
        except FutureTimeout:
            log.warning("admission did not answer for call %s within %.0f s", call.call_id, ADMIT_TIMEOUT)
            return Verdict(code=503, outcome="rejected_capacity")
        finally:
            with self._lock:
                self._waiting.pop(request, None)

    def answered(self, reply: wire.AdmitReply) -> None:
        """The server's verdict arrived (pipe reader thread)."""
        with self._lock:
            future = self._waiting.get(reply.request)
        if future is None:  # the SIP thread gave up waiting: the call was refused, free its ticket
            if reply.verdict.admitted:
                self._pipe.send(wire.CallFinished(reply.verdict.ticket, "", ""))
            return
        future.set_result(reply.verdict)

    def release(self, ticket: int) -> bool:
        """Tickets are released by the server on ``CallFinished``."""
        return True


class _Calls:
    """The worker's calls the server knows of, by pipe key (sender thread and pipe reader share it)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.channels: dict[int, SipChannel] = {}
        self.applied: dict[int, int] = {}  # key -> last playback request seq applied
        self.by_caller: dict[int, bool] = {}
        self.done: dict[int, threading.Event] = {}

    def add(self, key: int, channel: SipChannel) -> threading.Event:
        finished = threading.Event()
        with self.lock:
            self.channels[key] = channel
            self.applied[key] = 0
            self.by_caller[key] = False
            self.done[key] = finished
        return finished

    def remove(self, key: int) -> None:
        with self.lock:
            self.channels.pop(key, None)
            self.applied.pop(key, None)
            self.by_caller.pop(key, None)
            event = self.done.pop(key, None)
        if event is not None:
            event.set()

    def get(self, key: int) -> SipChannel | None:
        with self.lock:
            return self.channels.get(key)


def run_worker(conn: Connection) -> None:
    """Entry point of a worker process: run a SipServer and mirror its calls over ``conn``."""
    # pjmedia's clock thread needs the GIL for every call every 20 ms: make busy Python threads hand it
    # over sooner than the default 5 ms.
    sys.setswitchinterval(0.001)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pipe = wire.worker_end(conn)
    setup = pipe.receive()
    if not isinstance(setup, wire.Setup):
        raise wire.WireError(f"a worker expects Setup first, not {type(setup).__name__}")
    calls = _Calls()
    keys = itertools.count(1)
    quit_event = threading.Event()
    admission = RemoteAdmission(pipe)

    def on_call(channel: SipChannel) -> None:
        key = next(keys)
        finished = calls.add(key, channel)
        pipe.send(wire.CallStarted(key, channel.call_id, channel.caller, channel.called, channel.sample_rate,
                                   channel.codec, channel.remote, channel.headers,
                                   server.stats.setup_ms[-1] if server.stats.setup_ms else None, channel.contact))
        # The sender thread forwards the call's audio and events and reports its end; returning hangs it up.
        while not finished.wait(0.5) and not quit_event.is_set():
            pass

    def finished(ticket: int, call_id: str, outcome: str) -> None:
        pipe.send(wire.CallFinished(ticket, call_id, outcome))

    def registration(code: int, reason: str, registered: bool) -> None:
        pipe.send(wire.Registration(code, reason, registered))

    server = SipServer(setup.config, on_call=on_call, admission=admission)
    server.on_call_finished = finished
    server.on_registration = registration
    reader = threading.Thread(target=_read_commands, args=(pipe, server, calls, admission, quit_event),
                              name="ivr-worker-pipe", daemon=True)
    reader.start()  # admission replies must be read while the endpoint starts taking calls
    try:
        server.start()
    except SipError as exc:
        pipe.send(wire.StartFailed(str(exc)))
        return
    pipe.send(wire.Ready(server.port))
    sender = threading.Thread(target=_send_audio, args=(pipe, server, calls, quit_event), name="ivr-worker-sender",
                              daemon=True)
    sender.start()
    try:
        quit_event.wait()
    finally:
        server.stop(0)
        sender.join(2)
        pipe.close()


def _read_commands(pipe: wire.WorkerPipe, server: SipServer, calls: _Calls, admission: RemoteAdmission,
                   quit_event: threading.Event) -> None:
    def transfer(channel: SipChannel, command: wire.Transfer) -> None:
        pipe.send(wire.TransferResult(command.request, channel.transfer(command.target, command.headers)))

    def agent_result(request: str, result: str) -> None:
        pipe.send(wire.AgentResult(request, result))

    def outbound_result(request: str, result: str) -> None:
        pipe.send(wire.OutboundResult(request, result))

    try:
        while True:
            try:
                command = pipe.receive()
            except (EOFError, OSError):
                return  # the server is gone: stop
            if isinstance(command, wire.Quit):
                return
            if isinstance(command, wire.AdmitReply):
                admission.answered(command)
            elif isinstance(command, wire.Drain):
                server.drain()
            elif isinstance(command, wire.CancelAgent):
                server.cancel_agent_call(command.request)
            elif isinstance(command, wire.DialCallback):
                server.request_callback(command.request, command.customer_uri, command.agent_uri, command.headers,
                                        command.ring_timeout, agent_result)
            elif isinstance(command, wire.CancelCallback):
                server.cancel_callback(command.request)
            elif isinstance(command, wire.DialOutbound):
                server.request_outbound(command.request, command.uri, command.caller, command.called,
                                        command.ring_timeout, outbound_result)
            elif isinstance(command, wire.Play | wire.StopPlayback | wire.HangUp | wire.Transfer | wire.DialAgent):
                channel = calls.get(command.key)
                if channel is None:
                    if isinstance(command, wire.Transfer):
                        pipe.send(wire.TransferResult(command.request, False))
                    elif isinstance(command, wire.DialAgent):
                        pipe.send(wire.AgentResult(command.request, "failed"))
                elif isinstance(command, wire.Play):
                    channel.play(command.pcm)
                    calls.applied[command.key] = command.seq
                elif isinstance(command, wire.StopPlayback):
                    channel.stop_playback()
                    calls.applied[command.key] = command.seq
                elif isinstance(command, wire.HangUp):
                    channel.hangup()
                elif isinstance(command, wire.Transfer):
                    threading.Thread(target=transfer, args=(channel, command), daemon=True).start()
                else:
                    channel.dial_agent(command.request, command.uri, command.headers, command.ring_timeout,
                                       agent_result)
    finally:
        quit_event.set()


def _send_audio(pipe: wire.WorkerPipe, server: SipServer, calls: _Calls, quit_event: threading.Event) -> None:
    next_tick = time.monotonic()
    next_heartbeat = next_tick
    while not quit_event.is_set():
        with calls.lock:
            current = list(calls.channels.items())
        now = time.monotonic()
        if now >= next_heartbeat:
            next_heartbeat = now + HEARTBEAT_SECONDS
            if server.responsive:
                pipe.send(wire.Heartbeat())
        if not current:  # idle: no 20 ms ticks
            quit_event.wait(0.1)
            next_tick = time.monotonic()
            continue
        next_tick += TICK
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_tick = time.monotonic()  # fell behind: do not try to catch up with a burst
        batch: list[wire.CallAudio] = []
        for key, channel in current:
            connected = channel.connected  # read before draining: no frame arrives after the end
            audio = _forward(pipe, calls, key, channel)
            if audio is not None:
                batch.append(audio)
            if not connected:
                if batch:
                    pipe.send(wire.Frames(tuple(batch)))
                    batch = []
                _forward(pipe, calls, key, channel)  # events that came with the end (the caller's hangup)
                pipe.send(wire.CallEnded(key, calls.by_caller.get(key, False)))
                calls.remove(key)
        if batch:
            pipe.send(wire.Frames(tuple(batch)))


def _forward(pipe: wire.WorkerPipe, calls: _Calls, key: int, channel: SipChannel) -> wire.CallAudio | None:
    for event in channel.poll_control():
        if isinstance(event, DtmfDigit):
            pipe.send(wire.Dtmf(key, event.digit))
        else:
            calls.by_caller[key] = True
    frames = tuple(frame.pcm for frame in channel.drain_inbound())
    if not frames:
        return None
    pending = int(channel.playback_pending() * 2 * channel.sample_rate)
    return wire.CallAudio(key, frames, calls.applied.get(key, 0), pending)


if __name__ == "__main__":
    run_worker(Connection(int(sys.argv[1])))
