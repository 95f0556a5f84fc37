"""The task store port: what every adapter (DynamoDB, SQLite, in-memory) promises."""
import abc
import base64
import binascii
import json
import logging
from dataclasses import replace
from datetime import datetime
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from chalicelib.errors import ClaimLost, InvalidPageToken, StateConflict, TaskNotFound
from chalicelib.flow import FlowState
from chalicelib.models import MAX_RUNS_KEPT, RETRYING, DueRef, Page, Run, Task, Transition

logger = logging.getLogger("task_scheduler.store")

Tag = Tuple[str, str]  # a tag filter: (key, value)

# How long a claimed run may take before another invocation may take it over. The claim
# is taken after any early wait, so a run needs at most the webhook's overall deadline
# (65 s) plus its AWS calls (bounded in chalicelib.aws). Lambda's own retries of a crashed
# invocation (about 1 and 3 minutes later) and the recheck armed at its expiry take over.
LEASE_SECONDS = 120


class TaskStore(abc.ABC):
    """Where tasks live. Every method returns dataclasses, never raw items, and raises
    only domain errors (chalicelib.errors): TaskNotFound, StoreUnavailable, and the
    StoreError family; never an AWS or SQLite exception for a refused condition."""

    def check(self) -> None:
        """Raise StoreUnavailable when the store cannot take writes now (for /health).
        Adapters whose health a call would cost more than it tells leave it at this."""
        return None

    @abc.abstractmethod
    def create(self, task: Task) -> None:
        """Store a new task (raises TaskExists if the id is taken)."""

    @abc.abstractmethod
    def get(self, task_id: str) -> Task:
        """The task, or TaskNotFound."""

    @abc.abstractmethod
    def list(self, status: Optional[str], limit: int, next_token: Optional[str],
             name: Optional[str] = None, tag: Optional[Tag] = None,
             tenant: Optional[str] = None) -> Page:
        """One page of tasks, newest first where the store can order them, optionally of
        one tenant (read by an index keyed by it, never a filter over every tenant's) and
        one status, with `name` in their name (case-insensitive) and with the tag `tag`
        (key, value). A page may hold fewer
        than `limit` while next_token is set; a token of another listing is
        InvalidPageToken."""

    @abc.abstractmethod
    def claim(self, task_id: str, run_id: str, now: datetime) -> Task:
        """Take the task for one run: only if it is waiting and due at `now`, or if a
        previous run's lease has expired. Raises ClaimLost (with the current task, if
        any) otherwise; of concurrent callers exactly one succeeds."""

    def claim_many(self, claims: List[Tuple[str, str]], now: datetime) -> Dict[str, Task]:
        """Claim each (task id, run id) as `claim` does, together where the store can (one
        transaction); the claimed tasks by id (the others were not claimable). Claimed one
        by one, an error after some claims ends the group with the claims made (they are
        held: dropping them would leave those tasks running under no one's run until their
        lease ends); before any, it is the caller's."""
        claimed: Dict[str, Task] = {}
        for task_id, run_id in claims:
            try:
                claimed[task_id] = self.claim(task_id, run_id, now)
            except ClaimLost:
                continue
            except Exception:  # noqa: BLE001 - logged; the rest go through their own claim
                if not claimed:
                    raise
                logger.exception("claiming %d task(s) together stopped after %d",
                                 len(claims), len(claimed))
                break
        return claimed

    @abc.abstractmethod
    def update(self, task: Task, version: int) -> Task:
        """Write `task` whole, as version `version` + 1, only while the stored task is still
        at `version`: the one conditional write behind every change a client asks for and
        every finished run. Raises TaskNotFound, or StateConflict with the task as stored;
        of concurrent callers with the same version exactly one succeeds."""

    def finish(self, task: Task, run: Optional[Run], change: Transition,
               now: datetime) -> Task:
        """Record a run (and the firings it skipped) and its transition, only while the
        claim `task` came from still holds (ClaimLost otherwise)."""
        kept = sorted(([run] if run else []) + list(change.skipped)
                      + [r for r in task.runs if run is None or r.run_id != run.run_id],
                      key=lambda r: r.started_at, reverse=True)[:MAX_RUNS_KEPT]
        after = replace(
            task, status=change.status, runs=kept, updated_at=now, lease_until=None,
            next_run_at=change.next_run_at or task.next_run_at,
            firing_at=change.firing_at or task.firing_at,
            attempts=0 if change.reset_attempts else task.attempts,
            runs_done=task.runs_done + int(change.counts_run),
            # An extra run ends with its firing; a retry of it keeps its key.
            extra_run_key=task.extra_run_key if change.status == RETRYING else None,
            pause_after_run=task.pause_after_run and change.status == RETRYING,
            # A run ends the firing's wait for its flow-control key.
            flow_waiting=None, flow_delayed_at=None)
        try:
            return self.update(after, task.version)
        except (StateConflict, TaskNotFound) as lost:
            raise ClaimLost(task.task_id, getattr(lost, "current", None)) from None

    @abc.abstractmethod
    def due(self, now: datetime, limit: int) -> Iterator[Task]:
        """Tasks due at `now` (waiting, running past their lease, or paused until a time
        that has come: `Task.wake_at`), highest priority first, then earliest; reads grow
        with the due work, not with the table."""

    def due_refs(self, now: datetime, limit: int) -> Iterator[DueRef]:
        """`due`, as references only (what the local dispatcher reads again and again)."""
        return (DueRef.of(task) for task in self.due(now, limit))

    @abc.abstractmethod
    def next_due_after(self, now: datetime) -> Optional[datetime]:
        """When the earliest task that is not yet due will be (None if there is none)."""

    @abc.abstractmethod
    def recover_running(self, now: datetime, run_prefix: str) -> int:
        """Make due at `now` every running task whose run id starts with `run_prefix`,
        for a process that knows those executors are gone (the local server at start, for
        the runs of its previous life). Returns how many."""

    def get_flow(self, key: str) -> FlowState:
        """A flow-control key's shared state (version 0, no limits: a key not stored)."""
        raise NotImplementedError(f"{type(self).__name__} keeps no flow-control state")

    def put_flow(self, state: FlowState, version: int) -> FlowState:
        """Store a key's state as version `version` + 1, only while it is still at
        `version` (0: not stored yet); FlowConflict with the stored state otherwise."""
        raise NotImplementedError(f"{type(self).__name__} keeps no flow-control state")

    @abc.abstractmethod
    def swap_slot(self, key: str, remove: Optional[str] = None,
                  add: Optional[Tuple[str, datetime]] = None) -> Optional[FlowState]:
        """In one atomic write on a stored key, without reading it first: free the slot
        `remove` and/or hold slot `add` (name, until). With both, only while `remove` is
        still held (a woken task's reservation becoming its run's slot). The state after
        it, or None when `remove` was not held (or the key is not stored)."""

    @abc.abstractmethod
    def take_slot(self, key: str, slot: str, until: datetime) -> Tuple[bool, FlowState]:
        """Hold `slot` until `until` in one conditional write, without reading the key
        first, when the stored key has no rate, does not hold `slot` already and holds
        fewer slots (ended ones included) than its parallelism: (True, the state after),
        else (False, the state as stored, which the caller judges exactly)."""

    @abc.abstractmethod
    def wake_waiting(self, task_id: str, entry: str, at: datetime, now: datetime
                     ) -> Optional[Task]:
        """Make a task queued at `entry` due at `at` and no longer queued, in one write
        conditioned on it still waiting at that entry: the task after it, or None (the
        entry is stale: the task changed, finished or was woken meanwhile)."""

    @abc.abstractmethod
    def count_waiting(self, tenant: str, delta: int, below: Optional[int] = None) -> bool:
        """Add `delta` to the tenant's count of waiting tasks in one atomic write (never
        below 0); with `below`, only while the count is under it. False when refused."""

    @abc.abstractmethod
    def waiting_count(self, tenant: str) -> int:
        """The tenant's count of waiting tasks as kept by count_waiting."""

    @abc.abstractmethod
    def add_waiter(self, key: str, entry: str, task_id: str) -> None:
        """Queue `task_id` under the flow-control key at `entry` (entries sort in the
        order waiting tasks start); adding an entry twice keeps one."""

    @abc.abstractmethod
    def remove_waiter(self, key: str, entry: str) -> None:
        """Take an entry out of the key's queue; one already gone is fine."""

    @abc.abstractmethod
    def waiters(self, key: str, limit: int) -> List[Tuple[str, str]]:
        """The first `limit` (entry, task id) of the key's queue, read after every write
        to it (strongly consistent)."""

    @abc.abstractmethod
    def count_waiters(self, key: str) -> int:
        """How many tasks the key's queue holds."""

    @abc.abstractmethod
    def delete(self, task_id: str) -> None:
        """Remove a task entirely (used to undo a creation whose trigger failed)."""


def encode_token(key: Optional[Dict[str, Any]], status: Optional[str],
                 name: Optional[str] = None, tag: Optional[Tag] = None,
                 tenant: Optional[str] = None) -> Optional[str]:
    """An opaque next_token: a page's last key and the filters it belongs to."""
    if not key:
        return None
    data = {"k": key, "s": status, **({"n": name} if name else {}),
            **({"t": list(tag)} if tag else {}), **({"w": tenant} if tenant else {})}
    raw = json.dumps(data, separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: Optional[str], status: Optional[str],
                 valid_key: Callable[[Any], bool],
                 name: Optional[str] = None,
                 tag: Optional[Tag] = None,
                 tenant: Optional[str] = None) -> Optional[Dict[str, Any]]:
    """The key inside a next_token made for the same filters, or InvalidPageToken."""
    if not token:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode((token + "=" * (-len(token) % 4)).encode()))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        data = None
    if (not isinstance(data, dict) or not {"k", "s"} <= set(data) <= {"k", "s", "n", "t", "w"}
            or not valid_key(data["k"])):
        raise InvalidPageToken("next_token is not a token this API returned")
    if (data["s"] != status or data.get("n") != (name or None)
            or data.get("t") != (list(tag) if tag else None)
            or data.get("w") != (tenant or None)):
        raise InvalidPageToken("next_token belongs to a listing with other filters")
    return data["k"]
