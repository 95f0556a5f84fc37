"""Flow control: the limits of a key and the state every executor shares to keep them.

A key's state is one small record (a DynamoDB item, an SQLite row) changed by one write
conditioned on its version, as a task is:
- **parallelism**: the runs that hold a slot, each a lease (`run_id -> lease end`); a run
  that dies frees its slot when its lease ends, without anyone releasing it.
- **rate**: starts are spaced `period / rate` apart (`next_start`): in any window of one
  period at most `rate` runs start, and a burst is smoothed instead of let through at once
  (what protects a receiver). One timestamp, whatever the rate: a log of the last `rate`
  starts would be 10,000 entries at the most.

These are pure functions of a state and a time; the stores keep the state, the executor asks.
"""
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Dict, Optional

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


@dataclass
class FlowState:
    """A key's shared state, as stored: its limits (the latest task that set them wins),
    the runs holding a slot and the earliest time the next run may start."""

    key: str
    limits: Limits
    slots: Dict[str, datetime] = field(default_factory=dict)
    next_start: Optional[datetime] = None
    version: int = 0

    def running(self, now: datetime) -> int:
        """Slots held by runs whose lease has not ended."""
        return sum(1 for lease_end in self.slots.values() if lease_end > now)


@dataclass(frozen=True)
class Decision:
    """The answer to a run asking to start: granted (with the state to store), or the
    earliest time worth asking again (`retry_at`; None: when a slot frees)."""

    granted: bool
    state: FlowState
    retry_at: Optional[datetime] = None


def acquire(state: FlowState, run_id: str, now: datetime, lease_end: datetime) -> Decision:
    """May run `run_id` start now? Granted: it holds a slot until `lease_end` and the next
    start is one spacing later. Slots whose lease ended are dropped on the way."""
    live = {held: end for held, end in state.slots.items() if end > now}
    limits = state.limits
    if run_id in live:  # asked again by the same run (a retried write): already granted
        return Decision(True, replace(state, slots=live))
    if state.next_start is not None and now < state.next_start:
        return Decision(False, replace(state, slots=live), retry_at=state.next_start)
    if limits.parallelism is not None and len(live) >= limits.parallelism:
        return Decision(False, replace(state, slots=live), retry_at=min(live.values()))
    granted = replace(state, slots={**live, run_id: lease_end},
                      next_start=now + limits.spacing if limits.rate else state.next_start)
    return Decision(True, granted)


def release(state: FlowState, run_id: str, now: datetime) -> FlowState:
    """The state once `run_id` has ended (its slot free; expired ones dropped too)."""
    return replace(state, slots={held: end for held, end in state.slots.items()
                                 if held != run_id and end > now})
