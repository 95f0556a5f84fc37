"""The deployed shape end to end on MiniStack: the packaged template deployed through its
CloudFormation, requests through its API Gateway and our token authorizer, tasks fired by
its EventBridge Scheduler, execute_task run from the zip, webhooks at a real receiver."""
import json
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone

import pytest
from standardwebhooks import Webhook

from chalicelib import config, emulator
from tests.conftest import Receiver, free_port

# One worker runs them all, on one emulator: they mostly wait (on its schedules), and the
# tasks that wait longest are scheduled first, so their waits overlap the other tests.
pytestmark = [pytest.mark.e2e, pytest.mark.xdist_group("emulator")]

TOKEN = "emulator-test-token-0123"


@pytest.fixture(scope="module")
def ministack(tmp_path_factory):
    """(a MiniStack of this module's own, on its own port; the packaged app)."""
    folder = tmp_path_factory.mktemp("emulator")
    started = emulator.start(free_port(), folder / "ministack.log")
    try:
        yield started, emulator.package("dev", folder / "build")
    finally:
        started.stop()


def stack(ministack, stage, **parameters):
    """The packaged app deployed as its own stack (its own stage name) on the emulator."""
    started, built = ministack
    deployment = emulator.deploy(started.endpoint, built, stage,
                                 {"PrivateTargets": "on", **parameters})
    return emulator.wait_until_serving(emulator.seed_secrets(deployment, TOKEN))


@pytest.fixture(scope="module")
def deployed(ministack):
    """A stage as `make dev-aws` deploys it."""
    return stack(ministack, "e2e")


@pytest.fixture(scope="module")
def second_precision(ministack):
    """A stage deployed with Precision=second."""
    return stack(ministack, "e2e-second", Precision="second")


@pytest.fixture(scope="module")
def rules_trigger(ministack):
    """A stage deployed with Trigger=rules (one-shot EventBridge rules)."""
    return stack(ministack, "e2e-rules", Trigger="rules")


@pytest.fixture(scope="module")
def swept(ministack):
    """A stage of its own for the sweeper's rule, which the test makes fire every minute."""
    return stack(ministack, "e2e-sweep")


@pytest.fixture(scope="module", autouse=True)
def waiting_long(deployed, second_precision):
    """The tasks that take minutes, scheduled before any test runs; their tests check them
    at the end of the module. {name: (deployment, receiver, created body, run_at)}."""
    started = {}
    recurring, on_the_second = Receiver(), Receiver()
    status, created = call(deployed, "POST", "/schedule-task", {
        "action": "webhook", "run_at": "cron(* * * * ? *)",
        "payload": {"url": recurring.url, "data": {"every": "minute"}}})
    assert status == 201, created
    started["recurring"] = (deployed, recurring, created, None)
    # Far enough ahead to be armed in the Scheduler (at the start of the minute before its
    # minute, at least 20 s from now), not invoked at once; the executor then waits in
    # Lambda for the exact second.
    armed_at = (datetime.now(timezone.utc) + timedelta(seconds=79)).replace(second=0,
                                                                            microsecond=0)
    run_at = armed_at + timedelta(minutes=1, seconds=1)
    status, created = call(second_precision, "POST", "/schedule-task", {
        "action": "webhook", "run_at": run_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "payload": {"url": on_the_second.url, "data": {"on": "time"}}})
    assert status == 201, created
    # Armed in the Scheduler, not invoked at once.
    assert schedules(second_precision) == [f"task-{created['task_id']}"]
    started["second"] = (second_precision, on_the_second, created, run_at)
    yield started
    recurring.close()
    on_the_second.close()


def call(deployment, method, path, body=None, token=TOKEN):
    """(status, JSON body) of a request through the emulator's API Gateway."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(deployment.api_url + path, method=method, headers=headers,
                                     data=json.dumps(body).encode() if body else None)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def schedules(deployment):
    scheduler = emulator.clients(deployment.endpoint)("scheduler")
    return [s["Name"] for s in scheduler.list_schedules(
        GroupName=config.scheduler_group({"STAGE": deployment.stage}))["Schedules"]]


def soon():
    """A run_at still ahead when the POST gets through (a cold API handler on a busy
    machine takes seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=10)


def wait_for(predicate, timeout=90.0):
    # The emulator's scheduler looks for due schedules every 10 s; a busy machine is slower.
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.25)
    raise AssertionError("not within the time")


def test_a_webhook_goes_through_every_part_of_the_deployed_stack(deployed, receiver):
    run_at = soon()
    status, created = call(deployed, "POST", "/schedule-task", {
        "action": "webhook", "run_at": run_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "payload": {"url": receiver.url, "data": {"msg": "Hello from Lambda"}}})
    assert status == 201, created
    task_id = created["task_id"]
    assert f"task-{task_id}" in schedules(deployed)  # armed in its Scheduler

    [request] = wait_for(lambda: list(receiver.requests))
    assert request["received_at"] >= run_at  # never early
    headers = {name: value for name, value in request["headers"].items()
               if name.startswith("webhook-")}
    assert Webhook(deployed.signing_secret).verify(request["body"], headers) == {
        "msg": "Hello from Lambda"}
    assert request["headers"]["idempotency-key"] == f"{task_id}:{created['run_at']}"

    shown = wait_for(lambda: (found := call(deployed, "GET", f"/tasks/{task_id}")[1])
                     ["status"] == "completed" and found)
    [run] = shown["runs"]
    assert run["outcome"] == "succeeded" and run["http_status"] == 200
    # A one-time schedule removes itself.
    assert wait_for(lambda: f"task-{task_id}" not in schedules(deployed))


@pytest.mark.parametrize("token,status", [(None, 401), ("not-the-token", 403)])
def test_the_token_authorizer_guards_the_api(deployed, token, status):
    answer, _ = call(deployed, "GET", "/tasks", token=token)
    assert answer == status
    assert call(deployed, "GET", "/health", token=None)[0] == 200  # no token needed


def stack_resource(deployment, logical_id):
    """The physical id of one of the stack's resources."""
    cloudformation = emulator.clients(deployment.endpoint)("cloudformation")
    return cloudformation.describe_stack_resource(
        StackName=f"{config.APP_NAME}-{deployment.stage}",
        LogicalResourceId=logical_id)["StackResourceDetail"]["PhysicalResourceId"]


def messages(deployment, queue_url):
    """The JSON bodies waiting in a queue, taken off it."""
    sqs = emulator.clients(deployment.endpoint)("sqs")
    found = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                WaitTimeSeconds=1).get("Messages", [])
    return [json.loads(message["Body"]) for message in found]


def test_a_failing_receiver_is_retried_then_dead_lettered_and_notified(deployed, receiver):
    client = emulator.clients(deployed.endpoint)
    # An SQS queue subscribed to the notification topic, to see what it publishes.
    inbox = client("sqs").create_queue(QueueName="notifications-seen")["QueueUrl"]
    inbox_arn = client("sqs").get_queue_attributes(
        QueueUrl=inbox, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client("sns").subscribe(TopicArn=stack_resource(deployed, "NotificationTopic"),
                            Protocol="sqs", Endpoint=inbox_arn,
                            Attributes={"RawMessageDelivery": "true"})
    receiver.status = 500
    run_at = soon()
    status, created = call(deployed, "POST", "/schedule-task", {
        "action": "webhook", "run_at": run_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "max_attempts": 2, "payload": {"url": receiver.url, "data": {"n": 1}}})
    assert status == 201, created
    task_id = created["task_id"]

    shown = wait_for(lambda: (found := call(deployed, "GET", f"/tasks/{task_id}")[1])
                     ["status"] == "failed" and found, timeout=150)
    assert [run["http_status"] for run in shown["runs"]] == [500, 500]
    assert len(receiver.requests) == 2
    keys = {request["headers"]["idempotency-key"] for request in receiver.requests}
    assert keys == {f"{task_id}:{created['run_at']}"}  # one firing, retried
    [letter] = wait_for(lambda: messages(deployed, deployed.outputs["DeadLetterQueueUrl"]))
    assert (letter["event"], letter["task_id"], letter["http_status"]) == (
        "task_dead_lettered", task_id, 500)
    [notice] = wait_for(lambda: messages(deployed, inbox))
    assert (notice["event"], notice["task_id"]) == ("task_failed", task_id)




def test_the_daily_sweeper_fired_by_its_rule_runs_a_task_whose_trigger_was_deleted(
        swept, receiver):
    client = emulator.clients(swept.endpoint)
    events = client("events")
    rule = stack_resource(swept, "DailySweeperDailySweeperEvent")
    status, created = call(swept, "POST", "/schedule-task", {
        "action": "webhook", "run_at": soon().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "payload": {"url": receiver.url, "data": {"swept": True}}})
    assert status == 201, created
    task_id = created["task_id"]
    client("scheduler").delete_schedule(  # behind the service's back
        Name=f"task-{task_id}", GroupName=config.scheduler_group({"STAGE": swept.stage}))
    # The sweeper's own rule, made to fire every minute instead of daily at 09:00 UTC.
    events.put_rule(Name=rule, ScheduleExpression="rate(1 minute)", State="ENABLED")
    try:
        [request] = wait_for(lambda: list(receiver.requests), timeout=150)
    finally:
        events.put_rule(Name=rule, ScheduleExpression="cron(0 9 * * ? *)", State="ENABLED")
    assert json.loads(request["body"]) == {"swept": True}
    shown = wait_for(lambda: (found := call(swept, "GET", f"/tasks/{task_id}")[1])
                     ["status"] == "completed" and found)
    assert len(shown["runs"]) == 1


def test_in_rules_mode_a_one_shot_rule_fires_the_task_and_is_removed(rules_trigger, receiver):
    events = emulator.clients(rules_trigger.endpoint)("events")
    prefix = config.rule_prefix({"STAGE": rules_trigger.stage})

    def task_rules():
        names = [rule["Name"] for rule in events.list_rules(NamePrefix=prefix)["Rules"]]
        return names or None

    # MiniStack looks at rules every 10 s and fires a cron rule only from the minute after
    # the one it first saw it in: a rule for the next minute made in the last seconds of a
    # minute would never fire there (AWS fires it). So the task is made early in a minute.
    while datetime.now(timezone.utc).second > 35:
        time.sleep(0.5)
    status, created = call(rules_trigger, "POST", "/schedule-task", {
        "action": "webhook", "run_at": soon().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "payload": {"url": receiver.url, "data": {"by": "rule"}}})
    assert status == 201, created
    task_id = created["task_id"]
    assert task_rules() == [f"{prefix}{task_id}"]
    assert schedules(rules_trigger) == []
    [request] = wait_for(lambda: list(receiver.requests), timeout=150)
    assert json.loads(request["body"]) == {"by": "rule"}
    assert request["received_at"] >= datetime.fromisoformat(created["run_at"][:-1] + "+00:00")
    wait_for(lambda: call(rules_trigger, "GET", f"/tasks/{task_id}")[1]["status"]
             == "completed")
    assert wait_for(lambda: task_rules() is None and "gone")


# ---------------------------------------------------------------- at the end: long waits

def test_a_recurring_task_fires_again_at_its_next_firing(waiting_long):
    deployment, receiver, created, _ = waiting_long["recurring"]
    task_id = created["task_id"]
    wait_for(lambda: len(receiver.requests) >= 2, timeout=180)
    first, second = receiver.requests[:2]
    assert first["headers"]["idempotency-key"] != second["headers"]["idempotency-key"]
    assert timedelta(seconds=45) < second["received_at"] - first["received_at"] \
        < timedelta(seconds=75)
    shown = call(deployment, "GET", f"/tasks/{task_id}")[1]
    assert shown["status"] in ("scheduled", "running") and len(shown["runs"]) >= 2
    assert call(deployment, "DELETE", f"/tasks/{task_id}")[0] == 200
    assert wait_for(lambda: f"task-{task_id}" not in schedules(deployment))


def test_precision_second_arms_a_minute_early_and_runs_on_the_second(waiting_long):
    deployment, receiver, created, run_at = waiting_long["second"]
    [request] = wait_for(lambda: list(receiver.requests), timeout=240)
    lateness = request["received_at"] - run_at
    assert timedelta(0) <= lateness < timedelta(seconds=2), lateness


def test_the_package_carries_only_the_bytecode_it_built(ministack):
    # No __pycache__ chalice copied from the project folder (another Python's, or one
    # written while it was zipped: corrupt), only what the package step compiled from the
    # zip's own sources, checked against them (tests/conftest.py).
    import zipfile

    from chalicelib import bytecode
    from tests.conftest import bytecode_problems

    _, built = ministack
    with zipfile.ZipFile(built / "deployment.zip") as archive:
        names = archive.namelist()
    assert "app.py" in names and "chalicelib/executor.py" in names
    assert bytecode.pyc_name("chalicelib/executor.py") in names
    assert bytecode_problems(built / "deployment.zip") == []
