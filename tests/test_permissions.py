"""One table of IAM statements feeds both the chalice policy files and the merged template:
they grant each function the same actions, on the same stage's resources."""
import json

import pytest

from chalicelib import bootstrap, config, infra, permissions
from tests.conftest import PROJECT_DIR

STAGES = ("dev", "prod")
# One pattern of each kind ALLOWED_TARGETS accepts.
EVERY_TARGET = ("arn:aws:sqs:*:*:orders,arn:aws:sns:*:*:alerts,"
                "arn:aws:lambda:*:*:function:worker,arn:aws:events:*:*:event-bus/jobs")


def _actions(statements):
    found = set()
    for statement in statements:
        actions = statement["Action"]
        found |= {actions} if isinstance(actions, str) else set(actions)
    return found


def _template_statements(template, function, conditions):
    """A function's statements in the template, its Fn::If resolved by conditions."""
    role = "ApiHandlerRole" if function == "api" else f"{infra.FUNCTIONS[function]}Role"
    statements = []
    for statement in template["Resources"][role]["Properties"]["Policies"][0][
            "PolicyDocument"]["Statement"]:
        if "Fn::If" in statement:
            condition, when_true, _ = statement["Fn::If"]
            if condition not in conditions:
                continue
            statement = when_true
        statements.append(statement)
    return statements


@pytest.mark.parametrize("stage", STAGES)
def test_policy_files_and_template_grant_each_function_the_same_actions(stage):
    template = json.loads((PROJECT_DIR / "infra" / "resources.json").read_text())
    for function in permissions.FUNCTION_STATEMENTS:
        committed = json.loads(bootstrap.policy_path(stage, function).read_text())
        # The stages name no ALLOWED_TARGETS; bootstrap makes their notification topic.
        in_template = _template_statements(template, function, {"WithNotifications"})
        assert _actions(committed["Statement"]) == _actions(in_template), (stage, function)


def test_with_allowed_targets_both_grant_the_target_actions():
    env = {**bootstrap.stage_environment("prod"), config.ALLOWED_TARGETS: EVERY_TARGET}
    template = infra.merge_template()
    for function in permissions.FUNCTION_STATEMENTS:
        in_stage = permissions.stage_statements(function, env)
        in_template = _template_statements(template, function,
                                           {"WithNotifications", "WithTargets"})
        assert _actions(in_stage) == _actions(in_template), function


def test_each_resource_is_the_stages_own():
    env = bootstrap.stage_environment("dev")
    arns = {statement["Sid"]: statement["Resource"]
            for function in permissions.FUNCTION_STATEMENTS
            for statement in permissions.stage_statements(function, env)}
    assert arns["DeadLetters"] == f"arn:aws:sqs:*:*:{config.dlq_name(env)}"
    assert arns["Notifications"] == f"arn:aws:sns:*:*:{config.notify_topic_name(env)}"
    assert arns["SweeperContinues"] == ("arn:aws:lambda:*:*:function:"
                                        "task-scheduler-dev-daily_sweeper")
    assert arns["InvokeExecutorNow"].endswith(":function:" + config.executor_function_name(env))
    assert arns["TasksTable"][0] == "arn:aws:dynamodb:*:*:table/ScheduledTasks-dev"


def test_rules_mode_adds_its_statements_to_the_stage_and_to_the_template_with_rules():
    env = {**bootstrap.stage_environment("dev"), config.TRIGGER_BACKEND: "rules"}
    sids = {statement["Sid"] for statement in permissions.stage_statements("api", env)}
    assert {"Rules", "RulesInvokePermission"} <= sids
    rules = next(s for s in permissions.stage_statements("api", env) if s["Sid"] == "Rules")
    assert rules["Resource"] == f"arn:aws:events:*:*:rule/{config.rule_prefix(env)}*"
    template = infra.merge_template()
    assert "events:PutRule" not in _actions(_template_statements(template, "api", set()))
    with_rules = _template_statements(template, "api", {"WithRules"})
    assert {"events:PutRule", "lambda:AddPermission"} <= _actions(with_rules)


def test_template_names_match_the_stage_names():
    template = infra.merge_template()
    group = template["Resources"]["ScheduleGroup"]["Properties"]["Name"]["Fn::Sub"]
    assert group.replace("${Stage}", "prod") == config.scheduler_group({config.STAGE: "prod"})
    outputs = template["Outputs"]
    assert outputs["ApiTokensParameter"]["Value"]["Fn::Sub"].replace("${Stage}", "prod") == \
        config.parameter_name(config.API_TOKENS_PURPOSE, {config.STAGE: "prod"})


@pytest.mark.parametrize("stage", STAGES)
def test_config_json_names_the_stages_parameters_as_config_does(stage):
    env = bootstrap.stage_environment(stage)
    assert config.api_tokens_param(env) == config.parameter_name(config.API_TOKENS_PURPOSE, env)
    assert config.webhook_signing_secret_param(env) == config.parameter_name(
        config.SIGNING_SECRET_PURPOSE, env)


# IAM's name of an API operation where it is not the operation's own.
IAM_ACTION = {("lambda", "Invoke"): "lambda:InvokeFunction"}
NEEDS_NO_PERMISSION = {"sts:GetCallerIdentity"}


class CallRecorder:
    """The AWS actions this process's clients call, read with botocore event hooks."""

    SERVICES = ("dynamodb", "scheduler", "events", "lambda", "sqs", "sns", "ssm")

    def __init__(self):
        from chalicelib import aws

        self.actions = set()
        for service in self.SERVICES:
            # before-parameter-build: the call's own parameters (its TableName).
            aws.client(service).meta.events.register(f"before-parameter-build.{service}",
                                                     self._note)

    def _note(self, model, params, **_):
        service = model.service_model.endpoint_prefix
        prefix = {"events": "events"}.get(service, service)
        action = IAM_ACTION.get((prefix, model.name), f"{prefix}:{model.name}")
        # A DynamoDB action is granted per table: note which.
        self.actions.add(f"{action}@{params.get('TableName')}" if prefix == "dynamodb" else action)

    def take(self):
        taken, self.actions = self.actions - NEEDS_NO_PERMISSION, set()
        return taken


def _granted(function):
    """The function's actions, a DynamoDB one once per table it is granted on."""
    import os

    granted = set()
    for statement in permissions.stage_statements(function, dict(os.environ)):
        resources = statement["Resource"]
        resources = [resources] if isinstance(resources, str) else resources
        for action in _actions([statement]):
            if action.startswith("dynamodb:"):
                granted |= {f"{action}@{arn.split(':table/')[1].split('/')[0]}"
                            for arn in resources}
            else:
                granted.add(action)
    return granted


def test_each_function_is_granted_every_action_its_code_calls(aws, receiver, refused_url):
    """Each path a Lambda takes, run over moto: every AWS action it calls is in its policy
    (moto does not check IAM, so a missing grant would first fail on AWS)."""
    import json as json_module
    from datetime import timedelta

    from chalicelib import flowcontrol, service, sweeper
    from chalicelib.executor import execute_task
    from chalicelib.models import Clock, utcnow
    from tests.conftest import runtime

    recorder = CallRecorder()
    rt = runtime()
    hook = {"action": "webhook", "payload": {"url": receiver.url}}
    soon = (utcnow() + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    one_time = service.schedule_task(rt, {**hook, "run_at": soon})[0]["task_id"]
    failing = service.schedule_task(rt, {"action": "webhook", "payload": {"url": refused_url},
                                         "run_at": soon, "max_attempts": 1})[0]["task_id"]
    hourly = service.schedule_task(rt, {**hook, "run_at": "rate(1 hour)"})[0]["task_id"]
    service.update_task(rt, hourly, json_module.dumps({"name": "x"}).encode())
    service.pause_task(rt, hourly, json_module.dumps(
        {"until": (utcnow() + timedelta(minutes=2)).strftime("%Y-%m-%dT%H:%M:%SZ")}).encode())
    service.list_tasks(rt, {})
    service.get_task(rt, one_time)
    limited = {**hook, "run_at": soon, "flow_control": {"key": "k", "parallelism": 1}}
    first, second, third = (service.schedule_task(rt, limited)[0]["task_id"] for _ in range(3))
    service.flow_control_status(rt, "k")
    api = recorder.take()
    later = runtime(Clock(now=lambda: utcnow() + timedelta(minutes=3)))
    for task_id in (one_time, failing, hourly):  # a run, a dead letter, a pause's end
        execute_task(later, task_id)
    service.retry_task(later, failing, None)
    service.run_task_now(later, hourly)
    service.cancel_task(later, failing)
    api |= recorder.take() & {f"dynamodb:GetItem@{config.tasks_table()}"}  # the retry's
    execute_task(later, hourly)
    # Flow control: a slot taken and held, a task queued, then woken, then run.
    claimed = later.store.claim(first, "held", later.clock.now())
    flowcontrol.admit(later, claimed, "held", later.clock.now())
    execute_task(later, second)
    execute_task(later, third)
    flowcontrol.leave(later, claimed, "held", later.clock.now())
    executor = recorder.take()
    service.cancel_task(later, third)  # a queued task leaves the key's queue
    api |= recorder.take()
    execute_task(later, second)
    executor |= recorder.take()
    sweeper.sweep(later, time_left_ms=lambda: 900_000)
    swept = recorder.take()
    flow = config.flow_table()
    assert {f"dynamodb:{action}@{flow}" for action in ("UpdateItem", "PutItem", "Query")
            } <= executor
    assert {f"dynamodb:{action}@{flow}" for action in ("PutItem", "DeleteItem")} <= api
    for function, called in (("api", api), ("executor", executor), ("sweeper", swept)):
        assert called <= _granted(function), (function, called - _granted(function))
