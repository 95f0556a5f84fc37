"""How a task's firings unfold: its schedule bounded by start_at / end_at and max_runs,
each firing spread within window_minutes, what happens to firings it could not run
(catch_up) or that came while it ran (overlap), and what a finished run leads to.

Pure functions of a task and a time: the executor, the service (resume) and the triggers
ask them, so every path computes the same moments.
"""
import hashlib
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import List, Optional, Tuple

from chalicelib import retries, schedules
from chalicelib.models import (
    COMPLETED, FAILED, MAX_RUNS_KEPT, PAUSED, RETRYING, RUN_SKIPPED, SCHEDULED, Run, Task,
    Transition, iso, parse_iso,
)

# A firing whose moment passed longer ago than this when it is looked at was missed (the
# service was down, or the task paused); a shorter delay is only lateness (EventBridge
# fires within its minute; Lambda retries a failed delivery after about a minute).
MISSED_AFTER = timedelta(minutes=2)
CATCH_UP_ALL_LIMIT = 100
# Firings walked one by one before a long gap is crossed by a jump (a one-minute rate
# missed for months must not take seconds of CPU).
WALK_LIMIT = 5000


def schedule_of(task: Task) -> schedules.Schedule:
    """The task's schedule; a rate counts from start_at when there is one."""
    schedule = schedules.from_task(task)
    start = parse_iso(task.start_at)
    if isinstance(schedule, schedules.Rate) and start is not None:
        schedule = replace(schedule, anchor=start - schedule.period)
    return schedule


def next_firing(task: Task, after: datetime) -> Optional[datetime]:
    """The first firing strictly after `after` within start_at / end_at (None: no more)."""
    schedule = schedule_of(task)
    firing = schedule.next_after(after)
    start = parse_iso(task.start_at)
    if firing is not None and start is not None and firing < start:
        firing = schedule.next_after(start - timedelta(microseconds=1))
    end = parse_iso(task.end_at)
    if firing is not None and end is not None and firing > end:
        return None
    return firing


def spread(task: Task, firing: datetime) -> datetime:
    """The moment a firing really runs: a stable pseudo-random whole second within
    [firing, firing + window_minutes), from the task id and the firing."""
    if not task.window_minutes:
        return firing
    digest = hashlib.sha256(f"{task.task_id}|{iso(firing)}".encode()).digest()
    offset = int.from_bytes(digest[:8], "big") % (task.window_minutes * 60)
    return firing + timedelta(seconds=offset)


def runs_left(task: Task) -> Optional[int]:
    """How many more runs max_runs allows (None: no limit)."""
    return None if task.max_runs is None else max(task.max_runs - task.runs_done, 0)


def first_run(task: Task, now: datetime) -> Optional[Tuple[datetime, datetime]]:
    """(firing, moment) of a new or changed task's first firing after `now`, or None."""
    schedule = schedule_of(task)
    firing = schedule.at if isinstance(schedule, schedules.OneTime) else next_firing(task, now)
    return None if firing is None else (firing, spread(task, firing))


def upcoming(task: Task, count: int) -> List[datetime]:
    """The moments of the task's next runs (none unless it waits), at most `count` and
    no more than max_runs leaves."""
    if not task.waiting or task.next_run_at is None:
        return []
    left = runs_left(task)
    count = count if left is None else min(count, left)
    if count <= 0:
        return []
    found = [task.next_run_at]
    if task.pause_after_run:
        return found  # an extra run of a paused task: paused again after it
    firing: Optional[datetime] = task.firing_at
    if task.extra_run_key is not None and task.recurring:
        found.append(spread(task, firing))  # the firing the extra run leaves pending
    while task.recurring and len(found) < count and firing is not None:
        firing = next_firing(task, firing)
        if firing is not None:
            found.append(spread(task, firing))
    return found[:count]


def skipped_run(firing: datetime, reason: str) -> Run:
    """The record of a firing that did not run."""
    return Run(run_id=f"skipped-{firing.strftime('%Y%m%dT%H%M%S')}", attempt=0,
               started_at=firing, ended_at=firing, outcome=RUN_SKIPPED, error=reason)


@dataclass
class Passed:
    """The firings whose moment has come, from a first one on: how many, and the last
    few (oldest first)."""

    count: int = 0
    last: List[datetime] = field(default_factory=list)


def passed_firings(task: Task, first: datetime, until: datetime, keep: int) -> Passed:
    """The firings from `first` (included) whose moment is at or before `until`; `keep`
    (at least 2) of them are kept."""
    kept: deque = deque(maxlen=keep)
    count = 0
    firing: Optional[datetime] = first
    while firing is not None and spread(task, firing) <= until:
        count += 1
        kept.append(firing)
        if not task.recurring:
            break
        if count == WALK_LIMIT:
            # Far behind: jump to a little before `until`, counting what is crossed.
            gap = kept[-1] - kept[-2]
            target = until - gap * (keep + 2)
            if target > firing:
                count += int((target - firing) / gap) - 1
                firing = next_firing(task, target)
                continue
        firing = next_firing(task, firing)
    return Passed(count, list(kept))


@dataclass
class CatchUp:
    """What to do about the firings missed up to now: the firing to run (None: none
    now), the next firing and its moment, the firings recorded as skipped, and whether
    nothing is left (a one-time task whose firing was skipped, or the end of the
    schedule)."""

    run_firing: Optional[datetime]
    firing_at: Optional[datetime]
    next_run_at: Optional[datetime]
    skipped: List[Run]
    finished: bool = False


def catch_up(task: Task, now: datetime, grace: timedelta = MISSED_AFTER) -> Optional[CatchUp]:
    """How `catch_up` resolves a scheduled task's firings that passed (from firing_at on),
    or None when there is nothing missed (its firing is at most `grace` late and no later
    one has come)."""
    first = task.firing_at
    passed = passed_firings(task, first, now, CATCH_UP_ALL_LIMIT + 1)
    if passed.count == 0:
        return None
    latest = passed.last[-1]
    if passed.count == 1 and now - spread(task, latest) <= grace:
        return None  # late, not missed
    reason = f"missed while the task could not run (catch_up {task.catch_up})"
    if task.catch_up == "all":
        if passed.count <= CATCH_UP_ALL_LIMIT:
            return CatchUp(first, first, now, [])
        beyond = passed.count - CATCH_UP_ALL_LIMIT
        run = passed.last[-CATCH_UP_ALL_LIMIT]
        note = f"{reason}: {beyond} firing(s) older than the {CATCH_UP_ALL_LIMIT} it runs"
        return CatchUp(run, run, now, [skipped_run(passed.last[-CATCH_UP_ALL_LIMIT - 1], note)])
    if task.catch_up == "latest":
        skipped = [skipped_run(f, reason) for f in passed.last[:-1]]
        return CatchUp(latest, latest, now, skipped)
    # none: every missed firing is skipped; the task waits for its next one.
    if now - spread(task, latest) <= grace:
        skipped = [skipped_run(f, reason) for f in passed.last[:-1]]
        return CatchUp(latest, latest, spread(task, latest), skipped)
    skipped = [skipped_run(f, reason) for f in passed.last]
    following = next_firing(task, latest) if task.recurring else None
    if following is None:
        return CatchUp(None, latest, None, skipped, finished=True)
    return CatchUp(None, following, spread(task, following), skipped)


def resumed(task: Task, now: datetime) -> Tuple[Task, List[Run]]:
    """A paused task made scheduled again: its firings that passed while it was paused
    follow catch_up (with no grace: they were missed). Returns the task (not stored) and
    the firings it skipped, which the task's runs already hold."""
    base = replace(task, status=SCHEDULED, paused_until=None, updated_at=now,
                   extra_run_key=None, pause_after_run=False, attempts=0)
    if task.attempts > 0:
        # Paused while retrying (a scheduled task has no attempts): its retry waits again,
        # unless a later firing has come meanwhile, which a recurring retry gives way to.
        following = next_firing(task, task.firing_at) if task.recurring else None
        if following is None or spread(task, following) > now:
            return replace(base, status=RETRYING, attempts=task.attempts,
                           next_run_at=max(task.next_run_at, now)), []
        base = replace(base, firing_at=following, next_run_at=spread(task, following))
    resolution = catch_up(base, now, grace=timedelta(0))
    if resolution is None:
        return replace(base, next_run_at=spread(task, base.firing_at)), []
    runs = sorted(resolution.skipped + base.runs, key=lambda r: r.started_at,
                  reverse=True)[:MAX_RUNS_KEPT]
    if resolution.finished:
        return replace(base, status=COMPLETED, runs=runs), resolution.skipped
    return replace(base, firing_at=resolution.firing_at, next_run_at=resolution.next_run_at,
                   runs=runs), resolution.skipped


def after_run(task: Task, success: bool, retryable: bool, retry_after: Optional[float],
              started: datetime, ended: datetime) -> Tuple[Transition, bool]:
    """(Transition, final_failure) after a run of `task` (as claimed): a retry, the next
    firing (or one buffered by overlap), paused again after an extra run, or done."""
    extra = task.extra_run_key is not None and task.recurring
    following = _following(task, started, ended, extra)
    if not success and retryable and task.attempts < task.max_attempts:
        retry_at = retries.retry_time(task.attempts, ended, retry_after)
        # A recurring task retries its current run only until its next firing is due:
        # later firings are never lost to a retry.
        if following is None or retry_at < following[1]:
            return Transition(RETRYING, next_run_at=retry_at), False
    final_failure = not success
    if not task.recurring:
        return Transition(FAILED if final_failure else COMPLETED, counts_run=True), \
            final_failure
    left = runs_left(task)
    if following is None or (left is not None and left <= 1):
        return Transition(COMPLETED, counts_run=True), final_failure
    firing, moment, skipped = following
    status = PAUSED if task.pause_after_run else SCHEDULED
    return Transition(status, next_run_at=moment, firing_at=firing, reset_attempts=True,
                      skipped=skipped, counts_run=True), final_failure


def _following(task: Task, started: datetime, ended: datetime, extra: bool):
    """(firing, moment, skipped runs) of what runs next after a run from `started` to
    `ended`, or None when the schedule has no more firings. Firings due before the run
    started are catch_up's (all: the oldest runs next); those that came during it, overlap's."""
    if not task.recurring:
        return None
    # An extra run leaves the pending firing (firing_at) to run; a firing's own run moves
    # past it.
    first = task.firing_at if extra else next_firing(task, task.firing_at)
    if first is None:
        return None
    if task.catch_up == "all" and not extra and spread(task, first) <= started:
        return first, spread(task, first), []  # a missed firing: the backlog drains in order
    passed = passed_firings(task, first, ended, 21)
    if passed.count == 0:
        return first, spread(task, first), []
    reason = "overlap: the previous run was still running"
    if task.overlap == "buffer_one":
        buffered = passed.last[-1]
        return buffered, ended, [skipped_run(f, reason) for f in passed.last[:-1]]
    following = next_firing(task, passed.last[-1])
    if following is None:
        return None
    return following, spread(task, following), [skipped_run(f, reason)
                                                for f in passed.last]
