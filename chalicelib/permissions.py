"""Which IAM statements each function needs, declared once in FUNCTION_STATEMENTS.

The table has two renderings: `stage_statements` gives concrete ARN patterns for a chalice
stage's `.chalice/policy-<stage>-<function>.json` (bootstrap --write-policy), and
`stack_statements` gives CloudFormation references to the merged template's own resources
(chalicelib.infra). A test keeps the two granting the same actions to each function.
"""
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from chalicelib import config

# A stage's names as the template spells them (its Stage parameter).
STACK_SETTINGS = {config.STAGE: "${Stage}"}
NO_VALUE = {"Ref": "AWS::NoValue"}
SCHEDULER_POLICY_NAME = "invoke-executor"  # the scheduler role's one inline policy
# What each kind of ALLOWED_TARGETS pattern may be sent (by the sqs, sns, lambda and
# eventbridge actions).
TARGET_ACTIONS = {"sqs": "sqs:SendMessage", "sns": "sns:Publish",
                  "lambda": "lambda:InvokeFunction", "events": "events:PutEvents"}


def stack_function_name(handler: str) -> str:
    """The name the template gives a Lambda (set there, so its ARN is known without a cycle)."""
    return "${AWS::StackName}-" + handler.replace("_", "-")


@dataclass(frozen=True)
class Resource:
    """An AWS resource's ARNs, written once: `{}` in each tail stands for its name, which
    `stage_name` gives from a stage's settings and `stack_name` spells in the template."""
    service: str
    tails: Tuple[str, ...]
    stage_name: Callable[[config.Settings], str]
    stack_name: Optional[str] = None  # None: the template does not have it
    regional: bool = True

    def stage_arns(self, env: config.Settings) -> List[str]:
        """The ARN patterns in a stage's policy files (any region and account)."""
        region = "*" if self.regional else ""
        name = self.stage_name(env)
        return [f"arn:aws:{self.service}:{region}:*:{tail.format(name)}" for tail in self.tails]

    def stack_arns(self) -> List[dict]:
        """The ARNs in the template, substituted from its own resources and parameters."""
        region = "${AWS::Region}" if self.regional else ""
        head = f"arn:${{AWS::Partition}}:{self.service}:{region}:${{AWS::AccountId}}:"
        return [{"Fn::Sub": head + tail.format(self.stack_name)} for tail in self.tails]


class _Anything:
    """Resource "*", for an action that names no resource (sts:GetCallerIdentity)."""

    def stage_arns(self, env: config.Settings) -> List[str]:
        """Any resource."""
        return ["*"]

    def stack_arns(self) -> List[str]:
        """Any resource."""
        return ["*"]


class _AllowedTargets:
    """The ALLOWED_TARGETS patterns: a stage's own, or the template's parameter."""

    def stage_arns(self, env: config.Settings) -> List[str]:
        """The stage's ALLOWED_TARGETS patterns."""
        return config.allowed_targets(env)

    def stack_arns(self) -> List[dict]:
        """The template's AllowedTargets parameter (a list)."""
        return [{"Ref": "AllowedTargets"}]


ANYTHING = _Anything()
ALLOWED_TARGETS = _AllowedTargets()

LOG_STREAMS = Resource("logs", ("*",), lambda env: "", "")
TASKS_TABLE = Resource("dynamodb", ("table/{}", "table/{}/index/*"), config.tasks_table,
                       "${TasksTable}")
FLOW_TABLE = Resource("dynamodb", ("table/{}",), config.flow_table, "${FlowTable}")
SCHEDULE_GROUP = Resource("scheduler", ("schedule/{}/*",), config.scheduler_group,
                          "${ScheduleGroup}")
SCHEDULER_ROLE = Resource("iam", ("role/{}",), config.scheduler_role_name, "${SchedulerRole}",
                          regional=False)
DEAD_LETTER_QUEUE = Resource("sqs", ("{}",), config.dlq_name, "${DeadLetterQueue.QueueName}")
NOTIFICATION_TOPIC = Resource("sns", ("{}",), config.notify_topic_name,
                              "${NotificationTopic.TopicName}")
EXECUTOR = Resource("lambda", ("function:{}",), config.executor_function_name,
                    stack_function_name(config.EXECUTOR_FUNCTION))
SWEEPER = Resource("lambda", ("function:{}",),
                   lambda env: config.function_name(config.SWEEPER_FUNCTION, env),
                   stack_function_name(config.SWEEPER_FUNCTION))
TASK_RULES = Resource("events", ("rule/{}*",), config.rule_prefix,
                      config.rule_prefix(STACK_SETTINGS))
API_TOKENS_PARAMETER = Resource(
    "ssm", ("parameter/{}",), lambda env: config.api_tokens_param(env).lstrip("/"),
    config.parameter_name(config.API_TOKENS_PURPOSE, STACK_SETTINGS).lstrip("/"))
SIGNING_SECRET_PARAMETER = Resource(
    "ssm", ("parameter/{}",), lambda env: config.webhook_signing_secret_param(env).lstrip("/"),
    config.parameter_name(config.SIGNING_SECRET_PURPOSE, STACK_SETTINGS).lstrip("/"))


def _always(env: config.Settings) -> bool:
    return True


def _rules_backend(env: config.Settings) -> bool:
    return config.trigger_backend(env) == "rules"


def _one_or_many(values: Sequence) -> Any:
    return values[0] if len(values) == 1 else list(values)


@dataclass(frozen=True)
class Statement:
    """One IAM statement: `in_stage` says whether a stage's settings need it; `in_stack` is
    True, False (the template offers no such setting) or the template Condition it needs."""
    sid: str
    actions: Tuple[str, ...]
    resource: Any  # a Resource, ANYTHING or ALLOWED_TARGETS
    condition: Optional[dict] = None
    in_stage: Callable[[config.Settings], bool] = _always
    in_stack: Union[bool, str] = True

    def render(self, arns: Sequence) -> dict:
        """The statement granting its actions on arns."""
        body = {"Sid": self.sid, "Effect": "Allow", "Action": _one_or_many(self.actions),
                "Resource": _one_or_many(arns)}
        if self.condition:
            body["Condition"] = self.condition
        return body


def _tasks_table(*operations: str) -> Statement:
    return Statement("TasksTable", tuple(f"dynamodb:{operation}" for operation in operations),
                     TASKS_TABLE)


def _flow_table(*operations: str) -> Statement:
    return Statement("FlowTable", tuple(f"dynamodb:{operation}" for operation in operations),
                     FLOW_TABLE)


# A run takes and frees its key's slot (UpdateItem) and queues or wakes the tasks waiting
# for it; the API sets a key's limits and takes a changed task out of the queue.
FLOW_KEEPING = _flow_table("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query")
LOGS = Statement("Logs", ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"),
                 LOG_STREAMS)
# The executor's ARN and a bare Lambda function or bus name are completed with the account
# id, asked of STS.
IDENTITY = Statement("Identity", ("sts:GetCallerIdentity",), ANYTHING)
SCHEDULES = Statement("Schedules", ("scheduler:CreateSchedule", "scheduler:GetSchedule",
                                    "scheduler:UpdateSchedule", "scheduler:DeleteSchedule"),
                      SCHEDULE_GROUP)
PASS_SCHEDULER_ROLE = Statement(
    "PassSchedulerRole", ("iam:PassRole",), SCHEDULER_ROLE,
    condition={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}})
# PRECISION=second invokes the executor at once for a task due within two minutes; the
# sweeper hands it a task too long for the sweeper's own time left.
INVOKE_EXECUTOR_NOW = Statement("InvokeExecutorNow", ("lambda:InvokeFunction",), EXECUTOR)
# The older trigger design (TRIGGER_BACKEND=rules; the template's Trigger=rules).
RULES = Statement("Rules", ("events:PutRule", "events:PutTargets", "events:RemoveTargets",
                            "events:DeleteRule", "events:ListTargetsByRule",
                            "events:DescribeRule"), TASK_RULES,
                  in_stage=_rules_backend, in_stack="WithRules")
RULES_INVOKE_PERMISSION = Statement("RulesInvokePermission",
                                    ("lambda:AddPermission", "lambda:GetPolicy"), EXECUTOR,
                                    in_stage=_rules_backend, in_stack="WithRules")
# Without DLQ_URL (chalice deploy) the queue is found by its name.
DEAD_LETTERS = Statement("DeadLetters", ("sqs:SendMessage", "sqs:GetQueueUrl"),
                         DEAD_LETTER_QUEUE)
NOTIFICATIONS = Statement("Notifications", ("sns:Publish",), NOTIFICATION_TOPIC,
                          in_stack="WithNotifications")
SIGNING_SECRET = Statement("SigningSecret", ("ssm:GetParameter",), SIGNING_SECRET_PARAMETER,
                           in_stage=lambda env: bool(config.webhook_signing_secret_param(env)))
TARGETS = Statement("Targets", tuple(TARGET_ACTIONS.values()), ALLOWED_TARGETS,
                    in_stage=lambda env: bool(config.allowed_targets(env)),
                    in_stack="WithTargets")
SWEEPER_CONTINUES = Statement("SweeperContinues", ("lambda:InvokeFunction",), SWEEPER)
API_TOKENS = Statement("ApiTokens", ("ssm:GetParameter",), API_TOKENS_PARAMETER,
                       in_stage=lambda env: bool(config.api_tokens_param(env)))

# Arming a task's trigger (the API, the executor's next run, the sweeper's re-arm).
ARMING = (SCHEDULES, PASS_SCHEDULER_ROLE, INVOKE_EXECUTOR_NOW, RULES, RULES_INVOKE_PERMISSION)
# Running a task: dead letters, notifications, the webhook secret, the allowed targets.
RUNNING = (DEAD_LETTERS, NOTIFICATIONS, SIGNING_SECRET, TARGETS)

# Each function's statements: only what that function does. The API lists tasks with a
# Scan and is the only one that creates or deletes them; every function changes a task
# with a PutItem conditioned on its version (a run's result, a pause's end) and claims it
# with an UpdateItem.
FUNCTION_STATEMENTS: Dict[str, Tuple[Statement, ...]] = {
    "api": (LOGS, IDENTITY,
            _tasks_table("GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan"),
            FLOW_KEEPING, *ARMING),
    "executor": (LOGS, IDENTITY, _tasks_table("GetItem", "PutItem", "UpdateItem"), FLOW_KEEPING,
                 *ARMING, *RUNNING),
    "sweeper": (LOGS, IDENTITY, _tasks_table("GetItem", "PutItem", "UpdateItem", "Query"),
                FLOW_KEEPING, *ARMING, *RUNNING, SWEEPER_CONTINUES),
    "authorizer": (LOGS, API_TOKENS),
}


def target_statements(allowed: str) -> List[dict]:
    """Exactly the ALLOWED_TARGETS patterns, one statement per service."""
    by_service: Dict[str, List[str]] = {}
    for pattern in config.allowed_targets({config.ALLOWED_TARGETS: allowed}):
        service = pattern.split(":")[2] if pattern.count(":") >= 5 else ""
        if service not in TARGET_ACTIONS:
            raise SystemExit(f"ALLOWED_TARGETS: '{pattern}' is not an sqs, sns, lambda or "
                             "events ARN pattern")
        by_service.setdefault(service, []).append(pattern)
    return [{"Sid": f"{TARGETS.sid}{service.capitalize()}", "Effect": "Allow",
             "Action": TARGET_ACTIONS[service], "Resource": patterns}
            for service, patterns in sorted(by_service.items())]


def stage_statements(function: str, env: config.Settings) -> List[dict]:
    """One function's statements for the stage whose settings are env (concrete ARNs)."""
    rendered = []
    for statement in FUNCTION_STATEMENTS[function]:
        if not statement.in_stage(env):
            continue
        if statement is TARGETS:
            # Each pattern gets only its own service's action.
            rendered += target_statements(",".join(config.allowed_targets(env)))
        else:
            rendered.append(statement.render(statement.resource.stage_arns(env)))
    return rendered


def stack_statements(function: str) -> List[dict]:
    """One function's statements in the template (its own resources, its Conditions)."""
    rendered = []
    for statement in FUNCTION_STATEMENTS[function]:
        if statement.in_stack is False:
            continue
        body = statement.render(statement.resource.stack_arns())
        if isinstance(statement.in_stack, str):
            body = {"Fn::If": [statement.in_stack, body, NO_VALUE]}
        rendered.append(body)
    return rendered


def scheduler_trust_policy(account: Any) -> dict:
    """Only EventBridge Scheduler, acting for this account, may assume the scheduler role."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        }],
    }


def scheduler_role_policy(executor_arn: Any, executor_versions: Any) -> dict:
    """The scheduler role may invoke the executor (any version) and nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction",
                       "Resource": [executor_arn, executor_versions]}],
    }
