"""Hostile SIP for testing an edge: malformed INVITEs, oversized datagrams, garbage, relay attempts, idle TCP.

Each packet of the family is a function of the target (and a counter, so Call-IDs differ); ``send_batch``
sends the ones named over UDP or TCP from a given source address. As a script, it sends the whole family
to a running server and checks that it still answers OPTIONS afterwards:

    python -m ivr.testing.sip_torture 127.0.0.1:5060 [--repeat 3] [--source 127.0.0.2] [--tcp]

Nothing here is a valid call: a server that takes a call slot for any of these, or stops answering, fails.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import random
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

_counter = itertools.count(1)


@dataclass(frozen=True)
class Target:
    """Where the packets go and where they claim to come from."""

    host: str
    port: int
    source: str = "127.0.0.2"
    source_port: int = 5999
    transport: str = "UDP"


def _sdp(source: str) -> str:
    return (f"v=0\r\no=- 1 1 IN IP4 {source}\r\ns=-\r\nc=IN IP4 {source}\r\nt=0 0\r\n"
            "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def invite(target: Target, *, drop: tuple[str, ...] = (), replace: dict[str, str] | None = None,
           extra: list[str] | None = None, body: str | None = None, request_uri: str = "",
           call_id: str = "", content_length: str | None = None) -> bytes:
    """A well-formed INVITE to ``target`` with headers dropped, replaced or added (the base of the family)."""
    n = next(_counter)
    sdp = _sdp(target.source) if body is None else body
    headers = {
        "Via": f"SIP/2.0/{target.transport} {target.source}:{target.source_port};branch=z9hG4bK-torture-{n}-"
               f"{random.getrandbits(32):x};rport",
        "Max-Forwards": "70",
        "From": f"<sip:torture@{target.source}>;tag=t{n}",
        "To": f"<sip:100@{target.host}:{target.port}>",
        "Call-ID": call_id or f"torture-{n}-{random.getrandbits(48):x}@{target.source}",
        "CSeq": "1 INVITE",
        "Contact": f"<sip:torture@{target.source}:{target.source_port}>",
        "Content-Type": "application/sdp",
    }
    for name in drop:
        headers.pop(name, None)
    headers.update(replace or {})
    lines = [f"INVITE {request_uri or f'sip:100@{target.host}:{target.port}'} SIP/2.0"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines += extra or []
    lines.append(f"Content-Length: {len(sdp.encode()) if content_length is None else content_length}")
    return ("\r\n".join(lines) + "\r\n\r\n" + sdp).encode()


def _nul_byte(t: Target) -> bytes:
    data = invite(t)
    return data.replace(b"Max-Forwards: 70", b"Max-Forwards: 7\x000")


def _garbage(t: Target) -> bytes:
    return bytes(random.getrandbits(8) for _ in range(random.randint(1, 1400)))


def _relay_attempt(t: Target) -> bytes:
    """An in-dialog BYE asking the edge to relay to a host elsewhere (an open relay would forward it)."""
    n = next(_counter)
    return (f"BYE sip:victim@198.51.100.7:5060 SIP/2.0\r\n"
            f"Via: SIP/2.0/{t.transport} {t.source}:{t.source_port};branch=z9hG4bK-relay-{n}\r\n"
            f"Route: <sip:{t.host}:{t.port};lr>\r\nMax-Forwards: 70\r\n"
            f"From: <sip:torture@{t.source}>;tag=a{n}\r\nTo: <sip:victim@198.51.100.7>;tag=b{n}\r\n"
            f"Call-ID: relay-{n}@{t.source}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n").encode()


def _stray_response(t: Target) -> bytes:
    n = next(_counter)
    return (f"SIP/2.0 200 OK\r\nVia: SIP/2.0/{t.transport} {t.host}:{t.port};branch=z9hG4bK-nothing-{n}\r\n"
            f"From: <sip:a@{t.host}>;tag=x{n}\r\nTo: <sip:b@{t.source}>;tag=y{n}\r\nCall-ID: stray-{n}\r\n"
            f"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n").encode()


def _unknown_cancel(t: Target) -> bytes:
    data = invite(t, body="", replace={"CSeq": "1 CANCEL"}, drop=("Content-Type",))
    return data.replace(b"INVITE sip:", b"CANCEL sip:", 1)


PACKETS: dict[str, Callable[[Target], bytes]] = {
    "missing_from": lambda t: invite(t, drop=("From",)),
    "missing_to": lambda t: invite(t, drop=("To",)),
    "missing_call_id": lambda t: invite(t, drop=("Call-ID",)),
    "missing_contact": lambda t: invite(t, drop=("Contact",)),
    "missing_from_tag": lambda t: invite(t, replace={"From": f"<sip:torture@{t.source}>"}),
    "negative_content_length": lambda t: invite(t, content_length="-5"),
    "huge_content_length": lambda t: invite(t, content_length="999999"),
    "cseq_not_a_number": lambda t: invite(t, replace={"CSeq": "x INVITE"}),
    "cseq_wrong_method": lambda t: invite(t, replace={"CSeq": "1 BYE"}),
    "nul_byte": _nul_byte,
    "via_host_colons": lambda t: invite(t, replace={"Via": f"SIP/2.0/{t.transport} ::::;branch=z9hG4bK-x"}),
    "via_no_branch": lambda t: invite(t, replace={"Via": f"SIP/2.0/{t.transport} {t.source}:{t.source_port}"}),
    "thousand_headers": lambda t: invite(t, extra=[f"X-Pad-{i}: {i}" for i in range(1000)]),
    "near_64k": lambda t: invite(t, extra=["X-Pad: " + "a" * 63_000]),
    "long_request_uri": lambda t: invite(t, request_uri=f"sip:{'9' * 2000}@{t.host}:{t.port}"),
    "max_forwards_zero": lambda t: invite(t, replace={"Max-Forwards": "0"}),
    "not_sdp_body": lambda t: invite(t, replace={"Content-Type": "text/plain"}, body="hello\r\n"),
    "broken_sdp": lambda t: invite(t, body="v=0\r\nm=audio notaport RTP/AVP x\r\n"),
    "bad_request_uri": lambda t: invite(t, request_uri="sip:@@@:::"),
    "sip_version_3": lambda t: invite(t).replace(b" SIP/2.0\r\n", b" SIP/3.0\r\n", 1),
    "garbage": _garbage,
    "empty": lambda t: b"",
    "crlf_keepalive": lambda t: b"\r\n\r\n",
    "stray_response": _stray_response,
    "unknown_cancel": _unknown_cancel,
    "relay_attempt": _relay_attempt,
}
"""The whole family, by name."""

ODD = ("via_no_branch", "long_request_uri", "not_sdp_body", "broken_sdp")
"""Packets a SIP parser accepts (so they reach a worker, which answers or refuses them)."""
NOT_INVITES = ("garbage", "empty", "crlf_keepalive", "stray_response", "unknown_cancel", "relay_attempt")
MALFORMED = tuple(name for name in PACKETS if name not in ODD + NOT_INVITES)
"""Packets that are malformed SIP (refused or dropped by the edge's own checks)."""


def send_batch(target: Target, names: tuple[str, ...] = tuple(PACKETS), repeat: int = 1) -> int:
    """Send the named packets (``repeat`` times each) and return how many went out (some cannot be sent)."""
    sent = 0
    for _ in range(repeat):
        for name in names:
            data = PACKETS[name](target)
            if target.transport == "TCP":
                sent += _send_tcp(target, data)
            else:
                sent += _send_udp(target, data)
    return sent


def _send_udp(target: Target, data: bytes) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((target.source, 0))
        try:
            sock.sendto(data, (target.host, target.port))
        except OSError:  # e.g. EMSGSIZE: nothing left the machine
            return 0
    return 1


def _send_tcp(target: Target, data: bytes) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((target.source, 0))
        sock.settimeout(2)
        try:
            sock.connect((target.host, target.port))
            sock.sendall(data)
            with contextlib.suppress(OSError):
                sock.recv(4096)  # let the edge answer before the connection closes
        except OSError:
            return 0
    return 1


@contextlib.contextmanager
def idle_tcp_connections(target: Target, count: int) -> Iterator[list[socket.socket]]:
    """Hold ``count`` TCP connections open that never send anything (or half a request)."""
    sockets = []
    try:
        for i in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((target.source, 0))
            sock.settimeout(2)
            sock.connect((target.host, target.port))
            if i % 2:
                sock.sendall(invite(target)[:200])  # half a request, never finished
            sockets.append(sock)
        yield sockets
    finally:
        for sock in sockets:
            sock.close()


def options_answered(host: str, port: int, source: str = "127.0.0.1", timeout: float = 2.0) -> bool:
    """True if the server answers an OPTIONS with any final response."""
    n = next(_counter)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        local_port = sock.getsockname()[1]
        sock.settimeout(timeout)
        request = (f"OPTIONS sip:{host}:{port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP {source}:{local_port};branch=z9hG4bK-probe-{n}\r\nMax-Forwards: 70\r\n"
                   f"From: <sip:probe@{source}>;tag=p{n}\r\nTo: <sip:{host}:{port}>\r\nCall-ID: probe-{n}\r\n"
                   f"CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode()
        sock.sendto(request, (host, port))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65535)
            except OSError:
                return False
            if data.startswith(b"SIP/2.0 ") and not data.startswith(b"SIP/2.0 1"):
                return True
    return False


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(prog="python -m ivr.testing.sip_torture", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="HOST:PORT of the SIP server")
    parser.add_argument("--repeat", type=int, default=1, help="send the family this many times")
    parser.add_argument("--source", default="127.0.0.2", help="local address to send from")
    parser.add_argument("--tcp", action="store_true", help="send over TCP (one connection per packet)")
    args = parser.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    target = Target(host, int(port), source=args.source, transport="TCP" if args.tcp else "UDP")
    sent = send_batch(target, repeat=args.repeat)
    time.sleep(0.5)
    alive = options_answered(host, int(port))
    print(f"sent {sent} hostile packets ({len(PACKETS)} kinds x {args.repeat}); "
          f"server {'still answers' if alive else 'does NOT answer'} OPTIONS")
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
