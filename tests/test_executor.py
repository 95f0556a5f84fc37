"""execute_task against a real HTTP receiver on 127.0.0.1 and moto."""
import json
import threading
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from chalicelib import config, schedules
from chalicelib.executor import execute_task
from chalicelib.models import Clock
from chalicelib.models import utcnow
from tests.conftest import MovingClock, runtime
from tests.test_api import schedules_in_group


def webhook(url, **extra):
    return {"url": url, "data": {"msg": "Hello from Lambda", "n": 1.5}, "method": "POST",
            "headers": {"X-Custom": "yes"}, "timeout": 2, **extra}


def test_data_arrives_as_json_body_and_task_completes(memory, receiver, make_task):
    task = make_task(payload=webhook(receiver.url))
    result = execute_task(runtime(), task.task_id)
    assert result.outcome == "ran" and result.status == "completed"
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request["method"] == "POST" and request["path"] == "/hook"
    assert json.loads(request["body"]) == {"msg": "Hello from Lambda", "n": 1.5}
    assert request["headers"]["content-type"] == "application/json"
    assert request["headers"]["x-custom"] == "yes"
    assert request["headers"]["idempotency-key"] == f"{task.task_id}:{task.run_at}"
    assert request["headers"]["x-task-attempt"] == "1"
    stored = runtime().store.get(task.task_id)
    assert stored.status == "completed" and stored.attempts == 1
    [run] = stored.runs
    assert run.outcome == "succeeded" and run.http_status == 200 and run.error is None
    assert run.ended_at >= run.started_at and run.duration_ms >= 0


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "GET"])
def test_method_is_used(memory, receiver, make_task, method):
    task = make_task(payload=webhook(receiver.url, method=method))
    assert execute_task(runtime(), task.task_id).status == "completed"
    assert receiver.requests[0]["method"] == method


def test_through_the_lambda_entry_point(memory_api, receiver, make_task):
    task = make_task(payload=webhook(receiver.url))
    result = memory_api.invoke(task.task_id)
    assert result["status"] == "completed" and result["run"]["http_status"] == 200
    shown = memory_api.get(f"/tasks/{task.task_id}").json
    assert shown["status"] == "completed"
    assert shown["runs"][0]["outcome"] == "succeeded"


def test_receiver_500_fails_with_the_reason(memory, receiver, make_task):
    receiver.status = 500
    receiver.body = b'{"error": "database on fire"}'
    task = make_task(payload=webhook(receiver.url), max_attempts=1)
    assert execute_task(runtime(), task.task_id).status == "failed"
    [run] = runtime().store.get(task.task_id).runs
    assert run.outcome == "failed" and run.http_status == 500
    assert run.error.startswith("HTTP 500") and "database on fire" in run.error


def test_redirect_is_not_followed(memory, receiver, make_task):
    receiver.status = 302
    task = make_task(payload=webhook(receiver.url))
    assert execute_task(runtime(), task.task_id).status == "failed"
    assert len(receiver.requests) == 1
    assert runtime().store.get(task.task_id).runs[0].http_status == 302


def test_timeout_fails_with_the_reason(memory, receiver, make_task):
    receiver.delay = 8  # far beyond the timeout, so a busy machine cannot blur the two
    task = make_task(payload=webhook(receiver.url, timeout=1), max_attempts=1)
    assert execute_task(runtime(), task.task_id).status == "failed"
    run = runtime().store.get(task.task_id).runs[0]
    assert run.http_status is None and "timeout" in run.error
    assert 900 <= run.duration_ms < 6000


@pytest.fixture
def trickler():
    """A server that answers one header line every 0.3 s, forever: each read succeeds
    well within the timeout, the response never completes."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                continue
            with connection:
                connection.recv(65536)
                lines = [b"HTTP/1.1 200 OK\r\n"] + [b"X-Slow: %d\r\n" % i for i in range(100)]
                for line in lines:
                    if stop.wait(0.3):
                        break
                    try:
                        connection.sendall(line)
                    except OSError:
                        break

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/slow"
    stop.set()
    thread.join(5)
    listener.close()


def test_a_trickling_response_is_cut_off_at_the_run_deadline(memory, trickler, make_task,
                                                             monkeypatch):
    from chalicelib.actions import exchange

    monkeypatch.setattr(exchange, "DEADLINE_MARGIN_SECONDS", 0.5)
    task = make_task(payload=webhook(trickler, timeout=1), max_attempts=2)
    assert execute_task(runtime(), task.task_id).status == "retrying"
    run = runtime().store.get(task.task_id).runs[0]
    assert run.error == "timeout: no complete response within 1.5 s"
    assert 1400 <= run.duration_ms < 6000  # the trickle itself would go on for 30 s


def test_refused_connection_fails_with_the_reason(memory, refused_url, make_task):
    task = make_task(payload=webhook(refused_url + "/hook?token=s3cret"), max_attempts=1)
    assert execute_task(runtime(), task.task_id).status == "failed"
    error = runtime().store.get(task.task_id).runs[0].error
    assert error == "connection failed: NewConnectionError: Connection refused"
    assert "s3cret" not in error  # the URL (its query may hold a token) is never quoted


def test_log_action_succeeds_and_logs(memory, make_task, caplog):
    task = make_task(action="log", payload={"message": "tick", "data": {"k": 1}})
    with caplog.at_level("INFO", logger="task_scheduler"):
        assert execute_task(runtime(), task.task_id).status == "completed"
    [line] = [r.msg for r in caplog.records
              if isinstance(r.msg, dict) and r.msg["event"] == "task_log"]
    assert line["message"] == "tick" and line["task_id"] == task.task_id
    assert line["data"] == {"k": 1}


def test_five_concurrent_invocations_run_it_once(memory, receiver, make_task):
    receiver.delay = 0.2
    task = make_task(payload=webhook(receiver.url))
    barrier = threading.Barrier(5)
    results = []

    def invoke():
        barrier.wait()
        results.append(execute_task(runtime(), task.task_id))

    threads = [threading.Thread(target=invoke) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(receiver.requests) == 1
    assert sorted(r.outcome for r in results) == ["ran", "skipped", "skipped", "skipped",
                                                   "skipped"]
    assert runtime().store.get(task.task_id).attempts == 1


def test_repeated_delivery_after_completion_is_skipped(memory, receiver, make_task):
    task = make_task(payload=webhook(receiver.url))
    execute_task(runtime(), task.task_id)
    again = execute_task(runtime(), task.task_id)
    assert again.outcome == "skipped" and again.status == "completed"
    assert len(receiver.requests) == 1


def test_cancelled_task_is_skipped(memory_api, receiver):
    body = {"action": "webhook", "payload": {"url": receiver.url},
            "run_at": (utcnow() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    task_id = memory_api.post("/schedule-task", body).json["task_id"]
    memory_api.delete(f"/tasks/{task_id}")
    assert execute_task(runtime(), task_id).outcome == "skipped"
    assert receiver.requests == []


def test_stray_firing_of_a_cancelled_task_removes_its_schedule(api, receiver):
    # The cancel was stored but its disarm failed: the cron schedule kept firing.
    body = {"action": "webhook", "payload": {"url": receiver.url}, "run_at": "rate(5 minutes)"}
    task_id = api.post("/schedule-task", body).json["task_id"]
    stored = runtime().store.get(task_id)
    runtime().store.update(replace(stored, status="cancelled"), stored.version)
    assert f"task-{task_id}" in {s["Name"] for s in schedules_in_group()}
    assert execute_task(runtime(), task_id).outcome == "skipped"
    assert f"task-{task_id}" not in {s["Name"] for s in schedules_in_group()}
    assert receiver.requests == []


def test_rules_recheck_is_undone_when_the_task_is_found_waiting(rules_mode, aws, receiver,
                                                               make_task):
    # A recheck moved the task's only rule; the early delivery puts it back on the task's
    # next firing instead of leaving that firing unarmed.

    task = make_task(payload=webhook(receiver.url), due_in=3600)
    trigger = runtime().trigger
    trigger.arm(task)
    trigger.arm_recheck(task, utcnow() + timedelta(minutes=2))
    assert execute_task(runtime(), task.task_id).outcome == "early"
    rule = boto3.client("events").describe_rule(Name=f"{config.rule_prefix()}{task.task_id}")
    at = task.next_run_at
    assert rule["ScheduleExpression"] == f"cron({at.minute} {at.hour} {at.day} {at.month} ? {at.year})"


def test_unknown_task_is_reported_not_raised(memory):
    assert execute_task(runtime(), "00000000-0000-4000-8000-000000000000").outcome == "unknown"


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


def test_slightly_early_invocation_waits_then_runs(memory, receiver, make_task):
    clock = FakeClock()
    task = make_task(due_in=30, payload=webhook(receiver.url))
    clock.moment = task.next_run_at - timedelta(seconds=25)
    result = execute_task(runtime(Clock(now=clock.now, sleep=clock.sleep)), task.task_id)
    assert result.status == "completed"
    assert clock.slept == [pytest.approx(25)]
    assert runtime().store.get(task.task_id).runs[0].started_at >= task.next_run_at


def test_early_invocation_waits_for_real(memory, receiver, make_task):
    task = make_task(due_in=1.5, payload=webhook(receiver.url))
    result = execute_task(runtime(), task.task_id)
    assert result.status == "completed"
    run = runtime().store.get(task.task_id).runs[0]
    assert run.started_at >= task.next_run_at


def test_far_too_early_invocation_never_runs_and_keeps_it_armed(aws, receiver, make_task):
    from chalicelib import aws as aws_clients

    task = make_task(due_in=3600, payload=webhook(receiver.url))
    result = execute_task(runtime(), task.task_id)
    assert result.outcome == "early"
    assert receiver.requests == []
    stored = runtime().store.get(task.task_id)
    assert stored.status == "scheduled" and stored.attempts == 0
    schedule = aws_clients.client("scheduler").get_schedule(
        Name=f"task-{task.task_id}", GroupName=config.scheduler_group())
    assert json.loads(schedule["Target"]["Input"]) == {"task_id": task.task_id}


def test_stale_lease_is_taken_over_and_finished_once(memory, receiver, make_task):
    task = make_task(payload=webhook(receiver.url))
    store = runtime().store
    store.claim(task.task_id, "dead-run", utcnow())  # an executor that died mid-run
    assert execute_task(runtime(), task.task_id).outcome == "skipped"  # lease still held
    later = Clock(now=lambda: utcnow() + timedelta(minutes=10))
    result = execute_task(runtime(later), task.task_id)
    assert result.status == "completed"
    assert len(receiver.requests) == 1


def test_recurring_task_goes_back_to_scheduled_with_next_firing(memory, receiver, make_task):
    task = make_task(payload=webhook(receiver.url), run_at="rate(5 minutes)",
                     schedule_kind="rate", created_at=utcnow() - timedelta(seconds=30))
    result = execute_task(runtime(), task.task_id)
    assert result.status == "scheduled"
    stored = runtime().store.get(task.task_id)
    now = utcnow()
    assert now < stored.next_run_at <= now + timedelta(minutes=5)
    anchor = schedules.ceil_second(stored.created_at)
    assert (stored.next_run_at - anchor) % timedelta(minutes=5) == timedelta(0)
    assert len(stored.runs) == 1



def test_failed_run_of_recurring_task_keeps_later_firings(memory, receiver, make_task):
    receiver.status = 404  # not retried: the run fails at once
    task = make_task(payload=webhook(receiver.url), run_at="rate(5 minutes)",
                     schedule_kind="rate", created_at=utcnow() - timedelta(seconds=30))
    assert execute_task(runtime(), task.task_id).status == "scheduled"
    stored = runtime().store.get(task.task_id)
    assert stored.runs[0].outcome == "failed" and stored.next_run_at > utcnow()


def test_recurring_task_with_no_further_firing_completes_and_loses_its_trigger(
        aws, receiver, make_task):
    from chalicelib import aws as aws_clients

    last_year = utcnow().year  # its last firing is due, none follows this year
    last = datetime(last_year, 12, 31, 23, 55, tzinfo=timezone.utc)
    task = make_task(payload=webhook(receiver.url), schedule_kind="cron",
                     run_at=f"cron(0/5 * * * ? {last_year})", next_run_at=last,
                     firing_at=last)
    runtime().trigger.arm(task)
    fake_end = Clock(now=lambda: last + timedelta(minutes=1))
    result = execute_task(runtime(fake_end), task.task_id)
    assert result.status == "completed"
    stored = runtime().store.get(task.task_id)
    assert stored.next_run_at == task.next_run_at and len(stored.runs) == 1
    schedules_left = aws_clients.client("scheduler").list_schedules(
        GroupName=config.scheduler_group())["Schedules"]
    assert schedules_left == []


# ---------------------------------------------------------------- retries and dead letters

def dead_letters():

    sqs = boto3.client("sqs")
    url = sqs.get_queue_url(QueueName="task-scheduler-dev-dlq")["QueueUrl"]
    messages = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", [])
    return [json.loads(m["Body"]) for m in messages]


def run_until_settled(task_id, clock, limit=10):
    """Invoke the executor at each retry time, as the retry's own trigger would."""
    results = []
    for _ in range(limit):
        task = runtime().store.get(task_id)
        if task.status not in ("scheduled", "retrying"):
            break
        clock.moment = max(clock.moment, task.next_run_at)
        results.append(execute_task(runtime(Clock(now=clock.now, sleep=clock.sleep)), task_id))
    return results


def test_two_503s_then_success_completes_after_three_attempts(aws, receiver, make_task,
                                                               monkeypatch):
    from chalicelib import aws as aws_clients

    monkeypatch.setenv("RETRY_BASE_SECONDS", "4")
    receiver.script = [503, 503]
    clock = FakeClock()
    task = make_task(payload=webhook(receiver.url))
    first = execute_task(runtime(Clock(now=clock.now, sleep=clock.sleep)), task.task_id)
    assert first.status == "retrying"
    waiting = runtime().store.get(task.task_id)
    gap = (waiting.next_run_at - first.run.ended_at).total_seconds()
    assert 0 < gap <= 4 + 1  # attempt 1 waits up to base * 2^0 (rounded up to a second)
    retry = aws_clients.client("scheduler").get_schedule(
        Name=f"retry-{task.task_id}-{waiting.next_run_at.strftime('%Y%m%d%H%M%S')}",
        GroupName=config.scheduler_group())
    assert retry["ActionAfterCompletion"] == "DELETE"
    rest = run_until_settled(task.task_id, clock)
    assert [r.status for r in rest] == ["retrying", "completed"]
    done = runtime().store.get(task.task_id)
    assert done.attempts == 3 and [r.http_status for r in reversed(done.runs)] == [503, 503, 200]
    assert [r["headers"]["x-task-attempt"] for r in receiver.requests] == ["1", "2", "3"]
    keys = {r["headers"]["idempotency-key"] for r in receiver.requests}
    assert len(keys) == 1  # stable across the retries of one run
    starts = sorted(r.started_at for r in done.runs)
    assert (starts[2] - starts[1]).total_seconds() <= 8 + 1  # attempt 2: up to base * 2
    assert dead_letters() == []


def test_always_500_fails_dead_letters_once_and_replays(api, receiver, make_task, monkeypatch):
    monkeypatch.setenv("RETRY_BASE_SECONDS", "1")
    receiver.status = 500
    clock = FakeClock()
    task = make_task(payload=webhook(receiver.url), max_attempts=3)
    run_until_settled(task.task_id, clock)
    failed = runtime().store.get(task.task_id)
    assert failed.status == "failed" and failed.attempts == 3 and len(receiver.requests) == 3
    [letter] = dead_letters()
    assert letter["task_id"] == task.task_id and letter["last_error"].startswith("HTTP 500")
    assert letter["attempts"] == 3

    receiver.status = 200
    replay = api.post(f"/tasks/{task.task_id}/retry")
    assert replay.status_code == 200, replay.json
    assert replay.json["status"] == "scheduled" and replay.json["attempts"] == 0
    assert api.post(f"/tasks/{task.task_id}/retry").status_code == 409  # no longer failed
    clock.moment = utcnow()
    run_until_settled(task.task_id, clock)
    assert runtime().store.get(task.task_id).status == "completed"
    assert len(receiver.requests) == 4
    assert receiver.requests[3]["headers"]["idempotency-key"] != \
        receiver.requests[0]["headers"]["idempotency-key"]  # a replay is a new run


def test_replay_at_a_given_time_and_errors(memory_api, receiver, make_task):
    receiver.status = 404
    task = make_task(payload=webhook(receiver.url))
    execute_task(runtime(), task.task_id)
    later = (utcnow() + timedelta(hours=2)).replace(microsecond=0)
    response = memory_api.post(f"/tasks/{task.task_id}/retry",
                        {"run_at": later.strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert response.status_code == 200
    assert response.json["next_run_at"] == later.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert memory_api.post("/tasks/00000000-0000-4000-8000-000000000000/retry").status_code == 404
    other = make_task(payload=webhook(receiver.url))
    execute_task(runtime(), other.task_id)
    bad = memory_api.post(f"/tasks/{other.task_id}/retry", {"run_at": "2001-01-01T00:00:00Z"})
    assert bad.status_code == 400 and bad.json["field"] == "run_at"
    assert runtime().store.get(other.task_id).status == "failed"


def test_replay_whose_trigger_cannot_be_armed_is_undone(api, receiver, make_task):
    from botocore.exceptions import ClientError

    from chalicelib import aws as aws_clients

    receiver.status = 404
    task = make_task(payload=webhook(receiver.url))
    execute_task(runtime(), task.task_id)

    def refuse(**_):
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}},
                          "CreateSchedule")

    events = aws_clients.client("scheduler").meta.events
    events.register("before-call.scheduler.CreateSchedule", refuse)
    assert api.post(f"/tasks/{task.task_id}/retry").status_code == 500
    assert runtime().store.get(task.task_id).status == "failed"  # not left for the sweep
    events.unregister("before-call.scheduler.CreateSchedule", refuse)
    assert api.post(f"/tasks/{task.task_id}/retry").status_code == 200  # so a retry works


def test_immediate_replay_is_armed_a_few_seconds_ahead(api, receiver, make_task):
    from datetime import datetime

    receiver.status = 404
    task = make_task(payload=webhook(receiver.url))
    execute_task(runtime(), task.task_id)
    before = utcnow()
    replayed = api.post(f"/tasks/{task.task_id}/retry").json
    [schedule] = [s for s in schedules_in_group() if s["Name"].startswith("retry-")]
    expression = boto3.client("scheduler").get_schedule(
        Name=schedule["Name"], GroupName=config.scheduler_group())["ScheduleExpression"]
    at = datetime.strptime(expression, "at(%Y-%m-%dT%H:%M:%S)").replace(tzinfo=before.tzinfo)
    assert at >= before + timedelta(seconds=5)
    assert replayed["next_run_at"] <= at.strftime("%Y-%m-%dT%H:%M:%SZ")  # runs when fired


def test_404_fails_at_once_without_retry(aws, receiver, make_task):
    receiver.status = 404
    task = make_task(payload=webhook(receiver.url), max_attempts=5)
    assert execute_task(runtime(), task.task_id).status == "failed"
    assert len(receiver.requests) == 1 and len(dead_letters()) == 1


@pytest.mark.parametrize("fault", ["timeout", "refused"])
def test_timeout_and_refused_connection_are_retried(memory, receiver, refused_url, make_task,
                                                    monkeypatch, fault):
    monkeypatch.setenv("RETRY_BASE_SECONDS", "1")
    url = refused_url if fault == "refused" else receiver.url
    if fault == "timeout":
        receiver.delay = 1.5
    task = make_task(payload=webhook(url, timeout=1), max_attempts=2)
    results = run_until_settled(task.task_id, FakeClock())
    assert [r.status for r in results] == ["retrying", "failed"]


def test_retry_after_header_is_honoured(memory, receiver, make_task, monkeypatch):
    monkeypatch.setenv("RETRY_BASE_SECONDS", "1")
    receiver.script = [429]
    receiver.reply_headers = {"Retry-After": "90"}
    task = make_task(payload=webhook(receiver.url))
    first = execute_task(runtime(), task.task_id)
    waiting = runtime().store.get(task.task_id)
    assert first.status == "retrying"
    assert (waiting.next_run_at - first.run.ended_at).total_seconds() >= 90


@pytest.mark.parametrize("base,expected", [("1", "retrying"), ("1000", "scheduled")])
def test_recurring_retry_never_passes_the_next_firing(aws, receiver, make_task, monkeypatch,
                                                      base, expected):
    from chalicelib import retries

    monkeypatch.setenv("RETRY_BASE_SECONDS", base)
    monkeypatch.setenv("RETRY_MAX_SECONDS", "1000")
    monkeypatch.setattr(retries._random, "uniform", lambda low, high: high)  # longest wait
    receiver.status = 503
    task = make_task(payload=webhook(receiver.url), run_at="rate(1 minute)",
                     schedule_kind="rate", created_at=utcnow() - timedelta(seconds=30))
    following = schedules.from_task(task).next_after(utcnow())  # about 30 s away
    result = execute_task(runtime(), task.task_id)
    stored = runtime().store.get(task.task_id)
    assert result.status == expected
    if expected == "retrying":  # a one-second retry fits before the next firing
        assert stored.next_run_at < following and stored.attempts == 1
        assert dead_letters() == []
    else:  # a 1000 s retry would pass it: this run is given up, the next firing kept
        assert stored.next_run_at == following and stored.attempts == 0
        assert len(dead_letters()) == 1


def test_executor_dying_after_claim_is_reclaimed_after_the_lease(aws, receiver, make_task,
                                                                 monkeypatch):
    from chalicelib import actions

    task = make_task(payload=webhook(receiver.url))
    real = actions.REGISTRY["webhook"]

    def die(payload, context):
        raise SystemExit("the Lambda was killed")  # not an Exception: nothing catches it

    monkeypatch.setitem(actions.REGISTRY, "webhook", actions.Action(real.validate, die))
    with pytest.raises(SystemExit):
        execute_task(runtime(), task.task_id)
    monkeypatch.setitem(actions.REGISTRY, "webhook", real)
    held = runtime().store.get(task.task_id)
    assert held.status == "running"
    assert execute_task(runtime(), task.task_id).outcome == "skipped"  # the lease still holds
    # ...and a recheck is armed at its expiry, so the run is not left to the daily sweep.
    # In the minute after the lease ends: the scheduler may fire anywhere in that minute.
    start = (held.lease_until + timedelta(seconds=1)).replace(second=0, microsecond=0) \
        + timedelta(minutes=1)
    assert f"recheck-{task.task_id}-{start:%Y%m%d%H%M%S}" in {
        s["Name"] for s in schedules_in_group()}
    at_expiry = Clock(now=lambda: start)
    assert execute_task(runtime(at_expiry), task.task_id).status == "completed"
    assert len(receiver.requests) == 1


def test_dead_executor_is_swept_too(memory, receiver, make_task, monkeypatch):
    from chalicelib import sweeper

    task = make_task(payload=webhook(receiver.url))
    runtime().store.claim(task.task_id, "dead-run", utcnow())

    summary = sweeper.sweep(runtime(Clock(now=lambda: utcnow() + timedelta(minutes=3))))
    assert summary.get("completed") == 1
    assert len(receiver.requests) == 1


def test_action_that_raises_ends_its_run(memory, make_task, monkeypatch):
    from chalicelib import actions
    from chalicelib.actions.log import validate_log

    def broken(payload, context):
        raise UnicodeEncodeError("latin-1", "€", 0, 1, "not encodable")

    monkeypatch.setitem(actions.REGISTRY, "log", actions.Action(validate_log, broken))
    task = make_task(action="log", payload={"message": "x"})
    result = execute_task(runtime(), task.task_id)
    assert result.status == "failed" and "internal error" in result.run.error


def test_attempts_used_up_by_dead_executors_stop_the_task(memory, receiver, make_task):
    task = make_task(payload=webhook(receiver.url), max_attempts=2)
    store = runtime().store
    moment = utcnow()
    for n in range(2):  # two executors claimed it and died
        moment += timedelta(minutes=3)
        store.claim(task.task_id, f"dead-{n}", moment)
    moment += timedelta(minutes=3)
    result = execute_task(runtime(Clock(now=lambda: moment)), task.task_id)
    assert result.status == "failed" and "exhausted" in result.run.error
    assert receiver.requests == []


def test_twenty_concurrent_duplicates_send_one_request(memory, receiver, make_task):
    receiver.delay = 0.2
    task = make_task(payload=webhook(receiver.url))
    barrier = threading.Barrier(20)
    outcomes = []

    def invoke():
        barrier.wait()
        outcomes.append(execute_task(runtime(), task.task_id).outcome)

    threads = [threading.Thread(target=invoke) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(receiver.requests) == 1
    assert sorted(outcomes) == ["ran"] + ["skipped"] * 19


def test_notifications_on_final_failure_and_on_success_when_asked(aws, receiver, make_task,
                                                                  monkeypatch):

    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic = sns.create_topic(Name="task-scheduler-dev-notifications")["TopicArn"]
    inbox = sqs.create_queue(QueueName="inbox")["QueueUrl"]
    inbox_arn = sqs.get_queue_attributes(QueueUrl=inbox, AttributeNames=["QueueArn"])[
        "Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=inbox_arn,
                  Attributes={"RawMessageDelivery": "true"})
    monkeypatch.setenv("NOTIFY_TOPIC_ARN", topic)
    receiver.status = 404
    execute_task(runtime(), make_task(payload=webhook(receiver.url), name="nightly").task_id)
    receiver.status = 200
    execute_task(runtime(), make_task(payload=webhook(receiver.url), notify="always").task_id)
    execute_task(runtime(), make_task(payload=webhook(receiver.url)).task_id)  # success, default notify
    bodies = [json.loads(m["Body"]) for m in sqs.receive_message(
        QueueUrl=inbox, MaxNumberOfMessages=10)["Messages"]]
    assert sorted(b["event"] for b in bodies) == ["task_failed", "task_succeeded"]


# ---------------------------------------------------------------- overlap

@pytest.mark.parametrize("overlap", ["skip", "buffer_one"])
def test_firings_that_came_during_a_long_run_follow_overlap(memory, receiver, overlap):
    from chalicelib import service

    clock = MovingClock(datetime(2030, 5, 19, 9, 0, tzinfo=timezone.utc))
    rt = runtime(Clock(now=clock.now, sleep=clock.sleep))
    created, _ = service.schedule_task(rt, {
        "action": "webhook", "payload": {"url": receiver.url}, "run_at": "cron(* * * * ? *)",
        "overlap": overlap})
    task_id = created["task_id"]
    clock.moment = datetime(2030, 5, 19, 9, 1, tzinfo=timezone.utc)
    # The run takes 3 minutes 5 seconds: the firings of 09:02, 09:03 and 09:04 come meanwhile.
    receiver.on_request = lambda request: clock.sleep(185)
    assert execute_task(rt, task_id).outcome == "ran"
    receiver.on_request = None
    after = rt.store.get(task_id)
    skipped = sorted(run.started_at.minute for run in after.runs if run.outcome == "skipped")
    if overlap == "skip":
        assert skipped == [2, 3, 4]
        assert after.next_run_at == datetime(2030, 5, 19, 9, 5, tzinfo=timezone.utc)
        return
    # buffer_one: the newest of them runs right after the run ended, once.
    assert skipped == [2, 3]
    assert after.next_run_at == clock.moment and after.firing_at.minute == 4
    assert execute_task(rt, task_id).outcome == "ran"
    assert len(receiver.requests) == 2
    assert receiver.requests[1]["headers"]["idempotency-key"].endswith("09:04:00Z")
    assert rt.store.get(task_id).next_run_at == datetime(2030, 5, 19, 9, 5,
                                                         tzinfo=timezone.utc)


class Crash(BaseException):
    """The process dying: nothing after it runs, nothing catches it."""


class DiesBeforeTheResultIsWritten:
    """The store, but the process dies at the write of the run's result (after delivery)."""

    def __init__(self, store):
        self._store = store

    def finish(self, task, run, change, now):
        raise Crash()

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_a_crash_between_delivery_and_its_commit_redelivers_with_the_same_key(
        aws, store, receiver, make_task):
    """On every store: the claim is durable, the result is not; once the dead run's lease
    has ended the task is delivered again, as the same run for the receiver."""
    task = make_task(payload=webhook(receiver.url))
    with pytest.raises(Crash):
        execute_task(replace(runtime(), store=DiesBeforeTheResultIsWritten(store)),
                     task.task_id)
    assert store.get(task.task_id).status == "running" and len(receiver.requests) == 1
    assert execute_task(runtime(), task.task_id).outcome == "skipped"  # its lease holds
    later = Clock(now=lambda: utcnow() + timedelta(minutes=3), sleep=lambda seconds: None)
    assert execute_task(runtime(later), task.task_id).status == "completed"
    keys = [request["headers"]["idempotency-key"] for request in receiver.requests]
    assert len(keys) == 2 and keys[0] == keys[1] == f"{task.task_id}:{task.run_at}"
    assert store.get(task.task_id).attempts == 2
