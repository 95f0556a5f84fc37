"""The in-process trigger: wakes on new work, fires in priority order, recovers at start."""
import json
import time
from datetime import timedelta

import pytest

from chalicelib import service
from chalicelib.models import utcnow
from chalicelib.store import get_store
from chalicelib.triggers import local


@pytest.fixture
def local_stage(local_env):
    yield
    local.stop_dispatcher(timeout=5)


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_local_stage_defaults(local_stage):
    from chalicelib import config

    assert (config.task_store(), config.trigger_backend()) == ("sqlite", "local")
    assert config.allow_private_targets() is True


def test_priority_first_when_several_are_due(local_stage, monkeypatch, receiver, make_task):
    monkeypatch.setenv("LOCAL_WORKERS", "1")
    for label, priority, due_in in (("p1", 1, -50), ("p9", 9, -5), ("p5 old", 5, -40),
                                    ("p5 new", 5, -20)):
        make_task(due_in=due_in, priority=priority,
                  payload={"url": receiver.url, "data": {"label": label}})
    local.start_dispatcher()
    assert wait_for(lambda: len(receiver.requests) == 4)
    labels = [json.loads(r["body"])["label"] for r in receiver.requests]
    assert labels == ["p9", "p5 old", "p5 new", "p1"]


def test_new_task_wakes_the_dispatcher_and_fires_on_time(local_stage, receiver):
    local.start_dispatcher()
    time.sleep(0.3)  # the dispatcher is now asleep on an empty store
    run_at = (utcnow() + timedelta(seconds=2)).replace(microsecond=0)
    created, _ = service.schedule_task({
        "action": "webhook", "payload": {"url": receiver.url},
        "run_at": run_at.strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert wait_for(lambda: receiver.requests, timeout=5)
    received = receiver.requests[0]["received_at"]
    assert run_at <= received < run_at + timedelta(seconds=1)
    assert wait_for(lambda: get_store().get(created["task_id"]).status == "completed")


def test_recurring_task_fires_again(local_stage, receiver, make_task):
    task = make_task(due_in=-1, run_at="rate(1 minute)", schedule_kind="rate",
                     payload={"url": receiver.url})
    local.start_dispatcher()
    assert wait_for(lambda: get_store().get(task.task_id).runs)
    stored = get_store().get(task.task_id)
    assert stored.status == "scheduled" and stored.next_run_at > utcnow()


def test_start_recovers_cut_off_runs(local_stage, receiver, make_task):
    task = make_task(payload={"url": receiver.url})
    get_store().claim(task.task_id, "died-with-the-last-process", utcnow())
    summary = local.start_dispatcher()
    assert wait_for(lambda: get_store().get(task.task_id).status == "completed")
    assert len(receiver.requests) == 1
    assert summary is not None


def test_stop_leaves_queued_tasks_waiting(local_stage, monkeypatch, receiver, make_task):
    monkeypatch.setenv("LOCAL_WORKERS", "1")
    receiver.delay = 0.5
    tasks = [make_task(payload={"url": receiver.url}) for _ in range(5)]
    local.start_dispatcher()
    assert wait_for(lambda: receiver.requests)
    assert local.stop_dispatcher(timeout=5) is True
    statuses = [get_store().get(t.task_id).status for t in tasks]
    assert statuses.count("completed") >= 1
    assert set(statuses) <= {"completed", "scheduled"}  # none stuck in running


class SteppedClock:
    """Real time plus an offset the test moves forward, so minutes pass in an instant."""

    def __init__(self):
        self.offset = timedelta(0)

    def now(self):
        return utcnow() + self.offset

    def sleep(self, seconds):
        self.offset += timedelta(seconds=seconds)


def test_recurring_task_runs_three_times_in_a_row(local_stage, receiver, make_task):
    from chalicelib.executor import Clock

    stepped = SteppedClock()
    task = make_task(due_in=-1, run_at="rate(1 minute)", schedule_kind="rate",
                     payload={"url": receiver.url})
    dispatcher = local.start_dispatcher(Clock(now=stepped.now, sleep=stepped.sleep))
    for runs in (1, 2, 3):
        assert wait_for(lambda: len(get_store().get(task.task_id).runs) == runs), runs
        stored = get_store().get(task.task_id)
        assert stored.status == "scheduled"
        stepped.offset += stored.next_run_at - stepped.now() + timedelta(milliseconds=1)
        dispatcher.wake()
    history = get_store().get(task.task_id).runs
    assert len(history) >= 3 and len(receiver.requests) >= 3
    first, second, third = sorted(r.started_at for r in history[:3])
    assert first < second and timedelta(seconds=59) < third - second < timedelta(seconds=61)
    keys = [r["headers"]["idempotency-key"] for r in receiver.requests[:3]]
    assert len(set(keys)) == 3  # each firing is its own run for the receiver
    assert [r["headers"]["x-task-attempt"] for r in receiver.requests[:3]] == ["1"] * 3
