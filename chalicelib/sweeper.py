"""The daily sweeper: run what its trigger missed, highest priority first, and re-arm
the triggers of tasks due before the next sweep."""
import json
import logging
import uuid
from collections import Counter
from datetime import datetime
from typing import Any, Callable, Optional
from zoneinfo import ZoneInfo

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import actions, aws, config, observability, schedules
from chalicelib.errors import StoreUnavailable
from chalicelib.executor import RAN, execute_task
from chalicelib.models import Task, iso
from chalicelib.triggers import invoke_now
from chalicelib.wiring import Runtime

logger = logging.getLogger("task_scheduler.sweeper")

SWEEP_EXPRESSION = config.SWEEP_EXPRESSION
# Summary count -> metric name (EMF, namespace TaskScheduler, dimension Stage).
SWEEP_METRICS = {
    "completed": "SweptCompleted", "failed": "SweptFailed", "retrying": "SweptRetried",
    "scheduled": "SweptRecurring", "skipped": "SweptSkipped", "early": "SweptEarly",
    "error": "SweepErrors", "checked": "SweepChecked", "rearmed": "SweepRearmed",
    "deferred": "SweepDeferred", "handed_off": "SweepHandedOff", "delayed": "SweptDelayed",
}
# What a run needs beyond its action: the claim, the result, a dead letter or a
# notification (each a bounded AWS call), and the margin to return before the timeout.
RUN_OVERHEAD_MS = 2_000
# What handing one task to the executor (one asynchronous Invoke) may take.
HANDOFF_MS = 1_000
# A chain of continuations ends here even if each one made progress: tasks it keeps
# handing off without their being claimed point at a broken executor, not at more work.
MAX_CONTINUATIONS = 50


def next_sweep_after(moment: datetime) -> datetime:
    """When the daily sweeper runs next."""
    return schedules.parse(SWEEP_EXPRESSION, ZoneInfo("UTC"), anchor=moment).next_after(moment)


def run_budget_ms(task) -> int:
    """The longest one run of the task may take here: its action's limit (a webhook's own
    timeout plus its deadline margin) and the run's own writes."""
    action = actions.REGISTRY.get(task.action)
    action_ms = int(action.max_seconds(task.payload) * 1000) if action else 0
    return action_ms + RUN_OVERHEAD_MS


def sweep(runtime: Runtime,
          time_left_ms: Optional[Callable[[], int]] = None,
          hand_off: Optional[Callable[[Task], None]] = None,
          rearm_until: Optional[datetime] = None) -> dict:
    """Run every due task (waiting past its time, paused until a time that has come, or
    running past its lease) through the executor (which applies the task's catch_up to
    the firings it missed), priority 9 first, earliest first within a priority; then make sure every
    task due before the next sweep (or `rearm_until`) still has its trigger. Reads grow
    with that work, not with the table.

    With a time budget, a task runs here only while its own worst case still fits
    (`run_budget_ms`); one that does not is given to `hand_off` (the executor Lambda, with
    a budget of its own) or, without one, left for later (`deferred`), and smaller tasks
    behind it still run. When even a hand-off no longer fits, the sweep stops and says so
    (`deferred`), so the caller can continue in a new invocation."""
    store, clock = runtime.store, runtime.clock
    counts: Counter = Counter()
    batch = config.sweep_batch_size()

    def fits(needed_ms: int) -> bool:
        return time_left_ms is None or time_left_ms() >= needed_ms

    now = clock.now()
    for task in store.due(now, batch):
        if not fits(run_budget_ms(task)):
            if hand_off is None:
                counts["deferred"] += 1
                continue
            if not fits(HANDOFF_MS):
                counts["deferred"] += 1
                break
            try:
                hand_off(task)
            except (ClientError, BotoCoreError):
                logger.exception("sweep: task %s could not be handed off", task.task_id)
                counts["error"] += 1
                continue
            counts["handed_off"] += 1
            continue
        try:
            execution = execute_task(runtime, task.task_id)
        except (ClientError, BotoCoreError, StoreUnavailable):
            # One task's store or trigger error must not stop the sweep of the others;
            # the task stays due and the next sweep (or its own trigger) takes it again.
            logger.exception("sweep: task %s failed to run", task.task_id)
            counts["error"] += 1
            continue
        counts[execution.status if execution.outcome == RAN else execution.outcome] += 1
    if not counts["deferred"]:
        trigger = runtime.trigger
        for task in store.due(rearm_until or next_sweep_after(now), batch):
            if task.wake_at is None or task.wake_at <= now:
                continue  # running, or due now: the first pass (or its continuation) has it
            if not fits(HANDOFF_MS):
                counts["deferred"] += 1
                break
            counts["checked"] += 1
            if trigger.ensure_armed(task):
                counts["rearmed"] += 1
    summary = dict(sorted(counts.items()))
    observability.event("swept", **summary)
    observability.emit_metrics(
        {SWEEP_METRICS[name]: summary.get(name, 0) for name in SWEEP_METRICS},
        units={}, dimensions={"Stage": config.stage()}, dimension_sets=[["Stage"]])
    return {"event": "swept", **summary}


def made_progress(summary: dict) -> bool:
    """Whether a sweep ran, handed off, checked or re-armed anything at all."""
    return any(summary.get(name) for name in (
        "completed", "failed", "retrying", "scheduled", "skipped", "early", "handed_off",
        "checked", "rearmed", "delayed"))


def continuation_event(function_arn: str, now: datetime, depth: int = 1) -> dict:
    """An event shaped like EventBridge's scheduled event, as the sweeper's handler
    expects one, marked as the `depth`-th continuation of today's sweep."""
    _, _, _, region, account, *_ = function_arn.split(":")
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
        "source": "task-scheduler.sweeper", "account": account, "time": iso(now),
        "region": region, "resources": [function_arn], "detail": {"continuation": depth},
    }


def continuation_depth(detail: Any) -> int:
    """How many continuations led to this invocation (0 for the daily schedule's own)."""
    depth = detail.get("continuation") if isinstance(detail, dict) else None
    if isinstance(depth, bool):
        return int(depth)
    return depth if isinstance(depth, int) and depth > 0 else 0


def run_daily(runtime: Runtime, time_left_ms: Optional[Callable[[], int]] = None,
              function_arn: Optional[str] = None, depth: int = 0) -> dict:
    """The daily_sweeper Lambda: sweep, and when the work did not fit, invoke itself again
    (asynchronously) to continue where it stopped, but only after a sweep that made
    progress: a timeout too short for any task must not re-invoke itself forever."""
    summary = sweep(runtime, time_left_ms=time_left_ms, hand_off=invoke_now)
    if not summary.get("deferred") or not function_arn:
        return summary
    if not made_progress(summary):
        observability.event("sweep_stuck", logging.ERROR, deferred=summary["deferred"],
                            reason="not one due task fits this invocation's time left; "
                                   "give daily_sweeper a longer lambda_timeout")
        return summary
    if depth >= MAX_CONTINUATIONS:
        observability.event("sweep_stuck", logging.ERROR, deferred=summary["deferred"],
                            reason=f"{MAX_CONTINUATIONS} continuations in a row")
        return summary
    aws.client("lambda").invoke(
        FunctionName=function_arn, InvocationType="Event",
        Payload=json.dumps(continuation_event(function_arn, runtime.clock.now(),
                                              depth + 1)).encode())
    summary["continued"] = True
    observability.event("sweep_continued", function=function_arn, depth=depth + 1)
    return summary
