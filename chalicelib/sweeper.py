"""The daily sweeper: run what its trigger missed, highest priority first."""
import json
import logging
from collections import Counter
from typing import Callable, Optional

from chalicelib import config
from chalicelib.executor import Clock, execute_task
from chalicelib.store import get_store

logger = logging.getLogger("task_scheduler.sweeper")

# Time one more run may need: the longest webhook timeout (60 s) plus writes and margin.
RESERVE_MS = 75_000


def sweep(clock: Optional[Clock] = None,
          time_left_ms: Optional[Callable[[], int]] = None) -> dict:
    """Run every due task (waiting past its time, or running past its lease) through the
    executor, priority 9 first, earliest first within a priority. Stops taking new work
    when less than RESERVE_MS of the invocation is left; the next sweep continues."""
    clock = clock or Clock()
    counts: Counter = Counter()
    now = clock.now()
    for task in get_store().due(now, config.sweep_batch_size()):
        if time_left_ms is not None and time_left_ms() < RESERVE_MS:
            counts["deferred"] += 1
            break
        execution = execute_task(task.task_id, clock)
        counts[execution.status if execution.outcome == "ran" else execution.outcome] += 1
    summary = {"event": "sweep_finished", "due_examined": sum(counts.values()),
               **dict(sorted(counts.items()))}
    logger.info(json.dumps(summary))
    return summary
