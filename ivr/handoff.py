"""What travels with a call handed to a person: the ``X-IVR-*`` SIP headers and a signed context link.

One function builds the headers for every transfer path (a flow's ``transfer: {uri: ...}`` and the queue
connector ringing an agent), so they are masked the same way everywhere: SIP headers pass through
proxies and PBX logs, so they carry what anyone may see (:func:`ivr.store.views.for_others`). The full
context for the agent's CRM is behind ``X-IVR-Context-Url``: a link to the console's
``/api/context/<call_id>`` that expires and is signed with HMAC-SHA256 under the server's secret key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from ivr.store.views import for_others

CONTEXT_LINK_SECONDS = 3600.0
"""How long a context link works (from the moment the call is offered)."""

_UNSAFE = re.compile(r"[^\x20-\x7e]|[\r\n]")


def _header_value(value: object, limit: int = 200) -> str:
    return _UNSAFE.sub("?", " ".join(str(value).split()))[:limit]


def context_headers(
    context: Mapping[str, Any],
    *,
    call_id: str | None = None,
    queue: str | None = None,
    priority: int | None = None,
    wait: float | None = None,
    context_url: str = "",
) -> dict[str, str]:
    """SIP headers carrying a call's context to whoever takes it (ASCII, one line each, masked as for
    anyone, length-limited): Call-Id, Caller, Flow, Intent, Confidence, Slots, Queue, Priority, Wait and
    Context-Url."""
    shown = for_others(context)
    # Most useful first: a Refer-To URI carries only as many as fit (ivr.sip.sipmsg.refer_target).
    headers = {"X-IVR-Call-Id": _header_value(call_id if call_id is not None else context.get("call_id", ""))}
    if shown.get("intent") not in (None, ""):
        headers["X-IVR-Intent"] = _header_value(shown["intent"])
    if context_url:
        headers["X-IVR-Context-Url"] = _header_value(context_url, 1000)
    if queue:
        headers["X-IVR-Queue"] = _header_value(queue)
    for key, header in (("caller", "X-IVR-Caller"), ("flow", "X-IVR-Flow")):
        if shown.get(key) not in (None, ""):
            headers[header] = _header_value(shown[key])
    if isinstance(context.get("confidence"), int | float) and context.get("intent"):
        headers["X-IVR-Confidence"] = f"{float(context['confidence']):.2f}"
    if priority is not None:
        headers["X-IVR-Priority"] = str(int(priority))
    if wait is not None:
        headers["X-IVR-Wait"] = f"{wait:.0f}"
    slots = shown.get("slots")
    if isinstance(slots, Mapping) and slots:
        headers["X-IVR-Slots"] = _header_value(";".join(f"{k}={v}" for k, v in slots.items()), 500)
    return headers


def context_signature(key: str | bytes, call_id: str, expires: int) -> str:
    """The HMAC-SHA256 that makes a context link for ``call_id`` valid until ``expires``: its first 128 bits
    in hex (short enough for the Refer-To URI phones accept, see ``ivr.sip.sipmsg.REFER_URI_LIMIT``)."""
    secret = key.encode() if isinstance(key, str) else key
    return hmac.new(secret, f"{call_id}\n{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def context_url(base_url: str, key: str | bytes, call_id: str, *, seconds: float = CONTEXT_LINK_SECONDS,
                now: float | None = None) -> str:
    """A link to the call's full context (for the agent's CRM) that works for ``seconds``."""
    expires = int((time.time() if now is None else now) + seconds)
    signature = context_signature(key, call_id, expires)
    # All in the path: no "=" or "&" that a Refer-To URI would have to escape (some phones mangle escapes).
    return f"{base_url.rstrip('/')}/api/context/{quote(call_id, safe='')}/{expires}/{signature}"


def check_context_signature(key: str | bytes, call_id: str, expires: str, signature: str,
                            now: float | None = None) -> bool:
    """Whether a context link is genuine and not expired."""
    try:
        until = int(expires)
    except ValueError:
        return False
    if until < (time.time() if now is None else now):
        return False
    return hmac.compare_digest(context_signature(key, call_id, until), signature)
