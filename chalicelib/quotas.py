"""TENANT_MAX_WAITING: each tenant's count of waiting tasks (not finished: scheduled,
retrying, running, paused), kept with one atomic write per change, never by scanning.

A task counts from its creation (refused with 429 once the tenant is at its limit) until
it is completed, failed or cancelled; a replayed task counts again. The count is kept
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


def account(runtime: Runtime, before: Task, after: Task) -> None:
    """Count a task's change: one less when it finished, one more when it waits again."""
    if config.tenant_max_waiting() is None:
        return
    was, now = before.status in FINISHED, after.status in FINISHED
    if now and not was:
        runtime.store.count_waiting(after.tenant, -1)
    elif was and not now:
        runtime.store.count_waiting(after.tenant, +1)
