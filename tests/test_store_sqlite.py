"""SQLite adapter specifics: index use, durability across reopen, many writer threads."""
import sqlite3
import threading

import pytest

from chalicelib.errors import ClaimLost
from chalicelib.models import utcnow
from chalicelib.store import get_store
from chalicelib.store.sqlite import SQLiteTaskStore


@pytest.fixture
def sqlite_store(monkeypatch, tmp_path):
    monkeypatch.setenv("TASK_STORE", "sqlite")
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "data" / "tasks.sqlite3"))
    return get_store()


def test_due_query_searches_the_partial_index(sqlite_store):
    plan = " ".join(sqlite_store.explain_due(utcnow()))
    assert "USING INDEX tasks_due" in plan and "SCAN" not in plan


def test_wal_and_reopen_keep_every_task(sqlite_store, make_task, tmp_path):
    tasks = [make_task(due_in=60) for _ in range(3)]
    mode = sqlite_store._raw().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
    reopened = SQLiteTaskStore(tmp_path / "data" / "tasks.sqlite3")
    assert {reopened.get(t.task_id).task_id for t in tasks} == {t.task_id for t in tasks}


def test_claims_from_many_threads_each_win_once(sqlite_store, make_task):
    tasks = [make_task() for _ in range(20)]
    wins = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker(n):
        barrier.wait()
        for task in tasks:
            try:
                sqlite_store.claim(task.task_id, f"w{n}", utcnow())
            except ClaimLost:
                continue
            with lock:
                wins.append(task.task_id)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(wins) == sorted(t.task_id for t in tasks)


class _FailingCommit:
    """A connection whose COMMIT fails (as on a full disk), recording what it was sent."""

    def __init__(self):
        self.sent = []

    def execute(self, sql, *args):
        self.sent.append(sql)
        if sql == "COMMIT":
            raise sqlite3.OperationalError("database or disk is full")


def test_a_failed_commit_rolls_back_and_frees_the_writer_lock():
    from chalicelib.store.sqlite import _Transaction

    connection, lock = _FailingCommit(), threading.Lock()
    with pytest.raises(sqlite3.OperationalError):
        with _Transaction(connection, lock):
            connection.execute("UPDATE tasks SET status = 'x'")
    assert connection.sent == ["BEGIN IMMEDIATE", "UPDATE tasks SET status = 'x'", "COMMIT",
                               "ROLLBACK"]
    assert not lock.locked()
