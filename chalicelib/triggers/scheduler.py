"""EventBridge Scheduler adapter: one schedule per task in SCHEDULER_GROUP.

A task's own schedule is `task-<id>`: at() for a one-time task (ActionAfterCompletion
DELETE, so a fired schedule removes itself), or its cron()/rate() for a recurring one
(bounded by start_at / end_at, updated in place when the task changes). A paused task
has none, or `wake-<id>-<time>` at the end of its pause.
A retry, or a replay of a task that already ran, is its own one-time schedule
`retry-<id>-<time>`, so it never collides with a schedule that is still being deleted;
so is a recheck at the expiry of a lease that a crashed run may have left,
`recheck-<id>-<time>`. Every one-time schedule deletes itself after firing.

PRECISION=second: EventBridge Scheduler fires anywhere in the minute of the time it is
given, so every one-time schedule is set to the minute before its task's minute and the
executor waits in the Lambda for the task's second. A recurring task is then armed one
firing at a time (`fire-<id>-<time>`, one-time schedules), since a cron expression cannot
be moved a minute earlier in general. A time too close for that (about two minutes) is not
scheduled at all: the executor is invoked at once and waits. A task with window_minutes is
armed one firing at a time too, each at its own moment.
"""
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Dict

from botocore.exceptions import ClientError

from chalicelib import aws, config, lifecycle
from chalicelib.models import PAUSED, RETRYING, RUNNING, SCHEDULED, Task, parse_iso
from chalicelib.schedules import OneTime, Rate, Schedule
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


def wake_schedule_name(task: Task) -> str:
    """Name of the one-time schedule that ends a pause at task.paused_until."""
    return f"wake-{task.task_id}-{task.paused_until.strftime('%Y%m%d%H%M%S')}"


def standing(task: Task) -> bool:
    """Whether a recurring task is armed by a schedule of its own expression (else one
    firing at a time: PRECISION=second, or a window that moves each firing)."""
    return task.recurring and config.precision() == "minute" and not task.window_minutes


def _wanted(task: Task, now: datetime) -> Dict[str, Schedule]:
    """The schedules the task needs in its state at `now`, by name."""
    if task.status == PAUSED:
        return {wake_schedule_name(task): OneTime(at=task.paused_until)} \
            if task.paused_until else {}
    if task.status == RUNNING and standing(task):
        return {schedule_name(task.task_id): lifecycle.schedule_of(task)}
    if not task.waiting or task.next_run_at is None:
        return {}
    one_off = OneTime(at=task.next_run_at)
    if standing(task):
        wanted: Dict[str, Schedule] = {schedule_name(task.task_id): lifecycle.schedule_of(task)}
        if (task.status == RETRYING or task.next_run_at != task.firing_at
                or task.next_run_at <= now):
            # A retry, a caught-up or buffered firing, an extra run, a missed firing that
            # catch_up runs: besides the standing schedule, its own one-time schedule.
            wanted[retry_schedule_name(task)] = one_off
        return wanted
    if task.status == RETRYING or (not task.recurring and (task.runs
                                                           or task.flow_delayed_at)):
        # Named by its time: never the name of a schedule still being deleted (the one
        # that fired) or of an earlier look-again of a task its flow-control key delayed.
        return {retry_schedule_name(task): one_off}
    if task.recurring:
        return {firing_schedule_name(task): one_off}
    return {schedule_name(task.task_id): one_off}


def _bounds(task: Task, schedule: Schedule, now: datetime) -> Dict[str, datetime]:
    """StartDate / EndDate of a standing schedule. EventBridge refuses a StartDate more than
    5 minutes past, and starts a rate counting from its StartDate (from its creation without
    one): a rate starts at the task's next own firing, so a schedule made again (resume) or
    updated (PATCH) keeps the task's phase; a cron starts at start_at while that is ahead."""
    bounds: Dict[str, datetime] = {}
    start = parse_iso(task.start_at)
    if isinstance(schedule, Rate):
        start = lifecycle.next_firing(task, now)
    if start is not None and start > now:
        bounds["StartDate"] = start
    end = parse_iso(task.end_at)
    if end is not None and end > now:
        bounds["EndDate"] = end
    return bounds


def _not_found(error: ClientError) -> bool:
    return error.response["Error"]["Code"] == "ResourceNotFoundException"


class SchedulerTrigger(Trigger):
    """Arms tasks as EventBridge Scheduler schedules."""

    def arm(self, task: Task) -> None:
        for name, schedule in _wanted(task, self.clock.now()).items():
            self._create(task, name, schedule)

    def rearm(self, previous: Task, current: Task) -> None:
        now = self.clock.now()
        wanted = _wanted(current, now)
        for name in sorted(set(_wanted(previous, now)) - set(wanted)):
            self._delete(name)
        for name, schedule in wanted.items():
            # The standing schedule keeps its name whatever its expression or bounds:
            # updated in place, never deleted and made again (no moment without it).
            self._create(task=current, name=name, schedule=schedule,
                         update=name == schedule_name(current.task_id))

    def arm_recheck(self, task: Task, at: datetime) -> None:
        # The scheduler fires anywhere in the minute it is given: the minute after `at`
        # is entirely past the lease. Never early-armed or invoked at once: that would
        # find the lease still held and arm again, in a loop.
        start = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        self._create(task, recheck_schedule_name(task, start), OneTime(at=start), exact=True)

    def _create(self, task: Task, name: str, schedule, exact: bool = False,
                update: bool = False) -> None:
        # A time that has passed (an immediate replay, an overdue re-arm) is set a few
        # seconds ahead, so it is still in the future when the scheduler gets it.
        earliest = (self.clock.now() + MIN_LEAD).replace(microsecond=0) + timedelta(seconds=1)
        if not schedule.recurring and not exact and config.precision() == "second":
            early = minute_before(schedule.at)
            if early < earliest:  # too close to be armed a minute early: wait in Lambda
                if update:
                    self._delete(name)  # the time it held is no longer the task's
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
        if schedule.recurring:
            request.update(_bounds(task, schedule, self.clock.now()))
        else:
            request["ActionAfterCompletion"] = "DELETE"
        client = aws.client("scheduler")
        if update:
            try:
                client.update_schedule(**request)
                return
            except ClientError as error:
                if not _not_found(error):
                    raise
        # No ClientToken of our own: the SDK's generated one already makes its retries
        # idempotent, and a repeated create of the same name is a ConflictException.
        try:
            client.create_schedule(**request)
        except ClientError as error:
            if error.response["Error"]["Code"] != "ConflictException":
                raise
            # Already armed (same name in the group): nothing to do.

    def _delete(self, name: str) -> None:
        try:
            aws.client("scheduler").delete_schedule(Name=name,
                                                    GroupName=config.scheduler_group())
        except ClientError as error:
            if not _not_found(error):
                raise

    def ensure_armed(self, task: Task) -> bool:
        missing = False
        for name in _wanted(task, self.clock.now()):
            try:
                aws.client("scheduler").get_schedule(Name=name,
                                                     GroupName=config.scheduler_group())
            except ClientError as error:
                if not _not_found(error):
                    raise
                missing = True
        if missing:
            self.arm(task)
        return missing

    def disarm(self, task: Task) -> None:
        names = {schedule_name(task.task_id), *_wanted(task, self.clock.now())}
        if task.next_run_at is not None:
            names.add(firing_schedule_name(task))
            if task.runs:  # a retry of a recurring task may be armed
                names.add(retry_schedule_name(task))
        for name in sorted(names):
            self._delete(name)

    def after_run(self, task: Task) -> None:
        if task.status == PAUSED:
            # Paused again after an extra run: nothing fires but the end of the pause.
            self.disarm(replace(task, status=SCHEDULED))
            self.arm(task)
        elif task.waiting:
            # The standing schedule is there; what a run adds is a one-time schedule: a
            # retry, the next firing of a task armed one firing at a time, a buffered run.
            for name, schedule in _wanted(task, self.clock.now()).items():
                if name != schedule_name(task.task_id) or not task.recurring:
                    self._create(task, name, schedule)
        elif task.recurring:
            # A fired one-time schedule deletes itself; a recurring task that has no
            # further firing still holds one.
            self.disarm(task)
