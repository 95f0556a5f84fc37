"""chalicelib.changes on every store adapter: each change is one conditional write, races
have exactly one winner, and the trigger always ends matching the stored task."""
import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import service
from chalicelib.errors import Conflict, PreconditionFailed
from chalicelib.executor import EARLY, RAN, execute_task
from chalicelib.models import Clock
from chalicelib.triggers import Trigger
from chalicelib.wiring import Runtime
from tests.conftest import together

NOW = datetime(2030, 5, 19, 17, 0, tzinfo=timezone.utc)
DUE = NOW + timedelta(minutes=1)


class ScheduleTable(Trigger):
    """A trigger shaped like EventBridge Scheduler's one-time schedules: an entry per (task,
    time). Arming is slow and adds one; disarming removes the task's entries. A stale arm
    that lands after a newer one leaves two behind unless the change reconciles."""

    def __init__(self, clock):
        super().__init__(clock)
        self.armed = set()
        self._lock = threading.Lock()

    def arm(self, task):
        time.sleep(random.uniform(0, 0.01))  # widen the race
        with self._lock:
            self.armed.add((task.task_id, task.wake_at))

    def disarm(self, task):
        with self._lock:
            self.armed = {entry for entry in self.armed if entry[0] != task.task_id}

    def entries(self, task_id):
        return {entry for entry in self.armed if entry[0] == task_id}


def runtime_on(store, at=NOW):
    clock = Clock(now=lambda: at, sleep=lambda seconds: None)
    return Runtime(store, ScheduleTable(clock), clock)


def expected_entries(rt, task_id):
    task = rt.store.get(task_id)
    return {(task_id, task.wake_at)} if task.wake_at is not None else set()


def new_task(rt, run_at="2030-05-19T17:01:00Z"):
    body = {"action": "log", "payload": {"message": "hi"}, "run_at": run_at}
    created, _ = service.schedule_task(rt, body)
    return created["task_id"]


def patch(rt, task_id, change, if_match=None):
    return lambda: service.update_task(rt, task_id, json.dumps(change).encode(), if_match)


def test_two_patches_with_the_same_if_match_one_wins_one_412(store):
    for _ in range(5):
        rt = runtime_on(store)
        task_id = new_task(rt, "cron(0 * * * ? *)")
        results = together(patch(rt, task_id, {"run_at": "cron(15 * * * ? *)"}, '"1"'),
                           patch(rt, task_id, {"run_at": "cron(45 * * * ? *)"}, '"1"'))
        won = [r for r in results if isinstance(r, dict)]
        lost = [r for r in results if isinstance(r, PreconditionFailed)]
        assert len(won) == 1 and len(lost) == 1, results
        stored = store.get(task_id)
        assert stored.version == 2 and stored.run_at == won[0]["run_at"]
        assert rt.trigger.entries(task_id) == expected_entries(rt, task_id)


def test_racing_patches_without_if_match_all_apply_and_the_trigger_follows_the_last(store):
    rt = runtime_on(store)
    task_id = new_task(rt, "cron(0 * * * ? *)")
    minutes = (5, 20, 35, 50)
    results = together(*(patch(rt, task_id, {"run_at": f"cron({m} * * * ? *)"})
                         for m in minutes))
    assert all(isinstance(r, dict) for r in results), results
    stored = store.get(task_id)
    assert stored.version == 1 + len(minutes)
    assert rt.trigger.entries(task_id) == expected_entries(rt, task_id)


@pytest.mark.parametrize("change", ["patch", "pause"])
def test_a_change_racing_a_firing_exactly_one_wins(store, change):
    outcomes = set()
    for _ in range(12):
        rt = runtime_on(store)
        task_id = new_task(rt)
        due = runtime_on(store, DUE)
        due.trigger.armed = rt.trigger.armed  # one table of schedules
        asked = (patch(due, task_id, {"run_at": "2030-05-19T18:00:00Z"}) if change == "patch"
                 else lambda: service.pause_task(due, task_id, None))
        fired, changed = together(lambda: execute_task(due, task_id), asked)
        stored = store.get(task_id)
        seen = (fired, changed, stored, due.trigger.entries(task_id))  # says what happened
        if getattr(fired, "outcome", None) == RAN:
            # The run claimed it first: the change met a running or finished task.
            assert isinstance(changed, Conflict), seen
            assert stored.status == "completed", seen
            outcomes.add("ran")
        else:
            # The change landed first: the firing found the task moved or paused.
            assert getattr(fired, "outcome", None) in (EARLY, "skipped"), seen
            assert isinstance(changed, dict), seen
            assert stored.status == ("scheduled" if change == "patch" else "paused"), seen
            assert stored.runs == [], seen
            outcomes.add("changed")
        if stored.status != "completed":
            assert due.trigger.entries(task_id) == expected_entries(due, task_id), seen
    assert outcomes  # each iteration had exactly one winner (both kinds usually appear)


def test_each_transition_on_each_store_leaves_store_and_trigger_agreeing(store):
    rt = runtime_on(store)
    task_id = new_task(rt, "cron(0 * * * ? *)")
    steps = [
        ("patch", lambda: service.update_task(rt, task_id, b'{"run_at": "cron(30 * * * ? *)"}'),
         "scheduled", "2030-05-19T17:30:00Z"),
        ("pause until", lambda: service.pause_task(
            rt, task_id, b'{"until": "2030-05-19T20:00:00Z"}'), "paused", None),
        ("resume", lambda: service.resume_task(rt, task_id), "scheduled",
         "2030-05-19T17:30:00Z"),
        ("run now", lambda: service.run_task_now(rt, task_id), "scheduled",
         "2030-05-19T17:00:00Z"),
        ("pause", lambda: service.pause_task(rt, task_id, None), "paused", None),
        ("cancel", lambda: service.cancel_task(rt, task_id), "cancelled", None),
    ]
    for version, (name, step, status, next_run_at) in enumerate(steps, start=2):
        answer = step()
        stored = store.get(task_id)
        assert (answer["status"], answer["next_run_at"], answer["version"]) == (
            status, next_run_at, version), name
        assert stored.status == status and stored.version == version, name
        assert rt.trigger.entries(task_id) == expected_entries(rt, task_id), name
    assert rt.trigger.entries(task_id) == set()
