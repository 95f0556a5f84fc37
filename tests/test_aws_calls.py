"""bench/aws_calls.py: the AWS calls of a task's life, counted over moto."""
import os

import pytest

from bench import aws_calls


@pytest.mark.integration  # moto, through bench/aws_calls.py
def test_a_one_time_task_costs_four_calls_the_older_design_six(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the benchmark sets its own
    rows = {name: sum(calls.values()) for name, calls in aws_calls.measure().items()}
    print("\n" + "\n".join(f"{name}: {count}" for name, count in rows.items()))
    assert rows["one-time task: POST to completed"] == 4  # store, arm, claim, result
    assert rows["one recurring run"] == 2  # claim, result: its cron schedule stays
    assert rows["a failed run that arms its retry"] == 3
    assert rows["the retried run"] == 2
    # Read, write on that version, delete the schedule, read again (so a change that
    # raced it cannot leave the trigger behind the store).
    assert rows["one cancel"] == 4
    assert rows["older design: one-time task, POST to completed (rule left behind)"] == 6
