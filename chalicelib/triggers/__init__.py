"""The trigger port: what makes the executor run a task at its time."""
import abc
import json
from datetime import datetime, timedelta

from chalicelib import aws
from chalicelib.models import SYSTEM_CLOCK, Clock, Task


class Trigger(abc.ABC):
    """Arms and disarms the thing that invokes execute_task for a task."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK):
        self.clock = clock

    @abc.abstractmethod
    def arm(self, task: Task) -> None:
        """Make the task fire at its wake_at: next_run_at while it waits (one-time, or
        its expression), the end of its pause when paused until a time. Idempotent:
        arming an armed task changes nothing."""

    @abc.abstractmethod
    def disarm(self, task: Task) -> None:
        """Remove the task's trigger; a trigger that is already gone is fine."""

    def rearm(self, previous: Task, current: Task) -> None:
        """Move the trigger from what `previous` needed to what `current` needs (after a
        change: new time, paused, resumed, cancelled). Nothing `previous` armed is left
        behind; `current` ends armed at its wake_at, or not at all."""
        self.disarm(previous)
        if current.wake_at is not None:
            self.arm(current)

    def ensure_armed(self, task: Task) -> bool:
        """Re-arm the task if its trigger has vanished; True when it had to."""
        return False

    def arm_recheck(self, task: Task, at: datetime) -> None:
        """Invoke the executor for the task once more at `at` (a lease held by a run that
        may have died expires then). Adapters whose dispatcher reads due times from the
        store need nothing."""
        return None

    def after_run(self, task: Task) -> None:
        """Called with the task as stored after a run: drop what no longer fires, arm
        what wakes it next."""
        if task.wake_at is None:
            self.disarm(task)
        elif not task.waiting:  # paused again after an extra run, until a time
            self.arm(task)


def executor_input(task: Task) -> str:
    """The event the executor receives: {"task_id": ...}."""
    return json.dumps({"task_id": task.task_id})


def minute_before(at: datetime) -> datetime:
    """The start of the minute before `at`'s minute: a trigger that fires anywhere in
    that minute fires before `at` (PRECISION=second)."""
    return at.replace(second=0, microsecond=0) - timedelta(minutes=1)


def invoke_now(task: Task) -> None:
    """Invoke the executor for the task asynchronously, now (it waits for the task's
    time, as for any early delivery)."""
    aws.client("lambda").invoke(FunctionName=aws.executor_arn(), InvocationType="Event",
                                Payload=executor_input(task).encode())
