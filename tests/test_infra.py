"""infra/resources.json merged by `chalice package`: lint-clean, every function wired to
this stack's resources, each role granting only what its function does."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from chalicelib import config, infra
from tests.conftest import PROJECT_DIR
from tests.test_package import package

FUNCTIONS = {"app.app": "APIHandler", "app.execute_task": "ExecuteTask",
             "app.daily_sweeper": "DailySweeper"}
PSEUDO = {"AWS::Partition", "AWS::Region", "AWS::AccountId", "AWS::StackName",
          "AWS::URLSuffix", "AWS::NoValue"}


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    project = tmp_path_factory.mktemp("merged")
    return project / "out" / "sam.json", package(project, merge=True)


def test_committed_file_is_the_generators_output():
    committed = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
    assert committed == json.loads(json.dumps(infra.merge_template())), \
        "run: python -m chalicelib.infra > infra/resources.json"


def test_cfn_lint_finds_no_error(merged):
    path, _ = merged
    lint = Path(sys.executable).parent / "cfn-lint"
    result = subprocess.run([str(lint), "--format", "parseable", str(path)],
                            capture_output=True, text=True, timeout=300)
    errors = [line for line in result.stdout.splitlines() if ":E" in line or line.startswith("E")]
    print(f"\ncfn-lint: exit {result.returncode}, {len(errors)} errors")
    assert result.returncode in (0, 4, 8) and not errors, result.stdout + result.stderr


def _references(value):
    """Every resource or parameter name an intrinsic value refers to."""
    if isinstance(value, dict):
        if "Ref" in value:
            yield value["Ref"]
        elif "Fn::GetAtt" in value:
            yield value["Fn::GetAtt"][0]
        elif "Fn::Sub" in value:
            for name in re.findall(r"\$\{([^}!]+)\}", value["Fn::Sub"]):
                yield name.split(".")[0]
        else:
            for inner in value.values():
                yield from _references(inner)
    elif isinstance(value, list):
        for inner in value:
            yield from _references(inner)


def test_every_environment_variable_resolves_to_this_stack(merged):
    _, template = merged
    known = set(template["Resources"]) | set(template["Parameters"]) | PSEUDO
    for handler, logical in FUNCTIONS.items():
        variables = template["Resources"][logical]["Properties"]["Environment"]["Variables"]
        for name in (config.TASKS_TABLE, config.SCHEDULER_GROUP, config.SCHEDULER_ROLE_ARN,
                     config.EXECUTOR_ARN, config.DLQ_URL, config.NOTIFY_TOPIC_ARN,
                     config.API_TOKENS_PARAM, config.WEBHOOK_SIGNING_SECRET_PARAM,
                     config.ALLOWED_TARGETS, config.PRECISION, config.STAGE):
            value = variables[name]
            assert isinstance(value, dict), f"{logical} {name} is a copied literal: {value}"
            refs = set(_references(value))
            assert refs and refs <= known, (logical, name, refs - known)
            assert "arn:aws:" not in json.dumps(value)


def test_the_executor_names_its_own_arn_without_a_cycle(merged):
    _, template = merged
    executor = template["Resources"]["ExecuteTask"]["Properties"]
    own = executor["Environment"]["Variables"][config.EXECUTOR_ARN]["Fn::Sub"]
    assert own.endswith(":function:" + executor["FunctionName"]["Fn::Sub"])
    api = template["Resources"]["APIHandler"]["Properties"]["Environment"]["Variables"]
    assert api[config.EXECUTOR_ARN] == {"Fn::GetAtt": ["ExecuteTask", "Arn"]}


def _resolved(value, conditions):
    """A template value with each Fn::If decided by `conditions`, AWS::NoValue dropped."""
    if isinstance(value, dict):
        if "Fn::If" in value:
            name, when_true, when_false = value["Fn::If"]
            return _resolved(when_true if conditions[name] else when_false, conditions)
        return {key: _resolved(inner, conditions) for key, inner in value.items()
                if _resolved(inner, conditions) != {"Ref": "AWS::NoValue"}}
    if isinstance(value, list):
        return [_resolved(inner, conditions) for inner in value
                if _resolved(inner, conditions) != {"Ref": "AWS::NoValue"}]
    return value


def test_a_stack_from_before_tenants_gains_one_index_per_update(merged):
    """CloudFormation adds one global secondary index per table update: TenantIndexes=first
    adds TenantIndex to a table of two indexes, then both adds TenantStatusIndex; every
    attribute defined is a key of the table or of an index (DynamoDB refuses others)."""
    _, template = merged
    assert template["Parameters"]["TenantIndexes"]["Default"] == "both"
    table = template["Resources"]["TasksTable"]["Properties"]
    before_tenants = {config.DUE_INDEX, config.STATUS_INDEX}
    first = _resolved(table, {"WithTenantStatusIndex": False})
    both = _resolved(table, {"WithTenantStatusIndex": True})
    names = [{index["IndexName"] for index in shape["GlobalSecondaryIndexes"]}
             for shape in (first, both)]
    assert names[0] - before_tenants == {config.TENANT_INDEX}
    assert names[1] - names[0] == {config.TENANT_STATUS_INDEX}
    for shape in (first, both):
        keys = {key["AttributeName"] for key in shape["KeySchema"]} | {
            key["AttributeName"] for index in shape["GlobalSecondaryIndexes"]
            for key in index["KeySchema"]}
        assert {attribute["AttributeName"] for attribute in
                shape["AttributeDefinitions"]} == keys


def test_merged_resources_are_configured(merged):
    _, template = merged
    resources = template["Resources"]
    table = _resolved(resources["TasksTable"]["Properties"], {"WithTenantStatusIndex": True})
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {
        config.DUE_INDEX, config.STATUS_INDEX, config.TENANT_INDEX, config.TENANT_STATUS_INDEX}
    assert table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"]
    assert table["SSESpecification"]["SSEEnabled"]
    queue = resources["DeadLetterQueue"]["Properties"]
    assert queue["MessageRetentionPeriod"] == 14 * 86400 and queue["SqsManagedSseEnabled"]
    assert resources["NotificationTopic"]["Condition"] == "WithNotifications"
    alarms = {name: r["Properties"] for name, r in resources.items()
              if r["Type"] == "AWS::CloudWatch::Alarm"}
    assert {a["MetricName"] for a in alarms.values()} == {
        "ApproximateNumberOfMessagesVisible", "Errors"}
    assert {json.dumps(a["Dimensions"][0]["Value"]) for a in alarms.values()} == {
        '{"Fn::GetAtt": ["DeadLetterQueue", "QueueName"]}', '{"Ref": "ExecuteTask"}',
        '{"Ref": "DailySweeper"}'}
    invoke = resources["SchedulerInvokesExecutor"]["Properties"]["PolicyDocument"]
    [statement] = invoke["Statement"]
    assert statement["Action"] == "lambda:InvokeFunction"
    assert statement["Resource"][0] == {"Fn::GetAtt": ["ExecuteTask", "Arn"]}


def _actions(template, role, sid=None):
    statements = template["Resources"][role]["Properties"]["Policies"][0]["PolicyDocument"][
        "Statement"]
    found = set()
    for statement in statements:
        if "Fn::If" in statement:
            statement = statement["Fn::If"][1]
        if sid is not None and statement["Sid"] != sid:
            continue
        actions = statement["Action"]
        found |= set([actions] if isinstance(actions, str) else actions)
    return found


def test_each_function_is_granted_only_what_it_does(merged):
    _, template = merged
    api, executor = _actions(template, "ApiHandlerRole"), _actions(template, "ExecuteTaskRole")
    sweeper, authorizer = _actions(template, "DailySweeperRole"), _actions(template,
                                                                           "TokenAuthRole")
    # Every function writes a task on its version (PutItem); only the API undoes a creation.
    assert "dynamodb:PutItem" in api & executor & sweeper
    deletes_tasks = {role for role in ("ApiHandlerRole", "ExecuteTaskRole", "DailySweeperRole")
                     if "dynamodb:DeleteItem" in _actions(template, role, "TasksTable")}
    assert deletes_tasks == {"ApiHandlerRole"}
    # A run frees its flow-control slot and takes woken tasks out of the key's queue.
    assert {"dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"} <= (
        _actions(template, "ExecuteTaskRole", "FlowTable")
        & _actions(template, "DailySweeperRole", "FlowTable"))
    assert "sqs:SendMessage" not in api and "ssm:GetParameter" not in api
    assert "sqs:SendMessage" in executor and "sqs:SendMessage" in sweeper
    assert authorizer == {"ssm:GetParameter", "logs:CreateLogGroup", "logs:CreateLogStream",
                          "logs:PutLogEvents"}
    assert "dynamodb:Scan" in api and "dynamodb:Scan" not in executor | sweeper
