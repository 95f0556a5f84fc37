"""Flow control as the executor and the API use it: a run takes a slot of its task's key
before it starts and frees it when it ends; a task over the key's limits waits in the key's
queue, using no attempt, until a run of the key wakes it.

How waiting tasks are ordered and woken, so that a burst costs a few calls per task and
never one per task per second of waiting:
- A task that finds no room is put back as it was before its claim (its attempt given
  back) and queued under its key at `entry`: highest priority first, then the time its
  firing was first delayed, then its id. Nothing is armed for it.
- Each run of a key that ends frees its slot, then wakes as many of the first queued tasks
  as the key has room for. Each woken task first gets a slot reserved for it by a
  conditional write on the key (so a newcomer cannot take it, and two runs cannot wake for
  the same room), is made due at once (or at the next start the rate allows) and armed:
  locally the dispatcher starts it; on AWS its trigger fires, within the minute or, with
  PRECISION=second, at once. Under a rate, one task is woken at a time and each start
  wakes the next.
- A task queued just after the last run of its key looked at the queue would miss that
  wake: so after queueing it looks for room itself (the same wake as a run's end).
- As a last resort a queued task is due again RECHECK after it queued (a lost wake, a run
  that died holding a slot: its lease ends meanwhile), found by the local dispatcher or the
  daily sweeper like any task whose time has passed.
"""
import logging
import random
import uuid
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Dict, Optional

from chalicelib import config, flow, observability
from chalicelib.errors import FlowConflict, StateConflict, TaskNotFound
from chalicelib.flow import FlowState, Limits
from chalicelib.models import RETRYING, SCHEDULED, Task, iso, iso_ms
from chalicelib.wiring import Runtime

logger = logging.getLogger("task_scheduler.flowcontrol")

# A queued task looks again by itself this long after it queued.
RECHECK = timedelta(minutes=5)
# Writes tried on a key's state when other runs of the key changed it meanwhile.
MAX_TRIES = 25
# Tasks woken at once when a run ends (more room than that comes from slots whose lease
# ended; those are woken by the runs that follow).
MAX_WAKES = 10
# A woken task waits this long at most for the spacing a rate keeps after a late start.
MAX_RATE_WAIT_SECONDS = 2.0
# A woken task's slot is kept for it this long past its start: long enough for any trigger
# to fire (EventBridge within its minute), short enough that a wake that went astray does
# not hold the room for long.
RESERVATION = timedelta(minutes=3)


def limits_of(flow_control: Dict[str, Any]) -> Limits:
    """The limits a task's flow_control field asks for."""
    return Limits(rate=flow_control.get("rate"), period=flow_control.get("period", "second"),
                  parallelism=flow_control.get("parallelism"))


def declare(runtime: Runtime, task: Task) -> None:
    """Make a task's limits its key's (the latest task that sets them wins), as it is
    created or changed."""
    if not task.flow_control:
        return
    limits = limits_of(task.flow_control)
    _write(runtime, task.flow_key, lambda state: replace(state, limits=limits),
           lambda state: state.limits == limits and state.version > 0)


def admit(runtime: Runtime, task: Task, run_id: str, now: datetime) -> flow.Decision:
    """Ask the task's key for a slot for this run (held until the run's lease ends).

    The common cases are one write without a read: a woken task turns the slot kept for it
    into its run's; a task of a key limited by parallelism alone takes a free slot. Only
    when those fail is the key read and judged exactly (ended slots dropped, the rate)."""
    key, store = task.flow_key, runtime.store
    lease_end = task.lease_until or now + RECHECK
    reserved, slot = flow.reservation(task.task_id), flow.run_slot(task.task_id, run_id)
    if "rate" in task.flow_control:  # a rate is judged on the state as read, always
        state = store.get_flow(key)
    else:
        if task.flow_delayed_at is not None:  # woken from the queue: a slot is kept for it
            swapped = store.swap_slot(key, remove=reserved, add=(slot, lease_end))
            if swapped is not None:
                return _granted(runtime, key, swapped, now)
        taken, state = store.take_slot(key, slot, lease_end)
        if taken:
            return flow.Decision(True, state)
    for attempt in range(MAX_TRIES):
        if state.version == 0:  # a key no change declared yet: this task's limits
            state = replace(state, limits=limits_of(task.flow_control))
        decision = flow.acquire(state, slot, now, lease_end, task.task_id)
        if not decision.granted and reserved in state.slots:
            wait = (decision.retry_at - now).total_seconds() if decision.retry_at else None
            if wait is not None and 0 < wait <= MAX_RATE_WAIT_SECONDS:
                # Woken, and the run before it started late: keep the rate's spacing.
                runtime.clock.sleep(wait)
                now, state = runtime.clock.now(), store.get_flow(key)
                continue
            # It queues again: its reservation goes, so that it can be woken again.
            store.swap_slot(key, remove=reserved)
        if not decision.granted:
            return decision
        try:
            granted = store.put_flow(decision.state, state.version)
        except FlowConflict as conflict:
            state = conflict.current
            _back_off(runtime, attempt)
            continue
        return _granted(runtime, key, granted, now)
    # Runs of the key kept changing its state: wait in its queue like a refused run.
    return flow.Decision(False, state, retry_at=now)


def _granted(runtime: Runtime, key: str, state: FlowState, now: datetime) -> flow.Decision:
    if state.limits.rate is not None:
        wake_next(runtime, key, now, state)  # at the next start the rate allows
    return flow.Decision(True, state)


def delay(runtime: Runtime, task: Task, decision: flow.Decision, now: datetime) -> bool:
    """Put the claimed task back as it was before its claim and queue it under its key;
    False when its claim was lost meanwhile (someone else has the task)."""
    key = task.flow_key
    delayed_at = task.flow_delayed_at or now
    # Its place: priority, then since when its firing waits; unique to this queueing, so
    # that a run holding an older view never removes a newer entry of the same task.
    entry = f"{9 - task.priority}#{iso_ms(delayed_at)}#{task.task_id}#{uuid.uuid4().hex[:8]}"
    attempts = task.attempts - 1
    queued = replace(task, status=RETRYING if attempts else SCHEDULED, attempts=attempts,
                     lease_until=None, next_run_at=now + RECHECK, flow_waiting=entry,
                     flow_delayed_at=delayed_at, updated_at=now)
    try:
        runtime.store.update(queued, task.version)
    except (StateConflict, TaskNotFound):
        return False
    # The task names its entry before the entry exists: whoever reads the queue finds a
    # task that agrees with it, or an entry that is stale for good.
    runtime.store.add_waiter(key, entry, task.task_id)
    if task.flow_waiting:  # queued before and looking again by itself: its old entry goes
        runtime.store.remove_waiter(key, task.flow_waiting)
    observability.event("flow_delayed", task_id=task.task_id, key=key, entry=entry,
                        retry_at=iso(decision.retry_at), delayed_since=iso(delayed_at))
    observability.emit_metrics(
        {"FlowDelayed": 1}, units={}, dimensions={"Stage": config.stage()},
        dimension_sets=[["Stage"]], properties={"task_id": task.task_id, "flow_key": key})
    # A run of the key that ended just before we queued could not see us: look again.
    wake_next(runtime, key, now)
    return True


def leave(runtime: Runtime, task: Task, run_id: str, now: datetime) -> None:
    """Free the run's slot of its key (one atomic write, never retried against other
    runs), then wake the tasks queued for the room it made."""
    state = runtime.store.swap_slot(task.flow_key,
                                    remove=flow.run_slot(task.task_id, run_id))
    if state is not None:
        wake_next(runtime, task.flow_key, now, state)


def status(runtime: Runtime, key: str, now: datetime) -> Optional[Dict[str, Any]]:
    """GET /flow-control/{key}: its limits, running and waiting counts (None: unknown)."""
    state = runtime.store.get_flow(key)
    waiting = runtime.store.count_waiters(key)
    if state.version == 0 and not waiting:
        return None
    return {"key": key, "rate": state.limits.rate, "period": state.limits.period,
            "parallelism": state.limits.parallelism, "running": state.running(now),
            "waiting": waiting}


def forget(runtime: Runtime, task: Task, now: datetime) -> None:
    """A client changed `task` (as it was) so that it no longer waits for its key: take it
    out of the queue, or give back the slot kept for it if it had been woken, and let the
    next task have the room."""
    key = task.flow_key
    if task.flow_waiting:
        runtime.store.remove_waiter(key, task.flow_waiting)
        return
    state = runtime.store.swap_slot(key, remove=flow.reservation(task.task_id))
    if state is not None:
        wake_next(runtime, key, now, state)


def wake_next(runtime: Runtime, key: str, now: datetime,
              state: Optional[FlowState] = None) -> int:
    """Wake the first queued tasks of the key, as many as it has room for, each with a
    slot reserved for it by a conditional write on the key's state. How many were woken."""
    store = runtime.store
    state = state or store.get_flow(key)
    if state.limits.rate is None and state.room(now):
        # Parallelism alone: each reservation is one conditional write, without a read.
        woken = 0
        for entry, task_id in store.waiters(key, MAX_WAKES + state.reserved(now)):
            if woken == MAX_WAKES or not state.room(now):
                break  # as far as the latest state read says: no write to learn it
            if flow.reservation(task_id) in state.slots:
                continue
            taken, state = store.take_slot(key, flow.reservation(task_id),
                                           now + RESERVATION)
            if not taken:
                if flow.reservation(task_id) in state.slots:
                    # Another run's end has just woken it, and goes on down the queue
                    # as far as there is room: leave the rest to that run.
                    return woken
                if state.room(now):  # slots whose lease ended fill it: drop them below
                    return woken + _wake_by_rewrite(runtime, key, now, state)
                return woken
            woken += _wake(runtime, key, entry, task_id, now, now)
        return woken
    return _wake_by_rewrite(runtime, key, now, state)


def _wake_by_rewrite(runtime: Runtime, key: str, now: datetime, state: FlowState) -> int:
    """wake_next by rewriting the key's state on its version: under a rate (each woken
    task at its own start), or to drop slots whose lease ended."""
    store = runtime.store
    queue = None  # read once: a conflict is retried on the state alone
    for attempt in range(MAX_TRIES):
        changed = state
        room = changed.room(now) if changed.limits.rate else min(changed.room(now),
                                                                 MAX_WAKES)
        if room and queue is None:
            queue = store.waiters(key, room + changed.reserved(now))
        # Entries of tasks another run has just woken (reserved, not yet out of the
        # queue) are passed over.
        heads = [(entry, task_id) for entry, task_id in (queue or [])
                 if flow.reservation(task_id) not in changed.slots][:room]
        if not heads:
            return 0  # nobody to wake: no write
        changed, starts = flow.reserve(changed, [task_id for _, task_id in heads], now,
                                       RESERVATION)
        try:
            store.put_flow(changed, state.version)
        except FlowConflict as conflict:
            state = conflict.current
            _back_off(runtime, attempt)
            continue
        woken = sum(_wake(runtime, key, entry, task_id, start, now)
                    for (entry, task_id), start in zip(heads, starts))
        if woken < len(heads):  # stale entries: their room goes to the next in line
            return woken + wake_next(runtime, key, now)
        return woken
    logger.warning("flow key %s kept changing; no task was woken", key)
    return 0


def _back_off(runtime: Runtime, attempt: int) -> None:
    """A moment before writing a busy key's state again, longer after each conflict, so
    that many runs of one key do not keep colliding."""
    runtime.clock.sleep(random.uniform(0, min(0.002 * (attempt + 1), 0.05)))  # nosec B311


def _wake(runtime: Runtime, key: str, entry: str, task_id: str, at: datetime,
          now: datetime) -> bool:
    """Make one queued task due at `at`, take it out of the queue and arm it. False when
    its entry was stale (the task changed, finished or was woken meanwhile): the
    reservation made for it is given back."""
    woken = runtime.store.wake_waiting(task_id, entry, at, now)
    runtime.store.remove_waiter(key, entry)
    if woken is None:
        runtime.store.swap_slot(key, remove=flow.reservation(task_id))
        return False
    runtime.trigger.arm(woken)
    observability.event("flow_woken", task_id=task_id, key=key, at=iso_ms(at))
    return True


def _write(runtime: Runtime, key: str, change, unchanged) -> FlowState:
    """Apply `change` to the key's state, conditioned on its version (read again after a
    conflict); no write when `unchanged(state)` already holds. The state as stored."""
    state = runtime.store.get_flow(key)
    for attempt in range(MAX_TRIES):
        if unchanged(state):
            return state
        try:
            return runtime.store.put_flow(change(state), state.version)
        except FlowConflict as conflict:
            state = conflict.current
            _back_off(runtime, attempt)
    logger.warning("flow key %s kept changing; its state was not written", key)
    return state
