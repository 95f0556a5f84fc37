"""Callbacks: a run's outcome POSTed to callback_url after every run and to
failure_callback_url after a final failure, signed (Standard Webhooks) and SSRF-guarded
like webhooks, retried, never changing the run's outcome, recorded on the run; on the
in-memory runtime with real receivers, and against make dev's server."""
import json
from datetime import timedelta

import pytest
from standardwebhooks.webhooks import Webhook

from chalicelib import callbacks, service, wiring
from chalicelib.executor import execute_task
from chalicelib.models import Clock, utcnow
from tests.conftest import MEMORY_SIGNING_SECRET, Receiver, seconds_from_now

pytestmark = pytest.mark.usefixtures("memory")


@pytest.fixture
def hooks():
    """A second receiver, for the callbacks (the `receiver` fixture takes the webhook)."""
    server = Receiver()
    yield server
    server.close()


def _run_due(task_id):
    later = Clock(now=lambda: utcnow() + timedelta(minutes=2), sleep=lambda seconds: None)
    with wiring.overridden(clock=later):
        return execute_task(wiring.runtime(), task_id)


def _schedule(receiver_url, **extra):
    soon = (utcnow() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"action": "webhook", "payload": {"url": receiver_url, "data": {"n": 1}},
            "run_at": soon, **extra}
    return service.schedule_task(wiring.runtime(), body)[0]["task_id"]


def _verified(request):
    headers = request["headers"]
    Webhook(MEMORY_SIGNING_SECRET).verify(request["body"], {
        name: headers[name] for name in ("webhook-id", "webhook-timestamp",
                                         "webhook-signature")})
    return json.loads(request["body"])


def test_every_run_is_called_back_with_its_outcome_signed(receiver, hooks):
    receiver.body = b'{"accepted": true}'
    task_id = _schedule(receiver.url, callback_url=hooks.url + "/done",
                        failure_callback_url=hooks.url + "/failed")
    ran = _run_due(task_id)
    [request] = hooks.requests
    assert request["path"] == "/hook/done"
    sent = _verified(request)
    assert sent == {"task_id": task_id, "run_id": ran.run.run_id, "attempt": 1,
                    "outcome": "succeeded", "http_status": 200, "error": None,
                    "status": "completed", "response_body": '{"accepted": true}'}
    assert request["headers"]["webhook-id"] == f"{task_id}:{ran.run.run_id}:callback"
    [run] = service.get_task(wiring.runtime(), task_id)["runs"]
    assert run["callback"] == "callback delivered (HTTP 200)"


def test_a_final_failure_calls_both_and_a_retry_only_the_callback(receiver, hooks):
    receiver.status = 503
    task_id = _schedule(receiver.url, max_attempts=2, callback_url=hooks.url + "/done",
                        failure_callback_url=hooks.url + "/failed")
    assert _run_due(task_id).status == "retrying"
    assert [r["path"] for r in hooks.requests] == ["/hook/done"]
    assert json.loads(hooks.requests[0]["body"])["status"] == "retrying"
    later = Clock(now=lambda: utcnow() + timedelta(hours=3), sleep=lambda seconds: None)
    with wiring.overridden(clock=later):
        assert execute_task(wiring.runtime(), task_id).status == "failed"
    assert [r["path"] for r in hooks.requests] == ["/hook/done", "/hook/done",
                                                   "/hook/failed"]
    failed = _verified(hooks.requests[2])
    assert (failed["outcome"], failed["status"], failed["http_status"]) == (
        "failed", "failed", 503)
    assert failed["error"].startswith("HTTP 503")


def test_a_callback_that_fails_is_tried_three_times_and_never_changes_the_outcome(receiver,
                                                                                  hooks):
    hooks.status = 500
    task_id = _schedule(receiver.url, callback_url=hooks.url)
    ran = _run_due(task_id)
    assert ran.status == "completed" and ran.run.outcome == "succeeded"
    assert len(hooks.requests) == 3
    assert len({r["headers"]["webhook-id"] for r in hooks.requests}) == 1  # one message
    [run] = service.get_task(wiring.runtime(), task_id)["runs"]
    assert run["callback"].startswith("callback failed after 3 tries: HTTP 500")


@pytest.mark.parametrize("field, value, says", [
    ("callback_url", "ftp://example.com/x", "must use http or https"),
    ("failure_callback_url", "http://user:pw@example.com/", "must not carry credentials"),
    ("callback_url", "", "is required"),
    ("callback_url", 7, "must be"),
])
def test_a_callback_url_is_checked_as_a_webhooks(receiver, field, value, says):
    from chalicelib.errors import ValidationError

    with pytest.raises(ValidationError) as refused:
        _schedule(receiver.url, **{field: value})
    assert refused.value.field == field and says in refused.value.message


def test_a_private_callback_url_is_refused_unless_allowed(receiver, monkeypatch):
    from chalicelib.errors import ValidationError

    monkeypatch.setenv("ALLOW_PRIVATE_TARGETS", "false")
    with pytest.raises(ValidationError) as refused:
        service.schedule_task(wiring.runtime(), {
            "action": "log", "payload": {"message": "m"}, "run_at": "rate(1 hour)",
            "callback_url": "http://169.254.169.254/latest/meta-data/"})
    assert refused.value.field == "callback_url"
    assert "private or loopback" in refused.value.message


def test_the_callback_body_is_built_from_the_run(receiver):
    from chalicelib.actions.base import ActionResult
    from chalicelib.models import Run, Task

    task = Task(task_id="t", action="log", payload={}, run_at="x", schedule_kind="once",
                next_run_at=utcnow())
    run = Run(run_id="r", attempt=2, started_at=utcnow(), outcome="failed", error="boom")
    assert callbacks.body(task, run, "retrying", ActionResult(False)) == {
        "task_id": "t", "run_id": "r", "attempt": 2, "outcome": "failed",
        "http_status": None, "error": "boom", "status": "retrying", "response_body": None}


@pytest.mark.e2e
def test_callbacks_reach_a_receiver_from_make_dev_verified(servers, receiver, hooks):
    server = servers().start()
    task_id = server.schedule(receiver.url, seconds_from_now(1),
                              callback_url=hooks.url + "/done")
    server.wait_status(task_id, "completed")
    secret = (server.data_dir / "webhook-secret").read_text().strip()
    [request] = hooks.requests
    headers = request["headers"]
    Webhook(secret).verify(request["body"], {
        name: headers[name] for name in ("webhook-id", "webhook-timestamp",
                                         "webhook-signature")})
    sent = json.loads(request["body"])
    assert (sent["task_id"], sent["outcome"], sent["status"]) == (
        task_id, "succeeded", "completed")


def test_callbacks_stop_when_the_runs_time_for_them_is_spent(receiver, hooks, monkeypatch):
    monkeypatch.setattr(callbacks, "BUDGET_SECONDS", 0.0)
    task_id = _schedule(receiver.url, callback_url=hooks.url)
    assert _run_due(task_id).run.outcome == "succeeded"
    assert hooks.requests == []
    [run] = service.get_task(wiring.runtime(), task_id)["runs"]
    assert run["callback"] == "callback not sent: the run's time for callbacks was spent"
