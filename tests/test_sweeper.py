"""The daily sweeper runs what was missed, highest priority first, then earliest."""
import json
from datetime import timedelta

import boto3
from botocore.awsrequest import AWSResponse
import pytest

from chalicelib import aws as aws_clients, config, sweeper
from chalicelib.models import utcnow
from chalicelib.triggers import get_trigger
from chalicelib.store import get_store
from tests.test_store_dynamodb import QueryCounter


def test_sweeper_runs_due_tasks_by_priority_then_time(client, receiver, make_task,
                                                     monkeypatch):
    monkeypatch.setattr(sweeper, "RESERVE_MS", 0)  # chalice's test context has 3 s left
    def hook(label):
        return {"url": receiver.url, "data": {"label": label}}

    later = make_task(due_in=3600, payload=hook("not due"))
    mix = [(5, -300), (9, -60), (5, -30), (1, -600), (0, -5), (9, -900), (3, -120),
           (7, -45), (5, -600), (2, -1)]
    due = [make_task(due_in=due_in, priority=priority, payload=hook(f"p{priority} {due_in}"))
           for priority, due_in in mix]
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])
    summary = client.lambda_.invoke("daily_sweeper", event).payload
    labels = [json.loads(r["body"])["label"] for r in receiver.requests]
    expected = [f"p{p} {d}" for p, d in sorted(mix, key=lambda pd: (-pd[0], pd[1]))]
    assert labels == expected  # priority 9 first, earliest first within a priority
    assert summary["completed"] == 10
    for task in due:
        assert get_store().get(task.task_id).status == "completed"
    assert get_store().get(later.task_id).status == "scheduled"


def test_sweeper_reads_grow_with_due_work_not_table_size(aws, make_task, monkeypatch):
    # The next sweep a minute away: this measures the due pass alone (the re-arm pass
    # reads the tasks due before the next sweep, see the next tests).
    monkeypatch.setattr(sweeper, "next_sweep_after", lambda moment: moment + timedelta(minutes=1))
    for i in range(1000):
        make_task(due_in=3600 + i, action="log", payload={"message": "later"},
                  priority=i % 10)
    for i in range(5):
        make_task(due_in=-60, action="log", payload={"message": "due"}, priority=i)
    counter = QueryCounter()
    summary = sweeper.sweep()
    assert summary["completed"] == 5
    assert counter.scanned <= 5 + 2
    assert "Scan" not in counter.operations


def test_sweeper_stops_when_time_runs_out_and_leaves_the_rest(aws, make_task):
    tasks = [make_task(due_in=-60, action="log", payload={"message": "x"}) for _ in range(3)]
    budget = iter([200_000, 200_000, 1_000, 1_000])
    summary = sweeper.sweep(time_left_ms=lambda: next(budget))
    assert summary["completed"] == 2 and summary["deferred"] == 1
    statuses = sorted(get_store().get(t.task_id).status for t in tasks)
    assert statuses == ["completed", "completed", "scheduled"]


def _schedule_names():
    client = boto3.client("scheduler")
    return {s["Name"] for s in client.list_schedules(GroupName=config.scheduler_group())["Schedules"]}


@pytest.fixture
def next_sweep_in_a_day(monkeypatch):
    """Pin the next sweep 24 h ahead, whatever the time of day the suite runs at."""
    monkeypatch.setattr(sweeper, "next_sweep_after", lambda moment: moment + timedelta(days=1))


def test_sweeper_rearms_vanished_triggers_of_tasks_due_before_next_sweep(aws, make_task,
                                                                         next_sweep_in_a_day):
    soon = make_task(due_in=3600, action="log", payload={"message": "soon"})
    recurring = make_task(due_in=7200, action="log", payload={"message": "every day"},
                          run_at="cron(0 9 * * ? *)", schedule_kind="cron")
    far = make_task(due_in=3 * 86400, action="log", payload={"message": "later"})
    intact = make_task(due_in=1800, action="log", payload={"message": "armed"})
    get_trigger().arm(intact)
    assert _schedule_names() == {f"task-{intact.task_id}"}
    summary = sweeper.sweep()
    assert summary["rearmed"] == 2 and summary["checked"] == 3
    assert _schedule_names() == {f"task-{t.task_id}" for t in (soon, recurring, intact)}
    assert f"task-{far.task_id}" not in _schedule_names()  # beyond the next sweep
    assert "rearmed" not in sweeper.sweep()  # nothing missing the second time


def test_sweeper_rearms_rules_too(rules_mode, make_task, next_sweep_in_a_day):
    task = make_task(due_in=3600, action="log", payload={"message": "soon"})
    assert sweeper.sweep()["rearmed"] == 1
    events = boto3.client("events")
    [target] = events.list_targets_by_rule(Rule=f"{config.rule_prefix()}{task.task_id}")[
        "Targets"]
    assert json.loads(target["Input"]) == {"task_id": task.task_id}
    assert "rearmed" not in sweeper.sweep()


def test_deferred_sweep_invokes_itself_to_continue(aws, make_task):
    [make_task(due_in=-60, action="log", payload={"message": "x"}) for _ in range(3)]
    invoked = []

    def capture(params, **_):
        invoked.append(params)
        return None

    def short_circuit(**_):
        # Accepted, as Lambda answers an Event invocation; moto would need Docker to run it.
        return AWSResponse("https://lambda", 202, {}, None), {"StatusCode": 202}

    client = aws_clients.client("lambda")
    client.meta.events.register("before-parameter-build.lambda.Invoke", capture)
    client.meta.events.register("before-call.lambda.Invoke", short_circuit)
    arn = "arn:aws:lambda:us-east-1:123456789012:function:task-scheduler-dev-daily_sweeper"
    summary = sweeper.run_daily(time_left_ms=lambda: 1_000, function_arn=arn)
    assert summary["deferred"] == 1 and summary["continued"] is True
    [call] = invoked
    assert call["FunctionName"] == arn and call["InvocationType"] == "Event"
    event = json.loads(call["Payload"])
    assert event["detail"] == {"continuation": True} and event["resources"] == [arn]
    follow_up = sweeper.run_daily(time_left_ms=lambda: 900_000, function_arn=arn)
    assert follow_up["completed"] == 3 and "continued" not in follow_up


def test_next_sweep_is_nine_utc():
    moment = utcnow().replace(hour=9, minute=0, second=0, microsecond=0)
    assert sweeper.next_sweep_after(moment) == moment + timedelta(days=1)
    assert sweeper.next_sweep_after(moment - timedelta(seconds=1)) == moment


def test_continuation_event_is_accepted_by_the_sweeper_handler(client, make_task):
    make_task(due_in=-60, action="log", payload={"message": "x"})
    arn = "arn:aws:lambda:us-east-1:123456789012:function:task-scheduler-dev-daily_sweeper"
    summary = client.lambda_.invoke("daily_sweeper", sweeper.continuation_event(arn)).payload
    assert summary["event"] == "swept"


def test_one_task_failing_to_run_does_not_stop_the_sweep(aws, make_task, monkeypatch):
    from botocore.exceptions import ClientError

    from chalicelib import executor

    tasks = [make_task(due_in=-60, action="log", payload={"message": str(i)}, priority=9 - i)
             for i in range(3)]
    real = executor.execute_task

    def flaky(task_id, clock=None, run_prefix=""):
        if task_id == tasks[0].task_id:
            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}},
                              "UpdateItem")
        return real(task_id, clock, run_prefix)

    monkeypatch.setattr(sweeper, "execute_task", flaky)
    summary = sweeper.sweep()
    assert summary["error"] == 1 and summary["completed"] == 2
