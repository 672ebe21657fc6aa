"""A small stateless UDP SIP dispatcher in front of several pjsua2 worker processes.

The pjsua2 wheel takes at most 4 calls per process, so a pool spreads calls over workers. The front owns
the public UDP port: it forwards each new INVITE (and its CANCEL/ACK) to the least-loaded worker with a
Via of its own, relays responses back, and refuses calls itself when every worker is full (503), the
source is not allowed (403) or the dialled user does not exist (404). Workers answer with their own
Contact, so in-dialog requests (ACK for 2xx, BYE, re-INVITE, INFO) then go to the worker directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ivr.sip.sipmsg import uri_user

log = logging.getLogger("ivr.sip.front")

SOURCE_HEADER = "X-IVR-Source"
_COMPACT = {"v": "via", "i": "call-id", "f": "from", "t": "to", "l": "content-length"}
_BRANCH = re.compile(r";\s*branch=([^;,\s]+)", re.IGNORECASE)
FINISHED_KEEP = 40.0
"""Seconds a finished call's worker is remembered (for a late ACK or retransmission)."""


@dataclass
class SipMessage:
    """A parsed SIP datagram: start line, header lines (as received) and body."""

    start: str
    headers: list[str]
    body: bytes

    @property
    def is_request(self) -> bool:
        """True for requests, False for responses."""
        return not self.start.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        """Request method, or the method in CSeq for responses."""
        if self.is_request:
            return self.start.split(" ", 1)[0].upper()
        return self.header("cseq").split()[-1].upper() if self.header("cseq") else ""

    @property
    def status(self) -> int:
        """Response status code (0 for requests)."""
        parts = self.start.split()
        return int(parts[1]) if not self.is_request and len(parts) > 1 and parts[1].isdigit() else 0

    def header(self, name: str) -> str:
        """First value of a header (compact forms understood), '' if absent."""
        for i in self._indexes(name):
            return self.headers[i].split(":", 1)[1].strip()
        return ""

    def _indexes(self, name: str) -> list[int]:
        wanted = name.lower()
        found = []
        for i, line in enumerate(self.headers):
            key = line.split(":", 1)[0].strip().lower()
            if _COMPACT.get(key, key) == wanted:
                found.append(i)
        return found

    def top_via_index(self) -> int:
        """Index of the first Via header line (-1 if none)."""
        indexes = self._indexes("via")
        return indexes[0] if indexes else -1

    def encode(self) -> bytes:
        """Serialise again (Content-Length is left as it was: bodies are never changed)."""
        return ("\r\n".join([self.start, *self.headers]) + "\r\n\r\n").encode() + self.body


def parse_message(data: bytes) -> SipMessage | None:
    """Parse a datagram; None if it is not a plausible SIP message."""
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            return None
    try:
        lines = head.decode("utf-8").replace("\r\n", "\n").split("\n")
    except UnicodeDecodeError:
        return None
    start = lines[0].strip()
    if not (start.startswith("SIP/2.0 ") or start.endswith(" SIP/2.0")):
        return None
    headers: list[str] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # folded continuation line
            headers[-1] += " " + line.strip()
        elif ":" in line:
            headers.append(line.strip())
    msg = SipMessage(start, headers, body)
    if not msg.header("call-id") or not msg.header("cseq") or msg.top_via_index() < 0:
        return None
    return msg


class Front:
    """The dispatcher: one UDP socket, one thread. ``workers`` are (host, port) of pool workers."""

    def __init__(self, host: str, port: int, *, max_calls: Callable[[], int], allowed: Callable[[str], bool],
                 route: Callable[[str], bool] | None, on_reject: Callable[[str], None],
                 on_load: Callable[[], None] = lambda: None) -> None:
        self.host = host
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = int(self.sock.getsockname()[1])
        self.workers: list[tuple[str, int]] = []
        self.capacity_per_worker = 4
        self._max_calls = max_calls
        self._allowed = allowed
        self._route = route
        self._on_reject = on_reject
        self._on_load = on_load
        self._lock = threading.Lock()
        self._call_worker: dict[str, int] = {}
        self._active: dict[str, int] = {}  # Call-ID -> worker, while the call occupies a worker slot
        self._finished: dict[str, float] = {}
        self._clients: dict[str, tuple[tuple[str, int], float]] = {}  # our branch -> caller address
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="ivr-sip-front", daemon=True)

    @property
    def active_calls(self) -> int:
        """Calls currently placed on a worker (ringing or answered)."""
        with self._lock:
            return len(self._active)

    def start(self) -> None:
        """Start forwarding."""
        self._thread.start()

    def stop_taking_calls(self) -> None:
        """Answer new INVITEs with 503 from now on."""
        self._stopping = True

    def close(self) -> None:
        """Stop the thread and release the port."""
        self._stopping = True
        with contextlib.suppress(OSError):
            self.sock.sendto(b"", self.sock.getsockname())  # wake recvfrom
        if self._thread.is_alive():
            self._thread.join(2)
        self.sock.close()

    def call_finished(self, call_id: str) -> None:
        """A worker reports a call over: its slot is free again."""
        with self._lock:
            self._active.pop(call_id, None)
            self._finished[call_id] = time.monotonic()

    # ------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        last_purge = time.monotonic()
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            if self._stopping and not data and addr == self.sock.getsockname():
                return
            try:
                self._handle(data, addr)
            except Exception:  # a bad datagram must never stop the front
                log.exception("front: cannot handle a datagram from %s", addr)
            now = time.monotonic()
            if now - last_purge > 5:
                last_purge = now
                self._purge(now)

    def _purge(self, now: float) -> None:
        with self._lock:
            self._finished = {k: t for k, t in self._finished.items() if now - t < FINISHED_KEEP}
            self._clients = {k: v for k, v in self._clients.items() if now - v[1] < FINISHED_KEEP}
            for call_id in [c for c in self._call_worker if c not in self._active and c not in self._finished]:
                del self._call_worker[call_id]

    def _handle(self, data: bytes, addr: tuple[str, int]) -> None:
        if not data.strip():
            return  # keep-alive CRLF
        msg = parse_message(data)
        if msg is None:
            log.debug("front: dropping a malformed datagram from %s", addr)
            return
        if msg.is_request:
            self._request(msg, addr)
        else:
            self._response(msg, addr)

    def _request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        call_id = msg.header("call-id")
        method = msg.method
        with self._lock:
            worker = self._call_worker.get(call_id)
        if worker is None:
            if method == "INVITE":
                refusal = self._admit(msg, addr)
                if refusal:
                    self._reply(msg, addr, *refusal)
                    return
                worker = self._pick_worker()
                if worker is None:
                    self._reply(msg, addr, 503, "Service Unavailable")
                    self._on_reject("rejected_capacity")
                    return
                with self._lock:
                    self._call_worker[call_id] = worker
                    self._active[call_id] = worker
                self._on_load()
            elif method == "ACK":
                return  # nothing to acknowledge any more
            elif method == "CANCEL":
                self._reply(msg, addr, 481, "Call/Transaction Does Not Exist")
                return
            else:  # OPTIONS and other out-of-dialog requests: any worker answers
                worker = int(hashlib.sha1(call_id.encode()).hexdigest(), 16) % max(1, len(self.workers))
        self._forward(msg, addr, worker)

    def _admit(self, msg: SipMessage, addr: tuple[str, int]) -> tuple[int, str] | None:
        source = f"{addr[0]}:{addr[1]}"
        if self._stopping:
            self._on_reject("rejected_shutdown")
            return 503, "Service Unavailable"
        if not self._allowed(source):
            self._on_reject("rejected_forbidden")
            return 403, "Forbidden"
        if self._route is not None and not self._route(uri_user(msg.start.split(" ")[1])):
            self._on_reject("rejected_unrouted")
            return 404, "Not Found"
        if self.active_calls >= self._max_calls():
            self._on_reject("rejected_capacity")
            return 503, "Service Unavailable"
        return None

    def _pick_worker(self) -> int | None:
        with self._lock:
            loads = [0] * len(self.workers)
            for worker in self._active.values():
                loads[worker] += 1
        free = [(load, i) for i, load in enumerate(loads) if load < self.capacity_per_worker]
        return min(free)[1] if free else None

    def _forward(self, msg: SipMessage, addr: tuple[str, int], worker: int) -> None:
        via_index = msg.top_via_index()
        match = _BRANCH.search(msg.headers[via_index])
        original = match.group(1) if match else msg.header("call-id") + msg.header("cseq")
        # Deterministic: a CANCEL or non-2xx ACK gets the same branch as its INVITE, as the worker expects.
        branch = "z9hG4bK-ivr-" + hashlib.sha1(f"{original}|{addr}".encode()).hexdigest()[:20]
        with self._lock:
            self._clients[branch] = (addr, time.monotonic())
        headers = list(msg.headers)
        headers.insert(via_index, f"Via: SIP/2.0/UDP {self._sent_by()};branch={branch};rport")
        if msg.method == "INVITE":
            headers.append(f"{SOURCE_HEADER}: {addr[0]}:{addr[1]}")
        forwarded = SipMessage(msg.start, headers, msg.body)
        self.sock.sendto(forwarded.encode(), self.workers[worker])

    def _sent_by(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "") else "127.0.0.1"
        return f"{host}:{self.port}"

    def _response(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        via_index = msg.top_via_index()
        line = msg.headers[via_index]
        match = _BRANCH.search(line)
        if match is None:
            return
        with self._lock:
            client = self._clients.get(match.group(1))
        if client is None:
            return
        headers = list(msg.headers)
        name, _, values = line.partition(":")
        rest = values.split(",", 1)
        if len(rest) == 2:  # several Vias on one line: drop only ours
            headers[via_index] = f"{name}:{rest[1]}"
        else:
            del headers[via_index]
        if msg.method == "INVITE" and msg.status >= 300:
            with self._lock:
                call_id = msg.header("call-id")
                finished = self._active.pop(call_id, None) is not None
                if finished:
                    self._finished[call_id] = time.monotonic()
            if finished:
                self._on_load()
        self.sock.sendto(SipMessage(msg.start, headers, msg.body).encode(), client[0])

    def _reply(self, msg: SipMessage, addr: tuple[str, int], code: int, reason: str) -> None:
        """Answer a request statelessly (copying Via, From, To with a tag, Call-ID and CSeq)."""
        keep = []
        for line in msg.headers:
            key = line.split(":", 1)[0].strip().lower()
            key = _COMPACT.get(key, key)
            if key in ("via", "from", "call-id", "cseq"):
                keep.append(line)
            elif key == "to":
                tag = hashlib.sha1(msg.header("call-id").encode()).hexdigest()[:10]
                keep.append(line if ";tag=" in line.lower() else f"{line};tag={tag}")
        keep.append("Content-Length: 0")
        if code == 503:
            keep.append("Retry-After: 5")
        reply = SipMessage(f"SIP/2.0 {code} {reason}", keep, b"")
        self.sock.sendto(reply.encode(), addr)
        log.info("front: %d %s for %s from %s:%d", code, reason, msg.method, addr[0], addr[1])
