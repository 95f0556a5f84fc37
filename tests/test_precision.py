"""PRECISION=second: armed a minute early (or invoked at once), the executor waits for the
second; never early in either mode (simulated with EventBridge's firing window)."""
import os
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from bench import precision_sim
from chalicelib import config
from chalicelib.executor import execute_task
from chalicelib.models import Clock, utcnow
from tests.conftest import runtime
from tests.test_api import schedules_in_group


@pytest.fixture
def second_mode(executor_function, monkeypatch):
    monkeypatch.setenv("PRECISION", "second")
    return executor_function


def _at(task_id_or_name):
    names = [s["Name"] for s in schedules_in_group() if task_id_or_name in s["Name"]]
    assert len(names) == 1, names
    expression = boto3.client("scheduler").get_schedule(
        Name=names[0], GroupName=config.scheduler_group())["ScheduleExpression"]
    return names[0], datetime.strptime(expression, "at(%Y-%m-%dT%H:%M:%S)").replace(
        tzinfo=timezone.utc)


def _post(api, run_at, **fields):
    text = run_at if isinstance(run_at, str) else run_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"action": "log", "payload": {"message": "m"}, "run_at": text, **fields}
    response = api.post("/schedule-task", body)
    assert response.status_code == 201, response.json
    return response.json["task_id"]


def _in(minutes, second):
    return (utcnow() + timedelta(minutes=minutes)).replace(second=second, microsecond=0)


@pytest.mark.parametrize("mode,shift", [("minute", 0), ("second", 1)])
def test_one_time_task_is_armed_in_its_minute_or_the_one_before(api, executor_function,
                                                                 monkeypatch, mode, shift):
    monkeypatch.setenv("PRECISION", mode)
    run_at = _in(10, 37)
    task_id = _post(api, run_at)
    name, at = _at(task_id)
    assert name == f"task-{task_id}"
    assert at == run_at.replace(second=0 if shift else 37) - timedelta(minutes=shift)


def test_task_due_within_two_minutes_invokes_the_executor_at_once(api, second_mode):
    task_id = _post(api, utcnow() + timedelta(seconds=50))
    assert second_mode == [{"task_id": task_id}]
    assert not [s for s in schedules_in_group() if task_id in s["Name"]]


def test_the_executor_waits_up_to_130_s_in_second_mode_only(aws, make_task, monkeypatch):
    task = make_task(action="log", due_in=119.5)
    slept = []
    clock = Clock(now=lambda: utcnow() + timedelta(seconds=sum(slept)), sleep=slept.append)
    assert execute_task(runtime(clock), task.task_id).outcome == "early"  # minute mode: 60 s at most
    monkeypatch.setenv("PRECISION", "second")
    result = execute_task(runtime(clock), task.task_id)
    assert result.outcome == "ran" and 118 < sum(slept) < 121
    assert result.run.started_at >= runtime().store.get(task.task_id).next_run_at


def test_recurring_task_is_armed_one_firing_at_a_time(api, second_mode, receiver):
    task_id = _post(api, "rate(5 minutes)")
    first = runtime().store.get(task_id).next_run_at
    name, at = _at(task_id)
    assert name == f"fire-{task_id}-{first:%Y%m%d%H%M%S}"
    assert at == first.replace(second=0) - timedelta(minutes=1)
    execute_task(runtime(Clock(now=lambda: first + timedelta(milliseconds=5))), task_id)
    following = runtime().store.get(task_id).next_run_at
    assert following == first + timedelta(minutes=5)
    # The fired one-time schedule deletes itself on AWS; moto keeps it, so look for the new.
    assert f"fire-{task_id}-{following:%Y%m%d%H%M%S}" in {s["Name"] for s in schedules_in_group()}
    assert f"task-{task_id}" not in {s["Name"] for s in schedules_in_group()}
    assert api.delete(f"/tasks/{task_id}").status_code == 200
    assert f"fire-{task_id}-{following:%Y%m%d%H%M%S}" not in {
        s["Name"] for s in schedules_in_group()}


def test_retry_is_armed_a_minute_early_too(aws, second_mode, receiver, make_task,
                                           monkeypatch):
    receiver.script = [503]
    receiver.reply_headers = {"Retry-After": "600"}  # the retry is 10 min away
    task = make_task(payload={"url": receiver.url}, max_attempts=2)
    execute_task(runtime(), task.task_id)
    retry_at = runtime().store.get(task.task_id).next_run_at
    _, at = _at(f"retry-{task.task_id}")
    assert at == retry_at.replace(second=0, microsecond=0) - timedelta(minutes=1)


def test_unknown_precision_is_refused(monkeypatch):
    monkeypatch.setenv("PRECISION", "millisecond")
    with pytest.raises(ValueError):
        config.precision()


@pytest.mark.integration  # moto, through bench/precision_sim.py
def test_simulation_never_early_and_second_mode_p99_under_a_second(monkeypatch):
    monkeypatch.setattr(os, "environ", dict(os.environ))  # the simulation sets its own
    minute = precision_sim.simulate("minute", tasks=80, seed=3)
    second = precision_sim.simulate("second", tasks=80, seed=3)
    print(f"\nprecision simulation (80 tasks): minute {minute}\nsecond {second}")
    assert minute["early"] == 0 and second["early"] == 0
    assert second["p99_s"] < 1.0 and second["direct_invocations"] > 0
    assert minute["max_s"] > 5  # the firing window really was applied


def test_a_recheck_is_never_invoked_at_once_or_armed_early(aws, second_mode, make_task):
    # Otherwise a delivery finding the lease held would invoke one that finds it held...

    task = make_task(action="log", due_in=-1)
    lease_end = utcnow() + timedelta(seconds=100)
    runtime().trigger.arm_recheck(task, lease_end)
    assert second_mode == []
    name, at = _at(f"recheck-{task.task_id}")
    assert at == lease_end.replace(second=0, microsecond=0) + timedelta(minutes=1)


@pytest.mark.parametrize("offset,invoked", [(timedelta(seconds=119), True),
                                             (timedelta(minutes=3), False)],
                         ids=["its minute before has begun", "a minute early is ahead"])
def test_too_close_for_a_minute_early_is_invoked_at_once(api, second_mode, offset, invoked):
    # The service's and trigger's now is pinned, so which side of the line the task falls
    # on does not depend on the second the test runs at.
    from chalicelib import wiring

    now = utcnow()
    run_at = now.replace(second=0, microsecond=0) + offset
    with wiring.overridden(clock=Clock(now=lambda: now)):
        task_id = _post(api, run_at)
    armed = [s for s in schedules_in_group() if task_id in s["Name"]]
    if invoked:
        assert second_mode == [{"task_id": task_id}] and armed == []
    else:
        assert second_mode == []
        _, at = _at(task_id)
        assert at == run_at.replace(second=0) - timedelta(minutes=1)
