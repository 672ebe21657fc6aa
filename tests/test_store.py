"""The store: real SQLite files (WAL, foreign keys), migrations, crash safety, masking; PostgreSQL if installed."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from ivr.store import StoreError, mask_data, mask_sensitive, open_store
from ivr.store.migrate import current_revision, head_revision


def test_sqlite_file_uses_wal_and_foreign_keys(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ivr.db")
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    raw = sqlite3.connect(tmp_path / "ivr.db")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent property of the file


def test_migrations_are_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "ivr.db"
    first = open_store(path)
    first.start_call("c1", "+15550100", "100", "support", 1.0)
    assert current_revision(first.engine) == head_revision()
    second = open_store(path)  # runs the migration step again on an up-to-date schema
    assert current_revision(second.engine) == head_revision()
    assert second.get_call("c1") is not None
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"calls", "turns", "events", "queue_entries", "agents", "users", "alembic_version"} <= tables


def test_every_write_is_visible_to_another_connection_at_once(tmp_path: Path) -> None:
    path = tmp_path / "ivr.db"
    store = open_store(path)
    other = sqlite3.connect(path)

    def count(sql: str) -> object:
        return other.execute(sql).fetchone()[0]

    store.start_call("c1", "+15550100", "100", "support", 10.0)
    assert count("SELECT caller FROM calls WHERE id='c1'") == "+15550100"
    store.mark_answered("c1", 10.5)
    assert count("SELECT answered_at FROM calls WHERE id='c1'") == 10.5
    store.add_turn("c1", 11.0, "bot", "How can I help?")
    store.add_turn("c1", 12.0, "caller", "where is my order", intent="order_status", confidence=0.91)
    assert count("SELECT count(*) FROM turns WHERE call_id='c1'") == 2
    store.add_event("c1", 12.5, "transfer", {"queue": "support"})
    assert count("SELECT kind FROM events WHERE call_id='c1'") == "transfer"
    store.set_context("c1", {"intent": "order_status", "slots": {"order": "A12"}})
    raw = str(count("SELECT context FROM calls WHERE id='c1'"))
    assert "sealed" in raw and "A12" not in raw  # written at once, encrypted
    store.end_call("c1", 20.0, "completed")
    assert count("SELECT outcome FROM calls WHERE id='c1'") == "completed"

    call = store.get_call("c1")
    assert call is not None
    assert [t["speaker"] for t in call["turns"]] == ["bot", "caller"]
    assert call["intent"] == "order_status" and call["context"]["slots"] == {"order": "A12"}
    assert call["events"][0]["data"] == {"queue": "support"}


_CRASHER = """
import os, sys
from ivr.store import open_store
store = open_store(sys.argv[1])
store.start_call("crash", "+15550199", "100", "support", 1.0)
store.add_turn("crash", 2.0, "caller", "my parcel never came", intent="order_status", confidence=0.8)
os.kill(os.getpid(), 9)
"""


def test_a_killed_process_loses_nothing_already_written(tmp_path: Path) -> None:
    path = tmp_path / "ivr.db"
    proc = subprocess.run([sys.executable, "-c", _CRASHER, str(path)], capture_output=True, timeout=60)
    assert proc.returncode == -9
    call = open_store(path).get_call("crash")
    assert call is not None and call["turns"][0]["text"] == "my parcel never came"


def test_list_calls_search_and_time_range(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ivr.db")
    for i in range(5):
        store.start_call(f"c{i}", f"+1555010{i}", "100", "support", 100.0 + i)
    store.add_turn("c3", 104.0, "caller", "I want to cancel my Subscription")
    assert [c["id"] for c in store.list_calls(search="subscription")] == ["c3"]
    assert [c["id"] for c in store.list_calls(search="+15550101")] == ["c1"]
    assert [c["id"] for c in store.list_calls(since=102.0, until=104.0)] == ["c3", "c2"]
    assert [c["id"] for c in store.list_calls(limit=2)] == ["c4", "c3"]


def test_bad_speaker_and_bad_location_are_clear_errors(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ivr.db")
    with pytest.raises(StoreError, match="speaker must be one of"):
        store.add_turn("c1", 1.0, "robot", "hi")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the store"):
        open_store(blocker / "sub" / "ivr.db")


def test_users_tokens_and_cascade(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ivr.db")
    store.add_user("ann", "hash", "agent", 1.0)
    store.add_token("th", "ann", "cli", 1.0)
    user = store.user_for_token("th")
    assert user is not None and user["name"] == "ann"
    assert store.delete_user("ann")
    assert store.user_for_token("th") is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("my card is 4111 1111 1111 1234", "my card is **** **** **** 1234"),
        ("4111-1111-1111-1234", "****-****-****-1234"),
        ("account 12345678", "account ****5678"),
        ("four one one one two two two two nine eight seven six", "* * * * * * * * nine eight seven six"),
        ("Four 1 1 1 2 2 2 2", "* * * * 2 2 2 2"),
        ("call me on 5550123", "call me on 5550123"),  # 7 digits: not masked
        ("order 12 and 34 items", "order 12 and 34 items"),
        ("one two three", "one two three"),
    ],
)
def test_mask_sensitive(text: str, expected: str) -> None:
    assert mask_sensitive(text) == expected


def test_mask_data_keeps_caller_numbers_but_masks_slots() -> None:
    data = {"caller": "+4915112345678", "slots": {"account": "98765432", "n": 123456789}, "turns": ["4111111111111111"]}
    masked = mask_data(data)
    assert masked == {
        "caller": "+4915112345678",
        "slots": {"account": "****5432", "n": "*****6789"},
        "turns": ["************1111"],
    }


@pytest.mark.slow
def test_postgresql_round_trip(postgres_url: str) -> None:
    store = open_store(postgres_url)
    store.start_call("pg1", "+15550100", "100", "support", 5.0)
    store.add_turn("pg1", 6.0, "caller", "hello there", intent="greet", confidence=0.7)
    store.set_context("pg1", {"intent": "greet", "slots": {"x": 1}})
    open_store(postgres_url)  # migrations again: no-op
    call = store.get_call("pg1")
    assert call is not None and call["context"]["slots"] == {"x": 1} and call["turns"][0]["text"] == "hello there"
    assert [c["id"] for c in store.list_calls(search="HELLO")] == ["pg1"]
    store.close()


@pytest.mark.slow
def test_nodes_starting_at_once_migrate_a_new_postgresql_database_one_after_the_other(postgres_url: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # used to fail: "duplicate key ... alembic_version" (or hang)
        stores = list(pool.map(lambda _: open_store(postgres_url), range(4)))
    assert {current_revision(s.engine) for s in stores} == {head_revision()}
    for store in stores:
        store.close()


def test_calls_left_in_progress_by_a_crash_are_closed_as_interrupted(tmp_path: Path) -> None:
    store = open_store(tmp_path / "ivr.db")
    store.start_call("done", "1", "100", "hotline", 10.0)
    store.end_call("done", 20.0, "completed")
    store.start_call("cut-off", "2", "100", "hotline", 30.0)
    assert store.close_unfinished_calls(99.0) == ["cut-off"]
    call = store.get_call("cut-off")
    assert call is not None and call["outcome"] == "interrupted" and call["ended_at"] == 99.0
    finished = store.get_call("done")
    assert finished is not None and finished["outcome"] == "completed" and finished["ended_at"] == 20.0
    assert store.close_unfinished_calls(100.0) == []


@pytest.mark.slow
def test_a_restarting_node_closes_only_its_own_calls_left_open(postgres_url: str) -> None:
    a, b = open_store(postgres_url), open_store(postgres_url)
    a.node, b.node = "a", "b"
    a.start_call("on-a", "1", "100", "hotline", 10.0)
    b.start_call("on-b", "2", "100", "hotline", 10.0)
    assert a.close_unfinished_calls(99.0) == ["on-a"]
    call = b.get_call("on-b")
    assert call is not None and call["ended_at"] is None and call["node"] == "b"
    a.close()
    b.close()
