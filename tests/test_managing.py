"""Managing tasks through the API on moto (DynamoDB, EventBridge Scheduler and rules): what
each change leaves armed, and what a resume, a run limit or a window makes of the runs."""
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from chalicelib import config, wiring
from chalicelib.models import Clock, parse_iso, utcnow
from tests.conftest import MovingClock
from tests.test_api import rule_names, schedules_in_group


def at(moment):
    """The app's clock fixed at `moment` for the requests and runs inside the block."""
    return wiring.overridden(clock=Clock(now=lambda: moment, sleep=lambda seconds: None))


def own(task_id):
    """The task's schedules: name -> (expression, start, end)."""
    client = boto3.client("scheduler")
    found = {}
    for listed in schedules_in_group():
        if task_id in listed["Name"]:
            detail = client.get_schedule(Name=listed["Name"],
                                         GroupName=config.scheduler_group())
            found[listed["Name"]] = (detail["ScheduleExpression"], detail.get("StartDate"),
                                     detail.get("EndDate"))
    return found


def webhook(receiver, run_at, **extra):
    return {"action": "webhook", "payload": {"url": receiver.url, "data": {"n": 1}},
            "run_at": run_at, **extra}


def in_minutes(minutes):
    return (utcnow() + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_patch_updates_the_one_schedule_to_the_new_time(api, receiver):
    task_id = api.post("/schedule-task", webhook(receiver, "cron(0 9 * * ? *)")).json["task_id"]
    assert own(task_id) == {f"task-{task_id}": ("cron(0 9 * * ? *)", None, None)}
    changed = api.patch(f"/tasks/{task_id}", {"run_at": "cron(30 18 ? * MON-FRI *)"},
                        headers={"If-Match": '"1"'})
    assert changed.status_code == 200 and changed.headers["ETag"] == '"2"'
    assert own(task_id) == {f"task-{task_id}": ("cron(30 18 ? * MON-FRI *)", None, None)}
    stale = api.patch(f"/tasks/{task_id}", {"name": "x"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412 and stale.json["field"] == "If-Match"
    one_time = in_minutes(90)
    moved = api.patch(f"/tasks/{task_id}", {"run_at": one_time})
    assert moved.json["next_run_at"] == one_time
    assert own(task_id) == {f"task-{task_id}": (f"at({one_time[:-1]})", None, None)}


def test_start_and_end_bound_upcoming_and_the_schedule(api, receiver):
    start, end = in_minutes(24 * 60), in_minutes(4 * 24 * 60 + 1)
    body = webhook(receiver, "cron(0 12 * * ? *)", start_at=start, end_at=end)
    task_id = api.post("/schedule-task", body).json["task_id"]
    shown = api.get(f"/tasks/{task_id}").json
    upcoming = [parse_iso(moment) for moment in shown["upcoming"]]
    assert all(parse_iso(start) <= moment <= parse_iso(end) for moment in upcoming)
    assert 3 <= len(upcoming) <= 4
    [(expression, starts, ends)] = own(task_id).values()
    assert starts.astimezone(timezone.utc) == parse_iso(start)
    assert ends.astimezone(timezone.utc) == parse_iso(end)


def test_pause_removes_the_schedule_and_until_leaves_only_its_end(api, receiver):
    task_id = api.post("/schedule-task", webhook(receiver, "rate(5 minutes)")).json["task_id"]
    paused = api.post(f"/tasks/{task_id}/pause")
    assert paused.status_code == 200 and paused.json["status"] == "paused"
    assert own(task_id) == {}
    assert api.post(f"/tasks/{task_id}/pause").status_code == 409
    api.post(f"/tasks/{task_id}/resume")
    until = in_minutes(30)
    api.post(f"/tasks/{task_id}/pause", {"until": until})
    wake = parse_iso(until).strftime("%Y%m%d%H%M%S")
    assert own(task_id) == {f"wake-{task_id}-{wake}": (f"at({until[:-1]})", None, None)}
    assert api.delete(f"/tasks/{task_id}").json["status"] == "cancelled"
    assert own(task_id) == {}


@pytest.mark.parametrize("catch_up, runs, skipped", [("latest", 1, 2), ("none", 0, 3),
                                                     ("all", 3, 0)])
def test_resume_after_missed_firings_follows_catch_up(api, receiver, catch_up, runs,
                                                       skipped):
    created = utcnow()
    task_id = api.post("/schedule-task", webhook(receiver, "rate(5 minutes)",
                                                 catch_up=catch_up)).json["task_id"]
    api.post(f"/tasks/{task_id}/pause")
    later = created + timedelta(minutes=17)
    with at(later):
        resumed = api.post(f"/tasks/{task_id}/resume").json
        assert resumed["status"] == "scheduled"
        for _ in range(5):
            if api.invoke(task_id)["outcome"] != "ran":
                break
    assert len(receiver.requests) == runs
    keys = {request["headers"]["idempotency-key"] for request in receiver.requests}
    assert len(keys) == runs  # each firing its own key
    outcomes = [run["outcome"] for run in api.get(f"/tasks/{task_id}").json["runs"]]
    assert outcomes.count("skipped") == skipped and outcomes.count("succeeded") == runs
    task = api.get(f"/tasks/{task_id}").json
    assert parse_iso(task["next_run_at"]) > later  # the next firing, still armed
    schedules = own(task_id)
    expression, starts, _ = schedules.pop(f"task-{task_id}")
    assert expression == "rate(5 minutes)"
    assert starts.astimezone(timezone.utc) == parse_iso(task["next_run_at"])  # its phase
    # Besides, at most the one-time schedule that fired the caught-up run (EventBridge
    # deletes it once fired; moto fires nothing).
    assert all(parse_iso(expression[3:-1] + "Z") <= later + timedelta(seconds=10)
               for expression, _, _ in schedules.values())


def test_max_runs_ends_the_task_completed_and_removes_its_schedule(api, receiver):
    created = utcnow()
    task_id = api.post("/schedule-task", webhook(receiver, "rate(5 minutes)",
                                                 max_runs=2)).json["task_id"]
    for minutes in (5, 10):
        with at(created + timedelta(minutes=minutes, seconds=2)):
            assert api.invoke(task_id)["outcome"] == "ran"
    task = api.get(f"/tasks/{task_id}").json
    assert (task["status"], task["runs_done"], task["upcoming"]) == ("completed", 2, [])
    assert own(task_id) == {}


def test_run_now_runs_once_with_its_own_key_and_keeps_the_schedule(api, receiver):
    task_id = api.post("/schedule-task", webhook(receiver, "cron(0 9 * * ? *)")).json["task_id"]
    answer = api.post(f"/tasks/{task_id}/run")
    assert answer.status_code == 202 and answer.headers["ETag"] == '"2"'
    assert f"task-{task_id}" in own(task_id) and len(own(task_id)) == 2  # + the extra run's
    assert api.invoke(task_id)["outcome"] == "ran"
    [request] = receiver.requests
    assert ":run-" in request["headers"]["idempotency-key"]
    task = api.get(f"/tasks/{task_id}").json
    assert task["status"] == "scheduled" and task["runs_done"] == 1
    assert task["next_run_at"].endswith("T09:00:00Z")


def test_a_window_arms_each_firing_at_its_own_moment(api, receiver):
    body = webhook(receiver, "cron(0 9 * * ? *)", window_minutes=30)
    task_id = api.post("/schedule-task", body).json["task_id"]
    task = api.get(f"/tasks/{task_id}").json
    moment = parse_iso(task["next_run_at"])
    assert moment.hour == 9 and moment.minute < 30
    [(name, (expression, _, _))] = own(task_id).items()
    assert name.startswith(f"fire-{task_id}-")
    assert expression == f"at({moment.strftime('%Y-%m-%dT%H:%M:%S')})"


def test_rules_mode_patch_moves_the_rule_and_pause_removes_it(rules_mode, api, receiver):
    task_id = api.post("/schedule-task", webhook(receiver, in_minutes(60))).json["task_id"]
    later = utcnow() + timedelta(hours=3)
    api.patch(f"/tasks/{task_id}", {"run_at": later.strftime("%Y-%m-%dT%H:%M:00Z")})
    events = boto3.client("events")
    [name] = rule_names()
    assert events.describe_rule(Name=name)["ScheduleExpression"] == (
        f"cron({later.minute} {later.hour} {later.day} {later.month} ? {later.year})")
    api.post(f"/tasks/{task_id}/pause")
    assert rule_names() == []
    until = datetime.now(timezone.utc).replace(second=0, microsecond=0) + timedelta(hours=1)
    api.post(f"/tasks/{task_id}/resume")
    api.post(f"/tasks/{task_id}/pause", {"until": until.strftime("%Y-%m-%dT%H:%M:%SZ")})
    [name] = rule_names()
    assert events.describe_rule(Name=name)["ScheduleExpression"] == (
        f"cron({until.minute} {until.hour} {until.day} {until.month} ? {until.year})")


def test_a_wake_within_a_minute_of_the_pause_end_waits_for_it(api, receiver):
    task_id = api.post("/schedule-task", webhook(receiver, in_minutes(120))).json["task_id"]
    until = parse_iso(in_minutes(10))
    api.post(f"/tasks/{task_id}/pause", {"until": until.strftime("%Y-%m-%dT%H:%M:%SZ")})
    far = MovingClock(until - timedelta(minutes=5))
    with wiring.overridden(clock=Clock(now=far.now, sleep=far.sleep)):
        assert api.invoke(task_id)["outcome"] == "skipped"  # far early: left to its trigger
    assert far.moment == until - timedelta(minutes=5)
    assert [name.split("-")[0] for name in own(task_id)] == ["wake"]
    near = MovingClock(until - timedelta(seconds=40))
    with wiring.overridden(clock=Clock(now=near.now, sleep=near.sleep)):
        # It waits out the 40 s, resumes the task, and leaves it for its own time.
        assert api.invoke(task_id)["outcome"] == "early"
    assert near.moment >= until
    task = api.get(f"/tasks/{task_id}").json
    assert task["status"] == "scheduled" and task["paused_until"] is None
    assert list(own(task_id)) == [f"task-{task_id}"]
    assert receiver.requests == []


def test_a_past_start_at_is_accepted_and_a_rate_keeps_its_phase_across_pause(api, receiver):
    yesterday = (utcnow() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = webhook(receiver, "cron(0 12 * * ? *)", start_at=yesterday)
    created = api.post("/schedule-task", body)
    assert created.status_code == 201, created.json
    [(_, starts, _)] = own(created.json["task_id"]).values()
    assert starts is None  # EventBridge refuses a StartDate more than 5 minutes past
    task_id = api.post("/schedule-task", webhook(receiver, "rate(10 minutes)",
                                                 start_at=yesterday)).json["task_id"]
    assert api.post(f"/tasks/{task_id}/pause").status_code == 200
    assert api.post(f"/tasks/{task_id}/resume").status_code == 200
    [(expression, starts, _)] = own(task_id).values()
    expected = parse_iso(api.get(f"/tasks/{task_id}").json["next_run_at"])
    # Made again at resume, the rate starts at the task's own next firing (its phase).
    assert expression == "rate(10 minutes)"
    assert starts.astimezone(timezone.utc) == expected


def test_catch_up_all_arms_each_missed_firing_beside_the_standing_schedule(api, receiver):
    created = utcnow()
    task_id = api.post("/schedule-task", webhook(receiver, "rate(5 minutes)",
                                                 catch_up="all")).json["task_id"]
    api.post(f"/tasks/{task_id}/pause")
    later = created + timedelta(minutes=17)
    with at(later):
        api.post(f"/tasks/{task_id}/resume")
        assert api.invoke(task_id)["outcome"] == "ran"  # the oldest missed firing
    # The next missed firing is due now: a one-time schedule fires it, not the rate's next.
    one_offs = [name for name in own(task_id) if name.startswith("retry-")]
    assert one_offs and api.get(f"/tasks/{task_id}").json["next_run_at"] < later.strftime(
        "%Y-%m-%dT%H:%M:%SZ")
