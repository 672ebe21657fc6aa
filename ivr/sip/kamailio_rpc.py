"""A JSON-RPC client for Kamailio's ``jsonrpcs`` module over its Unix datagram socket."""

from __future__ import annotations

import itertools
import json
import os
import socket
import tempfile
import threading
from pathlib import Path
from typing import Any

from ivr.errors import SipError


class KamailioRpcError(SipError):
    """Kamailio did not answer an RPC, or answered it with an error."""


class KamailioRpc:
    """Calls RPC commands (``dispatcher.reload``, ``htable.dump`` …) of a running Kamailio."""

    def __init__(self, server_socket: Path) -> None:
        self.server_socket = server_socket
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def call(self, method: str, *params: Any, timeout: float = 2.0) -> Any:
        """Run one command and return its ``result``; raises KamailioRpcError."""
        request_id = next(self._ids)
        request = json.dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": request_id})
        with self._lock, tempfile.TemporaryDirectory(prefix="ivr-rpc-") as folder:
            reply_path = os.path.join(folder, "r")
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.bind(reply_path)  # Kamailio answers to the sender's address
                sock.settimeout(timeout)
                try:
                    sock.sendto(request.encode(), str(self.server_socket))
                    data = sock.recv(1 << 20)
                except OSError as exc:
                    raise KamailioRpcError(f"Kamailio RPC {method}: {exc}") from None
        try:
            reply = json.loads(data)
        except ValueError:
            raise KamailioRpcError(f"Kamailio RPC {method}: unreadable reply {data[:200]!r}") from None
        if "error" in reply:
            raise KamailioRpcError(f"Kamailio RPC {method}: {reply['error']}")
        return reply.get("result")


def htable_values(dump: Any) -> dict[str, int]:
    """``{name: value}`` of an ``htable.dump`` result (integer values only)."""
    values: dict[str, int] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "name" in node and isinstance(node.get("value"), int):
                values[str(node["name"])] = int(node["value"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(dump)
    return values


def active_destinations(dispatcher_list: Any) -> list[str]:
    """URIs of the destinations a ``dispatcher.list`` result shows active (Kamailio routes calls to them)."""
    active = []
    for record in (dispatcher_list or {}).get("RECORDS", []):
        for target in record.get("SET", {}).get("TARGETS", []):
            dest = target.get("DEST", {})
            if str(dest.get("FLAGS", "")).startswith("A"):
                active.append(str(dest.get("URI")))
    return active
