"""EventBridge Scheduler adapter: one schedule per task in SCHEDULER_GROUP.

A task's own schedule is `task-<id>`: at() for a one-time task (ActionAfterCompletion
DELETE, so a fired schedule removes itself), or its cron()/rate() for a recurring one.
A retry, or a replay of a task that already ran, is its own one-time schedule
`retry-<id>-<time>`, so it never collides with a schedule that is still being deleted.
"""
import time

from botocore.exceptions import ClientError

from chalicelib import aws, config
from chalicelib.models import RETRYING, Task
from chalicelib.schedules import OneTime, from_task
from chalicelib.triggers import Trigger, executor_input


def schedule_name(task_id: str) -> str:
    """Name of a task's own schedule (at most 64 characters)."""
    return f"task-{task_id}"


def retry_schedule_name(task: Task) -> str:
    """Name of the one-time schedule of a retry or replay at task.next_run_at."""
    return f"retry-{task.task_id}-{task.next_run_at.strftime('%Y%m%d%H%M%S')}"


def _is_own_schedule(task: Task) -> bool:
    if task.status == RETRYING:
        return False
    return task.recurring or not task.runs


def _not_found(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ResourceNotFoundException"


class SchedulerTrigger(Trigger):
    """Arms tasks as EventBridge Scheduler schedules."""

    def arm(self, task: Task, attempt_id: str = "") -> None:
        if _is_own_schedule(task):
            name, schedule = schedule_name(task.task_id), from_task(task)
        else:
            name, schedule = retry_schedule_name(task), OneTime(at=task.next_run_at)
        expression, timezone = schedule.aws_expression()
        request = {
            "Name": name,
            "GroupName": config.scheduler_group(),
            "ScheduleExpression": expression,
            "ScheduleExpressionTimezone": timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Target": {
                "Arn": config.executor_arn(),
                "RoleArn": config.scheduler_role_arn(),
                "Input": executor_input(task),
                "RetryPolicy": {"MaximumRetryAttempts": 185,
                                "MaximumEventAgeInSeconds": 86400},
            },
            # A retried create (SDK retry, or a repeated request) makes one schedule; a
            # deliberate re-creation (attempt_id) must not be taken for a repeat.
            "ClientToken": f"{name}-{attempt_id}{expression}"[:64],
        }
        if not schedule.recurring:
            request["ActionAfterCompletion"] = "DELETE"
        try:
            aws.client("scheduler").create_schedule(**request)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConflictException":
                raise
            # Already armed (same name in the group): nothing to do.

    def ensure_armed(self, task: Task) -> bool:
        name = schedule_name(task.task_id) if _is_own_schedule(task) else \
            retry_schedule_name(task)
        try:
            aws.client("scheduler").get_schedule(Name=name, GroupName=config.scheduler_group())
            return False
        except ClientError as error:
            if not _not_found(error):
                raise
        self.arm(task, attempt_id=f"re{int(time.time())}-")
        return True

    def disarm(self, task: Task) -> None:
        names = [schedule_name(task.task_id)]
        if task.next_run_at is not None and task.runs:
            names.append(retry_schedule_name(task))
        for name in names:
            try:
                aws.client("scheduler").delete_schedule(
                    Name=name, GroupName=config.scheduler_group())
            except ClientError as error:
                if not _not_found(error):
                    raise

    def after_run(self, task: Task) -> None:
        if task.status == RETRYING:
            self.arm(task)  # the retry's own one-time schedule
        elif task.recurring and not task.waiting:
            # A fired one-time schedule deletes itself; a recurring task that has no
            # further firing still holds one.
            self.disarm(task)
