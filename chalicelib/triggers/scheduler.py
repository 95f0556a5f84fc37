"""EventBridge Scheduler adapter: one schedule per task in SCHEDULER_GROUP."""
import time

from botocore.exceptions import ClientError

from chalicelib import aws, config
from chalicelib.models import Task
from chalicelib.schedules import from_task
from chalicelib.triggers import Trigger, executor_input


def schedule_name(task_id: str) -> str:
    """Name of a task's schedule (at most 64 characters)."""
    return f"task-{task_id}"


class SchedulerTrigger(Trigger):
    """One-time tasks: at() with ActionAfterCompletion=DELETE, so a fired schedule
    removes itself; recurring tasks: their cron()/rate() in their time zone."""

    def arm(self, task: Task, attempt_id: str = "") -> None:
        schedule = from_task(task)
        expression, timezone = schedule.aws_expression()
        request = {
            "Name": schedule_name(task.task_id),
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
            "ClientToken": f"{task.task_id}-{attempt_id}{expression}"[:64],
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
        try:
            aws.client("scheduler").get_schedule(
                Name=schedule_name(task.task_id), GroupName=config.scheduler_group())
            return False
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
        self.arm(task, attempt_id=f"re{int(time.time())}-")
        return True

    def disarm(self, task: Task) -> None:
        try:
            aws.client("scheduler").delete_schedule(
                Name=schedule_name(task.task_id), GroupName=config.scheduler_group())
        except ClientError as error:
            if error.response["Error"]["Code"] != "ResourceNotFoundException":
                raise

    def after_run(self, task: Task) -> None:
        # A fired one-time schedule deletes itself; only a recurring task that has no
        # further firing (or was stopped) still holds one.
        if task.recurring and not task.waiting:
            self.disarm(task)
