"""Webhook payload limits (each just under and just over) and redaction of secrets."""
import json
import logging
import threading
import time

import pytest

from chalicelib.executor import execute_task
from tests.test_api import schedules_in_group, spec_example, task_count
from tests.conftest import runtime


def _hook(**payload):
    return {**spec_example(), "payload": {"url": "https://example.com/hook", **payload}}


def _data_of_size(size):
    # A JSON string of exactly `size` bytes once serialised (two quote characters).
    return "x" * (size - 2)


LIMITS = [
    ("data 64 KiB", _hook(data=_data_of_size(64 * 1024)), _hook(data=_data_of_size(64 * 1024 + 1)),
     "payload.data"),
    ("20 headers", _hook(headers={f"X-H{i}": "v" for i in range(20)}),
     _hook(headers={f"X-H{i}": "v" for i in range(21)}), "payload.headers"),
    ("header of 1 KiB", _hook(headers={"X-Long": "v" * (1024 - 6)}),
     _hook(headers={"X-Long": "v" * (1024 - 5)}), "payload.headers"),
    ("URL of 2048", _hook(url="https://example.com/" + "a" * (2048 - 20)),
     _hook(url="https://example.com/" + "a" * (2048 - 19)), "payload.url"),
    ("timeout 60 s", _hook(timeout=60), _hook(timeout=60.5), "payload.timeout"),
]


@pytest.mark.parametrize("under,over,field", [c[1:] for c in LIMITS], ids=[c[0] for c in LIMITS])
def test_limit_just_under_is_accepted_just_over_is_refused(api, under, over, field):
    refused = api.post("/schedule-task", over)
    assert refused.status_code == 400 and refused.json["field"] == field
    assert task_count() == 0 and schedules_in_group() == []
    assert api.post("/schedule-task", under).status_code == 201


def test_body_limit_is_256_kib(api):
    base = json.dumps(_hook(data="")).encode()
    padding = 256 * 1024 - len(base)
    just_under = base.replace(b'"data": ""', b'"data": ""' + b" " * padding)
    assert len(just_under) == 256 * 1024
    assert api.post("/schedule-task", raw=just_under).status_code == 201
    refused = api.post("/schedule-task", raw=just_under + b" ")
    assert refused.status_code == 413 and task_count() == 1


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "Connection",
                                  "webhook-signature", "Webhook-Id", "Idempotency-Key"])
def test_headers_the_client_must_not_set(api, name):
    response = api.post("/schedule-task", _hook(headers={name: "x"}))
    assert response.status_code == 400 and response.json["field"] == "payload.headers"
    assert task_count() == 0


SECRETS = {"Authorization": "Bearer sk-live-123", "X-Api-Key": "key-456",
           "Cookie": "session=abc789", "X-Refresh-Token": "tok-000", "X-Db-Password": "pw-111",
           "X-Client-Secret": "sec-222"}


@pytest.mark.parametrize("path", ["direct", "pinned"])
def test_sensitive_headers_are_sent_but_never_shown_or_logged(memory_api, receiver, caplog, request,
                                                              path):
    body = _hook(headers={**SECRETS, "X-Plain": "visible"}, data={"n": 1})
    body["payload"]["url"] = receiver.url
    if path == "pinned":  # through the SSRF guard (ALLOW_PRIVATE_TARGETS off)
        body["payload"]["url"] = request.getfixturevalue("public_receiver").public_url
    body["run_at"] = spec_example()["run_at"]
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="task_scheduler"):
        task_id = memory_api.post("/schedule-task", body).json["task_id"]
        shown = memory_api.get(f"/tasks/{task_id}").json
        listed = memory_api.get("/tasks").json["tasks"][0]
        from chalicelib.models import Clock

        due = runtime().store.get(task_id).next_run_at
        execute_task(runtime(Clock(now=lambda: due)), task_id)
    for name, value in SECRETS.items():
        assert shown["payload"]["headers"][name] == "***"
        assert listed["payload"]["headers"][name] == "***"
        assert receiver.requests[0]["headers"][name.lower()] == value  # sent as given
        assert value not in caplog.text
    assert shown["payload"]["headers"]["X-Plain"] == "visible"


@pytest.mark.parametrize("value", [" Bearer sk-1", "Bearer sk-1 ", "\tsk-1", "sk\x01", "sk\x7f",
                                   "sk-1\n", "sk-1\r\nX-Evil: 1", "\u20ac"])
def test_header_values_that_cannot_be_sent_are_refused(api, value):
    response = api.post("/schedule-task", _hook(headers={"Authorization": value}))
    assert response.status_code == 400 and response.json["field"] == "payload.headers"
    assert value not in response.json["message"]  # the value may be a secret
    assert task_count() == 0


@pytest.mark.parametrize("name", ["X-Name\n", "X Name", "X:Name", ""])
def test_header_names_must_be_tokens(memory_api, name):
    response = memory_api.post("/schedule-task", _hook(headers={name: "v"}))
    assert response.status_code == 400 and response.json["field"] == "payload.headers"


def test_a_stored_header_that_cannot_be_sent_fails_without_leaking(memory, make_task, caplog):
    # Stored directly, as by an older version with looser rules: the run must not crash
    # or copy the value into the run's error or the logs.
    task = make_task(payload={"url": "https://example.com/hook",
                              "headers": {"Authorization": " Bearer sk-leak-999"}})
    with caplog.at_level(logging.INFO), caplog.at_level(logging.DEBUG, logger="task_scheduler"):
        result = execute_task(runtime(), task.task_id)
    assert result.status == "failed"
    assert result.run.error == "request could not be built: InvalidHeader"
    assert "sk-leak-999" not in caplog.text


def test_webhook_exchanges_reuse_their_threads(monkeypatch):
    from chalicelib.actions import exchange
    from chalicelib.threads import DaemonThreads

    # A pool of its own: idle threads left by earlier tests would take turns at the jobs.
    pool = DaemonThreads("test-exchange-reuse", 16)
    monkeypatch.setattr(exchange, "_EXCHANGES", pool)
    # Thread objects, kept alive here, so a new thread with a reused ident still counts.
    threads = []
    for _ in range(30):
        threads.append(exchange._within(30, threading.current_thread))
        deadline = time.monotonic() + 30
        while pool.idle < 1 and time.monotonic() < deadline:  # back from its job
            time.sleep(0.001)
    assert len(set(threads)) == 1
    pool.close()  # its idle thread ends with the test


def test_an_exchange_never_waits_for_a_thread_and_few_stay_idle():
    from chalicelib.threads import DaemonThreads

    name = "test-few-stay-idle"
    pool, together, done = DaemonThreads(name, keep_idle=1), threading.Barrier(5), []

    def job():
        together.wait(timeout=30)  # only passes when all five run at the same time
        done.append(threading.get_ident())

    for _ in range(5):
        pool.run(job)
    deadline = time.monotonic() + 30
    while len(done) < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(set(done)) == 5

    def one_left():
        return pool.idle == 1 and sum(t.name == name for t in threading.enumerate()) == 1

    while not one_left() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert one_left()  # the other four threads ended


@pytest.mark.parametrize("name", ["X-Hub-Signature", "X-Hub-Signature-256", "X-Credentials",
                                  "X-Jwt", "X-Passwd", "Proxy-Authorization", "Set-Cookie",
                                  "X-Session-Id", "x-shopify-hmac-KEY", "X-Auth", "AUTHTOKEN"])
def test_secret_header_names_are_redacted_by_pattern(memory_api, name):
    task_id = memory_api.post("/schedule-task", _hook(headers={name: "s3cr3t-value",
                                                        "X-Plain": "visible"})).json["task_id"]
    shown = memory_api.get(f"/tasks/{task_id}").json["payload"]["headers"]
    assert shown == {name: "***", "X-Plain": "visible"}


@pytest.mark.parametrize("name", ["Accept", "Content-Type", "X-Request-Source", "User-Agent"])
def test_ordinary_header_names_are_shown(memory_api, name):
    task_id = memory_api.post("/schedule-task", _hook(headers={name: "plain"})).json["task_id"]
    assert memory_api.get(f"/tasks/{task_id}").json["payload"]["headers"] == {name: "plain"}


def test_a_receiver_echoing_the_secret_never_puts_it_in_errors_logs_or_dead_letters(
        api, receiver, caplog):
    """A 401 whose body quotes the Authorization header (and a signature without its
    prefix): the run's error, the logs and the dead letter say *** where they were."""
    import boto3

    from chalicelib import deadletters
    from chalicelib.models import Clock

    receiver.status = 401
    receiver.body = (b"invalid credentials: Bearer sk_live_0123456789abcdef "
                     b"(signature deadbeefcafebabe00 unknown)")
    body = _hook(headers={"Authorization": "Bearer sk_live_0123456789abcdef",
                          "X-Hub-Signature": "sha1=deadbeefcafebabe00"}, data={"n": 1})
    body["payload"]["url"] = receiver.url
    body["max_attempts"] = 1
    with caplog.at_level(logging.DEBUG, logger="task_scheduler"):
        task_id = api.post("/schedule-task", body).json["task_id"]
        due = runtime().store.get(task_id).next_run_at
        execute_task(runtime(Clock(now=lambda: due)), task_id)
    [run] = api.get(f"/tasks/{task_id}").json["runs"]
    assert run["error"] == "HTTP 401: invalid credentials: *** (signature *** unknown)"
    sqs = boto3.client("sqs")
    [letter] = sqs.receive_message(QueueUrl=deadletters._queue_url())["Messages"]
    assert json.loads(letter["Body"])["task_id"] == task_id
    for secret in ("sk_live_0123456789abcdef", "deadbeefcafebabe00"):
        assert secret not in caplog.text and secret not in letter["Body"]


def test_headers_are_merged_without_regard_to_case_ours_last():
    from chalicelib.actions import webhook

    assert webhook.merged_headers(
        {"user-agent": "mine/1", "X-A": "1", "x-a": "2", "Content-Type": "text/plain"},
        {"User-Agent": "task-scheduler/1.0"}) == {
        "User-Agent": "task-scheduler/1.0", "x-a": "2", "Content-Type": "text/plain"}


def test_a_pool_closed_under_a_request_is_a_retryable_connection_failure(memory, monkeypatch):
    from urllib3.exceptions import ClosedPoolError

    from chalicelib.actions import exchange, webhook
    from chalicelib.actions.base import ActionContext

    def closed(request, timeout):
        raise ClosedPoolError(None, "Pool is closed.")

    monkeypatch.setattr(exchange, "_exchange", closed)
    monkeypatch.setenv("ALLOW_PRIVATE_TARGETS", "true")
    result = webhook.run_webhook({"url": "http://127.0.0.1:9/x"}, ActionContext(
        task_id="t", run_id="r", attempt=1, idempotency_key="t:1"))
    assert result.retryable and result.error == "connection failed: ClosedPoolError"
