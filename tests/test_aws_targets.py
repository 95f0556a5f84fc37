"""The sqs, sns, lambda and eventbridge actions: delivered to moto, limited by ALLOWED_TARGETS."""
import json

import boto3
import pytest

from chalicelib import permissions
from chalicelib.executor import execute_task
from tests.conftest import runtime
from tests.test_api import spec_example, task_count

ACCOUNT, REGION = "123456789012", "us-east-1"


@pytest.fixture
def targets(aws, monkeypatch):
    """A queue, a FIFO queue, a topic with a queue subscribed, a function, a bus + rule."""
    sqs, sns = boto3.client("sqs"), boto3.client("sns")
    made = {
        "queue": sqs.create_queue(QueueName="orders")["QueueUrl"],
        "fifo": sqs.create_queue(QueueName="orders.fifo", Attributes={
            "FifoQueue": "true"})["QueueUrl"],
        "topic": sns.create_topic(Name="alerts")["TopicArn"],
        "inbox": sqs.create_queue(QueueName="inbox")["QueueUrl"],
        "bus_inbox": sqs.create_queue(QueueName="bus-inbox")["QueueUrl"],
    }
    sns.subscribe(TopicArn=made["topic"], Protocol="sqs",
                  Endpoint=f"arn:aws:sqs:{REGION}:{ACCOUNT}:inbox",
                  Attributes={"RawMessageDelivery": "true"})
    iam = boto3.client("iam")
    role = iam.create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    boto3.client("lambda").create_function(FunctionName="worker", Runtime="python3.11",
                                           Role=role, Handler="x.y", Code={"ZipFile": b"x"})
    events = boto3.client("events")
    events.create_event_bus(Name="jobs")
    events.put_rule(Name="all", EventBusName="jobs", EventPattern=json.dumps({"source": ["app"]}))
    events.put_targets(Rule="all", EventBusName="jobs", Targets=[{
        "Id": "q", "Arn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:bus-inbox"}])
    monkeypatch.setenv("ALLOWED_TARGETS", ",".join([
        f"arn:aws:sqs:{REGION}:{ACCOUNT}:orders*", f"arn:aws:sns:*:{ACCOUNT}:alerts",
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:worker",
        f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/jobs"]))
    return made


def _received(url):
    messages = boto3.client("sqs").receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                                   AttributeNames=["All"])
    return messages.get("Messages", [])


def _schedule_and_run(api, action, payload):
    body = {**spec_example(), "action": action, "payload": payload}
    response = api.post("/schedule-task", body)
    assert response.status_code == 201, response.json
    task_id = response.json["task_id"]
    from chalicelib.models import Clock

    due = runtime().store.get(task_id).next_run_at
    return execute_task(runtime(Clock(now=lambda: due)), task_id)


def test_sqs_delivers(api, targets):
    result = _schedule_and_run(api, "sqs", {"queue_url": targets["queue"],
                                            "message": {"order": 7}, "delay_seconds": 0})
    assert result.status == "completed"
    [message] = _received(targets["queue"])
    assert json.loads(message["Body"]) == {"order": 7}


def test_sqs_fifo_uses_group_and_run_dedup_id(api, targets):
    result = _schedule_and_run(api, "sqs", {"queue_url": targets["fifo"], "message": "hi",
                                            "group_id": "g1"})
    assert result.status == "completed"
    [message] = _received(targets["fifo"])
    assert message["Attributes"]["MessageGroupId"] == "g1"
    assert message["Attributes"]["MessageDeduplicationId"].startswith(result.task_id)


def test_sns_delivers(api, targets):
    result = _schedule_and_run(api, "sns", {"topic_arn": targets["topic"], "message": "disk full",
                                            "subject": "alert", "attributes": {"level": "high"}})
    assert result.status == "completed"
    [message] = _received(targets["inbox"])
    assert message["Body"] == "disk full"


def test_lambda_is_invoked_asynchronously(api, targets):
    from chalicelib import aws

    calls = []
    aws.client("lambda").meta.events.register(
        "after-call.lambda.Invoke", lambda http_response, parsed, **_: calls.append(parsed))
    result = _schedule_and_run(api, "lambda", {"function_name": "worker",
                                               "payload": {"job": 1}})
    assert result.status == "completed" and result.run.http_status == 202
    assert calls[0]["StatusCode"] == 202


def test_eventbridge_delivers(api, targets):
    result = _schedule_and_run(api, "eventbridge", {"event_bus": "jobs", "source": "app",
                                                    "detail_type": "tick",
                                                    "detail": {"n": 1}})
    assert result.status == "completed"
    [message] = _received(targets["bus_inbox"])
    event = json.loads(message["Body"])
    assert event["detail"] == {"n": 1} and event["detail-type"] == "tick"


def test_missing_queue_fails_the_run_with_the_aws_error(api, targets):
    missing = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders-gone"
    result = _schedule_and_run(api, "sqs", {"queue_url": missing, "message": "x"})
    assert result.status == "failed" and "NonExistentQueue" in result.run.error


OUTSIDE = [
    ("sqs", {"queue_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/payroll",
             "message": "x"}, "payload.queue_url"),
    ("sns", {"topic_arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:billing", "message": "x"},
     "payload.topic_arn"),
    ("lambda", {"function_name": "admin-tool"}, "payload.function_name"),
    ("lambda", {"function_name": f"arn:aws:lambda:{REGION}:999999999999:function:worker"},
     "payload.function_name"),
    ("eventbridge", {"source": "app", "detail_type": "x"}, "payload.event_bus"),  # default bus
]


@pytest.mark.parametrize("action,payload,field", OUTSIDE)
def test_target_outside_the_allowlist_is_a_400(api, targets, action, payload, field):
    before = task_count()
    response = api.post("/schedule-task", {**spec_example(), "action": action,
                                           "payload": payload})
    assert response.status_code == 400 and response.json["field"] == field
    assert task_count() == before


INVALID = [
    ("sqs", {"queue_url": "not a url", "message": "x"}, "payload.queue_url"),
    ("sqs", {"queue_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders"},
     "payload.message"),
    ("sqs", {"queue_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders",
             "message": "x", "delay_seconds": 901}, "payload.delay_seconds"),
    ("sqs", {"queue_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders.fifo",
             "message": "x"}, "payload.group_id"),
    ("sqs", {"queue_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders",
             "message": "x", "group_id": "g"}, "payload.group_id"),
    ("sns", {"topic_arn": "alerts", "message": "x"}, "payload.topic_arn"),
    ("sns", {"topic_arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts", "message": "x",
             "subject": "s" * 101}, "payload.subject"),
    ("sns", {"topic_arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts", "message": "x",
             "attributes": {"a": 1}}, "payload.attributes"),
    ("lambda", {"function_name": "bad name!"}, "payload.function_name"),
    ("lambda", {"function_name": f"{ACCOUNT}:function:worker"}, "payload.function_name"),
    ("lambda", {"function_name": "arn:aws:lambda:us-east-1:worker"}, "payload.function_name"),
    ("lambda", {"function_name": "worker:"}, "payload.function_name"),
    ("lambda", {"function_name": "worker\n"}, "payload.function_name"),
    ("sqs", {"queue_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders/x",
             "message": "x"}, "payload.queue_url"),
    ("sqs", {"queue_url": f"https://sqs.{REGION}.amazonaws.com/\u0661{ACCOUNT[1:]}/orders",
             "message": "x"}, "payload.queue_url"),
    ("sqs", {"queue_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders?x=1",
             "message": "x"}, "payload.queue_url"),
    ("sns", {"topic_arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts:sub", "message": "x"},
     "payload.topic_arn"),
    ("eventbridge", {"event_bus": "arn:aws:events:x", "source": "app", "detail_type": "x"},
     "payload.event_bus"),
    ("lambda", {"function_name": "worker", "extra": 1}, "payload.extra"),
    ("eventbridge", {"event_bus": "jobs", "source": "aws.ec2", "detail_type": "x"},
     "payload.source"),
    ("eventbridge", {"event_bus": "jobs", "source": "app", "detail_type": "x",
                     "detail": [1]}, "payload.detail"),
    ("eventbridge", {"event_bus": "jobs", "source": "app"}, "payload.detail_type"),
]


@pytest.mark.parametrize("action,payload,field", INVALID)
def test_invalid_target_payloads(api, targets, action, payload, field):
    response = api.post("/schedule-task", {**spec_example(), "action": action,
                                           "payload": payload})
    assert response.status_code == 400 and response.json["field"] == field, response.json


@pytest.mark.parametrize("url,region", [
    (f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/q", "eu-west-1"),
    (f"https://eu-west-1.queue.amazonaws.com/{ACCOUNT}/q", "eu-west-1"),
    (f"https://queue.amazonaws.com/{ACCOUNT}/q", REGION),
    # Not anchored before: the region of an unrelated host could be chosen by the caller.
    (f"https://sqs.eu-west-1.amazonaws.com.attacker.example/{ACCOUNT}/q", REGION),
    (f"http://localhost:4566/{ACCOUNT}/q", REGION),
])
def test_queue_arn_region_comes_only_from_an_aws_host(url, region):
    from chalicelib.actions.aws_targets import queue_arn

    assert queue_arn(url) == f"arn:aws:sqs:{region}:{ACCOUNT}:q"


@pytest.mark.parametrize("name,arn", [
    ("worker", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:worker"),
    ("worker:live", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:worker:live"),
    ("worker:$LATEST", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:worker:$LATEST"),
    (f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:w", f"arn:aws:lambda:eu-west-1:{ACCOUNT}:function:w"),
])
def test_function_arn(aws, name, arn):
    from chalicelib.actions.aws_targets import function_arn

    assert function_arn(name) == arn


def test_nothing_allowed_by_default(api, aws):
    response = api.post("/schedule-task", {**spec_example(), "action": "sns", "payload": {
        "topic_arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts", "message": "x"}})
    assert response.status_code == 400 and "ALLOWED_TARGETS is empty" in response.json["message"]


def test_policy_grants_exactly_the_allowlist():
    statements = permissions.target_statements(
        "arn:aws:sqs:*:*:orders-*, arn:aws:sns:eu-west-1:1:alerts,"
        "arn:aws:lambda:*:*:function:worker,arn:aws:events:*:*:event-bus/jobs")
    assert {s["Action"]: s["Resource"] for s in statements} == {
        "sqs:SendMessage": ["arn:aws:sqs:*:*:orders-*"],
        "sns:Publish": ["arn:aws:sns:eu-west-1:1:alerts"],
        "lambda:InvokeFunction": ["arn:aws:lambda:*:*:function:worker"],
        "events:PutEvents": ["arn:aws:events:*:*:event-bus/jobs"]}
    assert permissions.target_statements("") == []
    with pytest.raises(SystemExit):
        permissions.target_statements("arn:aws:s3:::bucket")


LOCAL_AWS_TASKS = [
    ("eventbridge", {"source": "app", "detail_type": "ping"}),
    ("lambda", {"function_name": "worker"}),
    ("sqs", {"queue_url": f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/orders", "message": "x"}),
    ("sns", {"topic_arn": f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts", "message": "x"}),
]


@pytest.fixture
def no_aws_calls(monkeypatch):
    """Any AWS client made is an error (make dev has no account, and must not need one)."""
    from chalicelib import aws

    def refuse(*args, **kwargs):
        raise AssertionError("the local stage called AWS")

    monkeypatch.setattr(aws, "client", refuse)


@pytest.mark.parametrize("action,payload", LOCAL_AWS_TASKS, ids=[c[0] for c in LOCAL_AWS_TASKS])
def test_local_stage_refuses_aws_targets_without_calling_aws(local_env, no_aws_calls,
                                                             monkeypatch, action, payload):
    from chalicelib import service
    from chalicelib.errors import ValidationError

    monkeypatch.setenv("ALLOWED_TARGETS", "*")
    with pytest.raises(ValidationError) as refused:
        service.schedule_task(runtime(), {**spec_example(), "action": action, "payload": payload})
    assert refused.value.status == 400 and refused.value.field == "action"
    assert "make dev-aws" in refused.value.message


def test_local_stage_never_runs_a_stored_aws_task(local_env, no_aws_calls, make_task):
    from chalicelib.actions import ActionContext, aws_targets

    result = aws_targets.ACTIONS["lambda"].run({"function_name": "worker"},
                                               ActionContext("t", "r", 1, "t:1"))
    assert not result.success and not result.retryable and "make dev-aws" in result.error


def test_dev_aws_accepts_aws_targets(local_env, aws, monkeypatch):
    from chalicelib import aws as clients, service

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")  # make dev-aws sets one
    monkeypatch.setenv("ALLOWED_TARGETS", f"arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default")
    monkeypatch.setattr(clients, "own_account_and_region", lambda: (ACCOUNT, REGION))
    body, created = service.schedule_task(runtime(), {**spec_example(), "action": "eventbridge",
                                           "payload": {"source": "app", "detail_type": "x"}})
    assert created and body["status"] == "scheduled"
