"""execute_task against a real HTTP receiver on 127.0.0.1 and moto."""
import json
import threading
from datetime import timedelta

import pytest

from chalicelib import schedules
from chalicelib.executor import Clock, execute_task
from chalicelib.models import utcnow
from chalicelib.store import get_store


def webhook(url, **extra):
    return {"url": url, "data": {"msg": "Hello from Lambda", "n": 1.5}, "method": "POST",
            "headers": {"X-Custom": "yes"}, "timeout": 2, **extra}


def test_data_arrives_as_json_body_and_task_completes(aws, receiver, make_task):
    task = make_task(payload=webhook(receiver.url))
    result = execute_task(task.task_id)
    assert result.outcome == "ran" and result.status == "completed"
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["method"] == "POST" and request["path"] == "/hook"
    assert json.loads(request["body"]) == {"msg": "Hello from Lambda", "n": 1.5}
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-custom"] == "yes"
    assert request["headers"]["idempotency-key"] == f"{task.task_id}:{task.run_at}"
    assert request["headers"]["x-task-attempt"] == "1"
    stored = get_store().get(task.task_id)
    assert stored.status == "completed" and stored.attempts == 1
    [run] = stored.runs
    assert run.outcome == "succeeded" and run.http_status == 200 and run.error is None
    assert run.ended_at >= run.started_at and run.duration_ms >= 0


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "GET"])
def test_method_is_used(aws, receiver, make_task, method):
    task = make_task(payload=webhook(receiver.url, method=method))
    assert execute_task(task.task_id).status == "completed"
    assert receiver.requests[0]["method"] == method


def test_through_the_lambda_entry_point(api, receiver, make_task):
    task = make_task(payload=webhook(receiver.url))
    result = api.invoke(task.task_id)
    assert result["status"] == "completed" and result["run"]["http_status"] == 200
    shown = api.get(f"/tasks/{task.task_id}").json
    assert shown["status"] == "completed"
    assert shown["runs"][0]["outcome"] == "succeeded"


def test_receiver_500_fails_with_the_reason(aws, receiver, make_task):
    receiver.status = 500
    receiver.body = b'{"error": "database on fire"}'
    task = make_task(payload=webhook(receiver.url), max_attempts=1)
    assert execute_task(task.task_id).status == "failed"
    [run] = get_store().get(task.task_id).runs
    assert run.outcome == "failed" and run.http_status == 500
    assert run.error.startswith("HTTP 500") and "database on fire" in run.error


def test_redirect_is_not_followed(aws, receiver, make_task):
    receiver.status = 302
    task = make_task(payload=webhook(receiver.url))
    assert execute_task(task.task_id).status == "failed"
    assert len(receiver.requests) == 1
    assert get_store().get(task.task_id).runs[0].http_status == 302


def test_timeout_fails_with_the_reason(aws, receiver, make_task):
    receiver.delay = 2.5
    task = make_task(payload=webhook(receiver.url, timeout=1), max_attempts=1)
    assert execute_task(task.task_id).status == "failed"
    run = get_store().get(task.task_id).runs[0]
    assert run.http_status is None and "timeout" in run.error
    assert 900 <= run.duration_ms < 2400


def test_refused_connection_fails_with_the_reason(aws, refused_url, make_task):
    task = make_task(payload=webhook(refused_url), max_attempts=1)
    assert execute_task(task.task_id).status == "failed"
    assert "connection failed" in get_store().get(task.task_id).runs[0].error


def test_log_action_succeeds_and_logs(aws, make_task, caplog):
    task = make_task(action="log", payload={"message": "tick", "data": {"k": 1}})
    with caplog.at_level("INFO", logger="task_scheduler.actions"):
        assert execute_task(task.task_id).status == "completed"
    line = json.loads([r.message for r in caplog.records if "task_log" in r.message][0])
    assert line["message"] == "tick" and line["task_id"] == task.task_id


def test_five_concurrent_invocations_run_it_once(aws, receiver, make_task):
    receiver.delay = 0.2
    task = make_task(payload=webhook(receiver.url))
    barrier = threading.Barrier(5)
    results = []

    def invoke():
        barrier.wait()
        results.append(execute_task(task.task_id))

    threads = [threading.Thread(target=invoke) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(receiver.requests) == 1
    assert sorted(r.outcome for r in results) == ["ran", "skipped", "skipped", "skipped",
                                                   "skipped"]
    assert get_store().get(task.task_id).attempts == 1


def test_repeated_delivery_after_completion_is_skipped(aws, receiver, make_task):
    task = make_task(payload=webhook(receiver.url))
    execute_task(task.task_id)
    again = execute_task(task.task_id)
    assert again.outcome == "skipped" and again.status == "completed"
    assert len(receiver.requests) == 1


def test_cancelled_task_is_skipped(api, receiver):
    body = {"action": "webhook", "payload": {"url": receiver.url},
            "run_at": (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    task_id = api.post("/schedule-task", body).json["task_id"]
    api.delete(f"/tasks/{task_id}")
    assert execute_task(task_id).outcome == "skipped"
    assert receiver.requests == []


def test_unknown_task_is_reported_not_raised(aws):
    assert execute_task("00000000-0000-4000-8000-000000000000").outcome == "unknown"


class FakeClock:
    """A clock whose sleep moves time forward instead of waiting."""

    def __init__(self):
        self.moment = utcnow()
        self.slept = []

    def now(self):
        return self.moment

    def sleep(self, seconds):
        self.slept.append(seconds)
        self.moment += timedelta(seconds=seconds)


def test_slightly_early_invocation_waits_then_runs(aws, receiver, make_task):
    clock = FakeClock()
    task = make_task(due_in=30, payload=webhook(receiver.url))
    clock.moment = task.next_run_at - timedelta(seconds=25)
    result = execute_task(task.task_id, Clock(now=clock.now, sleep=clock.sleep))
    assert result.status == "completed"
    assert clock.slept == [pytest.approx(25)]
    assert get_store().get(task.task_id).runs[0].started_at >= task.next_run_at


def test_early_invocation_waits_for_real(aws, receiver, make_task):
    task = make_task(due_in=1.5, payload=webhook(receiver.url))
    result = execute_task(task.task_id)
    assert result.status == "completed"
    run = get_store().get(task.task_id).runs[0]
    assert run.started_at >= task.next_run_at


def test_far_too_early_invocation_never_runs_and_keeps_it_armed(aws, receiver, make_task):
    from chalicelib import aws as aws_clients, config

    task = make_task(due_in=3600, payload=webhook(receiver.url))
    result = execute_task(task.task_id)
    assert result.outcome == "early"
    assert receiver.requests == []
    stored = get_store().get(task.task_id)
    assert stored.status == "scheduled" and stored.attempts == 0
    schedule = aws_clients.client("scheduler").get_schedule(
        Name=f"task-{task.task_id}", GroupName=config.scheduler_group())
    assert json.loads(schedule["Target"]["Input"]) == {"task_id": task.task_id}


def test_stale_lease_is_taken_over_and_finished_once(aws, receiver, make_task):
    task = make_task(payload=webhook(receiver.url))
    store = get_store()
    store.claim(task.task_id, "dead-run", utcnow())  # an executor that died mid-run
    assert execute_task(task.task_id).outcome == "skipped"  # lease still held
    later = Clock(now=lambda: utcnow() + timedelta(minutes=10))
    result = execute_task(task.task_id, later)
    assert result.status == "completed"
    assert len(receiver.requests) == 1


def test_recurring_task_goes_back_to_scheduled_with_next_firing(aws, receiver, make_task):
    task = make_task(payload=webhook(receiver.url), run_at="rate(5 minutes)",
                     schedule_kind="rate")
    result = execute_task(task.task_id)
    assert result.status == "scheduled"
    stored = get_store().get(task.task_id)
    now = utcnow()
    assert now < stored.next_run_at <= now + timedelta(minutes=5)
    anchor = schedules.ceil_second(stored.created_at)
    assert (stored.next_run_at - anchor) % timedelta(minutes=5) == timedelta(0)
    assert len(stored.runs) == 1



def test_failed_run_of_recurring_task_keeps_later_firings(aws, receiver, make_task):
    receiver.status = 404  # not retried: the run fails at once
    task = make_task(payload=webhook(receiver.url), run_at="rate(5 minutes)",
                     schedule_kind="rate")
    assert execute_task(task.task_id).status == "scheduled"
    stored = get_store().get(task.task_id)
    assert stored.runs[0].outcome == "failed" and stored.next_run_at > utcnow()


def test_recurring_task_with_no_further_firing_completes_and_loses_its_trigger(
        aws, receiver, make_task):
    from chalicelib import aws as aws_clients, config
    from chalicelib.triggers import get_trigger

    last_year = utcnow().year  # its last firing is due now, none follows this year
    task = make_task(payload=webhook(receiver.url), schedule_kind="cron",
                     run_at=f"cron(0/5 * * * ? {last_year})")
    get_trigger().arm(task)
    fake_end = Clock(now=lambda: utcnow().replace(year=last_year, month=12, day=31,
                                                  hour=23, minute=58))
    result = execute_task(task.task_id, fake_end)
    assert result.status == "completed"
    stored = get_store().get(task.task_id)
    assert stored.next_run_at == task.next_run_at and len(stored.runs) == 1
    schedules_left = aws_clients.client("scheduler").list_schedules(
        GroupName=config.scheduler_group())["Schedules"]
    assert schedules_left == []
