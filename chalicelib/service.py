"""Use cases behind the HTTP API: schedule, show, list and cancel tasks."""
import logging
import uuid
from typing import Any, Dict, Optional

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import schedules
from chalicelib.models import SCHEDULED, Task, iso, utcnow
from chalicelib.store import get_store
from chalicelib.triggers import get_trigger
from chalicelib.validation import parse_list_query, parse_new_task

logger = logging.getLogger("task_scheduler.service")

UPCOMING_COUNT = 5


def schedule_task(body: Any) -> Dict[str, Any]:
    """Validate, store and arm a new task; the SPEC's 201 body."""
    now = utcnow()
    new = parse_new_task(body, now)
    task = Task(
        task_id=str(uuid.uuid4()),
        action=new.action,
        payload=new.payload,
        run_at=new.run_at,
        schedule_kind=new.schedule.kind,
        next_run_at=new.next_run_at,
        status=SCHEDULED,
        timezone=new.timezone,
        name=new.name,
        priority=new.priority,
        max_attempts=new.max_attempts,
        notify=new.notify,
        created_at=now,
        updated_at=now,
    )
    store, trigger = get_store(), get_trigger()
    # Store first, then arm: a task that is stored but whose trigger failed would still
    # be found by the sweeper, but the client gets an error, so undo the store write
    # and leave nothing half-made.
    store.create(task)
    try:
        trigger.arm(task)
    except (ClientError, BotoCoreError):
        logger.exception("arming task %s failed; removing it", task.task_id)
        store.delete(task.task_id)
        raise
    logger.info("scheduled task %s (%s, next %s)", task.task_id, task.run_at,
                iso(task.next_run_at))
    return {
        "message": "Task scheduled successfully",
        "task_id": task.task_id,
        "status": task.status,
        "run_at": task.run_at,
        "next_run_at": iso(task.next_run_at),
    }


def describe(task: Task) -> Dict[str, Any]:
    """A task as GET shows it, with its next firings."""
    body = task.to_api()
    body["upcoming"] = [iso(moment) for moment in upcoming(task)]
    return body


def upcoming(task: Task, count: int = UPCOMING_COUNT):
    """The task's next firings (none once it no longer waits)."""
    if not task.waiting or task.next_run_at is None:
        return []
    following = []
    if task.recurring:
        following = schedules.from_task(task).upcoming(task.next_run_at, count - 1)
    return [task.next_run_at] + following


def get_task(task_id: str) -> Dict[str, Any]:
    """GET /tasks/{task_id}."""
    return describe(get_store().get(task_id))


def list_tasks(params: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """GET /tasks: one page, optionally filtered by status."""
    query = parse_list_query(params)
    page = get_store().list(query["status"], query["limit"], query["next_token"])
    return {"tasks": [describe(task) for task in page.tasks], "next_token": page.next_token}


def cancel_task(task_id: str) -> Dict[str, Any]:
    """DELETE /tasks/{task_id}: cancel a waiting task and remove its trigger."""
    task = get_store().cancel(task_id, utcnow())
    get_trigger().disarm(task)
    logger.info("cancelled task %s", task_id)
    return describe(task)
