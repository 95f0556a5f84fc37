"""The daily sweeper: run what its trigger missed, highest priority first, and re-arm
the triggers of tasks due before the next sweep."""
import json
import logging
import uuid
from collections import Counter
from datetime import datetime
from typing import Callable, Optional
from zoneinfo import ZoneInfo

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import aws, config, observability, schedules
from chalicelib.executor import RAN, Clock, execute_task
from chalicelib.models import iso, utcnow
from chalicelib.store import get_store
from chalicelib.triggers import get_trigger

logger = logging.getLogger("task_scheduler.sweeper")

SWEEP_EXPRESSION = "cron(0 9 * * ? *)"
# Summary count -> metric name (EMF, namespace TaskScheduler, dimension Stage).
SWEEP_METRICS = {
    "completed": "SweptCompleted", "failed": "SweptFailed", "retrying": "SweptRetried",
    "scheduled": "SweptRecurring", "skipped": "SweptSkipped", "early": "SweptEarly",
    "error": "SweepErrors", "checked": "SweepChecked", "rearmed": "SweepRearmed",
    "deferred": "SweepDeferred",
}
# Time one more run may need: the longest webhook timeout (60 s) plus writes and margin.
RESERVE_MS = 75_000


def next_sweep_after(moment: datetime) -> datetime:
    """When the daily sweeper runs next."""
    return schedules.parse(SWEEP_EXPRESSION, ZoneInfo("UTC"), anchor=moment).next_after(moment)


def sweep(clock: Optional[Clock] = None,
          time_left_ms: Optional[Callable[[], int]] = None) -> dict:
    """Run every due task (waiting past its time, or running past its lease) through the
    executor, priority 9 first, earliest first within a priority; then make sure every
    task due before the next sweep still has its trigger. Reads grow with that work, not
    with the table. Stops taking work when less than RESERVE_MS of the invocation is left
    and says so (`deferred`), so the caller can continue in a new invocation."""
    clock = clock or Clock()
    store = get_store()
    counts: Counter = Counter()
    batch = config.sweep_batch_size()

    def out_of_time() -> bool:
        return time_left_ms is not None and time_left_ms() < RESERVE_MS

    now = clock.now()
    for task in store.due(now, batch):
        if out_of_time():
            counts["deferred"] += 1
            break
        try:
            execution = execute_task(task.task_id, clock)
        except (ClientError, BotoCoreError):
            # One task's store or trigger error must not stop the sweep of the others;
            # the task stays due and the next sweep (or its own trigger) takes it again.
            logger.exception("sweep: task %s failed to run", task.task_id)
            counts["error"] += 1
            continue
        counts[execution.status if execution.outcome == RAN else execution.outcome] += 1
    if not counts["deferred"]:
        trigger = get_trigger()
        for task in store.due(next_sweep_after(now), batch):
            if not task.waiting or task.next_run_at <= now:
                continue  # running, or due now: the first pass (or its continuation) has it
            if out_of_time():
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


def continuation_event(function_arn: str) -> dict:
    """An event shaped like EventBridge's scheduled event, as the sweeper's handler
    expects one, marked as a continuation."""
    _, _, _, region, account, *_ = function_arn.split(":")
    return {
        "version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event",
        "source": "task-scheduler.sweeper", "account": account, "time": iso(utcnow()),
        "region": region, "resources": [function_arn], "detail": {"continuation": True},
    }


def run_daily(time_left_ms: Optional[Callable[[], int]] = None,
              function_arn: Optional[str] = None) -> dict:
    """The daily_sweeper Lambda: sweep, and when the work did not fit, invoke itself again
    (asynchronously) to continue where it stopped."""
    summary = sweep(time_left_ms=time_left_ms)
    if summary.get("deferred") and function_arn:
        aws.client("lambda").invoke(FunctionName=function_arn, InvocationType="Event",
                                    Payload=json.dumps(continuation_event(function_arn)).encode())
        summary["continued"] = True
        observability.event("sweep_continued", function=function_arn)
    return summary
