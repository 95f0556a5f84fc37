"""bench/due_query.py: the sweeper's due query reads the due work, a Scan the whole table."""
import os

import pytest

from bench import due_query


@pytest.fixture
def own_environment(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the benchmark sets its own


def _by_query(rows):
    return {row["query"]: row for row in rows}


@pytest.mark.integration  # moto, through bench/due_query.py
def test_on_dynamodb_the_due_query_examines_only_the_due_items(own_environment):
    for total in (100, 600):
        rows = _by_query(due_query.measure_dynamodb(total, rounds=1))
        assert rows["ours"]["found"] == rows["scan"]["found"] == due_query.DUE
        assert rows["ours"]["examined"] == due_query.DUE
        assert rows["ours"]["requests"] == 10  # one Query per priority
        assert rows["scan"]["examined"] == total


def test_on_sqlite_the_due_query_work_does_not_grow_with_the_table():
    small = _by_query(due_query.measure_sqlite(200, rounds=1))
    large = _by_query(due_query.measure_sqlite(4000, rounds=1))
    for rows in (small, large):
        assert rows["ours"]["found"] == rows["scan"]["found"] == due_query.DUE
        assert "USING INDEX tasks_due" in rows["ours"]["plan"]
        assert rows["scan"]["plan"].startswith("SCAN tasks")
    assert large["ours"]["examined"] <= small["ours"]["examined"] * 1.2
    # 20 times the table: the scan's work grows with it (less than 20 times: reading out
    # the due rows themselves is a fixed part of both).
    assert large["scan"]["examined"] >= small["scan"]["examined"] * 5
