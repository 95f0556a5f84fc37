"""Bootstrap creates the stage's resources once, in process and against a moto server."""
import json
import os
import subprocess
import sys

import boto3
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer

from chalicelib import bootstrap, config, permissions
from tests.conftest import PROJECT_DIR


def test_creates_everything_then_changes_nothing():
    with mock_aws():
        first = bootstrap.bootstrap("dev")
        assert first == ["table ScheduledTasks-dev: created",
                         "table ScheduledTasks-dev-flow: created",
                         "schedule group task-scheduler-dev: created",
                         "scheduler role task-scheduler-dev-scheduler: created",
                         "dead-letter queue task-scheduler-dev-dlq: created",
                         "notification topic task-scheduler-dev-notifications: created",
                         "webhook signing secret /task-scheduler/dev/webhook-secret: created"]
        second = bootstrap.bootstrap("dev")
        assert second == [line.replace("created", "exists") for line in first]
        attributes = boto3.client("sqs").get_queue_attributes(
            QueueUrl=boto3.client("sqs").get_queue_url(QueueName="task-scheduler-dev-dlq")[
                "QueueUrl"], AttributeNames=["MessageRetentionPeriod"])["Attributes"]
        assert attributes["MessageRetentionPeriod"] == str(14 * 86400)
        table = boto3.client("dynamodb").describe_table(TableName="ScheduledTasks-dev")["Table"]
        assert table["KeySchema"] == [{"AttributeName": "TaskID", "KeyType": "HASH"}]
        assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {
            config.DUE_INDEX, config.STATUS_INDEX, config.TENANT_INDEX, config.TENANT_STATUS_INDEX}
        flow = boto3.client("dynamodb").describe_table(TableName="ScheduledTasks-dev-flow")
        assert [key["AttributeName"] for key in flow["Table"]["KeySchema"]] == [
            "FlowKey", "Entry"]
        iam = boto3.client("iam")
        role = iam.get_role(RoleName="task-scheduler-dev-scheduler")["Role"]
        trust = role["AssumeRolePolicyDocument"]
        trust = json.loads(trust) if isinstance(trust, str) else trust
        assert trust["Statement"][0]["Principal"] == {"Service": "scheduler.amazonaws.com"}
        policy = iam.get_role_policy(RoleName="task-scheduler-dev-scheduler",
                                     PolicyName=permissions.SCHEDULER_POLICY_NAME)["PolicyDocument"]
        policy = json.loads(policy) if isinstance(policy, str) else policy
        [statement] = policy["Statement"]
        assert statement["Action"] == "lambda:InvokeFunction"
        assert statement["Resource"][0].endswith(":function:task-scheduler-dev-execute_task")


def test_rules_mode_grants_one_prefix_permission(rules_mode):
    lines = bootstrap.bootstrap("dev")
    assert lines[-1].startswith("rules permission on ")
    bootstrap.bootstrap("dev")
    policy = json.loads(boto3.client("lambda").get_policy(
        FunctionName=config.executor_function_name())["Policy"])
    assert len(policy["Statement"]) == 1


@pytest.fixture
def moto_server():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


def test_command_line_against_an_endpoint(moto_server, tmp_path):
    env = {**os.environ, "AWS_ENDPOINT_URL": moto_server}
    env.pop("TASKS_TABLE", None)
    command = [sys.executable, "-m", "chalicelib.bootstrap", "--stage", "prod"]
    first = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                           timeout=120)
    assert first.returncode == 0, first.stderr
    assert "table ScheduledTasks: created" in first.stdout
    second = subprocess.run(command, cwd=PROJECT_DIR, env=env, capture_output=True, text=True,
                            timeout=120)
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout and "updated" not in second.stdout
    client = boto3.client("dynamodb", endpoint_url=moto_server)
    assert client.list_tables()["TableNames"] == ["ScheduledTasks", "ScheduledTasks-flow"]


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_committed_policy_files_match_the_generator(stage):
    for function, policy in bootstrap.deploy_policies(stage).items():
        committed = json.loads(bootstrap.policy_path(stage, function).read_text())
        assert committed == policy, f"run: make policy STAGE={stage}"


def test_config_names_each_functions_policy():
    stages = json.loads((bootstrap.PROJECT_DIR / ".chalice" / "config.json").read_text())[
        "stages"]
    for stage in ("dev", "prod"):
        functions = stages[stage]["lambda_functions"]
        assert stages[stage]["iam_policy_file"] == f"policy-{stage}-api.json"
        assert {name: f["iam_policy_file"] for name, f in functions.items()} == {
            "execute_task": f"policy-{stage}-executor.json",
            "daily_sweeper": f"policy-{stage}-sweeper.json",
            "token_auth": f"policy-{stage}-authorizer.json"}


def _sids(policy):
    return {statement["Sid"] for statement in policy["Statement"]}


def test_each_function_gets_only_its_statements(monkeypatch):
    policies = bootstrap.deploy_policies("prod")
    assert _sids(policies["authorizer"]) == {"Logs", "ApiTokens"}
    assert "DeadLetters" not in _sids(policies["api"])
    assert "SigningSecret" not in _sids(policies["api"])
    assert "SweeperContinues" in _sids(policies["sweeper"]) - _sids(policies["executor"])
    table = {f: next(s for s in p["Statement"] if s["Sid"] == "TasksTable")["Action"]
             for f, p in policies.items() if f != "authorizer"}
    assert "dynamodb:DeleteItem" in table["api"]
    assert "dynamodb:DeleteItem" not in table["executor"] + table["sweeper"]
    assert "dynamodb:Scan" not in table["executor"] + table["sweeper"]


def test_policy_is_scoped_to_the_stage_resources():
    statements = {s["Sid"]: s for policy in bootstrap.deploy_policies("prod").values()
                  for s in policy["Statement"]}
    assert statements["TasksTable"]["Resource"] == [
        "arn:aws:dynamodb:*:*:table/ScheduledTasks",
        "arn:aws:dynamodb:*:*:table/ScheduledTasks/index/*"]
    assert statements["Schedules"]["Resource"] == \
        "arn:aws:scheduler:*:*:schedule/task-scheduler-prod/*"
    assert statements["PassSchedulerRole"]["Resource"] == \
        "arn:aws:iam::*:role/task-scheduler-prod-scheduler"
    assert statements["ApiTokens"]["Resource"] == \
        "arn:aws:ssm:*:*:parameter/task-scheduler/prod/api-tokens"
    assert statements["SigningSecret"]["Resource"] == \
        "arn:aws:ssm:*:*:parameter/task-scheduler/prod/webhook-secret"
    for statement in statements.values():
        assert "*" not in statement["Action"]
