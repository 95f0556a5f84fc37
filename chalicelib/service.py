"""Use cases behind the HTTP API: schedule, show, list, cancel and replay tasks.

Each receives the runtime (store, trigger, clock) it works with as its first argument."""
import hashlib
import json
import logging
import re
import uuid
from typing import Any, Dict, Optional, Tuple

from chalicelib import actions, observability, schedules
from chalicelib.errors import (
    Conflict, InvalidPageToken, StateConflict, TaskExists, TaskNotFound, ValidationError,
)
from chalicelib.models import SCHEDULED, Task, iso
from chalicelib.validation import (
    parse_list_query, parse_new_task, parse_preview, parse_replay,
)
from chalicelib.wiring import Runtime

logger = logging.getLogger("task_scheduler.service")

UPCOMING_COUNT = 5
MAX_IDEMPOTENCY_KEY = 255
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def schedule_task(runtime: Runtime, body: Any,
                  idempotency_key: Optional[str] = None) -> Tuple[dict, bool]:
    """Validate, store and arm a new task: (the SPEC's body, True when it was created).

    With an Idempotency-Key, the task id is derived from the key, so a repeat finds the
    first task (and is answered with it) instead of making a second one, even once its
    run_at has passed and the same body would no longer validate."""
    store, trigger = runtime.store, runtime.trigger
    now = runtime.clock.now()
    task_id = _task_id_for(idempotency_key)
    request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if idempotency_key is not None:
        try:
            return _repeat(store.get(task_id), idempotency_key, request_hash), False
        except TaskNotFound:
            pass
    new = parse_new_task(body, now)
    task = Task(
        task_id=task_id,
        action=new.action,
        payload=new.payload,
        run_at=new.run_at,
        schedule_kind=new.schedule.kind,
        next_run_at=new.next_run_at,
        status=SCHEDULED,
        timezone=new.timezone,
        created_at=now,
        updated_at=now,
        idempotency_key=idempotency_key,
        request_hash=request_hash if idempotency_key else None,
        **new.options,
    )
    try:
        store.create(task)
    except TaskExists:  # a repeat that arrived while the first was being stored
        return _repeat(store.get(task.task_id), idempotency_key, request_hash), False
    # Stored first, then armed. If arming fails the request fails and nothing remains:
    # the trigger (a rule may be half-made) and the task are removed before the error
    # is raised again.
    try:
        trigger.arm(task)
    except Exception:
        logger.exception("arming task %s failed; removing it", task.task_id)
        _undo(runtime, task)
        raise
    observability.event("task_scheduled", task_id=task.task_id, action=task.action,
                        run_at=task.run_at, next_run_at=iso(task.next_run_at),
                        priority=task.priority)
    return created_body(task), True


def created_body(task: Task) -> Dict[str, Any]:
    """The SPEC's answer to POST /schedule-task."""
    return {"message": "Task scheduled successfully", "task_id": task.task_id,
            "status": task.status, "run_at": task.run_at, "next_run_at": iso(task.next_run_at)}


def _task_id_for(idempotency_key: Optional[str]) -> str:
    if idempotency_key is None:
        return str(uuid.uuid4())
    if not idempotency_key.strip() or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise ValidationError(f"the Idempotency-Key header must be 1-{MAX_IDEMPOTENCY_KEY} "
                              "characters", field="Idempotency-Key")
    # A uuid4-shaped id derived from the key: the same key always names the same task.
    digest = hashlib.sha256(b"task-scheduler:" + idempotency_key.encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _repeat(first: Task, idempotency_key: Optional[str], request_hash: str) -> Dict[str, Any]:
    if first.idempotency_key != idempotency_key:
        raise Conflict("a task with this id already exists", field="Idempotency-Key")
    if first.request_hash != request_hash:
        raise Conflict("this Idempotency-Key was already used with a different request",
                       field="Idempotency-Key", code="idempotency_key_reused")
    return created_body(first)


def _undo(runtime: Runtime, task: Task) -> None:
    for step, undo in (("disarm", runtime.trigger.disarm), ("delete", runtime.store.delete)):
        try:
            undo(task if step == "disarm" else task.task_id)
        except Exception:  # noqa: BLE001 - the original error is what the caller sees
            # Whatever stays behind is found by the sweeper: a stored task is run, a
            # trigger without a task is skipped by the executor.
            logger.exception("undoing task %s: %s failed", task.task_id, step)


def _undo_replay(runtime: Runtime, task: Task, previous: Task) -> None:
    try:
        if not runtime.store.undo_replay(task, previous):
            logger.warning("task %s moved on before its replay could be undone", task.task_id)
    except Exception:  # noqa: BLE001 - the arming error is what the caller sees
        logger.exception("undoing the replay of task %s failed", task.task_id)


def _not_allowed(conflict: StateConflict, verb: str, reason: str) -> Conflict:
    """The 409 for a change the task's current status does not allow."""
    current = conflict.current
    return Conflict(f"task {current.task_id} is {current.status}: {reason}", field="task_id",
                    code=f"not_{verb}")


def describe(task: Task) -> Dict[str, Any]:
    """A task as GET shows it, with its next firings."""
    body = task.to_api()
    body["payload"] = actions.redacted(task.action, task.payload)
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


def _known_id(task_id: str) -> str:
    # Every id this API hands out is a uuid; anything else cannot name a task.
    if not _UUID.fullmatch(task_id or ""):
        raise TaskNotFound(f"no task with id {task_id[:80]}", field="task_id")
    return task_id


def get_task(runtime: Runtime, task_id: str) -> Dict[str, Any]:
    """GET /tasks/{task_id}."""
    return describe(runtime.store.get(_known_id(task_id)))


def list_tasks(runtime: Runtime, params: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """GET /tasks: one page, optionally filtered by status and name."""
    query = parse_list_query(params)
    try:
        page = runtime.store.list(query["status"], query["limit"], query["next_token"],
                                  query["name"])
    except InvalidPageToken as error:
        raise ValidationError(str(error), field="next_token",
                              code="invalid_next_token") from None
    return {"tasks": [describe(task) for task in page.tasks], "next_token": page.next_token}


def health(runtime: Runtime) -> Dict[str, Any]:
    """GET /health: ok, or StoreUnavailable (503) when the store cannot take a write."""
    runtime.store.check()
    return {"status": "ok"}


def preview(runtime: Runtime, params: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """GET /preview: a run_at's next firings, validated as POST validates it; stores nothing."""
    return parse_preview(params, runtime.clock.now())


def cancel_task(runtime: Runtime, task_id: str) -> Dict[str, Any]:
    """DELETE /tasks/{task_id}: cancel a waiting task and remove its trigger."""
    try:
        task = runtime.store.cancel(_known_id(task_id), runtime.clock.now())
    except StateConflict as conflict:
        raise _not_allowed(conflict, "cancelled", "it can no longer be cancelled") from None
    runtime.trigger.disarm(task)
    observability.event("task_cancelled", task_id=task_id)
    return describe(task)


def retry_task(runtime: Runtime, task_id: str, raw_body: Optional[bytes]) -> Dict[str, Any]:
    """POST /tasks/{task_id}/retry: run a failed task again, now or at `run_at`."""
    now = runtime.clock.now()
    run_at = parse_replay(raw_body, now)
    store = runtime.store
    previous = store.get(_known_id(task_id))
    try:
        task = store.replay(task_id, run_at, now)
    except StateConflict as conflict:
        raise _not_allowed(conflict, "retried", "only a failed task can be retried") from None
    try:
        runtime.trigger.arm(task)
    except Exception:
        # Without its trigger the replay would wait for the daily sweep: put the task
        # back as it was, so the caller's error is the whole story and a retry works.
        logger.exception("arming the replay of task %s failed; undoing it", task_id)
        _undo_replay(runtime, task, previous)
        raise
    observability.event("task_replayed", task_id=task_id, next_run_at=iso(task.next_run_at))
    return describe(task)
