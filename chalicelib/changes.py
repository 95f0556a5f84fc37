"""A client's change to a stored task: one conditional write on the version it read, then
the trigger made to match what is stored.

Every change a client asks for (PATCH, pause, resume, run now, cancel, replay) and a
pause's own end go through `apply`, so each is atomic against runs and other changes:
of two writers on the same version exactly one wins, and the trigger is reconciled with the
stored task until the two agree, whoever wrote last."""
import logging
from dataclasses import replace
from typing import Callable, Optional

from chalicelib.errors import Conflict, PreconditionFailed, StateConflict, TaskNotFound
from chalicelib import flowcontrol, quotas
from chalicelib.models import WAITING, Task
from chalicelib.wiring import Runtime

logger = logging.getLogger("task_scheduler.changes")

# Writes tried when another change won the race (without If-Match, the change is computed
# again from the task as it now is).
MAX_TRIES = 5
# Rounds of re-reading the task after arming, until the trigger matches what is stored.
MAX_SYNC_ROUNDS = 5


class NotAllowed(Exception):
    """The task's status does not allow the change (the caller words the 409)."""

    def __init__(self, task: Task):
        super().__init__(task.status)
        self.task = task


def apply(runtime: Runtime, task_id: str, change: Callable[[Task], Task],
          if_match: Optional[int] = None) -> Task:
    """Write `change(task)` on the task as stored, conditioned on its version; `change`
    raises NotAllowed when the status forbids it. With `if_match`, a task at another
    version is a 412 and nothing changes. Returns the task as stored after the change,
    with its trigger made to match."""
    store = runtime.store
    for _ in range(MAX_TRIES):
        before = store.get(task_id)
        if not runtime.sees(before):
            raise TaskNotFound(f"no task with id {task_id}", field="task_id")
        if if_match is not None and before.version != if_match:
            raise _precondition_failed(before)
        after = _out_of_flow_queue(before, change(before), runtime.clock.now())
        # A finished task waiting again (a replay) counts against its tenant's quota: a
        # 429 before anything is written.
        counted = quotas.take_for(runtime, before, after)
        try:
            stored = store.update(after, before.version)
        except StateConflict as conflict:
            if counted:
                quotas.give_back(runtime, after.tenant)
            if if_match is not None:
                raise _precondition_failed(conflict.current) from None
            continue  # another change won: compute this one again on what it made
        except Exception:
            if counted:
                quotas.give_back(runtime, after.tenant)
            raise
        try:
            sync_trigger(runtime, before, stored)
        except Exception:
            # Without its trigger the change would wait for the daily sweep: put the task
            # back as it was, so the caller's error is the whole story and a retry works.
            logger.exception("task %s: re-arming after a change failed; undoing it", task_id)
            if _undo(runtime, before, stored) and counted:
                quotas.give_back(runtime, after.tenant)
            raise
        if before.flow_delayed_at and not stored.flow_delayed_at:
            flowcontrol.forget(runtime, before, runtime.clock.now())
        quotas.account(runtime, before, stored)
        return stored
    raise Conflict(f"task {task_id} kept changing while this change was made; try again",
                   field="task_id", code="busy")


def _out_of_flow_queue(before: Task, after: Task, now) -> Task:
    """A task delayed by its flow-control key (queued, or woken with a slot kept for it)
    keeps its place through a change that leaves it waiting as it was (a new name); any
    other change takes it out, due at once if it still waits for the same time."""
    if not before.flow_delayed_at or (
            after.status in WAITING and after.next_run_at == before.next_run_at
            and after.flow_key == before.flow_key and after.priority == before.priority):
        return after
    due_now = after.status in WAITING and after.next_run_at == before.next_run_at
    return replace(after, flow_waiting=None, flow_delayed_at=None,
                   next_run_at=now if due_now else after.next_run_at)


def sync_trigger(runtime: Runtime, previous: Task, current: Task) -> None:
    """Move the trigger from what `previous` needed to what `current` needs, then read the
    task again: if another writer changed it meanwhile (its own trigger change may have
    landed before ours), move it again to the newest, so the last writer always leaves
    the trigger matching the store."""
    trigger = runtime.trigger
    for _ in range(MAX_SYNC_ROUNDS):
        trigger.rearm(previous, current)
        try:
            latest = runtime.store.get(current.task_id)
        except TaskNotFound:
            return
        if latest.version == current.version or latest.status == "running":
            return  # unchanged, or a run has it: the executor arms what follows
        previous, current = current, latest
    logger.warning("task %s: its trigger was still being changed by others after %d rounds",
                   current.task_id, MAX_SYNC_ROUNDS)


def _undo(runtime: Runtime, before: Task, stored: Task) -> bool:
    """Put the task back as it was before `stored`; False when it moved on meanwhile."""
    try:
        restored = runtime.store.update(replace(before, version=stored.version),
                                        stored.version)
    except StateConflict:
        logger.warning("task %s moved on before its change could be undone", stored.task_id)
        return False
    try:
        runtime.trigger.rearm(stored, restored)
    except Exception:  # noqa: BLE001 - the first error is what the caller sees
        # What stays behind is found by the sweeper: a trigger without its firing is
        # skipped by the executor, a waiting task without its trigger is re-armed.
        logger.exception("task %s: its trigger could not be put back", stored.task_id)
    return True


def _precondition_failed(current: Task) -> PreconditionFailed:
    return PreconditionFailed(
        f"task {current.task_id} is at version {current.version}, not the one If-Match "
        "names; read it again and retry", field="If-Match")
