"""Settings of the SIP edge: where to listen, who may call, how many calls, optional registration."""

from __future__ import annotations

import ipaddress
import logging
import threading
from dataclasses import dataclass

from ivr.errors import SipError

# The pjsua2-python wheel is built with pjsua's default PJSUA_MAX_CALLS = 4 (measured: a larger
# UaConfig.maxCalls is silently clamped to 4). Calls beyond a process's slots get 486 from pjsua itself;
# below that, calls beyond ``max_calls`` get our 503.
PJSUA_MAX_CALLS = 4
MAX_CALLS_LIMIT = 1000

SUPPORTED_TRANSPORTS = ("udp", "tcp")
SUPPORTED_CODECS = ("PCMU/8000", "PCMA/8000", "G722/16000")


@dataclass(frozen=True)
class RegistrationConfig:
    """Register the server's address with a registrar or PBX, answering its digest challenge."""

    registrar: str
    """Registrar URI, e.g. ``sip:pbx.example.com:5060``."""
    username: str
    password: str
    realm: str = "*"
    """Digest realm to answer; ``*`` answers any realm."""
    id_uri: str = ""
    """Address of record; defaults to ``sip:USERNAME@REGISTRAR-HOST``."""
    expires: int = 300

    def address_of_record(self) -> str:
        """The AOR registered (``id_uri`` or one derived from the registrar and username)."""
        if self.id_uri:
            return self.id_uri
        host = self.registrar.split(":", 1)[1] if ":" in self.registrar else self.registrar
        host = host.split(";", 1)[0]
        return f"sip:{self.username}@{host}"


class RegistrationState:
    """The registrar's latest answer to our REGISTER, and a way to wait for success (thread-safe)."""

    def __init__(self) -> None:
        self.status: tuple[int, str] = (0, "")
        self._registered = threading.Event()

    def record(self, code: int, reason: str, registered: bool) -> None:
        """Note an answer (``registered``: a 2xx with a positive expiry)."""
        self.status = (code, reason)
        if registered:
            self._registered.set()
        else:
            self._registered.clear()
        logging.getLogger("ivr.sip").info("registration: %d %s", code, reason)

    @property
    def registered(self) -> bool:
        """True while the registrar has accepted the registration."""
        return self._registered.is_set()

    def wait(self, timeout: float) -> bool:
        """Block until registered (True) or ``timeout`` seconds passed (False)."""
        return self._registered.wait(timeout)


@dataclass
class SipConfig:
    """How the SIP server listens and which calls it takes.

    ``max_calls``, ``allow_from`` and ``ring_seconds`` are read for every new call, so they can be
    changed on a running server.
    """

    host: str = "127.0.0.1"
    port: int = 5060
    transports: tuple[str, ...] = ("udp",)
    max_calls: int = 4
    """Concurrent calls (ringing or answered); more get 503 Service Unavailable. One pjsua2 process has only
    PJSUA_MAX_CALLS (4) slots: past those, pjsua itself answers 486 Busy Here."""
    allow_from: tuple[str, ...] = ()
    """Source addresses or networks (``10.0.0.0/8``) allowed to call; empty allows everyone. Others: 403."""
    registration: RegistrationConfig | None = None
    ring_seconds: float = 0.0
    """Send 180 Ringing and wait this long before answering (0 answers at once)."""
    rtp_port: int = 0
    """First RTP port (0 lets the OS choose free ports)."""
    rtp_port_range: int = 0
    public_address: str = ""
    """Address to put in Contact/SDP when behind NAT (default: ``host``)."""
    user_agent: str = "ivr"
    log_level: int = 1
    """pjsip log verbosity (0-6) forwarded to the ``ivr.sip.pjsip`` logger."""
    tcp_port: int = 0
    """TCP port when it differs from ``port`` (0: the same)."""
    edge: tuple[str, ...] = ()
    """Addresses (``ip`` or ``ip:port``) of the SIP edge in front of this endpoint. When set, INVITEs from
    anywhere else get 403, and the edge's ``X-IVR-Source`` header names the caller."""
    outbound_proxy: str = ""
    """SIP URI every request we originate goes through (``sip:127.0.0.1:5060;lr``: the edge)."""
    media_host: str = ""
    """Address RTP binds to, when it differs from ``host`` (workers: SIP on loopback, RTP public)."""
    transfer_timeout: float = 5.0
    """Seconds to wait for the peer to accept a REFER."""

    def check(self) -> None:
        """Raise SipError listing every problem with these settings."""
        problems: list[str] = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port {self.port} is out of range; use 1-65535 (or 0 for any free port)")
        if not self.transports:
            problems.append("no transport given; use udp, tcp or both")
        for t in self.transports:
            if t not in SUPPORTED_TRANSPORTS:
                problems.append(f"transport {t!r} is not supported; use one of {', '.join(SUPPORTED_TRANSPORTS)}")
        if not 1 <= self.max_calls <= MAX_CALLS_LIMIT:
            problems.append(
                f"max_calls {self.max_calls} is out of range; use 1-{MAX_CALLS_LIMIT}"
            )
        for entry in self.allow_from:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                problems.append(f"allow_from entry {entry!r} is not an IP address or network like 10.0.0.0/8")
        if self.ring_seconds < 0:
            problems.append("ring_seconds must be 0 or more")
        if self.registration is not None and not self.registration.registrar.startswith(("sip:", "sips:")):
            problems.append(f"registrar {self.registration.registrar!r} must be a SIP URI like sip:pbx.example.com")
        if problems:
            raise SipError("invalid SIP settings:\n  " + "\n  ".join(problems))

    def is_edge(self, sender: str) -> bool:
        """True if a request from ``sender`` (``ip:port``) came from the edge."""
        ip = parse_source_ip(sender)
        return any(sender == entry if _has_port(entry) else ip is not None and ip == parse_source_ip(entry)
                   for entry in self.edge)

    def is_allowed(self, source: str) -> bool:
        """True if a request from ``source`` (``ip``, ``ip:port`` or ``[v6]:port``) may place a call."""
        if not self.allow_from:
            return True
        ip = parse_source_ip(source)
        if ip is None:
            return False
        return any(ip in ipaddress.ip_network(entry, strict=False) for entry in self.allow_from)


def _has_port(address: str) -> bool:
    """True for ``ip:port`` and ``[v6]:port``, False for a bare address."""
    return "]:" in address if address.startswith("[") else address.count(":") == 1


def parse_source_ip(source: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP part of ``ip``, ``ip:port`` or ``[v6]:port``; None if it cannot be parsed."""
    text = source.strip()
    if text.startswith("["):
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None
