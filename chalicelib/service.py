"""Use cases behind the HTTP API: schedule, show, list, cancel and replay tasks.

Each receives the runtime (store, trigger, clock) it works with as its first argument."""
import hashlib
import json
import logging
import re
import uuid
from typing import Any, Dict, Optional, Tuple

from dataclasses import replace

from chalicelib import (
    actions, changes, config, flowcontrol, lifecycle, observability, quotas, schedules,
)
from chalicelib.errors import (
    Conflict, FlowKeyNotFound, InvalidPageToken, TaskExists, TaskNotFound, ValidationError,
    shown,
)
from chalicelib.models import (
    ALL_TENANTS, CANCELLED, CHANGEABLE, DEFAULT_TENANT, FAILED, OPTIONS, PAUSED, RETRYING,
    SCHEDULED, WAITING, Task, iso, tenant_flow_key,
)
from chalicelib.validation import (
    check_between_fields, echo, parse_json_body, parse_list_query, parse_new_task,
    parse_pause, parse_preview, parse_replay, parse_update, parse_when,
)
from chalicelib.wiring import Runtime

logger = logging.getLogger("task_scheduler.service")

UPCOMING_COUNT = 5
MAX_IDEMPOTENCY_KEY = 255
OPTION_NAMES = {declared.name for declared in OPTIONS}
MAX_FLOW_KEY = next(declared for declared in OPTIONS if declared.name == "flow_control"
                    ).schema["properties"]["key"]["maxLength"]
# Fields whose change moves the task's next firing.
TIMING = {"when", "start_at", "end_at", "window_minutes"}
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def schedule_task(runtime: Runtime, body: Any,
                  idempotency_key: Optional[str] = None) -> Tuple[dict, bool]:
    """Validate, store and arm a new task: (the SPEC's body, True when it was created).

    With an Idempotency-Key, the task id is derived from the key, so a repeat finds the
    first task (and is answered with it) instead of making a second one, even once its
    run_at has passed and the same body would no longer validate."""
    store, trigger = runtime.store, runtime.trigger
    now = runtime.clock.now()
    tenant = DEFAULT_TENANT if runtime.caller == ALL_TENANTS else runtime.caller
    task_id = _task_id_for(idempotency_key, tenant)
    request_hash = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    if idempotency_key is not None:
        try:
            return _repeat(store.get(task_id), idempotency_key, request_hash), False
        except TaskNotFound:
            pass
    new = parse_new_task(body, now)
    task = _with_first_run(Task(
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
        tenant=tenant,
        **new.options,
    ), now)
    counted = quotas.take(runtime, tenant)  # first: a refused task changes nothing
    flowcontrol.declare(runtime, task)
    try:
        store.create(task)
    except TaskExists:  # a repeat that arrived while the first was being stored
        if counted:
            quotas.give_back(runtime, tenant)
        return _repeat(store.get(task.task_id), idempotency_key, request_hash), False
    except Exception:
        if counted:
            quotas.give_back(runtime, tenant)
        raise
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
            "status": task.status, "run_at": task.run_at, "next_run_at": iso(task.next_run_at),
            "version": task.version}


def _task_id_for(idempotency_key: Optional[str], tenant: str) -> str:
    if idempotency_key is None:
        return str(uuid.uuid4())
    if not idempotency_key.strip() or len(idempotency_key) > MAX_IDEMPOTENCY_KEY:
        raise ValidationError(f"the Idempotency-Key header must be 1-{MAX_IDEMPOTENCY_KEY} "
                              "characters", field="Idempotency-Key")
    # A uuid4-shaped id derived from the key (and the tenant: two tenants' keys never meet;
    # the default tenant's as before tenants): the same key always names the same task.
    scope = b"" if tenant == DEFAULT_TENANT else tenant.encode() + b"\0"
    digest = hashlib.sha256(b"task-scheduler:" + scope + idempotency_key.encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def _repeat(first: Task, idempotency_key: Optional[str], request_hash: str) -> Dict[str, Any]:
    if first.idempotency_key != idempotency_key:
        raise Conflict("a task with this id already exists", field="Idempotency-Key")
    if first.request_hash != request_hash:
        raise Conflict("this Idempotency-Key was already used with a different request",
                       field="Idempotency-Key", code="idempotency_key_reused")
    return created_body(first)


def _undo(runtime: Runtime, task: Task) -> None:
    if config.tenant_max_waiting() is not None:
        quotas.give_back(runtime, task.tenant)
    for step, undo in (("disarm", runtime.trigger.disarm), ("delete", runtime.store.delete)):
        try:
            undo(task if step == "disarm" else task.task_id)
        except Exception:  # noqa: BLE001 - the original error is what the caller sees
            # Whatever stays behind is found by the sweeper: a stored task is run, a
            # trigger without a task is skipped by the executor.
            logger.exception("undoing task %s: %s failed", task.task_id, step)


def _not_allowed(current: Task, verb: str, reason: str) -> Conflict:
    """The 409 for a change the task's current status does not allow."""
    return Conflict(f"task {current.task_id} is {current.status}: {reason}", field="task_id",
                    code=f"not_{verb}")


def describe(task: Task) -> Dict[str, Any]:
    """A task as GET shows it, with its next firings."""
    body = task.to_api()
    body["payload"] = actions.redacted(task.action, task.payload)
    body["upcoming"] = [iso(moment) for moment in upcoming(task)]
    return body


def upcoming(task: Task, count: int = UPCOMING_COUNT):
    """The task's next runs (none once it no longer waits)."""
    return lifecycle.upcoming(task, count)


def _with_first_run(task: Task, now) -> Task:
    """The task with its first firing after `now` (within start_at / end_at) and the
    moment it runs (within window_minutes), or a 400 when there is none."""
    first = lifecycle.first_run(task, now)
    if first is None:
        raise ValidationError(f"run_at has no firing between now and end_at {task.end_at}",
                              field="end_at")
    return replace(task, firing_at=first[0], next_run_at=first[1])


def _known_id(task_id: str) -> str:
    # Every id this API hands out is a uuid; anything else cannot name a task.
    if not _UUID.fullmatch(task_id or ""):
        raise TaskNotFound(f"no task with id {task_id[:80]}", field="task_id")
    return task_id


def get_task(runtime: Runtime, task_id: str) -> Dict[str, Any]:
    """GET /tasks/{task_id}."""
    task = runtime.store.get(_known_id(task_id))
    if not runtime.sees(task):
        raise TaskNotFound(f"no task with id {task_id}", field="task_id")
    return describe(task)


def tenant_in_scope(runtime: Runtime, asked: Optional[str], refusal: str,
                    field: str) -> Optional[str]:
    """The tenant a listing or bulk change reads: the one an admin asks for (None: all),
    a tenant's own always (a 400 with `refusal` on `field` when it asks for another)."""
    if runtime.caller == ALL_TENANTS:
        return asked
    if asked not in (None, runtime.caller):
        raise ValidationError(refusal, field=field)
    return runtime.caller


def list_tasks(runtime: Runtime, params: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """GET /tasks: one page of the caller's tenant (an admin: every tenant's, or the one
    `tenant` names), optionally filtered by status, name and tag."""
    query = parse_list_query(params)
    tenant = tenant_in_scope(runtime, query["tenant"], "tenant filters a listing for an "
                             "admin token only; a tenant's token lists its own tasks",
                             "tenant")
    try:
        page = runtime.store.list(query["status"], query["limit"], query["next_token"],
                                  query["name"], query["tag"], tenant)
    except InvalidPageToken as error:
        raise ValidationError(str(error), field="next_token",
                              code="invalid_next_token") from None
    return {"tasks": [describe(task) for task in page.tasks], "next_token": page.next_token}


def flow_control_status(runtime: Runtime, key: str) -> Dict[str, Any]:
    """GET /flow-control/{key}: the key's limits and its running and waiting runs."""
    stored = key if runtime.caller == ALL_TENANTS else tenant_flow_key(runtime.caller, key)
    found = flowcontrol.status(runtime, stored, runtime.clock.now()) \
        if 0 < len(key) <= MAX_FLOW_KEY else None
    if found is None:
        raise FlowKeyNotFound(f"no task uses the flow-control key {shown(key)}", field="key")
    return found


def health(runtime: Runtime) -> Dict[str, Any]:
    """GET /health: ok, or StoreUnavailable (503) when the store cannot take a write."""
    runtime.store.check()
    return {"status": "ok"}


def preview(runtime: Runtime, params: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """GET /preview: a run_at's next firings, validated as POST validates it; stores nothing."""
    return parse_preview(params, runtime.clock.now())


def cancel_task(runtime: Runtime, task_id: str,
                if_match: Optional[str] = None) -> Dict[str, Any]:
    """DELETE /tasks/{task_id}: cancel a waiting or paused task and remove its trigger."""
    now = runtime.clock.now()

    def cancel(task: Task) -> Task:
        if task.status not in CHANGEABLE:
            raise _not_allowed(task, "cancelled", "it can no longer be cancelled")
        return replace(task, status=CANCELLED, updated_at=now)

    task = changes.apply(runtime, _known_id(task_id), cancel, _if_match(if_match))
    observability.event("task_cancelled", task_id=task_id)
    return describe(task)


def retry_task(runtime: Runtime, task_id: str, raw_body: Optional[bytes],
               if_match: Optional[str] = None) -> Dict[str, Any]:
    """POST /tasks/{task_id}/retry: run a failed task again, now or at `run_at`."""
    now = runtime.clock.now()
    run_at = parse_replay(raw_body, now)

    def replay(task: Task) -> Task:
        if task.status != FAILED:
            raise _not_allowed(task, "retried", "only a failed task can be retried")
        return replace(task, status=SCHEDULED, attempts=0, next_run_at=run_at,
                       firing_at=run_at, updated_at=now)

    task = changes.apply(runtime, _known_id(task_id), replay, _if_match(if_match))
    observability.event("task_replayed", task_id=task_id, next_run_at=iso(task.next_run_at))
    return describe(task)


def update_task(runtime: Runtime, task_id: str, raw_body: Optional[bytes],
                if_match: Optional[str] = None) -> Dict[str, Any]:
    """PATCH /tasks/{task_id}: change any field but the action of a task that waits or is
    paused; a change of when re-arms it."""
    now = runtime.clock.now()
    body = parse_json_body(raw_body)
    wanted: Dict[str, Any] = {}

    def update(task: Task) -> Task:
        # Validated against the task as read (its action checks the payload): no read of
        # its own.
        wanted.update(parse_update(body, task.action, now))
        if task.status not in CHANGEABLE:
            raise _not_allowed(task, "updated", "only a task that waits or is paused can "
                                                "be changed")
        return _updated(task, wanted, now)

    task = changes.apply(runtime, _known_id(task_id), update, _if_match(if_match))
    if "flow_control" in wanted:
        flowcontrol.declare(runtime, task)
    observability.event("task_updated", task_id=task_id, fields=sorted(wanted),
                        next_run_at=iso(task.next_run_at), version=task.version)
    return describe(task)


def _updated(task: Task, wanted: Dict[str, Any], now) -> Task:
    """`task` with the validated changes, its firing recomputed when its timing changed."""
    options = {name: value for name, value in wanted.items() if name in OPTION_NAMES}
    after = replace(task, updated_at=now, **options)
    if "payload" in wanted:
        after.payload = wanted["payload"]
    if "when" in wanted:
        run_at, zone = wanted["when"]
        run_at = task.run_at if run_at is None else run_at
        schedule, tz, _ = parse_when(run_at, zone, now)
        if zone is None and schedule.recurring and task.timezone != "UTC":
            schedule, tz, _ = parse_when(run_at, task.timezone, now)  # its zone stays
        after.run_at, after.schedule_kind, after.timezone = echo(schedule), schedule.kind, tz.key
    # An end_at the PATCH does not set may have passed meanwhile: only a new one must be
    # ahead.
    check_between_fields(after.recurring, {o.name: getattr(after, o.name) for o in OPTIONS},
                         now, end_must_be_ahead="end_at" in wanted)
    if after.max_runs is not None and after.max_runs <= after.runs_done:
        raise ValidationError(f"max_runs must be more than the {after.runs_done} runs done",
                              field="max_runs")
    if not TIMING & set(wanted):
        return after
    after = _with_first_run(after, now)
    if after.status == RETRYING:
        # The pending retry is dropped for the new time; a retrying extra run with it (a
        # paused task's extra run leaves it paused, as it was).
        after.status = PAUSED if task.pause_after_run else SCHEDULED
        after.attempts, after.extra_run_key, after.pause_after_run = 0, None, False
    if task.extra_run_key is not None and task.status == SCHEDULED:
        after.next_run_at = task.next_run_at  # the extra run asked for still runs now
    return after


def pause_task(runtime: Runtime, task_id: str, raw_body: Optional[bytes],
               if_match: Optional[str] = None) -> Dict[str, Any]:
    """POST /tasks/{task_id}/pause: stop a waiting task firing (until a time, or resume)."""
    now = runtime.clock.now()
    until = parse_pause(raw_body, now)

    def pause(task: Task) -> Task:
        if task.status not in WAITING:
            raise _not_allowed(task, "paused", "only a scheduled or retrying task can be "
                                               "paused")
        # A pending extra run is dropped; the task's own next firing is kept for resume.
        next_run_at = lifecycle.spread(task, task.firing_at) if task.extra_run_key \
            else task.next_run_at
        return replace(task, status=PAUSED, paused_until=until, updated_at=now,
                       extra_run_key=None, pause_after_run=False, next_run_at=next_run_at)

    task = changes.apply(runtime, _known_id(task_id), pause, _if_match(if_match))
    observability.event("task_paused", task_id=task_id, until=iso(until))
    return describe(task)


def resume_task(runtime: Runtime, task_id: str,
                if_match: Optional[str] = None) -> Dict[str, Any]:
    """POST /tasks/{task_id}/resume: a paused task waits again; the firings it missed
    follow its catch_up."""
    now = runtime.clock.now()

    def resume(task: Task) -> Task:
        if task.status != PAUSED:
            raise _not_allowed(task, "resumed", "only a paused task can be resumed")
        return lifecycle.resumed(task, now)[0]

    task = changes.apply(runtime, _known_id(task_id), resume, _if_match(if_match))
    observability.event("task_resumed", task_id=task_id, status=task.status,
                        next_run_at=iso(task.next_run_at), by_until=False)
    return describe(task)


def run_task_now(runtime: Runtime, task_id: str,
                 if_match: Optional[str] = None) -> Dict[str, Any]:
    """POST /tasks/{task_id}/run: one run now, outside the schedule."""
    now = schedules.ceil_second(runtime.clock.now())

    def run_now(task: Task) -> Task:
        if task.status not in CHANGEABLE:
            raise _not_allowed(task, "run", "only a task that waits or is paused can be run "
                                            "now")
        if task.status == RETRYING:
            # Its pending retry is the run that waits: it runs now, as the same delivery.
            return replace(task, next_run_at=now, updated_at=now)
        if not task.recurring:
            # A one-time task's run moves to now: it is then finished.
            return replace(task, status=SCHEDULED, next_run_at=now, firing_at=now,
                           paused_until=None, updated_at=now)
        return replace(task, status=SCHEDULED, next_run_at=now, updated_at=now,
                       extra_run_key=f"run-{uuid.uuid4().hex}",
                       pause_after_run=task.status == PAUSED)

    task = changes.apply(runtime, _known_id(task_id), run_now, _if_match(if_match))
    observability.event("task_run_requested", task_id=task_id)
    return describe(task)


def _if_match(header: Optional[str]) -> Optional[int]:
    """The version an If-Match header names ("3", W/"3" or 3; * or none: any)."""
    if header is None or header.strip() == "*":
        return None
    text = header.strip()
    text = text[2:] if text.startswith("W/") else text
    text = text.strip('"')
    if not schedules.is_number(text):
        raise ValidationError('If-Match must be a task\'s ETag: its version in quotes ("3")',
                              field="If-Match")
    return int(text)
