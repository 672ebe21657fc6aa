"""Persistence: calls, turns, events, users, agents and queue state (SQLite by default, PostgreSQL by URL).

>>> store = open_store("calls.db")
>>> store.start_call("c1", "+15550100", "100", "support", 1700000000.0)
"""

from __future__ import annotations

from ivr.store.masking import mask_data, mask_sensitive
from ivr.store.store import Store, StoreError, database_url, open_store

__all__ = ["Store", "StoreError", "database_url", "mask_data", "mask_sensitive", "open_store"]
