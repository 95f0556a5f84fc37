"""Standard Webhooks v1 signatures, checked by the independent `standardwebhooks` package."""
from datetime import datetime, timezone

import boto3
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from chalicelib import signing
from chalicelib.executor import execute_task
from tests.conftest import runtime


def verify(secret, request):
    return Webhook(secret).verify(request["body"], {
        "webhook-id": request["headers"]["webhook-id"],
        "webhook-timestamp": request["headers"]["webhook-timestamp"],
        "webhook-signature": request["headers"]["webhook-signature"]})


def test_receiver_verifies_with_the_secret_from_ssm(aws, receiver, make_task):
    secret = boto3.client("ssm").get_parameter(
        Name="/task-scheduler/dev/webhook-secret", WithDecryption=True)["Parameter"]["Value"]
    assert secret.startswith("whsec_")
    task = make_task(payload={"url": receiver.url, "data": {"amount": 42, "é": "ü"}})
    execute_task(runtime(), task.task_id)
    [request] = receiver.requests
    assert verify(secret, request) == {"amount": 42, "é": "ü"}
    assert request["headers"]["webhook-id"] == request["headers"]["idempotency-key"]
    tampered = dict(request, body=request["body"].replace(b"42", b"43"))
    with pytest.raises(WebhookVerificationError):
        verify(secret, tampered)
    with pytest.raises(WebhookVerificationError):
        verify(signing.new_secret(), request)  # another secret


def test_rotation_signs_with_every_secret(memory, receiver, make_task, monkeypatch):
    old, new = signing.new_secret(), signing.new_secret()
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", f"{old} {new}")
    execute_task(runtime(), make_task(payload={"url": receiver.url, "data": [1]}).task_id)
    [request] = receiver.requests
    assert len(request["headers"]["webhook-signature"].split()) == 2
    assert verify(old, request) == [1] and verify(new, request) == [1]


def test_webhook_id_is_stable_across_retries(memory, receiver, make_task, monkeypatch):
    monkeypatch.setenv("RETRY_BASE_SECONDS", "1")
    receiver.script = [503]
    task = make_task(payload={"url": receiver.url, "data": {}})
    execute_task(runtime(), task.task_id)
    from chalicelib.models import Clock

    retry_at = runtime().store.get(task.task_id).next_run_at
    execute_task(runtime(Clock(now=lambda: retry_at)), task.task_id)
    ids = {r["headers"]["webhook-id"] for r in receiver.requests}
    assert len(receiver.requests) == 2 and len(ids) == 1


def test_signed_empty_body(memory, receiver, make_task, monkeypatch):
    secret = signing.new_secret()
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", secret)
    execute_task(runtime(), make_task(payload={"url": receiver.url, "method": "GET"}).task_id)
    [request] = receiver.requests
    assert request["body"] == b""
    headers = request["headers"]
    expected = Webhook(secret).sign(  # the package's verify() insists on a JSON body
        headers["webhook-id"],
        datetime.fromtimestamp(int(headers["webhook-timestamp"]), tz=timezone.utc), "")
    assert headers["webhook-signature"] == expected


@pytest.mark.parametrize("raw", ["whsec_!!!", "whsec_"])
def test_bad_secret_is_an_error(raw):
    with pytest.raises(ValueError):
        signing.parse_secrets(raw)


def test_unreadable_secret_is_a_retryable_failure(aws, receiver, make_task, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET_PARAM", "/task-scheduler/dev/no-such-param")
    task = make_task(payload={"url": receiver.url}, max_attempts=3)
    assert execute_task(runtime(), task.task_id).status == "retrying"
    error = runtime().store.get(task.task_id).runs[0].error
    assert error.startswith("not signed: reading the signing secret")
    assert receiver.requests == []  # never sent unsigned


def test_malformed_secret_is_a_retryable_failure(memory, receiver, make_task, monkeypatch):
    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", "whsec_!!!")
    task = make_task(payload={"url": receiver.url}, max_attempts=3)
    assert execute_task(runtime(), task.task_id).status == "retrying"
    assert "whsec_!!!" not in runtime().store.get(task.task_id).runs[0].error
    assert receiver.requests == []


def test_a_changed_secret_signs_the_next_request_with_the_new_one(monkeypatch):
    # The decoded keys are cached per configured value: a new value is a new entry.
    first, second = signing.new_secret(), signing.new_secret()
    signed = {}
    for secret in (first, second, first):
        monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", secret)
        headers = signing.signature_headers("msg_1", b"{}", timestamp=1)
        assert signed.setdefault(secret, headers) == headers
    assert signed[first]["webhook-signature"] != signed[second]["webhook-signature"]
