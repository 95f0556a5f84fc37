"""chalicelib.flowcontrol through the executor, on every store adapter: a task over its key's
limits is queued with its attempt given back, in priority order, and woken by the run that
makes room; then the same on moto through the app's Lambda handler."""
import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

import pytest

from chalicelib import flowcontrol, service
from chalicelib.errors import FlowKeyNotFound
from chalicelib.executor import DELAYED, RAN, execute_task
from chalicelib.models import Clock
from chalicelib.store import LEASE_SECONDS
from chalicelib.triggers import Trigger
from chalicelib.wiring import Runtime
from tests.conftest import MovingClock
from tests.test_api import schedules_in_group
from tests.test_managing import at

NOW = datetime(2030, 5, 19, 9, 0, tzinfo=timezone.utc)
DUE = NOW + timedelta(minutes=1)


class Armed(Trigger):
    """Records each task's armed wake time (what the local trigger or a schedule holds)."""

    def __init__(self, clock):
        super().__init__(clock)
        self.at = {}

    def arm(self, task):
        self.at[task.task_id] = task.wake_at

    def disarm(self, task):
        self.at.pop(task.task_id, None)


@dataclass(frozen=True)
class Moved(Runtime):
    """A runtime whose clock a test moves (`moving.moment`)."""

    moving: Optional[MovingClock] = None


@pytest.fixture
def rt(store):
    clock = MovingClock(NOW)
    clock_port = Clock(now=clock.now, sleep=clock.sleep)
    return Moved(store, Armed(clock_port), clock_port, moving=clock)


def new_task(rt, priority=5, catch_up="latest", **flow_control):
    body = {"action": "log", "payload": {"message": "hi"}, "run_at": "2030-05-19T09:01:00Z",
            "priority": priority, "catch_up": catch_up}
    if flow_control:
        body["flow_control"] = {"key": "billing-api", **flow_control}
    created, _ = service.schedule_task(rt, body)
    return created["task_id"]


def hold_a_slot(rt, task_id, run_id="held"):
    """A run of the task that has started and not ended (it holds one of the key's slots)."""
    claimed = rt.store.claim(task_id, run_id, rt.clock.now())
    assert flowcontrol.admit(rt, claimed, run_id, rt.clock.now()).granted
    return claimed


def test_a_task_over_parallelism_waits_without_an_attempt_and_runs_when_a_slot_frees(rt):
    first, second = new_task(rt, parallelism=1), new_task(rt, parallelism=1)
    rt.moving.moment = DUE
    running = hold_a_slot(rt, first)
    assert execute_task(rt, second).outcome == DELAYED
    queued = rt.store.get(second)
    assert (queued.status, queued.attempts, queued.runs) == ("scheduled", 0, [])
    assert queued.flow_delayed_at == DUE and queued.to_api()["flow_delayed_since"]
    assert queued.wake_at == DUE + flowcontrol.RECHECK  # its own look, should no run wake it
    assert flowcontrol.status(rt, "billing-api", DUE) == {
        "key": "billing-api", "rate": None, "period": "second", "parallelism": 1,
        "running": 1, "waiting": 1}
    rt.moving.moment = DUE + timedelta(seconds=3)
    flowcontrol.leave(rt, running, "held", rt.clock.now())  # the first run ends
    woken = rt.store.get(second)
    assert woken.next_run_at == DUE + timedelta(seconds=3) and woken.flow_waiting is None
    assert rt.trigger.at[second] == woken.next_run_at
    assert rt.store.count_waiters("billing-api") == 0
    ran = execute_task(rt, second)
    assert ran.outcome == RAN and ran.run.attempt == 1
    done = rt.store.get(second)
    assert done.status == "completed" and done.flow_delayed_at is None
    assert flowcontrol.status(rt, "billing-api", rt.clock.now())["running"] == 0


def test_waiting_tasks_start_highest_priority_first_then_oldest(rt):
    first = new_task(rt, parallelism=1)
    low, high, middle = (new_task(rt, priority, parallelism=1) for priority in (2, 8, 5))
    rt.moving.moment = DUE
    running = hold_a_slot(rt, first)
    for task_id in (low, high, middle):
        assert execute_task(rt, task_id).outcome == DELAYED
    order = []
    for _ in range(3):
        flowcontrol.leave(rt, running, running.run_id, rt.clock.now())
        [woken] = [task_id for task_id in (low, high, middle)
                   if task_id not in order and rt.store.get(task_id).flow_waiting is None]
        order.append(woken)
        running = rt.store.claim(woken, f"run-{woken}", rt.clock.now())
        assert flowcontrol.admit(rt, running, running.run_id, rt.clock.now()).granted
    assert order == [high, middle, low]


def test_under_a_rate_queued_tasks_are_woken_each_at_its_own_start(rt):
    tasks = [new_task(rt, rate=2) for _ in range(4)]
    newcomer = new_task(rt, rate=2)
    rt.moving.moment = DUE
    assert execute_task(rt, tasks[0]).outcome == RAN
    for task_id in tasks[1:]:
        assert execute_task(rt, task_id).outcome == DELAYED
    # Each queued task was woken as it queued (the key had starts to give), at the next
    # start the rate allows: 0.5 s apart, in queue order.
    woken = [rt.store.get(task_id) for task_id in tasks[1:]]
    assert [task.next_run_at for task in woken] == [
        DUE + timedelta(milliseconds=500 * n) for n in (1, 2, 3)]
    assert all(task.flow_waiting is None for task in woken)
    assert [rt.trigger.at[task_id] for task_id in tasks[1:]] == [t.next_run_at for t in woken]
    for task in woken:
        rt.moving.moment = task.next_run_at
        if task is woken[0]:  # a newcomer past the first start: it queues behind them
            assert execute_task(rt, newcomer).outcome == DELAYED
        assert execute_task(rt, task.task_id).outcome == RAN
    assert all(rt.store.get(task_id).status == "completed" for task_id in tasks)
    last = rt.store.get(newcomer)
    assert last.next_run_at == DUE + timedelta(seconds=2) and last.flow_waiting is None
    rt.moving.moment = last.next_run_at
    assert execute_task(rt, newcomer).outcome == RAN


def test_a_task_without_a_key_or_with_another_key_runs_while_a_key_is_full(rt):
    first, second = new_task(rt, parallelism=1), new_task(rt, parallelism=1)
    plain = new_task(rt)
    created, _ = service.schedule_task(rt, {
        "action": "log", "payload": {"message": "hi"}, "run_at": "2030-05-19T09:01:00Z",
        "flow_control": {"key": "other-api", "parallelism": 1}})
    rt.moving.moment = DUE
    hold_a_slot(rt, first)
    assert execute_task(rt, second).outcome == DELAYED
    assert execute_task(rt, plain).outcome == RAN
    assert execute_task(rt, created["task_id"]).outcome == RAN


def test_a_firing_delayed_past_the_missed_grace_still_runs_under_catch_up_none(rt):
    first, second = new_task(rt, parallelism=1), new_task(rt, catch_up="none", parallelism=1)
    rt.moving.moment = DUE
    running = hold_a_slot(rt, first)
    assert execute_task(rt, second).outcome == DELAYED
    rt.moving.moment = DUE + timedelta(minutes=10)  # the first run took 10 minutes
    flowcontrol.leave(rt, running, "held", rt.clock.now())
    ran = execute_task(rt, second)
    assert ran.outcome == RAN and ran.run.outcome == "succeeded"


def test_a_client_change_takes_a_queued_task_out_of_the_queue(rt):
    _, second, _ = queued_behind_a_run(rt)
    renamed = service.update_task(rt, second, b'{"name": "still queued"}')
    assert renamed["flow_delayed_since"] is not None
    assert rt.store.count_waiters("billing-api") == 1
    service.cancel_task(rt, second)
    assert rt.store.count_waiters("billing-api") == 0
    assert rt.store.get(second).flow_waiting is None


def test_the_latest_task_that_sets_a_keys_limits_wins(rt):
    first = new_task(rt, parallelism=2)
    new_task(rt, rate=10, period="minute")
    assert service.flow_control_status(rt, "billing-api")["rate"] == 10
    assert service.flow_control_status(rt, "billing-api")["parallelism"] is None
    service.update_task(rt, first, b'{"flow_control": {"key": "billing-api", "parallelism": 3}}')
    shown = service.flow_control_status(rt, "billing-api")
    assert (shown["rate"], shown["parallelism"], shown["waiting"]) == (None, 3, 0)


@pytest.mark.parametrize("key", ["never-used", "", "k" * 129])
def test_a_key_no_task_uses_is_not_found(rt, key):
    with pytest.raises(FlowKeyNotFound):
        service.flow_control_status(rt, key)


def test_a_lost_wake_is_made_good_by_the_queued_tasks_own_look_again(rt):
    first, second = new_task(rt, parallelism=1), new_task(rt, parallelism=1)
    rt.moving.moment = DUE
    running = hold_a_slot(rt, first)
    execute_task(rt, second)
    # The first run dies holding its slot: nobody frees it, its lease ends.
    queued = rt.store.get(second)
    rt.moving.moment = queued.wake_at
    assert rt.moving.moment > running.lease_until
    ran = execute_task(rt, second)
    assert ran.outcome == RAN and ran.run.attempt == 1


# ---------------------------------------------------------------- on moto, through the app

def test_on_aws_a_second_run_of_a_full_key_waits_and_runs_after_the_first(api, receiver):
    due = (datetime.now(timezone.utc) + timedelta(minutes=5)).replace(microsecond=0)
    body = {"action": "webhook", "payload": {"url": receiver.url, "data": {}},
            "run_at": due.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "flow_control": {"key": "billing-api", "parallelism": 1}}
    first = api.post("/schedule-task", body).json["task_id"]
    second = api.post("/schedule-task", body).json["task_id"]
    with at(due):
        _second_waits_for_the_first(api, receiver, first, second)


def _second_waits_for_the_first(api, receiver, first, second):
    seen = {}

    def while_the_first_runs(request):
        if "second" not in seen:
            seen["second"] = api.invoke(second)
            seen["during"] = api.get("/flow-control/billing-api").json

    receiver.on_request = while_the_first_runs
    assert api.invoke(first)["outcome"] == "ran"
    assert seen["second"]["outcome"] == "delayed" and len(receiver.requests) == 1
    assert seen["during"] == {"key": "billing-api", "rate": None, "period": "second",
                              "parallelism": 1, "running": 1, "waiting": 1}
    woken = api.get(f"/tasks/{second}").json
    assert woken["attempts"] == 0 and woken["runs"] == [] and woken["status"] == "scheduled"
    assert woken["flow_delayed_since"] is not None
    armed = [listed["Name"] for listed in schedules_in_group()]
    assert any(second in name for name in armed)  # armed by the first's end
    assert api.invoke(second)["outcome"] == "ran"
    assert len(receiver.requests) == 2
    done = api.get(f"/tasks/{second}").json
    assert done["status"] == "completed" and done["runs"][0]["attempt"] == 1
    assert api.get("/flow-control/billing-api").json["waiting"] == 0
    assert api.get("/flow-control/nobody").status_code == 404


def test_the_room_a_run_made_is_kept_for_the_task_it_woke(rt):
    first, second, newcomer, late = (new_task(rt, parallelism=1) for _ in range(4))
    rt.moving.moment = DUE
    running = hold_a_slot(rt, first)
    execute_task(rt, second)
    entry = rt.store.get(second).flow_waiting
    flowcontrol.leave(rt, running, "held", rt.clock.now())
    claimed = rt.store.claim(newcomer, "newcomer", rt.clock.now())
    assert not flowcontrol.admit(rt, claimed, "newcomer", rt.clock.now()).granted
    # A woken task that comes after its reservation ended may find its room taken: it
    # waits again, in its old place.
    rt.moving.moment = DUE + flowcontrol.RESERVATION + timedelta(seconds=1)
    hold_a_slot(rt, late)
    assert execute_task(rt, second).outcome == DELAYED
    again = rt.store.get(second).flow_waiting
    assert again != entry and again.rsplit("#", 1)[0] == entry.rsplit("#", 1)[0]


def test_each_delay_is_a_flow_delayed_metric_and_log_event(rt, monkeypatch, capsys, caplog):
    monkeypatch.setenv("METRICS", "emf")
    first, second = new_task(rt, parallelism=1), new_task(rt, parallelism=1)
    rt.moving.moment = DUE
    hold_a_slot(rt, first)
    caplog.set_level("INFO", logger="task_scheduler")
    execute_task(rt, second)
    [line] = [json.loads(line) for line in capsys.readouterr().out.splitlines()
              if "FlowDelayed" in line]
    assert line["FlowDelayed"] == 1 and line["flow_key"] == "billing-api"
    assert line["_aws"]["CloudWatchMetrics"][0]["Metrics"] == [
        {"Name": "FlowDelayed", "Unit": "Count"}]
    [event] = [record.msg for record in caplog.records
               if isinstance(record.msg, dict) and record.msg.get("event") == "flow_delayed"]
    assert event["task_id"] == second and event["key"] == "billing-api"


def test_cancelling_a_woken_task_gives_its_slot_to_the_next(rt):
    first, woken, after = (new_task(rt, priority, parallelism=1) for priority in (5, 8, 5))
    rt.moving.moment = DUE
    running = hold_a_slot(rt, first)
    execute_task(rt, woken)
    execute_task(rt, after)
    flowcontrol.leave(rt, running, "held", rt.clock.now())  # wakes `woken`, slot kept
    assert rt.store.get(after).flow_waiting is not None
    service.cancel_task(rt, woken)
    nxt = rt.store.get(after)
    assert nxt.flow_waiting is None and nxt.next_run_at == DUE
    assert execute_task(rt, after).outcome == RAN


def queued_behind_a_run(rt):
    """Two tasks on a key with parallelism 1, due: the first's run holds the slot, the
    second is queued. (first, second, the first's claimed task)."""
    first, second = new_task(rt, parallelism=1), new_task(rt, parallelism=1)
    rt.moving.moment = DUE
    running = hold_a_slot(rt, first)
    assert execute_task(rt, second).outcome == DELAYED
    return first, second, running


def test_a_queued_task_looking_again_by_itself_keeps_one_entry(rt):
    first, second, _ = queued_behind_a_run(rt)
    rt.moving.moment = rt.store.get(second).wake_at  # its own look, the key still full
    hold_a_slot(rt, first, "held again")  # the first's run was taken over, still running
    assert execute_task(rt, second).outcome == DELAYED
    assert [task_id for _, task_id in rt.store.waiters("billing-api", 5)] == [second]


def test_a_run_that_died_frees_its_slot_for_its_own_task_at_once(rt):
    first, second = new_task(rt, parallelism=1), new_task(rt, parallelism=1)
    rt.moving.moment = DUE
    hold_a_slot(rt, first, "died")
    # Its lease ended and it is run again (recovered at a restart, or by the sweeper):
    # the slot of its dead run is its own, not another task's.
    rt.moving.moment = DUE + timedelta(seconds=LEASE_SECONDS + 1)
    assert execute_task(rt, first).outcome == RAN
    assert execute_task(rt, second).outcome == RAN


def test_removing_flow_control_from_a_queued_task_makes_it_due_at_once(rt):
    _, second, _ = queued_behind_a_run(rt)
    rt.moving.moment = DUE + timedelta(seconds=10)
    changed = service.update_task(rt, second, b'{"flow_control": null}')
    assert changed["next_run_at"] == "2030-05-19T09:01:10Z"
    assert changed["flow_delayed_since"] is None
    assert rt.store.count_waiters("billing-api") == 0
    assert execute_task(rt, second).outcome == RAN


def test_catch_up_none_skips_a_firing_missed_before_the_key_was_asked(rt):
    first, late = new_task(rt, parallelism=1), new_task(rt, catch_up="none", parallelism=1)
    rt.moving.moment = DUE
    hold_a_slot(rt, first)
    rt.moving.moment = DUE + timedelta(hours=1)  # found an hour late: missed, not delayed
    assert execute_task(rt, late).outcome == "skipped"
    assert rt.store.get(late).status == "completed"
    assert rt.store.count_waiters("billing-api") == 0
