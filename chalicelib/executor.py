"""Run one task once: claim it, wait if it is slightly early, run its action, record it,
then retry, dead-letter or notify as the outcome asks.

This is the code path of the execute_task Lambda, the daily sweeper and the local trigger
alike.
"""
import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import List, Optional

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import (
    actions, callbacks, changes, config, deadletters, flowcontrol, lifecycle, observability,
    quotas,
)
from chalicelib.errors import ClaimLost
from chalicelib.models import (
    COMPLETED, MAX_RUNS_KEPT, PAUSED, RETRYING, RUN_FAILED, RUN_SUCCEEDED, RUNNING, SCHEDULED,
    WAITING, Run, Task, Transition, iso,
)
from chalicelib.wiring import Runtime

logger = logging.getLogger("task_scheduler.executor")

# An invocation this close to the task's time waits for it; further off, it leaves the
# task armed for its own trigger. EventBridge fires within the minute it is given (up to
# 60 s early for a time with seconds); PRECISION=second arms a minute earlier still or
# invokes at once for a task due within two minutes.
# (A direct invocation comes at most 60 + 60 + 6 s early: see triggers.scheduler.)
EARLY_WAIT_LIMIT_SECONDS = {"minute": 60, "second": 130}
# Waits before giving up on a task that keeps being slightly early (clock slew).
MAX_EARLY_WAITS = 3

# A recheck fires this long after the lease it waits for has expired.
RECHECK_MARGIN = timedelta(seconds=1)

METRIC_UNITS = {"Lateness": observability.MILLISECONDS, "Duration": observability.MILLISECONDS}

# Outcomes of one invocation.
RAN = "ran"
SKIPPED = "skipped"
EARLY = "early"
UNKNOWN = "unknown"
DELAYED = "delayed"  # over its flow-control key's limits: queued, no attempt used


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


def execute_task(runtime: Runtime, task_id: str, run_prefix: str = "") -> Execution:
    """Run the task once if it is due; safe to call several times at once.

    `run_prefix` marks the run ids of one process (the local server), so that it can
    recover its own cut-off runs at start and no one else's."""
    task = _claim(runtime, task_id, run_prefix + uuid.uuid4().hex)
    if isinstance(task, Execution):
        return task
    return execute_claimed(runtime, task)


def execute_claimed(runtime: Runtime, task: Task) -> Execution:
    """Run a task this process has claimed (its run is the claim's `run_id`): what
    execute_task does after its claim."""
    clock, task_id, run_id = runtime.clock, task.task_id, task.run_id
    missed = _missed(task, clock.now())
    if missed is not None and missed.run_firing is None:
        return _skip_missed(runtime, task, missed, clock.now())
    skipped = []
    if missed is not None:  # run the firing catch_up chose; record those it passed over
        task = replace(task, firing_at=missed.run_firing)
        skipped = missed.skipped
        observability.event("firings_caught_up", task_id=task_id, catch_up=task.catch_up,
                            firing=iso(missed.run_firing), skipped=len(skipped))
    if task.flow_key is None:
        return _run(runtime, task, run_id, skipped)
    admitted = flowcontrol.admit(runtime, task, run_id, clock.now())
    if not admitted.granted:
        # Queued with the firing catch_up chose and the ones it passed over recorded.
        queued = flowcontrol.delay(runtime, _with_runs(task, skipped), admitted, clock.now())
        return Execution(task_id, DELAYED if queued else SKIPPED)
    try:
        return _run(runtime, task, run_id, skipped)
    finally:
        flowcontrol.leave(runtime, task, run_id, clock.now())


def _with_runs(task: Task, runs: List[Run]) -> Task:
    # The task with `runs` recorded among its own (the newest MAX_RUNS_KEPT kept).
    kept = sorted(runs + task.runs, key=lambda r: r.started_at, reverse=True)
    return replace(task, runs=kept[:MAX_RUNS_KEPT])


def _run(runtime: Runtime, task: Task, run_id: str, skipped: List[Run]) -> Execution:
    """Run the claimed task's action once and record what it leads to (with the firings
    catch_up passed over, `skipped`)."""
    store, clock, task_id = runtime.store, runtime.clock, task.task_id
    started = clock.now()
    lateness_ms = int((started - task.next_run_at).total_seconds() * 1000)
    observability.event("run_started", task_id=task_id, run_id=run_id, attempt=task.attempts,
                        action=task.action, lateness_ms=lateness_ms)
    result = _perform(task, run_id)
    ended = clock.now()
    run = Run(
        run_id=run_id, attempt=task.attempts, started_at=started, ended_at=ended,
        outcome=RUN_SUCCEEDED if result.success else RUN_FAILED,
        http_status=result.http_status, error=result.error,
        duration_ms=int((ended - started).total_seconds() * 1000),
    )
    change, final_failure = lifecycle.after_run(task, result.success, result.retryable,
                                                result.retry_after, started, ended)
    change.skipped = skipped + change.skipped
    # Before the result is written: what became of them is part of the run's record.
    run.callback = callbacks.after_run(task, run, change.status, result, final_failure,
                                       clock.sleep)
    try:
        finished = store.finish(task, run, change, ended)
    except ClaimLost:
        # Our lease expired and another invocation took the task over; its record wins.
        logger.warning("task %s: lease lost before the result of run %s was written",
                       task_id, run_id)
        return Execution(task_id, SKIPPED, run=run)
    quotas.account(runtime, task, finished)
    runtime.trigger.after_run(finished)
    observability.event(
        "run_finished", task_id=task_id, run_id=run_id, attempt=run.attempt,
        action=task.action, outcome=run.outcome, http_status=run.http_status,
        error=run.error, lateness_ms=lateness_ms, duration_ms=run.duration_ms,
        status=finished.status,
        next_run_at=iso(finished.next_run_at) if finished.waiting else None)
    if finished.status == RETRYING:
        observability.event("retry_armed", task_id=task_id, run_id=run_id,
                            attempt=run.attempt, retry_at=iso(finished.next_run_at))
    _report(finished, run, final_failure)
    _metrics(task, run, finished, final_failure, lateness_ms)
    return Execution(task_id, RAN, status=finished.status, run=run)


def _perform(task: Task, run_id: str) -> actions.ActionResult:
    if task.attempts > task.max_attempts:
        # Earlier claims of this run never finished (their executor died or timed out)
        # and used up the attempts: stop here instead of trying forever.
        return actions.ActionResult(False, error="attempts exhausted: earlier attempts "
                                                 "never finished (executor died or timed out)")
    context = actions.ActionContext(task_id=task.task_id, run_id=run_id,
                                    attempt=task.attempts, idempotency_key=idempotency_key(task))
    action = actions.REGISTRY[task.action]
    try:
        result = action.run(task.payload, context)
    except Exception as exc:  # noqa: BLE001 - recorded as the run's error, logged in full
        # An action that raises must still end its run, or the task stays claimed and is
        # retried at every lease expiry.
        logger.exception("task %s: action %s raised", task.task_id, task.action)
        result = actions.ActionResult(False, error=f"internal error: "
                                                   f"{exc.__class__.__name__}: {str(exc)[:200]}")
    # The error is stored, logged and dead-lettered: never with the task's own secrets.
    result.error = action.scrub(task.payload, result.error)
    return result


def _missed(task: Task, now: datetime) -> Optional[lifecycle.CatchUp]:
    """What catch_up makes of the firings the claimed task missed (None: it runs as is).
    Only a firing's first attempt asks: a retry or an extra run is not a firing, and a
    firing its flow-control key delayed is late by our doing, not missed."""
    if task.attempts != 1 or task.extra_run_key is not None or task.flow_delayed_at:
        return None
    return lifecycle.catch_up(task, now)


def _skip_missed(runtime: Runtime, task: Task, missed: lifecycle.CatchUp,
                 now: datetime) -> "Execution":
    """Record the missed firings as skipped and wait for the next (catch_up none)."""
    change = Transition(COMPLETED if missed.finished else SCHEDULED,
                        next_run_at=missed.next_run_at, firing_at=missed.firing_at,
                        reset_attempts=True, skipped=missed.skipped)
    try:
        finished = runtime.store.finish(task, None, change, now)
    except ClaimLost:
        return Execution(task.task_id, SKIPPED)
    quotas.account(runtime, task, finished)
    runtime.trigger.after_run(finished)
    observability.event("firings_skipped", task_id=task.task_id, catch_up=task.catch_up,
                        skipped=len(missed.skipped), status=finished.status,
                        next_run_at=iso(finished.next_run_at) if finished.waiting else None)
    return Execution(task.task_id, SKIPPED, status=finished.status)


def _report(task: Task, run: Run, final_failure: bool) -> None:
    # The store already holds the outcome; a dead letter or notification that cannot be
    # sent is logged, and the failed task stays visible and replayable.
    try:
        if final_failure:
            where = deadletters.dead_letter(task, run)
            observability.event("dead_lettered", task_id=task.task_id, run_id=run.run_id,
                                attempt=run.attempt, http_status=run.http_status, to=where)
            deadletters.notify(task, run, succeeded=False)
        elif run.outcome == RUN_SUCCEEDED and task.notify == "always":
            deadletters.notify(task, run, succeeded=True)
    except (ClientError, BotoCoreError, OSError):
        logger.exception("task %s: dead letter could not be sent", task.task_id)


def _metrics(task: Task, run: Run, finished: Task, final_failure: bool,
             lateness_ms: int) -> None:
    succeeded = run.outcome == RUN_SUCCEEDED
    observability.emit_metrics(
        {"RunsSucceeded": int(succeeded), "RunsFailed": int(not succeeded),
         "RunsRetried": int(finished.status == RETRYING),
         "RunsDeadLettered": int(final_failure),
         "Lateness": lateness_ms, "Duration": run.duration_ms},
        units=METRIC_UNITS,
        dimensions={"Stage": config.stage(), "Action": task.action},
        dimension_sets=[["Stage"], ["Stage", "Action"]],
        properties={"task_id": task.task_id, "run_id": run.run_id, "attempt": run.attempt,
                    "outcome": run.outcome, "http_status": run.http_status})


def _claim(runtime: Runtime, task_id: str, run_id: str):
    """The claimed task, or the Execution that says why it was not claimed."""
    store, trigger, clock = runtime.store, runtime.trigger, runtime.clock
    waits = 0
    while True:
        now = clock.now()
        try:
            return store.claim(task_id, run_id, now)
        except ClaimLost as lost:
            current: Optional[Task] = lost.current
        if current is None:
            observability.event("delivery_skipped", task_id=task_id, run_id=run_id,
                                reason="unknown task")
            return Execution(task_id, UNKNOWN)
        if current.status == PAUSED:
            until = current.paused_until
            if until is None:
                # A trigger an earlier change failed to remove: remove it.
                trigger.disarm(replace(current, status=SCHEDULED))
            elif until > now:
                # Woken early (a trigger fires within its minute): wait for the pause's
                # end when it is close, else leave its own trigger to wake it.
                early = (until - now).total_seconds()
                if early <= EARLY_WAIT_LIMIT_SECONDS[config.precision()] \
                        and waits < MAX_EARLY_WAITS:
                    clock.sleep(early + 0.01 * waits)
                    waits += 1
                    continue
                trigger.ensure_armed(current)
            elif waits < MAX_EARLY_WAITS:
                _end_pause(runtime, current, now)
                waits += 1
                continue  # resumed (or changed meanwhile): claim it if it is due now
            observability.event("delivery_skipped", task_id=task_id, run_id=run_id,
                                reason="paused", status=current.status)
            return Execution(task_id, SKIPPED, status=current.status)
        if current.status == RUNNING:
            # Running elsewhere: a duplicate delivery, or a retry of an invocation that
            # died holding the lease. Look again when the lease expires, so a dead run
            # is taken over then instead of at the next daily sweep.
            if current.lease_until is not None and current.lease_until > now:
                trigger.arm_recheck(current, current.lease_until + RECHECK_MARGIN)
            observability.event("delivery_skipped", task_id=task_id, run_id=run_id,
                                reason="running elsewhere", status=current.status)
            return Execution(task_id, SKIPPED, status=current.status)
        if current.status not in WAITING:
            # Finished or cancelled, yet its trigger fired: remove a trigger that an
            # earlier disarm failed to remove, so it does not keep firing.
            trigger.disarm(current)
            observability.event("delivery_skipped", task_id=task_id, run_id=run_id,
                                reason="finished", status=current.status)
            return Execution(task_id, SKIPPED, status=current.status)
        early = (current.next_run_at - now).total_seconds()
        if early > EARLY_WAIT_LIMIT_SECONDS[config.precision()] or waits >= MAX_EARLY_WAITS:
            # Never run it now; make sure its own trigger is still there.
            trigger.ensure_armed(current)
            observability.event("delivery_skipped", task_id=task_id, run_id=run_id,
                                reason="early", early_ms=int(early * 1000))
            return Execution(task_id, EARLY, status=current.status)
        clock.sleep(max(early, 0) + 0.01 * waits)
        waits += 1


def _end_pause(runtime: Runtime, task: Task, now: datetime) -> None:
    """Resume a task whose pause ended by now (its paused_until), as a resume would; a task
    another writer changed meanwhile is left as it is."""

    def end_pause(current: Task) -> Task:
        if current.status != PAUSED or current.paused_until is None \
                or current.paused_until > now:
            raise changes.NotAllowed(current)
        return lifecycle.resumed(current, now)[0]

    try:
        resumed = changes.apply(runtime, task.task_id, end_pause)
    except changes.NotAllowed:
        return
    observability.event("task_resumed", task_id=task.task_id, status=resumed.status,
                        next_run_at=iso(resumed.next_run_at), by_until=True)


def idempotency_key(task: Task) -> str:
    """Stable across deliveries and retries of one run: the task and the firing it
    belongs to (a replay is a new firing, so a new key; an extra run has its own)."""
    if task.extra_run_key:
        return f"{task.task_id}:{task.extra_run_key}"
    return f"{task.task_id}:{iso(task.firing_at)}"
