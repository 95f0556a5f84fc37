"""The daily sweeper runs what was missed, highest priority first, then earliest."""
import json
from dataclasses import replace
from datetime import timedelta

import boto3
from botocore.awsrequest import AWSResponse
import pytest

from chalicelib import aws as aws_clients, config, sweeper
from chalicelib.models import Clock, utcnow
from tests.conftest import runtime
from tests.test_store_dynamodb import QueryCounter


def test_sweeper_runs_due_tasks_by_priority_then_time(memory, receiver, make_task):
    def hook(label):
        return {"url": receiver.url, "data": {"label": label}}

    later = make_task(due_in=3600, payload=hook("not due"))
    mix = [(5, -300), (9, -60), (5, -30), (1, -600), (0, -5), (9, -900), (3, -120),
           (7, -45), (5, -600), (2, -1)]
    due = [make_task(due_in=due_in, priority=priority, payload=hook(f"p{priority} {due_in}"))
           for priority, due_in in mix]
    summary = sweeper.sweep(runtime(), time_left_ms=lambda: 900_000)
    labels = [json.loads(r["body"])["label"] for r in receiver.requests]
    expected = [f"p{p} {d}" for p, d in sorted(mix, key=lambda pd: (-pd[0], pd[1]))]
    assert labels == expected  # priority 9 first, earliest first within a priority
    assert summary["completed"] == 10
    for task in due:
        assert runtime().store.get(task.task_id).status == "completed"
    assert runtime().store.get(later.task_id).status == "scheduled"


# A task runs in the sweeper only while its own worst case fits: a log task needs the
# run's writes (2 s), a webhook its timeout + 5 s deadline margin + 2 s.
BUDGETS = [("3 s", 3_000, {"log"}, {"webhook 10 s", "webhook 60 s"}),
           ("30 s", 30_000, {"log", "webhook 10 s"}, {"webhook 60 s"}),
           ("900 s", 900_000, {"log", "webhook 10 s", "webhook 60 s"}, set())]


@pytest.mark.parametrize("left_ms,ran,handed", [b[1:] for b in BUDGETS], ids=[b[0] for b in BUDGETS])
def test_each_task_runs_when_its_own_worst_case_fits_and_is_handed_off_otherwise(
        memory, receiver, make_task, left_ms, ran, handed):
    tasks = {"log": make_task(due_in=-60, action="log", payload={"message": "x"}, priority=1),
             "webhook 10 s": make_task(due_in=-60, payload={"url": receiver.url, "timeout": 10},
                                       priority=9),
             "webhook 60 s": make_task(due_in=-60, payload={"url": receiver.url, "timeout": 60},
                                       priority=5)}
    given = []
    summary = sweeper.sweep(runtime(), time_left_ms=lambda: left_ms, hand_off=given.append)
    statuses = {name: runtime().store.get(task.task_id).status for name, task in tasks.items()}
    assert {name for name, status in statuses.items() if status == "completed"} == ran
    assert {t.task_id for t in given} == {tasks[name].task_id for name in handed}
    assert summary.get("handed_off", 0) == len(handed) and "deferred" not in summary


def test_a_chalice_test_invocation_sweeps_what_fits_and_hands_off_the_rest(
        client, executor_function, receiver, make_task):
    # chalice.test's context has 3 s left, as many users' tests have.
    log = make_task(due_in=-60, action="log", payload={"message": "x"})
    webhook = make_task(due_in=-60, payload={"url": receiver.url})
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])
    summary = client.lambda_.invoke("daily_sweeper", event).payload
    assert summary["completed"] == 1 and summary["handed_off"] == 1
    assert runtime().store.get(log.task_id).status == "completed"
    assert executor_function == [{"task_id": webhook.task_id}]  # the executor runs it


def test_without_a_hand_off_a_task_that_does_not_fit_waits_and_smaller_ones_still_run(
        memory, receiver, make_task):
    big = make_task(due_in=-60, payload={"url": receiver.url, "timeout": 60}, priority=9)
    small = make_task(due_in=-60, action="log", payload={"message": "x"}, priority=1)
    summary = sweeper.sweep(runtime(), time_left_ms=lambda: 30_000)
    assert summary["deferred"] == 1 and summary["completed"] == 1
    assert runtime().store.get(big.task_id).status == "scheduled"
    assert runtime().store.get(small.task_id).status == "completed"


def test_sweeper_reads_grow_with_due_work_not_table_size(aws, make_task):
    # Re-arming only what is due within a minute: this measures the due pass alone (the
    # re-arm pass reads the tasks due before the next sweep, see the next tests).
    for i in range(1000):
        make_task(due_in=3600 + i, action="log", payload={"message": "later"},
                  priority=i % 10)
    for i in range(5):
        make_task(due_in=-60, action="log", payload={"message": "due"}, priority=i)
    counter = QueryCounter()
    summary = sweeper.sweep(runtime(), rearm_until=utcnow() + timedelta(minutes=1))
    assert summary["completed"] == 5
    assert 5 <= counter.scanned <= 5 + 2  # DynamoDB's reads: the due items, not the table
    assert "Scan" not in counter.operations


def test_sweeper_stops_when_time_runs_out_and_leaves_the_rest(memory, make_task):
    tasks = [make_task(due_in=-60, action="log", payload={"message": "x"}) for _ in range(3)]
    budget = iter([200_000, 200_000, 500, 500])
    summary = sweeper.sweep(runtime(), time_left_ms=lambda: next(budget), hand_off=lambda task: None)
    assert summary["completed"] == 2 and summary["deferred"] == 1
    statuses = sorted(runtime().store.get(t.task_id).status for t in tasks)
    assert statuses == ["completed", "completed", "scheduled"]


def _schedule_names():
    client = boto3.client("scheduler")
    return {s["Name"] for s in client.list_schedules(GroupName=config.scheduler_group())["Schedules"]}


def a_day_ahead():
    """The next sweep's distance pinned at 24 h, whatever the time of day the suite runs at."""
    return utcnow() + timedelta(days=1)


def test_sweeper_rearms_vanished_triggers_of_tasks_due_before_next_sweep(aws, make_task):
    soon = make_task(due_in=3600, action="log", payload={"message": "soon"})
    recurring = make_task(due_in=7200, action="log", payload={"message": "every day"},
                          run_at="cron(0 9 * * ? *)", schedule_kind="cron")
    far = make_task(due_in=3 * 86400, action="log", payload={"message": "later"})
    intact = make_task(due_in=1800, action="log", payload={"message": "armed"})
    runtime().trigger.arm(intact)
    assert _schedule_names() == {f"task-{intact.task_id}"}
    summary = sweeper.sweep(runtime(), rearm_until=a_day_ahead())
    assert summary["rearmed"] == 2 and summary["checked"] == 3
    assert _schedule_names() == {f"task-{t.task_id}" for t in (soon, recurring, intact)}
    assert f"task-{far.task_id}" not in _schedule_names()  # beyond the next sweep
    assert "rearmed" not in sweeper.sweep(runtime(), rearm_until=a_day_ahead())  # all there


def test_sweeper_rearms_rules_too(rules_mode, make_task):
    task = make_task(due_in=3600, action="log", payload={"message": "soon"})
    assert sweeper.sweep(runtime(), rearm_until=a_day_ahead())["rearmed"] == 1
    events = boto3.client("events")
    [target] = events.list_targets_by_rule(Rule=f"{config.rule_prefix()}{task.task_id}")[
        "Targets"]
    assert json.loads(target["Input"]) == {"task_id": task.task_id}
    assert "rearmed" not in sweeper.sweep(runtime(), rearm_until=a_day_ahead())


@pytest.fixture
def lambda_invokes(aws):
    """The Invoke calls made, each accepted as Lambda accepts an Event invocation (moto
    would need Docker to run it)."""
    invoked = []

    def capture(params, **_):
        invoked.append(params)
        return None

    def short_circuit(**_):
        return AWSResponse("https://lambda", 202, {}, None), {"StatusCode": 202}

    client = aws_clients.client("lambda")
    client.meta.events.register("before-parameter-build.lambda.Invoke", capture)
    client.meta.events.register("before-call.lambda.Invoke", short_circuit)
    return invoked


SWEEPER_ARN = "arn:aws:lambda:us-east-1:123456789012:function:task-scheduler-dev-daily_sweeper"


def _countdown(*values):
    """A context's time left: the given values, then the last one forever."""
    values = list(values)
    return lambda: values.pop(0) if len(values) > 1 else values[0]


def test_deferred_sweep_invokes_itself_to_continue(lambda_invokes, make_task):
    [make_task(due_in=-60, action="log", payload={"message": "x"}) for _ in range(3)]
    summary = sweeper.run_daily(runtime(), time_left_ms=_countdown(200_000, 500), function_arn=SWEEPER_ARN)
    assert summary["completed"] == 1 and summary["deferred"] == 1 and summary["continued"]
    [call] = lambda_invokes
    assert call["FunctionName"] == SWEEPER_ARN and call["InvocationType"] == "Event"
    event = json.loads(call["Payload"])
    assert event["detail"] == {"continuation": 1} and event["resources"] == [SWEEPER_ARN]
    follow_up = sweeper.run_daily(runtime(), time_left_ms=lambda: 900_000, function_arn=SWEEPER_ARN,
                                  depth=sweeper.continuation_depth(event["detail"]))
    assert follow_up["completed"] == 2 and "continued" not in follow_up


def test_an_invocation_that_ran_nothing_never_continues(lambda_invokes, make_task, caplog):
    [make_task(due_in=-60, action="log", payload={"message": "x"}) for _ in range(3)]
    summary = sweeper.run_daily(runtime(), time_left_ms=lambda: 500, function_arn=SWEEPER_ARN)
    assert summary["deferred"] == 1 and "continued" not in summary
    assert lambda_invokes == []
    assert any(isinstance(r.msg, dict) and r.msg.get("event") == "sweep_stuck"
               and r.levelname == "ERROR" for r in caplog.records)


def test_a_short_timeout_sweeps_everything_in_a_bounded_number_of_invocations(
        lambda_invokes, receiver, make_task):
    # A stage whose sweeper has 29 s: each invocation runs what fits, hands off what does
    # not, and the chain of continuations ends.
    for i in range(25):
        make_task(due_in=-60, action="log", payload={"message": str(i)}, priority=i % 10)
    for i in range(5):
        make_task(due_in=-60, payload={"url": receiver.url, "timeout": 30})
    invocations, depth = 0, 0
    while True:
        invocations += 1
        calls = iter([29_000 - 1_000 * i for i in range(29)])
        summary = sweeper.run_daily(runtime(), time_left_ms=lambda: max(next(calls, 0), 0),
                                    function_arn=SWEEPER_ARN, depth=depth)
        if not summary.get("continued"):
            break
        depth += 1
        assert invocations < 10
    # Each webhook went to the executor (moto does not run it, so a continuation may hand
    # it over again: the executor's claim lets one run through); every log task ran here.
    handed = {json.loads(c["Payload"])["task_id"] for c in lambda_invokes
              if "execute_task" in c["FunctionName"]}
    assert handed == {t.task_id for t in runtime().store.list("scheduled", 100, None).tasks}
    assert len(handed) == 5
    assert len(runtime().store.list("completed", 100, None).tasks) == 25


def test_continuations_stop_after_a_bounded_chain(lambda_invokes, make_task):
    make_task(due_in=-60, action="log", payload={"message": "x"})
    make_task(due_in=-60, action="log", payload={"message": "y"})
    summary = sweeper.run_daily(runtime(), time_left_ms=_countdown(200_000, 500), function_arn=SWEEPER_ARN,
                                depth=sweeper.MAX_CONTINUATIONS)
    assert summary["deferred"] == 1 and "continued" not in summary and lambda_invokes == []


@pytest.mark.parametrize("detail,depth", [({}, 0), ({"continuation": True}, 1),
                                          ({"continuation": 7}, 7), ({"continuation": "x"}, 0),
                                          ({"continuation": -3}, 0), (None, 0)])
def test_continuation_depth_from_the_event(detail, depth):
    assert sweeper.continuation_depth(detail) == depth


def test_next_sweep_is_nine_utc():
    moment = utcnow().replace(hour=9, minute=0, second=0, microsecond=0)
    assert sweeper.next_sweep_after(moment) == moment + timedelta(days=1)
    assert sweeper.next_sweep_after(moment - timedelta(seconds=1)) == moment


def test_continuation_event_is_accepted_by_the_sweeper_handler(client, make_task):
    make_task(due_in=-60, action="log", payload={"message": "x"})
    arn = "arn:aws:lambda:us-east-1:123456789012:function:task-scheduler-dev-daily_sweeper"
    event = sweeper.continuation_event(arn, utcnow())
    summary = client.lambda_.invoke("daily_sweeper", event).payload
    assert summary["event"] == "swept" and summary["completed"] == 1


class ClaimFailsFor:
    """A store whose claim of one task fails as DynamoDB's would (an AWS error)."""

    def __init__(self, store, task_id):
        self._store, self._task_id = store, task_id

    def claim(self, task_id, run_id, now):
        if task_id == self._task_id:
            from botocore.exceptions import ClientError

            raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}},
                              "UpdateItem")
        return self._store.claim(task_id, run_id, now)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_one_task_failing_to_run_does_not_stop_the_sweep(memory, make_task):
    tasks = [make_task(due_in=-60, action="log", payload={"message": str(i)}, priority=9 - i)
             for i in range(3)]
    failing = replace(memory, store=ClaimFailsFor(memory.store, tasks[0].task_id))
    summary = sweeper.sweep(failing)
    assert summary["error"] == 1 and summary["completed"] == 2


@pytest.mark.parametrize("catch_up, delivered, skipped", [("latest", 1, 3), ("none", 0, 4),
                                                            ("all", 4, 0)])
def test_the_sweeper_applies_catch_up_to_firings_whose_trigger_never_came(
        aws, receiver, make_task, catch_up, delivered, skipped):
    # An hourly task whose trigger vanished: at the sweep, four firings have passed, the
    # last one 30 minutes ago (missed, not merely late).
    top = utcnow().replace(minute=0, second=0, microsecond=0)
    first = top - timedelta(hours=3)
    task = make_task(payload={"url": receiver.url}, schedule_kind="cron",
                     run_at="cron(0 * * * ? *)", next_run_at=first, firing_at=first,
                     catch_up=catch_up)
    at_sweep = runtime(Clock(now=lambda: top + timedelta(minutes=30)))
    for _ in range(6):  # `all` runs one firing per pass, oldest first
        sweeper.sweep(at_sweep, time_left_ms=lambda: 900_000)
    assert len(receiver.requests) == delivered
    stored = at_sweep.store.get(task.task_id)
    outcomes = [run.outcome for run in stored.runs]
    assert (outcomes.count("succeeded"), outcomes.count("skipped")) == (delivered, skipped)
    assert stored.status == "scheduled" and stored.next_run_at == top + timedelta(hours=1)
