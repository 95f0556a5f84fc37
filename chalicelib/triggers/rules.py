"""EventBridge rules adapter (the older design): one rule + target per task.

Rules have no time zones and no one-time schedules, so every rule is a one-shot
cron(M H D Mon ? Y) in UTC for the task's next firing, re-armed after each run of a
recurring task and deleted when the task is done: no rule is ever left behind
(EventBridge allows 300 rules per bus). EventBridge may invoke the executor through a
single Lambda permission whose SourceArn covers the rule-name prefix, not one
permission per rule (a function policy is capped at 20 KB).
"""
import json
import threading
from dataclasses import replace
from datetime import datetime, timedelta

from botocore.exceptions import ClientError

from chalicelib import aws, config
from chalicelib.models import SCHEDULED, SYSTEM_CLOCK, Clock, Task
from chalicelib.triggers import Trigger, executor_input

TARGET_ID = "executor"
PERMISSION_ID = "task-scheduler-rules"


def rule_name(task_id: str) -> str:
    """Name of a task's rule."""
    return f"{config.rule_prefix()}{task_id}"


def rules_source_arn(executor_arn: str) -> str:
    """ARN pattern covering every rule this stage makes."""
    _, _, _, region, account, *_ = executor_arn.split(":")
    return f"arn:aws:events:{region}:{account}:rule/{config.rule_prefix()}*"


def grant_invoke(executor_arn: str) -> None:
    """Let EventBridge rules with our prefix invoke the executor (idempotent)."""
    lambda_client = aws.client("lambda")
    if _has_statement(lambda_client, executor_arn):
        return
    try:
        lambda_client.add_permission(
            FunctionName=executor_arn,
            StatementId=PERMISSION_ID,
            Action="lambda:InvokeFunction",
            Principal="events.amazonaws.com",
            SourceArn=rules_source_arn(executor_arn),
        )
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceConflictException":
            raise
        # ResourceConflictException: a concurrent grant made the same statement.


def _has_statement(lambda_client, executor_arn: str) -> bool:
    try:
        policy = json.loads(lambda_client.get_policy(FunctionName=executor_arn)["Policy"])
    except ClientError as error:
        if error.response["Error"]["Code"] == "ResourceNotFoundException":
            return False  # no policy yet (or no function: add_permission will say so)
        raise
    return any(s.get("Sid") == PERMISSION_ID for s in policy.get("Statement", []))


def _expression(task: Task, now: datetime) -> str:
    """The one-shot cron of the task's wake time (next firing, retry, end of a pause),
    in UTC."""
    at = task.wake_at
    if at.replace(second=0, microsecond=0) <= now:
        # A rule fires at the start of its minute; that minute has begun, so the
        # earliest it can fire is the next one (the executor never runs it early).
        at = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return f"cron({at.minute} {at.hour} {at.day} {at.month} ? {at.year})"


class RulesTrigger(Trigger):
    """One one-shot EventBridge rule per waiting task."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK):
        super().__init__(clock)
        self._granted: set = set()
        self._lock = threading.Lock()

    def _ensure_permission(self, executor_arn: str) -> None:
        with self._lock:
            if executor_arn in self._granted:
                return
            grant_invoke(executor_arn)
            self._granted.add(executor_arn)

    def arm(self, task: Task) -> None:
        executor_arn = aws.executor_arn()
        self._ensure_permission(executor_arn)
        events = aws.client("events")
        events.put_rule(
            Name=rule_name(task.task_id),
            ScheduleExpression=_expression(task, self.clock.now()),
            State="ENABLED",
            Description=f"task-scheduler task {task.task_id}",
        )
        events.put_targets(
            Rule=rule_name(task.task_id),
            Targets=[{"Id": TARGET_ID, "Arn": executor_arn, "Input": executor_input(task)}],
        )

    def arm_recheck(self, task: Task, at: datetime) -> None:
        # One rule per task: moving it to the lease's expiry is the recheck.
        self.arm(replace(task, status=SCHEDULED, next_run_at=at))

    def ensure_armed(self, task: Task) -> bool:
        # The rule must exist, have its target, and fire at the task's wake time (a
        # recheck may have moved it).
        events = aws.client("events")
        name = rule_name(task.task_id)
        try:
            rule = events.describe_rule(Name=name)
            targets = events.list_targets_by_rule(Rule=name)["Targets"]
            if targets and rule.get("ScheduleExpression") == _expression(task, self.clock.now()):
                return False
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        self.arm(task)
        return True

    def disarm(self, task: Task) -> None:
        events = aws.client("events")
        name = rule_name(task.task_id)
        try:
            events.remove_targets(Rule=name, Ids=[TARGET_ID])
            events.delete_rule(Name=name)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise

    def rearm(self, previous: Task, current: Task) -> None:
        # One rule per task: putting it again moves it; nothing else is left behind.
        if current.wake_at is not None:
            self.arm(current)
        else:
            self.disarm(current)

    def after_run(self, task: Task) -> None:
        # The next firing of a recurring task, a retry, a pause's end; or nothing.
        self.rearm(task, task)
