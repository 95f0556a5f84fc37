"""Bearer tokens from API_TOKENS or an SSM SecureString."""
import boto3
import pytest

from chalicelib import auth


@pytest.mark.parametrize("header,allowed", [
    ("Bearer first", True), ("Bearer second", True), ("bearer second", True),
    ("Bearer  first ", True), ("Bearer third", False), ("first", False), ("Basic first", False),
    ("Bearer ", False), ("", False), (None, False), ("Bearer firs", False),
])
def test_tokens_from_environment(monkeypatch, header, allowed):
    monkeypatch.setenv("API_TOKENS", "first, second")
    assert auth.is_authorized(header) is allowed


def test_no_configured_token_refuses_everything(monkeypatch):
    monkeypatch.delenv("API_TOKENS")
    assert auth.is_authorized("Bearer anything") is False


def test_tokens_from_ssm_are_read_once(aws, monkeypatch):
    monkeypatch.delenv("API_TOKENS")
    monkeypatch.setenv("API_TOKENS_PARAM", "/task-scheduler/dev/api-tokens")
    boto3.client("ssm").put_parameter(Name="/task-scheduler/dev/api-tokens",
                                      Value="from-ssm,other", Type="SecureString")
    calls = []
    from chalicelib import aws as aws_clients

    aws_clients.client("ssm").meta.events.register(
        "after-call.ssm.GetParameter", lambda **_: calls.append(1))
    assert auth.is_authorized("Bearer from-ssm")
    assert auth.is_authorized("Bearer other")
    assert not auth.is_authorized("Bearer nope")
    assert len(calls) == 1


def test_api_accepts_a_token_from_ssm(client, monkeypatch):
    monkeypatch.delenv("API_TOKENS")
    monkeypatch.setenv("API_TOKENS_PARAM", "/task-scheduler/dev/api-tokens")
    boto3.client("ssm").put_parameter(Name="/task-scheduler/dev/api-tokens",
                                      Value="ssm-token", Type="SecureString")
    ok = client.http.get("/tasks", headers={"Authorization": "Bearer ssm-token"})
    assert ok.status_code == 200
    refused = client.http.get("/tasks", headers={"Authorization": "Bearer test"})
    assert refused.status_code in (401, 403)
