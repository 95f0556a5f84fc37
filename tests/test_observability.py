"""JSON log lines of a full run, and the EMF metric blobs of the executor and sweeper."""
import io
import json
import logging
from datetime import timedelta

import pytest

from chalicelib import observability, sweeper
from chalicelib.executor import execute_task
from chalicelib.models import Clock
from chalicelib.models import utcnow
from tests.conftest import runtime
from tests.test_api import spec_example

RUN_FIELDS = {"task_id", "run_id", "attempt", "lateness_ms", "duration_ms", "outcome",
              "http_status"}
SECRET = "Bearer sk-observed-123"


@pytest.fixture
def json_lines():
    """The scheduler's log lines as Lambda would write them (JsonFormatter on stdout)."""
    stream = io.StringIO()
    logger = logging.getLogger("task_scheduler")
    saved = (logger.handlers[:], logger.propagate, logger.level)
    observability.configure_logging(stream)
    observability.request_id.set("req-1")
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    observability.request_id.set(None)
    logger.handlers, logger.propagate, logger.level = saved


@pytest.fixture
def emf(monkeypatch, capsys):
    """The EMF blobs printed to stdout (metrics on, as in Lambda)."""
    monkeypatch.setenv("METRICS", "emf")

    def blobs():
        lines = capsys.readouterr().out.splitlines()
        return [json.loads(line) for line in lines if line.startswith('{"_aws"')]
    return blobs


def _events(lines, name):
    return [line for line in lines if line.get("event") == name]


def test_every_line_of_a_full_run_is_json_with_the_run_fields(memory, receiver, make_task,
                                                              json_lines, monkeypatch):
    monkeypatch.setenv("RETRY_BASE_SECONDS", "1")
    receiver.script = [503, 500]
    task = make_task(payload={"url": receiver.url, "headers": {"Authorization": SECRET}},
                     max_attempts=2)
    execute_task(runtime(), task.task_id)                                        # 503: retry armed
    retry_at = runtime().store.get(task.task_id).next_run_at
    execute_task(runtime(Clock(now=lambda: retry_at)), task.task_id)           # 500: dead-lettered
    sweeper.sweep(runtime())
    lines = json_lines()
    assert all({"timestamp", "level", "logger", "request_id"} <= set(line) for line in lines)
    started, finished = _events(lines, "run_started"), _events(lines, "run_finished")
    assert len(started) == 2 and len(finished) == 2
    for line in finished:
        assert RUN_FIELDS <= set(line), line
        assert line["outcome"] == "failed" and line["lateness_ms"] >= 0
    assert [line["http_status"] for line in finished] == [503, 500]
    assert [line["status"] for line in finished] == ["retrying", "failed"]
    [retry] = _events(lines, "retry_armed")
    assert retry["task_id"] == task.task_id and retry["attempt"] == 1
    [dead] = _events(lines, "dead_lettered")
    assert dead["run_id"] == finished[1]["run_id"] and dead["attempt"] == 2
    [swept] = _events(lines, "swept")
    assert swept["request_id"] == "req-1"
    assert SECRET not in json.dumps(lines)


def test_scheduling_logs_a_line_without_the_payload(memory_api, json_lines):
    body = spec_example()
    body["payload"]["headers"] = {"X-Api-Key": SECRET}
    task_id = memory_api.post("/schedule-task", body).json["task_id"]
    [line] = _events(json_lines(), "task_scheduled")
    assert line["task_id"] == task_id and line["action"] == "webhook"
    assert "payload" not in line and SECRET not in json.dumps(line)


def test_executor_metrics_carry_names_units_and_dimensions(aws, receiver, make_task, emf):
    task = make_task(payload={"url": receiver.url})
    execute_task(runtime(), task.task_id)
    [blob] = emf()
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "TaskScheduler"
    assert directive["Dimensions"] == [["Stage"], ["Stage", "Action"]]
    units = {metric["Name"]: metric["Unit"] for metric in directive["Metrics"]}
    assert units == {"RunsSucceeded": "Count", "RunsFailed": "Count", "RunsRetried": "Count",
                     "RunsDeadLettered": "Count", "Lateness": "Milliseconds",
                     "Duration": "Milliseconds"}
    assert blob["Stage"] == "dev" and blob["Action"] == "webhook"
    assert (blob["RunsSucceeded"], blob["RunsFailed"], blob["RunsDeadLettered"]) == (1, 0, 0)
    assert blob["Lateness"] >= 0 and blob["Duration"] >= 0
    assert blob["task_id"] == task.task_id
    assert isinstance(blob["_aws"]["Timestamp"], int)


def test_failed_run_counts_as_failed_and_dead_lettered(memory, receiver, make_task, emf):
    receiver.status = 404
    execute_task(runtime(), make_task(payload={"url": receiver.url}).task_id)
    [blob] = emf()
    assert (blob["RunsSucceeded"], blob["RunsFailed"], blob["RunsRetried"],
            blob["RunsDeadLettered"]) == (0, 1, 0, 1)
    assert blob["http_status"] == 404


def test_sweeper_metrics(memory, receiver, make_task, emf):
    for _ in range(2):
        make_task(payload={"url": receiver.url}, due_in=-3600)
    make_task(payload={"url": receiver.url}, due_in=3600)  # due before the next sweep
    sweeper.sweep(runtime(Clock(now=lambda: utcnow() + timedelta(seconds=1))))
    blob = emf()[-1]
    [directive] = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["Stage"]]
    assert {m["Name"] for m in directive["Metrics"]} == set(sweeper.SWEEP_METRICS.values())
    assert blob["SweptCompleted"] == 2 and blob["SweepChecked"] == 1


def test_metrics_are_off_outside_lambda_by_default(memory, receiver, make_task, capsys,
                                                   monkeypatch):
    monkeypatch.delenv("METRICS", raising=False)
    monkeypatch.delenv("AWS_LAMBDA_FUNCTION_NAME", raising=False)
    execute_task(runtime(), make_task(payload={"url": receiver.url}).task_id)
    assert '"_aws"' not in capsys.readouterr().out
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "task-scheduler-dev-execute_task")
    execute_task(runtime(), make_task(payload={"url": receiver.url}).task_id)
    assert '"_aws"' in capsys.readouterr().out


def test_the_local_servers_lines_are_written_by_one_thread_all_of_them(monkeypatch):
    """Records logged from many threads at once are written by the writer thread, each
    once and whole, in each thread's order, with a traceback; stopping drains them."""
    import threading

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    monkeypatch.setattr(root, "level", root.level)
    monkeypatch.setattr(observability.logger, "level", observability.logger.level)
    monkeypatch.setattr(observability, "_writer", None)
    lines = io.StringIO()
    observability.configure_local_logging(lines)
    observability.configure_local_logging(io.StringIO())  # once per process

    def log(thread):
        for n in range(200):
            observability.event("tick", thread=thread, n=n)

    threads = [threading.Thread(target=log, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("task_scheduler.test").exception("failed %s", "here")
    observability.stop_local_logging()
    records = [json.loads(line) for line in lines.getvalue().splitlines()]
    ticks = [r for r in records if r.get("event") == "tick"]
    assert len(ticks) == 1600
    for thread in range(8):
        assert [r["n"] for r in ticks if r["thread"] == thread] == list(range(200))
    assert records[-1]["message"] == "failed here" and "ValueError: boom" in \
        records[-1]["exception"]
