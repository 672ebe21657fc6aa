"""Small, forgiving helpers to read what pjsua2 hands us as text: URIs and raw SIP messages."""

from __future__ import annotations

import re
from urllib.parse import quote

_URI_USER = re.compile(r"<?\s*sips?:(?:([^@;>?]*)@)?([^;>?]*)", re.IGNORECASE)


def uri_user(uri: str) -> str:
    """The user part of a SIP URI or name-addr (``"Bob" <sip:100@host>`` → ``100``); '' if none."""
    tail = uri.rsplit("<", 1)[-1] if "<" in uri else uri
    match = _URI_USER.search(tail)
    return (match.group(1) or "") if match else ""


def request_uri(message: str) -> str:
    """The Request-URI of a raw SIP request (``INVITE sip:100@host SIP/2.0``); '' if malformed."""
    first = message.split("\n", 1)[0].strip()
    parts = first.split()
    return parts[1] if len(parts) == 3 else ""


def extension_headers(message: str, prefix: str = "x-") -> dict[str, str]:
    """Headers of a raw SIP message whose names start with ``prefix`` (case-insensitive)."""
    found: dict[str, str] = {}
    for line in message.split("\n")[1:]:
        line = line.rstrip("\r")
        if not line:
            break
        name, sep, value = line.partition(":")
        if sep and name.strip().lower().startswith(prefix):
            found[name.strip()] = value.strip()
    return found


REFER_URI_LIMIT = 255
"""Longest Refer-To URI sent: phones keep it in small fixed buffers (baresip 1.0 follows no longer one)."""
_HVALUE_SAFE = "/?:+$[]-_.!~*'()"  # RFC 3261 hnv-unreserved and unreserved marks: no need to escape them


def refer_target(target: str, headers: dict[str, str], limit: int = REFER_URI_LIMIT) -> str:
    """``target`` as a Refer-To name-addr with ``headers`` embedded (``<sip:x@h?X-A=1&X-B=2>``).

    The transferee copies URI headers into its new INVITE, so the context reaches the transfer target.
    Headers are embedded in the order given while the URI stays within ``limit`` characters; one that
    does not fit is left out (the REFER request itself carries them all).
    """
    uri = target.strip().strip("<>")
    for name, value in headers.items():
        field = f"{quote(name, safe='-')}={quote(value, safe=_HVALUE_SAFE)}"
        longer = uri + ("&" if "?" in uri else "?") + field
        if len(longer) <= limit:
            uri = longer
    return f"<{uri}>"
