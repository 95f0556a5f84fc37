"""Run one task once: claim it, wait if it is slightly early, run its action, record it.

This is the code path of the execute_task Lambda, the daily sweeper and (later) the
local trigger alike.
"""
import json
import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Optional

from chalicelib import actions, schedules
from chalicelib.errors import ClaimLost
from chalicelib.models import (
    COMPLETED, FAILED, RUN_FAILED, RUN_SUCCEEDED, SCHEDULED, WAITING, Run, Task, iso,
    utcnow,
)
from chalicelib.store import get_store
from chalicelib.triggers import get_trigger

logger = logging.getLogger("task_scheduler.executor")

# An invocation this close to the task's time waits for it; further off, it leaves the
# task armed for its own trigger.
EARLY_WAIT_LIMIT_SECONDS = 60

# Outcomes of one invocation.
RAN = "ran"
SKIPPED = "skipped"
EARLY = "early"
UNKNOWN = "unknown"


@dataclass
class Clock:
    """Time source of the executor; tests inject their own."""

    now: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep


@dataclass
class Execution:
    """What one invocation of the executor did."""

    task_id: str
    outcome: str
    status: Optional[str] = None
    run: Optional[Run] = None

    def to_dict(self) -> dict:
        """JSON-friendly summary (the Lambda's return value)."""
        return {"task_id": self.task_id, "outcome": self.outcome, "status": self.status,
                "run": self.run.to_api() if self.run else None}


def execute_task(task_id: str, clock: Optional[Clock] = None) -> Execution:
    """Run the task once if it is due; safe to call several times at once."""
    clock = clock or Clock()
    store = get_store()
    run_id = uuid.uuid4().hex
    task = _claim(store, task_id, run_id, clock)
    if isinstance(task, Execution):
        return task
    started = clock.now()
    context = actions.ActionContext(
        task_id=task.task_id, run_id=run_id, attempt=task.attempts,
        idempotency_key=_idempotency_key(task))
    result = actions.REGISTRY[task.action].run(task.payload, context)
    ended = clock.now()
    run = Run(
        run_id=run_id, attempt=task.attempts, started_at=started, ended_at=ended,
        outcome=RUN_SUCCEEDED if result.success else RUN_FAILED,
        http_status=result.http_status, error=result.error,
        duration_ms=int((ended - started).total_seconds() * 1000),
    )
    status, next_run_at = _after(task, result.success, ended)
    try:
        finished = store.finish(task, run, status, next_run_at, ended)
    except ClaimLost:
        # Our lease expired and another invocation took the task over; its record wins.
        logger.warning("task %s: lease lost before the result of run %s was written",
                       task_id, run_id)
        return Execution(task_id, SKIPPED, run=run)
    get_trigger().after_run(finished)
    logger.info(json.dumps({
        "event": "run_finished", "task_id": task_id, "run_id": run_id,
        "attempt": run.attempt, "outcome": run.outcome, "http_status": run.http_status,
        "duration_ms": run.duration_ms, "status": status,
        "lateness_ms": int((started - task.next_run_at).total_seconds() * 1000),
    }))
    return Execution(task_id, RAN, status=finished.status, run=run)


def _claim(store, task_id: str, run_id: str, clock: Clock):
    """The claimed task, or the Execution that says why it was not claimed."""
    waited = False
    while True:
        now = clock.now()
        try:
            return store.claim(task_id, run_id, now)
        except ClaimLost as lost:
            current: Optional[Task] = lost.current
        if current is None:
            logger.warning("task %s does not exist", task_id)
            return Execution(task_id, UNKNOWN)
        if current.status not in WAITING or waited:
            # Running elsewhere, finished or cancelled: a duplicate delivery.
            return Execution(task_id, SKIPPED, status=current.status)
        early = (current.next_run_at - now).total_seconds()
        if early > EARLY_WAIT_LIMIT_SECONDS:
            # Far too early: never run it now; make sure its own trigger is still there.
            get_trigger().arm(current)
            return Execution(task_id, EARLY, status=current.status)
        clock.sleep(max(early, 0))
        waited = True


def _after(task: Task, success: bool, now: datetime):
    """The status and next firing of a task after a run."""
    if not task.recurring:
        return (COMPLETED if success else FAILED), None
    # A recurring task goes on after success or failure; it ends when its expression
    # has no further firing.
    following = schedules.from_task(task).next_after(max(now, task.next_run_at))
    if following is None:
        return COMPLETED, None
    return SCHEDULED, following


def _idempotency_key(task: Task) -> str:
    # Stable across deliveries of one firing: the task, and for recurring tasks the
    # firing it belongs to.
    if task.recurring:
        return f"{task.task_id}:{iso(task.next_run_at)}"
    return task.task_id
