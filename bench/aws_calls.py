"""AWS calls per task, counted with botocore event hooks over moto: this design against a
replica of the older HTTP design (PutItem, PutRule, PutTargets, AddPermission at creation;
GetItem and UpdateItem at run time; the rule never deleted).

    python bench/aws_calls.py            (prints a Markdown table)
"""
import json
import os
import sys
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    MOTO_STAGE, create_executor_function, markdown_table, use_moto_stage,
)


class CallCounter:
    """Counts every AWS operation made through boto3 clients (ours and any others)."""

    def __init__(self):
        self.calls: Counter = Counter()

    def __call__(self, model, **_):
        self.calls[f"{model.service_model.service_name}:{model.name}"] += 1

    def take(self) -> Counter:
        """The calls since the last take."""
        taken, self.calls = self.calls, Counter()
        return taken


def count_ours() -> dict:
    """Calls of one one-time task, one recurring run, one retry and one cancel."""
    from dataclasses import replace

    from chalicelib import aws, service, wiring
    from chalicelib.executor import execute_task
    from chalicelib.models import Clock, utcnow
    runtime = wiring.runtime()
    counter = CallCounter()
    for name in ("dynamodb", "scheduler", "sqs", "sns", "lambda", "ssm", "sts", "events"):
        aws.client(name).meta.events.register("before-call", counter)
    in_an_hour = (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def run_at_its_time(task_id):
        due = runtime.store.get(task_id).next_run_at
        counter.take()  # the lookup above is the benchmark's, not the task's
        return execute_task(replace(runtime, clock=Clock(now=lambda: due)), task_id)

    rows = {}
    task_id = service.schedule_task(runtime, {"action": "log", "payload": {"message": "m"},
                                              "run_at": in_an_hour})[0]["task_id"]
    created = counter.take()
    run_at_its_time(task_id)
    rows["one-time task: POST to completed"] = created + counter.take()

    task_id = service.schedule_task(runtime, {"action": "log", "payload": {"message": "m"},
                                              "run_at": "rate(5 minutes)"})[0]["task_id"]
    counter.take()
    run_at_its_time(task_id)
    rows["one recurring run"] = counter.take()

    from chalicelib.actions import REGISTRY, Action, ActionResult

    real = REGISTRY["log"]
    attempts = iter([ActionResult(False, error="HTTP 503", retryable=True),
                     ActionResult(True)])
    REGISTRY["log"] = Action(real.validate, lambda payload, context: next(attempts))
    try:
        task_id = service.schedule_task(runtime, {"action": "log", "payload": {"message": "m"},
                                                  "run_at": in_an_hour})[0]["task_id"]
        counter.take()
        run_at_its_time(task_id)
        rows["a failed run that arms its retry"] = counter.take()
        run_at_its_time(task_id)
        rows["the retried run"] = counter.take()
    finally:
        REGISTRY["log"] = real

    task_id = service.schedule_task(runtime, {"action": "log", "payload": {"message": "m"},
                                              "run_at": in_an_hour})[0]["task_id"]
    counter.take()
    service.cancel_task(runtime, task_id)
    rows["one cancel"] = counter.take()
    return rows


def count_older_design() -> dict:
    """The older design's one-time task, replayed call for call with plain boto3."""
    import boto3

    counter = CallCounter()
    clients = {name: boto3.client(name) for name in ("dynamodb", "events", "lambda")}
    for client in clients.values():
        client.meta.events.register("before-call", counter)
    table = os.environ["TASKS_TABLE"]
    task_id = str(uuid.uuid4())
    function = os.environ["EXECUTOR_ARN"]
    counter.take()
    clients["dynamodb"].put_item(TableName=table, Item={
        "TaskID": {"S": task_id}, "Status": {"S": "scheduled"}})
    rule = f"task-{task_id}"
    clients["events"].put_rule(Name=rule, ScheduleExpression="cron(0 12 1 1 ? 2031)")
    clients["events"].put_targets(Rule=rule, Targets=[{"Id": "1", "Arn": function}])
    clients["lambda"].add_permission(FunctionName=function, StatementId=rule,
                                     Action="lambda:InvokeFunction",
                                     Principal="events.amazonaws.com")
    # At run time: read the task, run it, write the result; the rule stays behind.
    clients["dynamodb"].get_item(TableName=table, Key={"TaskID": {"S": task_id}})
    clients["dynamodb"].update_item(
        TableName=table, Key={"TaskID": {"S": task_id}},
        UpdateExpression="SET #s = :done", ExpressionAttributeNames={"#s": "Status"},
        ExpressionAttributeValues={":done": {"S": "completed"}})
    return {"older design: one-time task, POST to completed (rule left behind)":
            counter.take()}


def measure() -> dict:
    """Both designs, in one moto account."""
    from moto import mock_aws

    # A deployed stage names the executor and the role (infra wires them): no STS lookup.
    use_moto_stage(
        EXECUTOR_ARN="arn:aws:lambda:us-east-1:123456789012:function:"
                     "task-scheduler-dev-execute_task",
        SCHEDULER_ROLE_ARN="arn:aws:iam::123456789012:role/task-scheduler-dev-scheduler",
        WEBHOOK_SIGNING_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    from chalicelib import bootstrap

    with mock_aws(config={"lambda": {"use_docker": False}}):
        bootstrap.bootstrap(MOTO_STAGE)
        create_executor_function()
        return {**count_ours(), **count_older_design()}


def table(rows: dict) -> str:
    """A Markdown table: calls and which."""
    return markdown_table(["workload", "AWS calls", "which"], [
        [name, sum(calls.values()),
         ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(calls.items()))]
        for name, calls in rows.items()])


if __name__ == "__main__":
    result = measure()
    print(table(result))
    print(json.dumps({name: sum(calls.values()) for name, calls in result.items()}))
