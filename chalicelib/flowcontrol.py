"""Flow control as the executor and the API use it: a run takes a slot of its task's key
before it starts and frees it when it ends; a task over the key's limits waits in the key's
queue, using no attempt, until a run of the key wakes it.

How waiting tasks are ordered and woken, so that a burst costs a few calls per task and
never one per task per second of waiting:
- A task that finds no room is put back as it was before its claim (its attempt given
  back) and queued under its key at `entry`: highest priority first, then the time its
  firing was first delayed, then its id. Nothing is armed for it.
- Each run of a key that ends frees its slot, then wakes as many of the first queued tasks
  as the key has room for: each is made due at once (or at the rate's next start) and
  armed (locally the dispatcher starts it; on AWS its trigger fires, within the minute or,
  with PRECISION=second, at once). Under a rate limit, each start wakes the next queued
  task at the next start the rate allows.
- A task queued while the last run of its key ended could miss that wake: after queueing
  it reads the key again and, if there is room, wakes the head of the queue itself.
- As a last resort a queued task is due again RECHECK after it queued (a lost wake, a run
  that died holding a slot: its lease ends meanwhile), found by the local dispatcher or the
  daily sweeper like any task whose time has passed.
"""
import logging
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Dict, Optional

from chalicelib import config, flow, observability
from chalicelib.errors import FlowConflict, StateConflict, TaskNotFound
from chalicelib.flow import FlowState, Limits
from chalicelib.models import RETRYING, SCHEDULED, WAITING, Task, iso, iso_ms
from chalicelib.wiring import Runtime

logger = logging.getLogger("task_scheduler.flowcontrol")

# A queued task looks again by itself this long after it queued.
RECHECK = timedelta(minutes=5)
# Writes tried on a key's state when other runs of the key changed it meanwhile.
MAX_TRIES = 25
# Tasks woken at once when a run ends (more room than that comes from slots whose lease
# ended; those are woken by the runs that follow).
MAX_WAKES = 10


def limits_of(flow_control: Dict[str, Any]) -> Limits:
    """The limits a task's flow_control field asks for."""
    return Limits(rate=flow_control.get("rate"), period=flow_control.get("period", "second"),
                  parallelism=flow_control.get("parallelism"))


def declare(runtime: Runtime, flow_control: Optional[Dict[str, Any]]) -> None:
    """Make a task's limits its key's (the latest task that sets them wins), as it is
    created or changed."""
    if not flow_control:
        return
    limits = limits_of(flow_control)
    _write(runtime, flow_control["key"], lambda state: replace(state, limits=limits),
           lambda state: state.limits == limits and state.version > 0)


def admit(runtime: Runtime, task: Task, run_id: str, now: datetime) -> flow.Decision:
    """Ask the task's key for a slot for this run (held until the run's lease ends)."""
    key = task.flow_key
    state = runtime.store.get_flow(key)
    lease_end = task.lease_until or now + RECHECK
    for _ in range(MAX_TRIES):
        if state.version == 0:  # a key no change declared yet: this task's limits
            state = replace(state, limits=limits_of(task.flow_control))
        decision = flow.acquire(state, run_id, now, lease_end)
        if not decision.granted:
            return decision
        try:
            granted = runtime.store.put_flow(decision.state, state.version)
        except FlowConflict as conflict:
            state = conflict.current
            continue
        if granted.limits.rate is not None and _room(granted, now):
            _wake_next(runtime, key, granted, now)  # at the next start the rate allows
        return replace(decision, state=granted)
    # Runs of the key kept changing its state: wait in its queue like a refused run.
    return flow.Decision(False, state, retry_at=now)


def delay(runtime: Runtime, task: Task, decision: flow.Decision, now: datetime) -> bool:
    """Put the claimed task back as it was before its claim and queue it under its key;
    False when its claim was lost meanwhile (someone else has the task)."""
    key = task.flow_key
    delayed_at = task.flow_delayed_at or now
    entry = f"{9 - task.priority}#{iso_ms(delayed_at)}#{task.task_id}"
    runtime.store.add_waiter(key, entry, task.task_id)
    attempts = task.attempts - 1
    queued = replace(task, status=RETRYING if attempts else SCHEDULED, attempts=attempts,
                     lease_until=None, next_run_at=now + RECHECK, flow_waiting=entry,
                     flow_delayed_at=delayed_at, updated_at=now)
    try:
        runtime.store.update(queued, task.version)
    except (StateConflict, TaskNotFound):
        runtime.store.remove_waiter(key, entry)
        return False
    observability.event("flow_delayed", task_id=task.task_id, key=key, entry=entry,
                        retry_at=iso(decision.retry_at), delayed_since=iso(delayed_at))
    observability.emit_metrics(
        {"FlowDelayed": 1}, units={}, dimensions={"Stage": config.stage()},
        dimension_sets=[["Stage"]], properties={"task_id": task.task_id, "flow_key": key})
    # A run of the key that ended just before we queued could not see us: look again.
    state = runtime.store.get_flow(key)
    if _room(state, now):
        _wake_next(runtime, key, state, now)
    return True


def leave(runtime: Runtime, task: Task, run_id: str, now: datetime) -> None:
    """Free the run's slot of its key, then wake the tasks queued for the room it made."""
    key = task.flow_key
    state = _write(runtime, key, lambda current: flow.release(current, run_id, now),
                   lambda current: run_id not in current.slots)
    if state.limits.parallelism is not None:  # a rate alone: each start wakes the next
        _wake_next(runtime, key, state, now)


def status(runtime: Runtime, key: str, now: datetime) -> Optional[Dict[str, Any]]:
    """GET /flow-control/{key}: its limits, running and waiting counts (None: unknown)."""
    state = runtime.store.get_flow(key)
    waiting = runtime.store.count_waiters(key)
    if state.version == 0 and not waiting:
        return None
    return {"key": key, "rate": state.limits.rate, "period": state.limits.period,
            "parallelism": state.limits.parallelism, "running": state.running(now),
            "waiting": waiting}


def forget(runtime: Runtime, task: Task) -> None:
    """Take a task a client changed out of its key's queue (it no longer waits there)."""
    if task.flow_waiting and task.flow_key:
        runtime.store.remove_waiter(task.flow_key, task.flow_waiting)


def _room(state: FlowState, now: datetime) -> int:
    parallelism = state.limits.parallelism
    if parallelism is None:
        return MAX_WAKES if state.limits.rate is None else 1
    return max(parallelism - state.running(now), 0)


def _wake_next(runtime: Runtime, key: str, state: FlowState, now: datetime) -> None:
    """Wake the first queued tasks of the key, as many as it has room for: due at once,
    or at the rate's next start."""
    room = min(_room(state, now), MAX_WAKES)
    if not room:
        return
    at = max(now, state.next_start or now)
    if state.limits.rate is not None:
        room = 1  # one at a time: each start wakes the next at the following start
    woken = 0
    for entry, task_id in runtime.store.waiters(key, room + 2):
        if woken == room:
            return
        if _wake(runtime, key, entry, task_id, at, now):
            woken += 1


def _wake(runtime: Runtime, key: str, entry: str, task_id: str, at: datetime,
          now: datetime) -> bool:
    """Make one queued task due at `at` and arm it; False when its entry was stale (the
    task was changed, finished or woken by another run meanwhile)."""
    store = runtime.store
    try:
        task = store.get(task_id)
    except TaskNotFound:
        task = None
    if task is None or task.flow_waiting != entry or task.status not in WAITING:
        store.remove_waiter(key, entry)
        return False
    woken = replace(task, next_run_at=at, flow_waiting=None, updated_at=now)
    try:
        stored = store.update(woken, task.version)
    except (StateConflict, TaskNotFound):
        return False  # another run woke it, or a client changed it: its entry is theirs
    store.remove_waiter(key, entry)
    runtime.trigger.arm(stored)
    return True


def _write(runtime: Runtime, key: str, change, unchanged) -> FlowState:
    """Apply `change` to the key's state, conditioned on its version (read again after a
    conflict); no write when `unchanged(state)` already holds. The state as stored."""
    state = runtime.store.get_flow(key)
    for _ in range(MAX_TRIES):
        if unchanged(state):
            return state
        try:
            return runtime.store.put_flow(change(state), state.version)
        except FlowConflict as conflict:
            state = conflict.current
    logger.warning("flow key %s kept changing; its state was not written", key)
    return state
