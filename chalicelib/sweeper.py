"""The daily sweeper: run what its trigger missed, highest priority first."""
import json
import logging
from collections import Counter
from typing import Callable, Optional

from chalicelib import config
from chalicelib.executor import Clock, execute_task
from chalicelib.store import get_store

logger = logging.getLogger("task_scheduler.sweeper")


def sweep(clock: Optional[Clock] = None,
          time_left_ms: Optional[Callable[[], int]] = None,
          reserve_ms: int = 90_000) -> dict:
    """Run every due task (waiting past its time, or running past its lease) through the
    executor, priority 9 first, earliest first within a priority. Stops taking new work
    when less than `reserve_ms` of the invocation is left; the next sweep continues."""
    clock = clock or Clock()
    counts: Counter = Counter()
    now = clock.now()
    for task in get_store().due(now, config.sweep_batch_size()):
        if time_left_ms is not None and time_left_ms() < reserve_ms:
            counts["deferred"] += 1
            break
        execution = execute_task(task.task_id, clock)
        counts[execution.status if execution.outcome == "ran" else execution.outcome] += 1
    summary = {"event": "sweep_finished", "due_examined": sum(counts.values()),
               **dict(sorted(counts.items()))}
    logger.info(json.dumps(summary))
    return summary
