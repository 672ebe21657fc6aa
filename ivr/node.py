"""The name of a node: one ``ivr serve`` among several sharing a database and a Kamailio."""

from __future__ import annotations

import re
import socket

from ivr.errors import IvrError

NODE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Letters, digits, '-' and '_', at most 64 characters."""


class NodeNameError(IvrError):
    """A node name that is not letters, digits, '-' and '_' (at most 64)."""


def check_node_name(name: str) -> str:
    """``name`` if it is a valid node name; raises NodeNameError saying what is allowed."""
    if not NODE_NAME.fullmatch(name):
        raise NodeNameError(f"node name {name!r} is not valid: use 1 to 64 letters, digits, '-' or '_' "
                            "(e.g. --node ivr-a)")
    return name


def default_node_name() -> str:
    """This machine's short host name, made into a valid node name ('node' if nothing is left of it)."""
    short = socket.gethostname().split(".", 1)[0]
    cleaned = re.sub(r"[^A-Za-z0-9_-]", "-", short)[:64]
    return cleaned or "node"
