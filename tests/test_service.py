"""The use cases behind the API, on the in-memory store with a recording trigger and a fixed
clock: no app, no moto, no files."""
import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import service
from chalicelib.errors import Conflict, PreconditionFailed, TaskNotFound, ValidationError
from chalicelib.executor import execute_task
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


# ---------------------------------------------------------------- managing tasks

def hourly(**extra):
    return body(run_at="cron(0 * * * ? *)", **extra)


def _json(data) -> bytes:
    return json.dumps(data).encode()


def test_patch_changes_fields_recomputes_the_firing_and_rearms(runtime):
    created, _ = service.schedule_task(runtime, hourly(name="a"))
    task_id = created["task_id"]
    changed = service.update_task(runtime, task_id, _json({
        "run_at": "cron(30 9 * * ? *)", "timezone": "Europe/Berlin", "name": "b",
        "tags": {"team": "ops"}, "priority": 9}), '"1"')
    assert changed["version"] == 2 and changed["name"] == "b"
    assert changed["next_run_at"] == "2030-05-20T07:30:00Z"  # 09:30 in Berlin (CEST)
    assert changed["tags"] == {"team": "ops"} and changed["priority"] == 9
    assert runtime.trigger.calls[-2:] == [("disarm", task_id), ("arm", task_id)]
    stored = runtime.store.get(task_id)
    assert stored.firing_at == stored.next_run_at and stored.timezone == "Europe/Berlin"


def test_patch_keeps_the_zone_of_a_recurring_task_when_only_run_at_changes(runtime):
    created, _ = service.schedule_task(runtime, hourly(timezone="Asia/Tokyo"))
    changed = service.update_task(runtime, created["task_id"],
                                  _json({"run_at": "cron(0 9 * * ? *)"}))
    assert changed["timezone"] == "Asia/Tokyo"
    assert changed["next_run_at"] == "2030-05-20T00:00:00Z"
    one_time = service.update_task(runtime, created["task_id"],
                                   _json({"run_at": "2030-05-21T10:00:00+02:00"}))
    assert (one_time["timezone"], one_time["next_run_at"]) == ("UTC", "2030-05-21T08:00:00Z")


@pytest.mark.parametrize("change, field", [
    ({"action": "webhook"}, "action"),
    ({"run_at": "2020-01-01T00:00:00Z"}, "run_at"),
    ({"timezone": "Mars/Olympus"}, "timezone"),
    ({"payload": {"message": 3}}, "payload.message"),
    ({"priority": 10}, "priority"),
    ({"start_at": "yesterday"}, "start_at"),
    ({"end_at": "2030-05-19T16:00:00Z"}, "end_at"),  # not in the future
    ({"start_at": "2030-06-01T00:00:00Z", "end_at": "2030-05-30T00:00:00Z"}, "end_at"),
    ({"end_at": "2030-05-19T17:30:00Z"}, "end_at"),  # no firing left
    ({"max_runs": 0}, "max_runs"),
    ({"catch_up": "some"}, "catch_up"),
    ({"overlap": "queue"}, "overlap"),
    ({"window_minutes": 1441}, "window_minutes"),
    ({"tags": {"": "x"}}, "tags"),
    ({"tags": {f"k{i}": "v" for i in range(11)}}, "tags"),
    ({"tags": {"k": "v" * 257}}, "tags"),
    ({"tags": ["a"]}, "tags"),
    ({"colour": "red"}, "colour"),
])
def test_every_bad_patch_is_a_400_naming_the_field_and_changes_nothing(runtime, change,
                                                                       field):
    created, _ = service.schedule_task(runtime, hourly())
    before = runtime.store.get(created["task_id"])
    calls = list(runtime.trigger.calls)
    with pytest.raises(ValidationError) as refused:
        service.update_task(runtime, created["task_id"], _json(change))
    assert refused.value.field == field, refused.value.message
    assert runtime.store.get(created["task_id"]) == before
    assert runtime.trigger.calls == calls


@pytest.mark.parametrize("field, value", [("start_at", "2030-06-01T00:00:00Z"),
                                          ("end_at", "2030-06-01T00:00:00Z"),
                                          ("max_runs", 3), ("overlap", "buffer_one")])
def test_recurring_only_fields_are_refused_on_a_one_time_task(runtime, field, value):
    with pytest.raises(ValidationError) as refused:
        service.schedule_task(runtime, body(**{field: value}))
    assert refused.value.field == field
    assert service.list_tasks(runtime, {})["tasks"] == []


def test_if_match_of_another_version_is_a_412_and_changes_nothing(runtime):
    created, _ = service.schedule_task(runtime, hourly())
    task_id = created["task_id"]
    service.update_task(runtime, task_id, _json({"name": "first"}), '"1"')
    for call in (lambda: service.update_task(runtime, task_id, _json({"name": "x"}), '"1"'),
                 lambda: service.pause_task(runtime, task_id, None, 'W/"1"'),
                 lambda: service.cancel_task(runtime, task_id, "1")):
        with pytest.raises(PreconditionFailed) as stale:
            call()
        assert (stale.value.status, stale.value.field) == (412, "If-Match")
    assert runtime.store.get(task_id).name == "first"
    with pytest.raises(ValidationError) as garbage:
        service.update_task(runtime, task_id, _json({"name": "x"}), "latest")
    assert garbage.value.field == "If-Match"
    assert service.update_task(runtime, task_id, _json({"name": "y"}), "*")["version"] == 3


def test_pause_removes_the_trigger_and_resume_brings_it_back(runtime):
    created, _ = service.schedule_task(runtime, hourly())
    task_id = created["task_id"]
    paused = service.pause_task(runtime, task_id, None)
    assert (paused["status"], paused["next_run_at"], paused["upcoming"]) == ("paused", None, [])
    assert runtime.trigger.calls[-1] == ("disarm", task_id)
    with pytest.raises(Conflict) as twice:
        service.pause_task(runtime, task_id, None)
    assert twice.value.code == "not_paused"
    resumed = service.resume_task(runtime, task_id)
    assert resumed["status"] == "scheduled" and resumed["next_run_at"] == "2030-05-19T18:00:00Z"
    assert runtime.trigger.calls[-1] == ("arm", task_id)
    with pytest.raises(Conflict) as again:
        service.resume_task(runtime, task_id)
    assert again.value.code == "not_resumed"


@pytest.mark.parametrize("until, field", [("2030-05-19T16:00:00Z", "until"),
                                          ("soon", "until"), (5, "until")])
def test_a_bad_until_is_a_400(runtime, until, field):
    created, _ = service.schedule_task(runtime, hourly())
    with pytest.raises(ValidationError) as refused:
        service.pause_task(runtime, created["task_id"], _json({"until": until}))
    assert refused.value.field == field
    assert runtime.store.get(created["task_id"]).status == "scheduled"


def test_pause_until_arms_only_the_end_of_the_pause(runtime):
    created, _ = service.schedule_task(runtime, hourly())
    paused = service.pause_task(runtime, created["task_id"],
                                _json({"until": "2030-05-19T20:00:00+00:00"}))
    assert paused["paused_until"] == "2030-05-19T20:00:00Z"
    stored = runtime.store.get(created["task_id"])
    assert stored.wake_at == datetime(2030, 5, 19, 20, 0, tzinfo=timezone.utc)
    assert runtime.trigger.calls[-1] == ("arm", created["task_id"])


def test_run_now_of_a_recurring_task_is_an_extra_run_that_keeps_the_schedule(runtime):
    created, _ = service.schedule_task(runtime, hourly())
    task_id = created["task_id"]
    running = service.run_task_now(runtime, task_id)
    assert running["next_run_at"] == "2030-05-19T17:00:00Z"
    stored = runtime.store.get(task_id)
    assert stored.extra_run_key and stored.firing_at == datetime(2030, 5, 19, 18, 0,
                                                                  tzinfo=timezone.utc)
    result = execute_task(runtime, task_id)
    assert result.outcome == "ran"
    after = runtime.store.get(task_id)
    assert after.status == "scheduled" and after.runs_done == 1
    assert after.next_run_at == after.firing_at == datetime(2030, 5, 19, 18, 0,
                                                            tzinfo=timezone.utc)
    assert after.extra_run_key is None


def test_run_now_of_a_paused_task_runs_once_and_it_stays_paused(runtime):
    created, _ = service.schedule_task(runtime, hourly())
    task_id = created["task_id"]
    service.pause_task(runtime, task_id, None)
    service.run_task_now(runtime, task_id)
    execute_task(runtime, task_id)
    after = runtime.store.get(task_id)
    assert after.status == "paused" and after.runs_done == 1
    assert runtime.trigger.calls[-1][0] == "after_run"


def test_run_now_of_a_one_time_task_finishes_it(runtime):
    created, _ = service.schedule_task(runtime, body())
    service.run_task_now(runtime, created["task_id"])
    assert execute_task(runtime, created["task_id"]).status == "completed"
    with pytest.raises(Conflict) as done:
        service.run_task_now(runtime, created["task_id"])
    assert done.value.code == "not_run"


def test_a_running_or_finished_task_cannot_be_changed(runtime):
    created, _ = service.schedule_task(runtime, body())
    task_id = created["task_id"]
    runtime.store.claim(task_id, "r1", NOW + timedelta(hours=1))
    for call, code in ((lambda: service.update_task(runtime, task_id, _json({"name": "x"})),
                        "not_updated"),
                       (lambda: service.pause_task(runtime, task_id, None), "not_paused"),
                       (lambda: service.run_task_now(runtime, task_id), "not_run")):
        with pytest.raises(Conflict) as refused:
            call()
        assert refused.value.code == code and "is running" in refused.value.message


def test_max_runs_ends_the_task_completed_with_runs_done(runtime):
    created, _ = service.schedule_task(runtime, hourly(max_runs=2))
    task_id = created["task_id"]
    assert len(service.get_task(runtime, task_id)["upcoming"]) == 2
    for hour in (18, 19):
        at = NOW.replace(hour=hour)
        clock = Runtime(runtime.store, runtime.trigger, Clock(now=lambda at=at: at))
        execute_task(clock, task_id)
    final = service.get_task(runtime, task_id)
    assert (final["status"], final["runs_done"]) == ("completed", 2)


def test_a_patch_that_drops_a_retrying_extra_run_drops_its_key_and_pause(runtime):
    created, _ = service.schedule_task(runtime, hourly())
    task_id = created["task_id"]
    service.pause_task(runtime, task_id, None)
    service.run_task_now(runtime, task_id)
    stored = runtime.store.get(task_id)
    # Its extra run failed and waits for a retry.
    runtime.store.update(replace(stored, status="retrying", attempts=1,
                                 next_run_at=NOW + timedelta(minutes=5)), stored.version)
    changed = service.update_task(runtime, task_id, _json({"run_at": "cron(30 * * * ? *)"}))
    after = runtime.store.get(task_id)
    assert changed["status"] == "paused"  # as it was before its extra run
    assert (after.extra_run_key, after.pause_after_run, after.attempts) == (None, False, 0)


def test_a_patch_that_leaves_a_passed_end_at_alone_is_allowed(runtime):
    created, _ = service.schedule_task(runtime, hourly(end_at="2030-05-19T19:00:00Z"))
    later = Runtime(runtime.store, runtime.trigger,
                    Clock(now=lambda: NOW + timedelta(hours=2, minutes=30)))
    stored = runtime.store.get(created["task_id"])
    runtime.store.update(replace(stored, status="retrying", attempts=1), stored.version)
    assert service.update_task(later, created["task_id"], _json({"name": "x"}))["name"] == "x"
    with pytest.raises(ValidationError) as past:
        service.update_task(later, created["task_id"],
                            _json({"end_at": "2030-05-19T19:00:00Z"}))
    assert past.value.field == "end_at"
