"""The use cases behind the API, on the in-memory store with a recording trigger and a fixed
clock: no app, no moto, no files."""
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import service
from chalicelib.errors import Conflict, TaskNotFound, ValidationError
from chalicelib.models import RUN_FAILED, Clock, Run, Transition
from chalicelib.store.memory import InMemoryTaskStore
from chalicelib.wiring import Runtime
from tests.conftest import RecordingTrigger

NOW = datetime(2030, 5, 19, 17, 0, tzinfo=timezone.utc)


class FailingTrigger(RecordingTrigger):
    """Records like RecordingTrigger; arming raises (EventBridge refusing, say)."""

    def arm(self, task):
        super().arm(task)
        raise RuntimeError("the trigger could not be armed")


@pytest.fixture
def runtime():
    return Runtime(InMemoryTaskStore(), RecordingTrigger(), Clock(now=lambda: NOW))


def body(**extra):
    return {"action": "log", "payload": {"message": "hi"}, "run_at": "2030-05-19T17:56:00Z",
            **extra}


def test_schedule_stores_then_arms_the_task(runtime):
    created, is_new = service.schedule_task(runtime, body(priority=8, name="report"))
    assert is_new and created["status"] == "scheduled"
    assert created["next_run_at"] == "2030-05-19T17:56:00Z"
    stored = runtime.store.get(created["task_id"])
    assert (stored.priority, stored.name, stored.created_at) == (8, "report", NOW)
    assert runtime.trigger.calls == [("arm", created["task_id"])]


def test_a_trigger_that_cannot_be_armed_leaves_nothing_behind(runtime):
    failing = Runtime(runtime.store, FailingTrigger(), runtime.clock)
    with pytest.raises(RuntimeError):
        service.schedule_task(failing, body())
    [(_, task_id), disarmed] = failing.trigger.calls
    assert disarmed == ("disarm", task_id)
    with pytest.raises(TaskNotFound):
        runtime.store.get(task_id)


def test_the_same_idempotency_key_finds_the_first_task(runtime):
    first, _ = service.schedule_task(runtime, body(), "order-1")
    again, is_new = service.schedule_task(runtime, body(), "order-1")
    assert not is_new and again == first
    with pytest.raises(Conflict) as reused:
        service.schedule_task(runtime, body(priority=1), "order-1")
    assert reused.value.code == "idempotency_key_reused"


def test_run_at_is_checked_against_the_runtimes_clock(runtime):
    later = Runtime(runtime.store, runtime.trigger, Clock(now=lambda: NOW + timedelta(hours=1)))
    with pytest.raises(ValidationError) as past:
        service.schedule_task(later, body())
    assert past.value.field == "run_at"


def test_cancel_disarms_and_a_second_cancel_is_a_conflict(runtime):
    created, _ = service.schedule_task(runtime, body())
    task_id = created["task_id"]
    assert service.cancel_task(runtime, task_id)["status"] == "cancelled"
    assert runtime.trigger.calls[-1] == ("disarm", task_id)
    with pytest.raises(Conflict) as again:
        service.cancel_task(runtime, task_id)
    assert (again.value.code, again.value.status) == ("not_cancelled", 409)
    assert "is cancelled" in again.value.message


def _failed(runtime):
    created, _ = service.schedule_task(runtime, body())
    store, task_id = runtime.store, created["task_id"]
    at = NOW + timedelta(hours=1)
    claimed = store.claim(task_id, "r1", at)
    store.finish(claimed, Run("r1", 1, at, at, RUN_FAILED, error="HTTP 500"),
                 Transition("failed"), at)
    return task_id


def test_retry_rearms_a_failed_task_and_refuses_a_waiting_one(runtime):
    task_id = _failed(runtime)
    replayed = service.retry_task(runtime, task_id, None)
    assert replayed["status"] == "scheduled" and replayed["attempts"] == 0
    assert runtime.trigger.calls[-1] == ("arm", task_id)
    with pytest.raises(Conflict) as waiting:
        service.retry_task(runtime, task_id, None)
    assert waiting.value.code == "not_retried"


def test_a_replay_that_cannot_be_armed_is_undone(runtime):
    task_id = _failed(runtime)
    failing = Runtime(runtime.store, FailingTrigger(), runtime.clock)
    with pytest.raises(RuntimeError):
        service.retry_task(failing, task_id, None)
    assert runtime.store.get(task_id).status == "failed"


def test_a_next_token_of_another_listing_is_a_400_on_next_token(runtime):
    for name in ("job 1", "job 2"):
        service.schedule_task(runtime, body(name=name))
    page = service.list_tasks(runtime, {"limit": "1", "name": "job"})
    assert len(page["tasks"]) == 1 and page["next_token"]
    with pytest.raises(ValidationError) as foreign:
        service.list_tasks(runtime, {"limit": "1", "next_token": page["next_token"]})
    assert (foreign.value.field, foreign.value.code) == ("next_token", "invalid_next_token")


def test_preview_counts_from_the_runtimes_clock(runtime):
    preview = service.preview(runtime, {"run_at": "rate(1 hour)", "count": "2"})
    assert preview["next"] == ["2030-05-19T18:00:00Z", "2030-05-19T19:00:00Z"]
