"""An in-memory task store: the contract of TaskStore with nothing behind it but a dict.

Tests of the use cases run on it without moto or files; it keeps nothing across a restart,
so no stage serves from it. Tasks are copied in and out, so a caller's object never
changes what is stored (as with a real store).
"""
import copy
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Dict, Iterator, List, Optional, Tuple

from chalicelib.errors import ClaimLost, FlowConflict, StateConflict, TaskExists, TaskNotFound
from chalicelib.flow import FlowState, Limits
from chalicelib.models import RUNNING, WAITING, Page, Task, iso_ms
from chalicelib.store import LEASE_SECONDS, Tag, TaskStore, decode_token, encode_token


class InMemoryTaskStore(TaskStore):
    """Tasks in a dict, every change under one lock (so each is atomic, as a conditional
    write is)."""

    def __init__(self):
        self._tasks: Dict[str, Task] = {}
        self._flows: Dict[str, FlowState] = {}
        self._waiters: Dict[str, Dict[str, str]] = {}
        self._waiting: Dict[str, int] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------ writes

    def create(self, task: Task) -> None:
        with self._lock:
            if task.task_id in self._tasks:
                raise TaskExists(task.task_id)
            self._tasks[task.task_id] = copy.deepcopy(task)

    def claim(self, task_id: str, run_id: str, now: datetime) -> Task:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or not _claimable(task, now):
                raise ClaimLost(task_id, copy.deepcopy(task))
            return self._put(replace(
                task, status=RUNNING, run_id=run_id, attempts=task.attempts + 1,
                lease_until=now + timedelta(seconds=LEASE_SECONDS), updated_at=now,
                version=task.version + 1))

    def update(self, task: Task, version: int) -> Task:
        with self._lock:
            current = self._existing(task.task_id)
            if current.version != version:
                raise StateConflict(copy.deepcopy(current))
            return self._put(replace(task, version=version + 1))

    def get_flow(self, key: str) -> FlowState:
        with self._lock:
            found = self._flows.get(key)
        return copy.deepcopy(found) if found else FlowState(key, Limits())

    def put_flow(self, state: FlowState, version: int) -> FlowState:
        with self._lock:
            current = self._flows.get(state.key)
            if (current.version if current else 0) != version:
                raise FlowConflict(copy.deepcopy(current))
            self._flows[state.key] = replace(copy.deepcopy(state), version=version + 1)
            return copy.deepcopy(self._flows[state.key])

    def swap_slot(self, key: str, remove: Optional[str] = None,
                  add: Optional[Tuple[str, datetime]] = None) -> Optional[FlowState]:
        with self._lock:
            current = self._flows.get(key)
            if current is None or (add and remove and remove not in current.slots):
                return None
            slots = {held: end for held, end in current.slots.items() if held != remove}
            slots.update([add] if add else [])
            self._flows[key] = replace(current, slots=slots, version=current.version + 1)
            return copy.deepcopy(self._flows[key])

    def take_slot(self, key: str, slot: str, until: datetime) -> Tuple[bool, FlowState]:
        with self._lock:
            current = self._flows.get(key) or FlowState(key, Limits())
            limits = current.limits
            if (current.version == 0 or limits.rate is not None or limits.parallelism is None
                    or slot in current.slots or len(current.slots) >= limits.parallelism):
                return False, copy.deepcopy(current)
            self._flows[key] = replace(current, slots={**current.slots, slot: until},
                                       version=current.version + 1)
            return True, copy.deepcopy(self._flows[key])

    def wake_waiting(self, task_id: str, entry: str, at: datetime, now: datetime
                     ) -> Optional[Task]:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None or task.flow_waiting != entry or task.status not in WAITING:
                return None
            return self._put(replace(task, next_run_at=at, flow_waiting=None, updated_at=now,
                                     version=task.version + 1))

    def count_waiting(self, tenant: str, delta: int, below: Optional[int] = None) -> bool:
        with self._lock:
            count = self._waiting.get(tenant, 0)
            if below is not None and count >= below:
                return False
            self._waiting[tenant] = max(count + delta, 0)
            return True

    def waiting_count(self, tenant: str) -> int:
        with self._lock:
            return self._waiting.get(tenant, 0)

    def add_waiter(self, key: str, entry: str, task_id: str) -> None:
        with self._lock:
            self._waiters.setdefault(key, {})[entry] = task_id

    def remove_waiter(self, key: str, entry: str) -> None:
        with self._lock:
            self._waiters.get(key, {}).pop(entry, None)

    def waiters(self, key: str, limit: int) -> List[Tuple[str, str]]:
        with self._lock:
            return sorted(self._waiters.get(key, {}).items())[:limit]

    def count_waiters(self, key: str) -> int:
        with self._lock:
            return len(self._waiters.get(key, {}))

    def delete(self, task_id: str) -> None:
        with self._lock:
            self._tasks.pop(task_id, None)

    def recover_running(self, now: datetime, run_prefix: str) -> int:
        expired = now - timedelta(milliseconds=1)
        with self._lock:
            cut_off = [task for task in self._tasks.values()
                       if task.status == RUNNING and (task.run_id or "").startswith(run_prefix)]
            for task in cut_off:
                task.lease_until = expired
                task.version += 1
            return len(cut_off)

    def _existing(self, task_id: str) -> Task:
        task = self._tasks.get(task_id)
        if task is None:
            raise TaskNotFound(f"no task with id {task_id}", field="task_id")
        return task

    def _put(self, task: Task) -> Task:
        self._tasks[task.task_id] = copy.deepcopy(task)
        return copy.deepcopy(task)

    # ------------------------------------------------------------ reads

    def get(self, task_id: str) -> Task:
        with self._lock:
            return copy.deepcopy(self._existing(task_id))

    def list(self, status: Optional[str], limit: int, next_token: Optional[str],
             name: Optional[str] = None, tag: Optional[Tag] = None,
             tenant: Optional[str] = None) -> Page:
        after = decode_token(next_token, status, _is_page_key, name, tag, tenant)
        folded = name.casefold() if name else None
        with self._lock:
            matching = [task for task in self._tasks.values()
                        if (status is None or task.status == status)
                        and (tenant is None or task.tenant == tenant)
                        and (folded is None or folded in (task.name or "").casefold())
                        and (tag is None or task.tags.get(tag[0]) == tag[1])]
            matching.sort(key=_page_key_of, reverse=True)  # newest first, as SQLite lists
            if after:
                start = (after["created_at"], after["task_id"])
                matching = [task for task in matching if _page_key_of(task) < start]
            page = [copy.deepcopy(task) for task in matching[:limit]]
        token = None
        if len(matching) > limit:
            created_at, task_id = _page_key_of(page[-1])
            token = encode_token({"created_at": created_at, "task_id": task_id}, status, name,
                                 tag, tenant)
        return Page(tasks=page, next_token=token)

    def due(self, now: datetime, limit: int) -> Iterator[Task]:
        with self._lock:
            due = [task for task in self._tasks.values()
                   if (moment := _due_at(task)) is not None and moment <= now]
            due.sort(key=lambda task: (-task.priority, _due_at(task), task.task_id))
            found = [copy.deepcopy(task) for task in due]
        yield from found

    def next_due_after(self, now: datetime) -> Optional[datetime]:
        with self._lock:
            later: List[datetime] = [moment for task in self._tasks.values()
                                     if (moment := _due_at(task)) is not None and moment > now]
        return min(later, default=None)


def _due_at(task: Task) -> Optional[datetime]:
    """When the task is due: when it wakes (Task.wake_at), its lease's end while it runs."""
    if task.status == RUNNING:
        return task.lease_until
    return task.wake_at


def _claimable(task: Task, now: datetime) -> bool:
    if task.status in WAITING:
        return task.next_run_at is not None and task.next_run_at <= now
    return task.status == RUNNING and task.lease_until is not None and task.lease_until < now


def _page_key_of(task: Task):
    return iso_ms(task.created_at), task.task_id


def _is_page_key(key) -> bool:
    return (isinstance(key, dict) and set(key) == {"created_at", "task_id"}
            and all(isinstance(value, str) for value in key.values()))
