"""The composition root: the store, trigger and clock this process uses, built once.

Use cases (`service`, `executor`, `sweeper`, the local dispatcher) never build or look up
their dependencies: they receive a `Runtime`. `app.py`, the Lambdas and the local server
ask `runtime()` for the one that the configuration names; tests build their own (the
in-memory store, a recording trigger, a fixed clock), or put them in with `overridden`.
"""
import contextlib
import threading
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

from chalicelib import config
from chalicelib.models import ALL_TENANTS, SYSTEM_CLOCK, Clock, Task
from chalicelib.store import TaskStore
from chalicelib.triggers import Trigger


@dataclass(frozen=True)
class Runtime:
    """What a use case works with: where tasks live, what fires them, what time it is, and
    whose tasks it may see (an API request's tenant; the executor and sweeper see all)."""

    store: TaskStore
    trigger: Trigger
    clock: Clock = SYSTEM_CLOCK
    caller: str = ALL_TENANTS

    def sees(self, task: Task) -> bool:
        """Whether the caller may see and change `task` (another tenant's is not there)."""
        return self.caller == ALL_TENANTS or task.tenant == self.caller


_lock = threading.Lock()
_stores: Dict[Tuple[str, str], TaskStore] = {}
_triggers: Dict[Tuple[str, int], Trigger] = {}
_overrides: Dict[str, object] = {}


def build_store() -> TaskStore:
    """The store adapter the configuration names (one per table or file per process)."""
    kind = config.task_store()
    if kind == "dynamodb":
        key = ("dynamodb", config.tasks_table())
    elif kind == "sqlite":
        key = ("sqlite", str(config.sqlite_path()))
    else:
        raise ValueError(f"TASK_STORE={kind!r} is not supported (dynamodb, sqlite)")
    with _lock:
        if key not in _stores:
            _stores[key] = _new_store(kind)
        return _stores[key]


def _new_store(kind: str) -> TaskStore:
    # Imported on demand: a Lambda never loads sqlite3, the local server never boto3's
    # DynamoDB types.
    if kind == "dynamodb":
        from chalicelib.store.dynamodb import DynamoDBTaskStore

        return DynamoDBTaskStore(config.tasks_table(), config.flow_table())
    from chalicelib.store.sqlite import SQLiteTaskStore

    path = config.sqlite_path()
    # The default folder is the store's own and is kept private; one a user chose with
    # SQLITE_PATH may be shared (/tmp) and keeps its mode.
    return SQLiteTaskStore(path, own_folder=path.parent == config.LOCAL_DATA_DIR)


def build_trigger(clock: Clock = SYSTEM_CLOCK) -> Trigger:
    """The trigger adapter the configuration names, on `clock`."""
    backend = config.trigger_backend()
    key = (backend, id(clock))
    with _lock:
        if key not in _triggers:
            _triggers[key] = _new_trigger(backend, clock)
        return _triggers[key]


def _new_trigger(backend: str, clock: Clock) -> Trigger:
    if backend == "scheduler":
        from chalicelib.triggers.scheduler import SchedulerTrigger

        return SchedulerTrigger(clock)
    if backend == "rules":
        from chalicelib.triggers.rules import RulesTrigger

        return RulesTrigger(clock)
    if backend == "local":
        from chalicelib.triggers.local import LocalTrigger

        return LocalTrigger(clock)
    raise ValueError(f"TRIGGER_BACKEND={backend!r} is not supported "
                     "(scheduler, rules, local)")


def runtime() -> Runtime:
    """The process's runtime for the current configuration (with any test overrides)."""
    clock = _overrides.get("clock", SYSTEM_CLOCK)
    store = _overrides.get("store") or build_store()
    trigger = _overrides.get("trigger") or build_trigger(clock)
    return Runtime(store=store, trigger=trigger, clock=clock)


@contextlib.contextmanager
def overridden(store: Optional[TaskStore] = None, trigger: Optional[Trigger] = None,
               clock: Optional[Clock] = None) -> Iterator[None]:
    """Within the block, `runtime()` hands out these parts instead (for tests that go
    through app.py, which asks for the runtime itself)."""
    given = {name: part for name, part in
             (("store", store), ("trigger", trigger), ("clock", clock)) if part is not None}
    previous = dict(_overrides)
    _overrides.update(given)
    try:
        yield
    finally:
        _overrides.clear()
        _overrides.update(previous)


def reset() -> None:
    """Forget every adapter built so far (tests, between configurations)."""
    with _lock:
        _stores.clear()
        _triggers.clear()
    _overrides.clear()
