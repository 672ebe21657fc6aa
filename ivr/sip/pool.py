"""More than 4 concurrent calls: pjsua2 worker processes behind a UDP front, calls handed back as channels.

The pjsua2 wheel is compiled with PJSUA_MAX_CALLS = 4, and pjsua allows one endpoint per process. A pool
runs ``ceil(max_calls / 4)`` worker processes (each a ``SipServer`` on a private port of the same host),
puts ``ivr.sip.front.Front`` on the public UDP port, and brings every answered call back into this
process as a ``RemoteSipChannel``, so ``on_call`` runs here with the shared speech models.

Per worker there is one duplex pipe. Worker → parent: call started (metadata), caller frames with the
worker's playback state (one message per 20 ms tick for all the worker's calls), DTMF/hangup events, call
ended, transfer results, counters. Parent → worker: play, stop, hangup, transfer. TCP, when enabled, is
served by worker 0 directly on the public port.

The worker moves audio with one sender thread polling every call each tick rather than a thread per call
waiting on each frame: fewer wake-ups and pipe messages, and less contention for the GIL with pjmedia's
clock thread, whose callbacks into Python must run on time or the bot's RTP stutters.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import asdict, replace
from multiprocessing.connection import Connection
from typing import Any

from ivr.errors import SipError
from ivr.sip.channel import SipChannel
from ivr.sip.config import PJSUA_MAX_CALLS, RegistrationConfig, SipConfig
from ivr.sip.front import Front

log = logging.getLogger("ivr.sip.pool")


def workers_needed(max_calls: int) -> int:
    """Worker processes for ``max_calls`` concurrent calls."""
    return max(1, math.ceil(max_calls / PJSUA_MAX_CALLS))


class RemoteSipChannel(SipChannel):
    """A SipChannel whose call lives in a worker process: prompt audio is shipped there as it is queued."""

    def __init__(self, link: _WorkerLink, key: int, meta: dict[str, Any], transfer_timeout: float) -> None:
        super().__init__(link, call_id=meta["call_id"], caller=meta["caller"], called=meta["called"],
                         sample_rate=meta["sample_rate"], codec=meta["codec"], remote=meta["remote"],
                         headers=meta["headers"], transfer_timeout=transfer_timeout)
        self._link = link
        self.key = key
        self._seq = 0
        self._unacked: list[tuple[int, int]] = []  # (seq, bytes) of plays the worker has not reported yet
        self._reported_pending = 0
        self._reported_seq = 0
        self._state_lock = threading.Lock()

    def play(self, pcm: bytes) -> None:
        """Queue PCM16 audio (sent to the worker at once; it paces it out as RTP)."""
        if len(pcm) % 2:
            pcm = pcm[:-1]
        if not pcm or not self.connected:
            return
        with self._state_lock:
            self._seq += 1
            self._unacked.append((self._seq, len(pcm)))
            seq = self._seq
        self._link.send(("play", self.key, seq, pcm))

    def stop_playback(self) -> None:
        """Drop queued prompt audio here and in the worker."""
        with self._state_lock:
            self._seq += 1
            self._unacked.clear()
            self._reported_pending = 0
            self._reported_seq = self._seq
            seq = self._seq
        self._link.send(("stop", self.key, seq))

    def playback_pending(self) -> float:
        """Seconds of prompt audio not yet sent to the caller (worker's last report plus plays in flight)."""
        with self._state_lock:
            pending = self._reported_pending + sum(n for _, n in self._unacked)
        return pending / 2 / self.sample_rate

    def worker_report(self, seq: int, pending_bytes: int) -> None:
        """The worker applied everything up to ``seq`` and has ``pending_bytes`` queued."""
        with self._state_lock:
            if seq < self._reported_seq:
                return  # from before a stop_playback
            self._reported_seq = seq
            self._reported_pending = pending_bytes
            self._unacked = [(s, n) for s, n in self._unacked if s > seq]


class _WorkerLink:
    """The parent's end of one worker: its process, pipe, and the calls it carries."""

    def __init__(self, pool: SipPool, index: int, process: Any, conn: Connection) -> None:
        self.pool = pool
        self.index = index
        self.process = process
        self.conn = conn
        self.port = 0
        self.ready = threading.Event()
        self.error = ""
        self.channels: dict[int, RemoteSipChannel] = {}
        self.transfers: dict[int, Future[bool]] = {}
        self.agent_calls: dict[str, Callable[[str, str], None]] = {}
        self.active = 0
        self.outcomes: Counter[str] = Counter()
        self._send_lock = threading.Lock()
        self._ids = itertools.count(1)
        self.reader = threading.Thread(target=self._read, name=f"ivr-sip-link-{index}", daemon=True)

    def send(self, message: tuple[Any, ...]) -> None:
        with self._send_lock, contextlib.suppress(OSError, ValueError, BrokenPipeError):
            self.conn.send(message)

    # CallControl for RemoteSipChannel
    def request_hangup(self, channel: SipChannel) -> None:
        self.send(("hangup", getattr(channel, "key", 0)))

    def request_transfer(self, channel: SipChannel, target: str, headers: dict[str, str]) -> Future[bool]:
        future: Future[bool] = Future()
        request = next(self._ids)
        self.transfers[request] = future
        self.send(("xfer", getattr(channel, "key", 0), request, target, dict(headers)))
        return future

    def request_agent_call(self, channel: SipChannel, request: str, uri: str, headers: dict[str, str],
                           ring_timeout: float, on_result: Callable[[str, str], None]) -> None:
        # The agent leg is placed by the worker holding the caller's call, so both share its conference bridge.
        self.agent_calls[request] = on_result
        self.send(("agent", getattr(channel, "key", 0), request, uri, dict(headers), ring_timeout))

    def cancel_agent_call(self, request: str) -> None:
        self.send(("agent_cancel", request))

    def _read(self) -> None:
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                break
            try:
                self._dispatch(message)
            except Exception:
                log.exception("pool: bad message from worker %d", self.index)
        for channel in list(self.channels.values()):  # the worker died: its calls are gone
            channel.mark_ended(by_caller=False)
        self.channels.clear()
        for request, on_result in list(self.agent_calls.items()):
            on_result(request, "failed")
        self.agent_calls.clear()
        self.ready.set()

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "frames":
            for key, frames, seq, pending in message[1]:
                channel = self.channels.get(key)
                if channel is not None:
                    channel.worker_report(seq, pending)
                    for pcm in frames:
                        channel.push_inbound(pcm)
        elif kind == "dtmf":
            channel = self.channels.get(message[1])
            if channel is not None:
                channel.push_dtmf(message[2])
        elif kind == "call":
            _, key, meta = message
            self.active = max(self.active, meta.get("active", 0))
            if meta.get("setup_ms") is not None:
                self.pool.stats.setup_ms.append(meta["setup_ms"])
            channel = RemoteSipChannel(self, key, meta, self.pool.config.transfer_timeout)
            self.channels[key] = channel
            self.pool._start_call(channel)
        elif kind == "ended":
            _, key, by_caller = message
            channel = self.channels.pop(key, None)
            if channel is not None:
                channel.mark_ended(by_caller=by_caller)
        elif kind == "agent":
            on_result = self.agent_calls.pop(message[1], None)
            if on_result is not None:
                on_result(message[1], message[2])
        elif kind == "xfer":
            future = self.transfers.pop(message[1], None)
            if future is not None and not future.done():
                future.set_result(bool(message[2]))
        elif kind == "finished":
            _, call_id, outcome, active = message
            self.active = active
            self.outcomes[outcome] += 1
            self.pool._call_finished(call_id, outcome)
        elif kind == "reg":
            self.pool.server.set_registration(*message[1:])
        elif kind == "ready":
            self.port = message[1]
            self.ready.set()
        elif kind == "error":
            self.error = message[1]
            self.ready.set()


class SipPool:
    """Same surface as SipServer (start, stop, port, stats, on_call, route) for more than 4 calls."""

    def __init__(self, server: Any) -> None:
        self.server = server  # the SipServer facade: its on_call, route, stats and on_outcome are used live
        self.config: SipConfig = server.config
        self.stats = server.stats
        self.port = self.config.port
        self.front: Front | None = None
        self.links: list[_WorkerLink] = []
        self._workers: list[threading.Thread] = []
        self._own_outcomes: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stats_thread: threading.Thread | None = None
        self._running = threading.Event()

    def start(self, timeout: float = 20.0) -> None:
        cfg = self.config
        if "udp" not in cfg.transports:
            raise SipError(f"max_calls {cfg.max_calls} needs the udp transport (more than {PJSUA_MAX_CALLS} calls "
                           "are spread over worker processes by a UDP front)")
        try:
            self.front = Front(cfg.host, cfg.port, max_calls=lambda: self.config.max_calls,
                               allowed=self.config.is_allowed, route=self._route, on_reject=self._count_front_reject,
                               on_load=self._refresh_stats)
        except OSError as exc:
            raise SipError(f"cannot listen on udp {cfg.host}:{cfg.port}: {exc}; pick another --sip-port") from None
        self.port = self.front.port
        for index in range(workers_needed(cfg.max_calls)):
            # A plain child interpreter (not multiprocessing's spawn, which would re-import the parent's
            # __main__), talking over a socketpair wrapped as a multiprocessing Connection.
            parent_sock, child_sock = socket.socketpair()
            process = subprocess.Popen([sys.executable, "-m", "ivr.sip.pool", str(child_sock.fileno())],
                                       pass_fds=[child_sock.fileno()])
            child_sock.close()
            conn = Connection(parent_sock.detach())
            conn.send(asdict(self._worker_config(index)))
            link = _WorkerLink(self, index, process, conn)
            link.reader.start()
            self.links.append(link)
        deadline = time.monotonic() + timeout
        for link in self.links:
            if not link.ready.wait(max(0.1, deadline - time.monotonic())) or not link.port:
                self.stop()
                raise SipError(f"SIP worker {link.index} did not start: {link.error or 'timeout'}")
        host = cfg.host if cfg.host not in ("0.0.0.0", "") else "127.0.0.1"
        self.front.workers = [(host, link.port) for link in self.links]
        self.front.capacity_per_worker = PJSUA_MAX_CALLS
        self.front.start()
        self._running.set()
        log.info("SIP pool: front udp %s:%d, %d worker(s) on ports %s", cfg.host, self.port, len(self.links),
                 ",".join(str(link.port) for link in self.links))

    def _worker_config(self, index: int) -> SipConfig:
        cfg = self.config
        transports: tuple[str, ...] = ("udp",)
        tcp_port = 0
        registration: RegistrationConfig | None = None
        if index == 0 and "tcp" in cfg.transports:
            transports = ("udp", "tcp")  # TCP callers reach worker 0 directly on the public port
            tcp_port = self.port
        contact = ""
        if index == 0 and cfg.registration is not None:
            # Register the front's address, so the registrar's calls are spread over all workers.
            registration = cfg.registration
            host = cfg.public_address or (cfg.host if cfg.host not in ("0.0.0.0", "") else "127.0.0.1")
            contact = f"<sip:{registration.username}@{host}:{self.port}>"
        allow = cfg.allow_from + (("127.0.0.1", cfg.host) if cfg.allow_from and cfg.host != "0.0.0.0" else ())
        return replace(cfg, port=0, tcp_port=tcp_port, transports=transports, max_calls=PJSUA_MAX_CALLS,
                       allow_from=allow, registration=registration, contact=contact, behind_front=True)

    def stop(self, grace_seconds: float = 0.0) -> None:
        if self.front is not None:
            self.front.stop_taking_calls()
        deadline = time.monotonic() + grace_seconds
        while self.stats.active_calls and time.monotonic() < deadline:
            time.sleep(0.05)
        for link in self.links:
            link.send(("quit",))
        for link in self.links:
            try:
                link.process.wait(10)
            except subprocess.TimeoutExpired:
                link.process.kill()
                link.process.wait(2)
            link.reader.join(2)
            link.conn.close()
        if self.front is not None:
            self.front.close()
            self.front = None
        for worker in self._workers:
            worker.join(2)
        self._running.clear()
        self._refresh_stats()

    def _route(self, called: str) -> bool:
        route = self.server.route
        return True if route is None else bool(route(called))

    def call_threads(self) -> list[threading.Thread]:
        return [w for w in self._workers if w.is_alive()]

    def _start_call(self, channel: RemoteSipChannel) -> None:
        worker = threading.Thread(target=self._run_call, args=(channel,), name=f"ivr-call-{channel.call_id}",
                                  daemon=True)
        with self._lock:
            self._workers = [w for w in self._workers if w.is_alive()]
            self._workers.append(worker)
        worker.start()

    def _run_call(self, channel: RemoteSipChannel) -> None:
        try:
            on_call = self.server.on_call
            if on_call is not None:
                on_call(channel)
        except Exception:
            log.exception("call %s: on_call failed", channel.call_id)
        finally:
            if channel.connected:
                channel.hangup()

    def _count_front_reject(self, outcome: str) -> None:
        with self._lock:
            self._own_outcomes[outcome] += 1
        self._refresh_stats()
        if self.server.on_outcome is not None:
            self.server.on_outcome(outcome)

    def _call_finished(self, call_id: str, outcome: str) -> None:
        if self.front is not None:
            self.front.call_finished(call_id)
        self._refresh_stats()
        if self.server.on_outcome is not None:
            self.server.on_outcome(outcome)

    def _refresh_stats(self) -> None:
        with self._lock:
            outcomes = Counter(self._own_outcomes)
            for link in self.links:
                outcomes.update(link.outcomes)
            self.stats.outcomes = outcomes
            front_active = self.front.active_calls if self.front is not None else 0
            self.stats.active_calls = max(front_active, sum(link.active for link in self.links))


# ---------------------------------------------------------------------------------------------------- worker


def worker_main(conn: Connection) -> None:
    """Entry point of a worker process: run a SipServer and mirror its calls over ``conn``."""
    from ivr.sip.server import SipServer

    # pjmedia's clock thread needs the GIL for every call every 20 ms: make busy Python threads hand it
    # over sooner than the default 5 ms.
    sys.setswitchinterval(0.001)
    config: dict[str, Any] = conn.recv()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    registration = config.pop("registration")
    cfg = SipConfig(**{**config, "transports": tuple(config["transports"]), "allow_from": tuple(config["allow_from"]),
                       "registration": RegistrationConfig(**registration) if registration else None})
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock, contextlib.suppress(OSError, ValueError):
            conn.send(message)

    calls_by_key: dict[int, SipChannel] = {}  # for the parent's commands
    channels: dict[int, SipChannel] = {}  # calls the parent knows of (frames are forwarded for these)
    applied: dict[int, int] = {}
    by_caller: dict[int, bool] = {}
    done: dict[int, threading.Event] = {}
    lock = threading.Lock()
    keys = itertools.count(1)
    quit_sender = threading.Event()

    def on_call(channel: SipChannel) -> None:
        key = next(keys)
        finished = threading.Event()
        calls_by_key[key] = channel
        send(("call", key, {"call_id": channel.call_id, "caller": channel.caller, "called": channel.called,
                            "sample_rate": channel.sample_rate, "codec": channel.codec, "remote": channel.remote,
                            "headers": channel.headers, "active": server.stats.active_calls,
                            "setup_ms": server.stats.setup_ms[-1] if server.stats.setup_ms else None}))
        with lock:
            applied[key] = 0
            by_caller[key] = False
            done[key] = finished
            channels[key] = channel
        # The sender thread forwards the call's audio and events and reports its end; returning hangs it up.
        while not finished.wait(0.5):
            if quit_sender.is_set():
                break

    def forward(key: int, channel: SipChannel) -> tuple[Any, ...] | None:
        for event in channel.poll_control():
            digit = getattr(event, "digit", None)
            if digit is not None:
                send(("dtmf", key, digit))
            else:
                by_caller[key] = True
        frames = [frame.pcm for frame in channel.drain_inbound()]
        if not frames:
            return None
        pending = int(channel.playback_pending() * 2 * channel.sample_rate)
        return (key, frames, applied.get(key, 0), pending)

    def sender() -> None:
        tick = 0.02
        next_tick = time.monotonic()
        while not quit_sender.is_set():
            next_tick += tick
            delay = next_tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                next_tick = time.monotonic()  # fell behind: do not try to catch up with a burst
            with lock:
                calls = list(channels.items())
            batch = []
            for key, channel in calls:
                connected = channel.connected  # read before draining: no frame arrives after the end
                item = forward(key, channel)
                if item is not None:
                    batch.append(item)
                if not connected:
                    if batch:
                        send(("frames", batch))
                        batch = []
                    forward(key, channel)  # events that came with the end (the caller's hangup)
                    send(("ended", key, by_caller.get(key, False)))
                    with lock:
                        channels.pop(key, None)
                        applied.pop(key, None)
                        by_caller.pop(key, None)
                        done.pop(key).set()
                        calls_by_key.pop(key, None)
            if batch:
                send(("frames", batch))

    server = SipServer(cfg, on_call=on_call)

    def finished(call_id: str, outcome: str) -> None:
        send(("finished", call_id, outcome, server.stats.active_calls))

    server.on_call_finished = finished
    server.on_registration = lambda code, reason, registered: send(("reg", code, reason, registered))
    try:
        server.start()
    except SipError as exc:
        send(("error", str(exc)))
        return
    send(("ready", server.port))
    sender_thread = threading.Thread(target=sender, name="ivr-sip-sender", daemon=True)
    sender_thread.start()

    def transfer(channel: SipChannel, request: int, target: str, headers: dict[str, str]) -> None:
        send(("xfer", request, channel.transfer(target, headers)))

    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "quit":
                break
            if kind == "agent_cancel":
                server.cancel_agent_call(message[1])
                continue
            channel = calls_by_key.get(message[1])
            if channel is None:
                if kind == "xfer":
                    send(("xfer", message[2], False))
                elif kind == "agent":
                    send(("agent", message[2], "failed"))
                continue
            if kind == "play":
                channel.play(message[3])
                applied[message[1]] = message[2]
            elif kind == "stop":
                channel.stop_playback()
                applied[message[1]] = message[2]
            elif kind == "hangup":
                channel.hangup()
            elif kind == "xfer":
                threading.Thread(target=transfer, args=(channel, *message[2:]), daemon=True).start()
            elif kind == "agent":
                _, _, request, uri, headers, ring_timeout = message
                channel.dial_agent(request, uri, headers, ring_timeout,
                                   lambda request, result: send(("agent", request, result)))
    finally:
        server.stop(0)
        quit_sender.set()
        sender_thread.join(2)
        conn.close()


if __name__ == "__main__":
    worker_main(Connection(int(sys.argv[1])))
