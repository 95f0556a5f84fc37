"""TENANT_MAX_WAITING: each tenant's count of waiting tasks (not finished: scheduled,
retrying, running, paused), kept with one atomic write per change, never by scanning.

A task counts from its creation (refused with 429 once the tenant is at its limit) until
it is completed, failed or cancelled; a replayed task counts again, and is refused as a
new task would be at the limit. The count is kept
only while a limit is configured: a limit set on a deployment that already has tasks
counts from then on. A count can drift by one for a process that dies between a task's
write and the count's; it never blocks more than the limit says for long, as each finish
gives one back.
"""
from chalicelib import config
from chalicelib.errors import QuotaExceeded
from chalicelib.models import FINISHED, Task
from chalicelib.wiring import Runtime


def take(runtime: Runtime, tenant: str) -> bool:
    """Count a new task for `tenant`, or QuotaExceeded (nothing counted). True when a count
    was taken (give it back if the task is not stored after all)."""
    limit = config.tenant_max_waiting()
    if limit is None:
        return False
    if not runtime.store.count_waiting(tenant, +1, below=limit):
        raise QuotaExceeded(f"tenant {tenant} has {limit} waiting tasks, the most "
                            "TENANT_MAX_WAITING allows; cancel some or wait for them to "
                            "finish", field="tenant")
    return True


def give_back(runtime: Runtime, tenant: str) -> None:
    """A counted task that is gone (its creation undone)."""
    runtime.store.count_waiting(tenant, -1)


def take_for(runtime: Runtime, before: Task, after: Task) -> bool:
    """Count a finished task that is to wait again (a replay) as `take` counts a new one
    (QuotaExceeded at the limit); True when a count was taken."""
    if before.status in FINISHED and after.status not in FINISHED:
        return take(runtime, after.tenant)
    return False


def account(runtime: Runtime, before: Task, after: Task) -> None:
    """Count a task's change that finished it: one less (a replay is counted by
    take_for, before it is written)."""
    if config.tenant_max_waiting() is None:
        return
    if after.status in FINISHED and before.status not in FINISHED:
        runtime.store.count_waiting(after.tenant, -1)
