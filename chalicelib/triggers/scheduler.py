"""EventBridge Scheduler adapter: one schedule per task in SCHEDULER_GROUP.

A task's own schedule is `task-<id>`: at() for a one-time task (ActionAfterCompletion
DELETE, so a fired schedule removes itself), or its cron()/rate() for a recurring one.
A retry, or a replay of a task that already ran, is its own one-time schedule
`retry-<id>-<time>`, so it never collides with a schedule that is still being deleted;
so is a recheck at the expiry of a lease that a crashed run may have left,
`recheck-<id>-<time>`. Every one-time schedule deletes itself after firing.

PRECISION=second: EventBridge Scheduler fires anywhere in the minute of the time it is
given, so every one-time schedule is set to the minute before its task's minute and the
executor waits in the Lambda for the task's second. A recurring task is then armed one
firing at a time (`fire-<id>-<time>`, one-time schedules), since a cron expression cannot
be moved a minute earlier in general. A time too close for that (about two minutes) is not
scheduled at all: the executor is invoked at once and waits.
"""
from datetime import datetime, timedelta

from botocore.exceptions import ClientError

from chalicelib import aws, config
from chalicelib.models import RETRYING, Task
from chalicelib.schedules import OneTime, from_task
from chalicelib.triggers import Trigger, executor_input, invoke_now, minute_before


# How far ahead of now a one-time schedule is set at the least.
MIN_LEAD = timedelta(seconds=5)


def schedule_name(task_id: str) -> str:
    """Name of a task's own schedule (at most 64 characters)."""
    return f"task-{task_id}"


def retry_schedule_name(task: Task) -> str:
    """Name of the one-time schedule of a retry or replay at task.next_run_at."""
    return f"retry-{task.task_id}-{task.next_run_at.strftime('%Y%m%d%H%M%S')}"


def firing_schedule_name(task: Task) -> str:
    """Name of the one-time schedule of a recurring task's next firing (second mode)."""
    return f"fire-{task.task_id}-{task.next_run_at.strftime('%Y%m%d%H%M%S')}"


def recheck_schedule_name(task: Task, at: datetime) -> str:
    """Name of the one-time schedule that looks at a task again at `at`."""
    return f"recheck-{task.task_id}-{at.strftime('%Y%m%d%H%M%S')}"


def _plan(task: Task):
    """(name, schedule) of the trigger that fires the task's next run."""
    if task.status == RETRYING or (not task.recurring and task.runs):
        return retry_schedule_name(task), OneTime(at=task.next_run_at)
    if task.recurring and config.precision() == "second":
        return firing_schedule_name(task), OneTime(at=task.next_run_at)
    return schedule_name(task.task_id), from_task(task)


def _not_found(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ResourceNotFoundException"


class SchedulerTrigger(Trigger):
    """Arms tasks as EventBridge Scheduler schedules."""

    def arm(self, task: Task) -> None:
        self._create(task, *_plan(task))

    def arm_recheck(self, task: Task, at: datetime) -> None:
        # The scheduler fires anywhere in the minute it is given: the minute after `at`
        # is entirely past the lease. Never early-armed or invoked at once: that would
        # find the lease still held and arm again, in a loop.
        start = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        self._create(task, recheck_schedule_name(task, start), OneTime(at=start), exact=True)

    def _create(self, task: Task, name: str, schedule, exact: bool = False) -> None:
        # A time that has passed (an immediate replay, an overdue re-arm) is set a few
        # seconds ahead, so it is still in the future when the scheduler gets it.
        earliest = (self.clock.now() + MIN_LEAD).replace(microsecond=0) + timedelta(seconds=1)
        if not schedule.recurring and not exact and config.precision() == "second":
            early = minute_before(schedule.at)
            if early < earliest:  # too close to be armed a minute early: wait in Lambda
                invoke_now(task)
                return
            schedule = OneTime(at=early)
        if not schedule.recurring and schedule.at < earliest:
            schedule = OneTime(at=earliest)
        expression, timezone = schedule.aws_expression()
        request = {
            "Name": name,
            "GroupName": config.scheduler_group(),
            "ScheduleExpression": expression,
            "ScheduleExpressionTimezone": timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED",
            "Target": {
                "Arn": aws.executor_arn(),
                "RoleArn": aws.scheduler_role_arn(),
                "Input": executor_input(task),
                "RetryPolicy": {"MaximumRetryAttempts": 185,
                                "MaximumEventAgeInSeconds": 86400},
            },
        }
        # No ClientToken of our own: the SDK's generated one already makes its retries
        # idempotent, and a repeated create of the same name is a ConflictException.
        if not schedule.recurring:
            request["ActionAfterCompletion"] = "DELETE"
        try:
            aws.client("scheduler").create_schedule(**request)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConflictException":
                raise
            # Already armed (same name in the group): nothing to do.

    def ensure_armed(self, task: Task) -> bool:
        name, _ = _plan(task)
        try:
            aws.client("scheduler").get_schedule(Name=name, GroupName=config.scheduler_group())
            return False
        except ClientError as error:
            if not _not_found(error):
                raise
        self.arm(task)
        return True

    def disarm(self, task: Task) -> None:
        names = {schedule_name(task.task_id)}
        if task.next_run_at is not None:
            names.add(_plan(task)[0])
            if task.runs:  # a retry of a recurring task may be armed
                names.add(retry_schedule_name(task))
        for name in sorted(names):
            try:
                aws.client("scheduler").delete_schedule(
                    Name=name, GroupName=config.scheduler_group())
            except ClientError as error:
                if not _not_found(error):
                    raise

    def after_run(self, task: Task) -> None:
        if task.status == RETRYING:
            self.arm(task)  # the retry's own one-time schedule
        elif task.recurring and task.waiting and config.precision() == "second":
            self.arm(task)  # the next firing's own one-time schedule
        elif task.recurring and not task.waiting:
            # A fired one-time schedule deletes itself; a recurring task that has no
            # further firing still holds one.
            self.disarm(task)
