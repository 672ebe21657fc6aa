"""The messages between a node's server process and its pjsua2 worker processes, and their encoding.

One duplex pipe per worker carries typed messages (frozen dataclasses). This module alone encodes and
decodes them: ``send`` accepts only the message types below, ``receive`` returns only those and raises
``WireError`` on anything else, so neither side ever dispatches on a loose tuple or a string.
"""

from __future__ import annotations

import pickle
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Generic, TypeVar, cast

from ivr.errors import SipError
from ivr.sip.admission import IncomingCall, Verdict
from ivr.sip.config import SipConfig


class WireError(SipError):
    """A message on a worker pipe that is not one of the known types (a bug, or a version mismatch)."""


# ---------------------------------------------------------------------------------------- server → worker


@dataclass(frozen=True)
class Setup:
    """First message to a new worker: the endpoint settings it runs with."""

    config: SipConfig


@dataclass(frozen=True)
class Play:
    """Queue prompt audio on a call; ``seq`` numbers the server's playback requests of that call."""

    key: int
    seq: int
    pcm: bytes


@dataclass(frozen=True)
class StopPlayback:
    """Drop the call's queued prompt audio (barge-in)."""

    key: int
    seq: int


@dataclass(frozen=True)
class HangUp:
    """End the call from our side."""

    key: int


@dataclass(frozen=True)
class Transfer:
    """Blind-transfer the call (REFER); a ``TransferResult`` with the same ``request`` answers."""

    key: int
    request: int
    target: str
    headers: dict[str, str]


@dataclass(frozen=True)
class DialAgent:
    """Ring an agent for the call and bridge them in the worker; an ``AgentResult`` answers."""

    key: int
    request: str
    uri: str
    headers: dict[str, str]
    ring_timeout: float


@dataclass(frozen=True)
class CancelAgent:
    """Stop ringing (or hang up) the agent leg of ``DialAgent(request)``."""

    request: str


@dataclass(frozen=True)
class DialCallback:
    """Call a customer back and join them to an agent in the worker; ``AgentResult`` messages answer."""

    request: str
    customer_uri: str
    agent_uri: str
    headers: dict[str, str]
    ring_timeout: float


@dataclass(frozen=True)
class CancelCallback:
    """Hang up both legs of ``DialCallback(request)``."""

    request: str


@dataclass(frozen=True)
class DialOutbound:
    """Place an outbound call from the worker (``SipServer.request_outbound``); one ``OutboundResult`` answers,
    and once answered the call comes up as ``CallStarted`` like an incoming one."""

    request: str
    uri: str
    caller: str
    called: str
    ring_timeout: float


@dataclass(frozen=True)
class AdmitReply:
    """Admission's verdict on the worker's ``AdmitRequest`` with the same ``request``."""

    request: int
    verdict: Verdict


@dataclass(frozen=True)
class Drain:
    """The node is stopping: refuse new calls and answer OPTIONS probes 503; calls in progress go on."""


@dataclass(frozen=True)
class Quit:
    """Hang up every call and exit."""


# ---------------------------------------------------------------------------------------- worker → server


@dataclass(frozen=True)
class Ready:
    """The worker's endpoint is up on ``port``."""

    port: int


@dataclass(frozen=True)
class StartFailed:
    """The worker's endpoint could not start."""

    error: str


@dataclass(frozen=True)
class Heartbeat:
    """Sent every second while the worker's SIP thread is making progress."""


@dataclass(frozen=True)
class AdmitRequest:
    """A new INVITE reached the worker: may it be answered? (The SIP thread waits for the reply.)"""

    request: int
    call: IncomingCall


@dataclass(frozen=True)
class CallStarted:
    """An admitted call is answered and its media is up; ``key`` names it on this pipe from now on."""

    key: int
    call_id: str
    caller: str
    called: str
    sample_rate: int
    codec: str
    remote: str
    headers: dict[str, str]
    setup_ms: float | None
    contact: str = ""


@dataclass(frozen=True)
class CallAudio:
    """One 20 ms tick of a call: caller frames, and the playback state after the server's request ``seq``."""

    key: int
    frames: tuple[bytes, ...]
    seq: int
    pending_bytes: int


@dataclass(frozen=True)
class Frames:
    """Every call's audio of one tick, in one message."""

    calls: tuple[CallAudio, ...]


@dataclass(frozen=True)
class Dtmf:
    """The caller pressed a key."""

    key: int
    digit: str


@dataclass(frozen=True)
class CallEnded:
    """The call's media is over (``by_caller``: the caller hung up)."""

    key: int
    by_caller: bool


@dataclass(frozen=True)
class CallFinished:
    """A SIP call (admitted or refused) is over; its admission ticket (0 if none) is free again."""

    ticket: int
    call_id: str
    outcome: str


@dataclass(frozen=True)
class TransferResult:
    """Whether the peer accepted the REFER of ``Transfer(request)``."""

    request: int
    accepted: bool


@dataclass(frozen=True)
class AgentResult:
    """The outcome of ``DialAgent(request)``: an OfferResult value, or ``no_slot``; or of
    ``DialCallback(request)``: an ``ivr.queue.callbacks`` result."""

    request: str
    result: str


@dataclass(frozen=True)
class OutboundResult:
    """How ``DialOutbound(request)`` went: a value of ``ivr.sip.server.OUTBOUND_RESULTS`` (``ended`` follows
    ``answered`` when the call is over)."""

    request: str
    result: str


@dataclass(frozen=True)
class Registration:
    """The registrar's latest answer to the worker's REGISTER."""

    code: int
    reason: str
    registered: bool


ToWorker = (Setup | Play | StopPlayback | HangUp | Transfer | DialAgent | CancelAgent | DialCallback
            | CancelCallback | DialOutbound | AdmitReply | Drain | Quit)
FromWorker = (Ready | StartFailed | Heartbeat | AdmitRequest | CallStarted | Frames | Dtmf | CallEnded
              | CallFinished | TransferResult | AgentResult | OutboundResult | Registration)

_TO_WORKER = (Setup, Play, StopPlayback, HangUp, Transfer, DialAgent, CancelAgent, DialCallback, CancelCallback,
              DialOutbound, AdmitReply, Drain, Quit)
_FROM_WORKER = (Ready, StartFailed, Heartbeat, AdmitRequest, CallStarted, Frames, Dtmf, CallEnded, CallFinished,
                TransferResult, AgentResult, OutboundResult, Registration)


OutT = TypeVar("OutT")
InT = TypeVar("InT")


class Pipe(Generic[OutT, InT]):
    """One end of a worker pipe: typed ``send`` (thread-safe) and ``receive`` (one reader thread)."""

    def __init__(self, conn: Connection, outgoing: tuple[type, ...], incoming: tuple[type, ...]) -> None:
        self.conn = conn
        self._outgoing = outgoing
        self._incoming = incoming
        self._lock = threading.Lock()

    def send(self, message: OutT) -> bool:
        """Send one message; False if the other side is gone."""
        if not isinstance(message, self._outgoing):
            raise WireError(f"{type(message).__name__} may not be sent this way on a worker pipe")
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        with self._lock:
            try:
                self.conn.send_bytes(data)
            except (OSError, ValueError):
                return False
        return True

    def receive(self) -> InT:
        """The next message; raises EOFError when the other side closed, WireError on an unknown one."""
        data = self.conn.recv_bytes()
        try:
            message = pickle.loads(data)
        except Exception as exc:
            raise WireError(f"undecodable message on a worker pipe: {exc}") from None
        if not isinstance(message, self._incoming):
            raise WireError(f"unexpected {type(message).__name__} on a worker pipe")
        return cast(InT, message)

    def close(self) -> None:
        """Close this end."""
        self.conn.close()


ServerPipe = Pipe[ToWorker, FromWorker]
WorkerPipe = Pipe[FromWorker, ToWorker]


def server_end(conn: Connection) -> ServerPipe:
    """The server's end of a worker pipe."""
    return Pipe(conn, _TO_WORKER, _FROM_WORKER)


def worker_end(conn: Connection) -> WorkerPipe:
    """The worker's end of its pipe."""
    return Pipe(conn, _FROM_WORKER, _TO_WORKER)
