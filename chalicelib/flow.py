"""Flow control: the limits of a key and the state every executor shares to keep them.

A key's state is one small record (a DynamoDB item, an SQLite row) changed by one write
conditioned on its version, as a task is:
- **parallelism**: the runs that hold a slot, each a lease (`run_id -> lease end`); a run
  that dies frees its slot when its lease ends, without anyone releasing it. A task woken
  from the key's queue has a slot reserved (`task:<id>`) until it comes and takes it, so a
  newcomer cannot take the room that was made for it.
- **rate**: starts are spaced `period / rate` apart (`next_start`): in any window of one
  period at most `rate` runs start, and a burst is smoothed instead of let through at once
  (what protects a receiver). One timestamp, whatever the rate: a log of the last `rate`
  starts would be 10,000 entries at the most.

These are pure functions of a state and a time; the stores keep the state, the executor asks.
"""
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Dict, List, Optional, Tuple

PERIODS = {"second": timedelta(seconds=1), "minute": timedelta(minutes=1),
           "hour": timedelta(hours=1)}


@dataclass(frozen=True)
class Limits:
    """What a key allows: `rate` starts per `period`, `parallelism` runs at once (either
    may be None: no such limit)."""

    rate: Optional[int] = None
    period: str = "second"
    parallelism: Optional[int] = None

    @property
    def spacing(self) -> timedelta:
        """The least time between two starts under the rate (none without one)."""
        if self.rate is None:
            return timedelta(0)
        return PERIODS[self.period] / self.rate


RESERVED = "task:"  # a slot held for a woken task on its way, not yet by a run
# Under a rate, starts reserved ahead for woken tasks at most: enough to keep the rate
# while each woken task's trigger takes its time to fire, few enough for one small item.
RATE_AHEAD = 100


def reservation(task_id: str) -> str:
    """The slot name of a reservation for a woken task."""
    return RESERVED + task_id


def run_slot(task_id: str, run_id: str) -> str:
    """The slot name of a run: its task's id first, so that a task's next run finds the
    slot of an earlier run of it that died (a task has one run at a time)."""
    return f"{task_id}/{run_id}"


@dataclass
class FlowState:
    """A key's shared state, as stored: its limits (the latest task that set them wins),
    the slots held by runs and reserved for woken tasks (each until its lease ends) and
    the earliest time the next run may start."""

    key: str
    limits: Limits
    slots: Dict[str, datetime] = field(default_factory=dict)
    next_start: Optional[datetime] = None  # the next start free to reserve or take
    last_start: Optional[datetime] = None  # the latest start under a rate, as it happened
    version: int = 0

    def running(self, now: datetime) -> int:
        """Slots held by runs whose lease has not ended."""
        return sum(1 for held, end in self.slots.items()
                   if end > now and not held.startswith(RESERVED))

    def reserved(self, now: datetime) -> int:
        """Slots reserved for woken tasks that have not come yet."""
        return sum(1 for held, end in self.slots.items()
                   if end > now and held.startswith(RESERVED))

    def room(self, now: datetime) -> int:
        """How many more tasks may be woken now: the free slots under the parallelism;
        under a rate, up to RATE_AHEAD reserved starts ahead (each at its own time)."""
        room = (self.limits.parallelism - self.running(now) - self.reserved(now)
                if self.limits.parallelism is not None else None)
        if self.limits.rate is not None:
            ahead = RATE_AHEAD - self.reserved(now)
            room = ahead if room is None else min(room, ahead)
        return max(room or 0, 0)


@dataclass(frozen=True)
class Decision:
    """The answer to a run asking to start: granted (with the state to store), or the
    earliest time worth asking again (`retry_at`)."""

    granted: bool
    state: FlowState
    retry_at: Optional[datetime] = None


def _live(state: FlowState, now: datetime) -> Dict[str, datetime]:
    return {held: end for held, end in state.slots.items() if end > now}


def acquire(state: FlowState, run_id: str, now: datetime, lease_end: datetime,
            task_id: Optional[str] = None) -> Decision:
    """May run `run_id` (of task `task_id`) start now? Granted: it holds a slot until
    `lease_end`. A woken task takes over its reservation (which already took its place
    under the limits); a newcomer waits while woken tasks have reservations under a rate,
    so it never goes ahead of them. Under a rate no two starts are closer than its spacing,
    even when a woken task comes late. Slots whose lease ended are dropped, and so are those
    of earlier runs of the same task (they died: a task runs once at a time)."""
    live = _live(state, now)
    if task_id is not None:
        live = {held: end for held, end in live.items()
                if held == run_id or not held.startswith(task_id + "/")}
    limits, spacing = state.limits, state.limits.spacing
    if run_id in live:  # asked again by the same run (a retried write): already granted
        return Decision(True, replace(state, slots=live))
    after_last = state.last_start + spacing if limits.rate and state.last_start else None
    if after_last is not None and now < after_last:
        return Decision(False, replace(state, slots=live), retry_at=after_last)
    if task_id is not None and reservation(task_id) in live:
        del live[reservation(task_id)]
        return Decision(True, replace(state, slots={**live, run_id: lease_end},
                                      last_start=now if limits.rate else state.last_start))
    if limits.rate and any(held.startswith(RESERVED) for held in live):
        return Decision(False, replace(state, slots=live),
                        retry_at=max(state.next_start or now, now))
    if state.next_start is not None and now < state.next_start:
        return Decision(False, replace(state, slots=live), retry_at=state.next_start)
    if limits.parallelism is not None and len(live) >= limits.parallelism:
        return Decision(False, replace(state, slots=live), retry_at=min(live.values()))
    if not limits.rate:
        return Decision(True, replace(state, slots={**live, run_id: lease_end}))
    return Decision(True, replace(state, slots={**live, run_id: lease_end},
                                  next_start=now + spacing, last_start=now))


def reserve(state: FlowState, task_ids: List[str], now: datetime,
            hold: timedelta) -> Tuple[FlowState, List[datetime]]:
    """Reserve a slot for each woken task (held `hold` past its start, for it to come),
    each at the next start the rate allows: the state and each task's start."""
    live = _live(state, now)
    starts, next_start = [], state.next_start
    for task_id in task_ids:
        start = max(now, next_start or now)
        starts.append(start)
        live[reservation(task_id)] = start + hold
        if state.limits.rate:
            next_start = start + state.limits.spacing
    return replace(state, slots=live, next_start=next_start), starts


def release(state: FlowState, run_id: str, now: datetime) -> FlowState:
    """The state once `run_id` has ended (its slot free; expired ones dropped too)."""
    return replace(state, slots={held: end for held, end in _live(state, now).items()
                                 if held != run_id})
