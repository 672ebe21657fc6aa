"""Where the store lives when a command is not told: one default for ``ivr serve``, ``ivr users`` and
``ivr console``, so users created with one are the users the other sees."""

from __future__ import annotations

import os

DATABASE_ENV = "IVR_DB"
DEFAULT_DATABASE = "var/ivr.db"


def default_database() -> str:
    """``$IVR_DB`` when set, else ``var/ivr.db`` (relative to the working directory)."""
    return os.environ.get(DATABASE_ENV) or DEFAULT_DATABASE
