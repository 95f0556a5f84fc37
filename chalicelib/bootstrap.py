"""Create, idempotently, the AWS resources a stage needs that `chalice deploy` does not.

    python -m chalicelib.bootstrap --stage dev
    python -m chalicelib.bootstrap --stage dev --write-policy   # .chalice/policy-dev-<function>.json

Works against AWS or any AWS_ENDPOINT_URL (moto server, LocalStack). Running it twice
changes nothing: each resource is looked up first and made only when missing.
"""
import argparse
import json
import os
import sys
from pathlib import Path
from typing import Dict, List

from botocore.exceptions import ClientError

from chalicelib import aws, config
from chalicelib.infra import TABLE_ACTIONS
from chalicelib.store.dynamodb import TTL_ATTRIBUTE, table_definition

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONFIG_FILE = PROJECT_DIR / ".chalice" / "config.json"
ROLE_POLICY_NAME = "invoke-executor"


def _error_code(error: ClientError) -> str:
    return error.response["Error"]["Code"]


def stage_environment(stage: str, config_file: Path = CONFIG_FILE) -> Dict[str, str]:
    """The environment variables .chalice/config.json gives a stage."""
    document = json.loads(config_file.read_text())
    if stage not in document.get("stages", {}):
        raise SystemExit(f"stage '{stage}' is not in {config_file}")
    env = dict(document.get("environment_variables", {}))
    env.update(document["stages"][stage].get("environment_variables", {}))
    env.setdefault("STAGE", stage)
    return env


def apply_stage_environment(stage: str) -> None:
    """Make config.* answer as the deployed stage would; the process environment wins."""
    for key, value in stage_environment(stage).items():
        os.environ.setdefault(key, value)


def ensure_table() -> str:
    """The tasks table with its due and status indexes."""
    client = aws.client("dynamodb")
    name = config.tasks_table()
    try:
        description = client.describe_table(TableName=name)["Table"]
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
        client.create_table(**table_definition(name))
        client.get_waiter("table_exists").wait(TableName=name)
        _ensure_ttl(client, name)
        return f"table {name}: created"
    indexes = {index["IndexName"] for index in description.get("GlobalSecondaryIndexes", [])}
    missing = {config.DUE_INDEX, config.STATUS_INDEX} - indexes
    if missing:
        raise SystemExit(f"table {name} exists without the indexes {sorted(missing)}; "
                         "it was not made by this bootstrap")
    return f"table {name}: exists" + (", time to live turned on"
                                      if _ensure_ttl(client, name) else "")


def _ensure_ttl(client, name: str) -> bool:
    """Turn on the table's TTL on ExpiresAt (finished tasks expire); True if it was off."""
    state = client.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    if state.get("TimeToLiveStatus") in ("ENABLED", "ENABLING"):
        return False
    client.update_time_to_live(TableName=name, TimeToLiveSpecification={
        "AttributeName": TTL_ATTRIBUTE, "Enabled": True})
    return True


def ensure_schedule_group() -> str:
    """The EventBridge Scheduler group that holds one schedule per task."""
    client = aws.client("scheduler")
    name = config.scheduler_group()
    try:
        client.get_schedule_group(Name=name)
        return f"schedule group {name}: exists"
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
    client.create_schedule_group(Name=name)
    return f"schedule group {name}: created"


def ensure_dead_letter_queue() -> str:
    """The SQS queue that receives tasks whose attempts ran out (14 days, encrypted)."""
    client = aws.client("sqs")
    name = config.dlq_name()
    try:
        client.get_queue_url(QueueName=name)
        return f"dead-letter queue {name}: exists"
    except ClientError as error:
        if _error_code(error) not in ("AWS.SimpleQueueService.NonExistentQueue",
                                      "QueueDoesNotExist"):
            raise
    client.create_queue(QueueName=name, Attributes={
        "MessageRetentionPeriod": str(14 * 86400), "SqsManagedSseEnabled": "true"})
    return f"dead-letter queue {name}: created"


def ensure_notification_topic() -> str:
    """The SNS topic for notifications (used once NOTIFY_TOPIC_ARN names it)."""
    client = aws.client("sns")
    name = config.notify_topic_name()
    account = aws.client("sts").get_caller_identity()["Account"]
    arn = f"arn:aws:sns:{config.region()}:{account}:{name}"
    try:
        client.get_topic_attributes(TopicArn=arn)
        return f"notification topic {name}: exists"
    except ClientError as error:
        if _error_code(error) != "NotFound":
            raise
    client.create_topic(Name=name)
    return f"notification topic {name}: created"


def ensure_signing_secret() -> str:
    """The SSM SecureString holding the webhook signing secret (made once, never replaced)."""
    from chalicelib.signing import new_secret

    name = config.webhook_signing_secret_param()
    if not name:
        return "webhook signing secret: not configured (WEBHOOK_SIGNING_SECRET_PARAM unset)"
    client = aws.client("ssm")
    try:
        client.get_parameter(Name=name)
        return f"webhook signing secret {name}: exists"
    except ClientError as error:
        if _error_code(error) != "ParameterNotFound":
            raise
    client.put_parameter(Name=name, Type="SecureString", Value=new_secret(),
                         Description="task-scheduler webhook signing secret(s), "
                                     "space-separated whsec_ values")
    return f"webhook signing secret {name}: created"


def scheduler_trust_policy(account: str) -> dict:
    """Only EventBridge Scheduler, acting for this account, may assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Effect": "Allow",
            "Principal": {"Service": "scheduler.amazonaws.com"},
            "Action": "sts:AssumeRole",
            "Condition": {"StringEquals": {"aws:SourceAccount": account}},
        }],
    }


def scheduler_role_policy(executor_arn: str) -> dict:
    """The role may invoke the executor and nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "lambda:InvokeFunction",
                       "Resource": [executor_arn, f"{executor_arn}:*"]}],
    }


def ensure_scheduler_role() -> str:
    """The role EventBridge Scheduler assumes to invoke execute_task."""
    iam = aws.client("iam")
    name = config.scheduler_role_name()
    account = aws.client("sts").get_caller_identity()["Account"]
    outcome = "exists"
    try:
        iam.get_role(RoleName=name)
    except ClientError as error:
        if _error_code(error) != "NoSuchEntity":
            raise
        iam.create_role(RoleName=name,
                        AssumeRolePolicyDocument=json.dumps(scheduler_trust_policy(account)),
                        Description="EventBridge Scheduler invokes the task executor")
        outcome = "created"
    wanted = scheduler_role_policy(config.executor_arn())
    try:
        current = iam.get_role_policy(RoleName=name, PolicyName=ROLE_POLICY_NAME)
        document = current["PolicyDocument"]
        if isinstance(document, str):
            document = json.loads(document)
        up_to_date = document == wanted
    except ClientError as error:
        if _error_code(error) != "NoSuchEntity":
            raise
        up_to_date = False
    if not up_to_date:
        iam.put_role_policy(RoleName=name, PolicyName=ROLE_POLICY_NAME,
                            PolicyDocument=json.dumps(wanted))
        outcome = outcome if outcome == "created" else "policy updated"
    return f"scheduler role {name}: {outcome}"


def ensure_rules_permission() -> str:
    """In rules mode, one Lambda permission covering the stage's rule prefix."""
    from chalicelib.triggers.rules import grant_invoke

    executor = config.executor_arn()
    try:
        grant_invoke(executor)
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
        return "rules permission: skipped (deploy the executor first, then rerun)"
    return f"rules permission on {executor}: ensured"


def bootstrap(stage: str) -> List[str]:
    """Ensure every resource of the stage; one line per resource."""
    apply_stage_environment(stage)
    lines = [ensure_table(), ensure_schedule_group(), ensure_scheduler_role(),
             ensure_dead_letter_queue(), ensure_notification_topic(), ensure_signing_secret()]
    if config.trigger_backend() == "rules":
        lines.append(ensure_rules_permission())
    return lines


# ---------------------------------------------------------------- deploy policy

# The statements (by Sid) each function needs; Targets* are the ALLOWED_TARGETS grants.
FUNCTION_STATEMENTS = {
    "api": {"Logs", "Identity", "TasksTable", "Schedules", "PassSchedulerRole", "Rules",
            "RulesInvokePermission", "InvokeExecutorNow"},
    "executor": {"Logs", "Identity", "TasksTable", "Schedules", "PassSchedulerRole", "Rules",
                 "RulesInvokePermission", "InvokeExecutorNow", "DeadLetters",
                 "Notifications", "SigningSecret", "Targets*"},
    "sweeper": {"Logs", "Identity", "TasksTable", "Schedules", "PassSchedulerRole", "Rules",
                "RulesInvokePermission", "InvokeExecutorNow", "DeadLetters", "Notifications",
                "SigningSecret", "Targets*", "SweeperContinues"},
    "authorizer": {"Logs", "ApiTokens"},
}


def deploy_policies(stage: str) -> Dict[str, dict]:
    """Each function's least-privilege policy (`.chalice/policy-<stage>-<function>.json`):
    the stage's statements, only those the function needs."""
    every = deploy_policy(stage)["Statement"]
    policies = {}
    for function, sids in FUNCTION_STATEMENTS.items():
        statements = []
        for statement in every:
            sid = statement["Sid"]
            if sid in sids or (sid.startswith("Targets") and "Targets*" in sids):
                if sid == "TasksTable":
                    statement = {**statement, "Action": [
                        f"dynamodb:{action}" for action in TABLE_ACTIONS[function]]}
                statements.append(statement)
        policies[function] = {"Version": "2012-10-17", "Statement": statements}
    return policies


def deploy_policy(stage: str) -> dict:
    """Every statement any of the stage's Lambdas needs (split by deploy_policies)."""
    env = stage_environment(stage)
    table = env.get(config.TASKS_TABLE, config.DEFAULT_TABLE)
    prefix = f"{config.APP_NAME}-{stage}"
    group = env.get(config.SCHEDULER_GROUP, prefix)
    rule_prefix = env.get(config.RULE_PREFIX, f"{prefix}-task-")
    statements = [
        {"Sid": "Logs", "Effect": "Allow",
         "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
         "Resource": "arn:aws:logs:*:*:*"},
        {"Sid": "TasksTable", "Effect": "Allow",
         "Action": ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem",
                    "dynamodb:DeleteItem", "dynamodb:Query", "dynamodb:Scan"],
         "Resource": [f"arn:aws:dynamodb:*:*:table/{table}",
                      f"arn:aws:dynamodb:*:*:table/{table}/index/*"]},
        {"Sid": "Schedules", "Effect": "Allow",
         "Action": ["scheduler:CreateSchedule", "scheduler:GetSchedule",
                    "scheduler:DeleteSchedule"],
         "Resource": f"arn:aws:scheduler:*:*:schedule/{group}/*"},
        {"Sid": "PassSchedulerRole", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": f"arn:aws:iam::*:role/{prefix}-scheduler",
         "Condition": {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}},
        {"Sid": "DeadLetters", "Effect": "Allow",
         "Action": ["sqs:SendMessage", "sqs:GetQueueUrl"],
         "Resource": f"arn:aws:sqs:*:*:{prefix}-dlq"},
        {"Sid": "Notifications", "Effect": "Allow", "Action": "sns:Publish",
         "Resource": f"arn:aws:sns:*:*:{prefix}-notifications"},
        {"Sid": "SweeperContinues", "Effect": "Allow", "Action": "lambda:InvokeFunction",
         "Resource": f"arn:aws:lambda:*:*:function:{prefix}-daily_sweeper"},
        # PRECISION=second invokes the executor at once for a task due within two minutes.
        {"Sid": "InvokeExecutorNow", "Effect": "Allow", "Action": "lambda:InvokeFunction",
         "Resource": f"arn:aws:lambda:*:*:function:{prefix}-{config.EXECUTOR_FUNCTION}"},
        {"Sid": "Identity", "Effect": "Allow", "Action": "sts:GetCallerIdentity",
         "Resource": "*"},
    ]
    if env.get(config.TRIGGER_BACKEND) == "rules":  # the older design only
        statements += [
            {"Sid": "Rules", "Effect": "Allow",
             "Action": ["events:PutRule", "events:PutTargets", "events:RemoveTargets",
                        "events:DeleteRule", "events:ListTargetsByRule",
                        "events:DescribeRule"],
             "Resource": f"arn:aws:events:*:*:rule/{rule_prefix}*"},
            {"Sid": "RulesInvokePermission", "Effect": "Allow",
             "Action": ["lambda:AddPermission", "lambda:GetPolicy"],
             "Resource": f"arn:aws:lambda:*:*:function:{prefix}-execute_task"},
        ]
    statements += target_statements(env.get(config.ALLOWED_TARGETS, ""))
    for sid, name in (("ApiTokens", config.API_TOKENS_PARAM),
                      ("SigningSecret", config.WEBHOOK_SIGNING_SECRET_PARAM)):
        if env.get(name):
            statements.append({
                "Sid": sid, "Effect": "Allow", "Action": "ssm:GetParameter",
                "Resource": f"arn:aws:ssm:*:*:parameter/{env[name].lstrip('/')}"})
    return {"Version": "2012-10-17", "Statement": statements}


TARGET_ACTIONS = {"sqs": "sqs:SendMessage", "sns": "sns:Publish",
                  "lambda": "lambda:InvokeFunction", "events": "events:PutEvents"}


def target_statements(allowed: str) -> List[dict]:
    """Exactly the ALLOWED_TARGETS patterns, one statement per service."""
    by_service: Dict[str, List[str]] = {}
    for pattern in (item.strip() for item in allowed.split(",") if item.strip()):
        service = pattern.split(":")[2] if pattern.count(":") >= 5 else ""
        if service not in TARGET_ACTIONS:
            raise SystemExit(f"ALLOWED_TARGETS: '{pattern}' is not an sqs, sns, lambda or "
                             "events ARN pattern")
        by_service.setdefault(service, []).append(pattern)
    return [{"Sid": f"Targets{service.capitalize()}", "Effect": "Allow",
             "Action": TARGET_ACTIONS[service], "Resource": patterns}
            for service, patterns in sorted(by_service.items())]


def policy_path(stage: str, function: str) -> Path:
    """Where chalice reads one function's policy for the stage."""
    return PROJECT_DIR / ".chalice" / f"policy-{stage}-{function}.json"


def main(argv=None) -> int:
    """Command line: bootstrap a stage, or write its deploy policy."""
    parser = argparse.ArgumentParser(prog="python -m chalicelib.bootstrap",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--stage", required=True, help="chalice stage (dev, prod, ...)")
    parser.add_argument("--write-policy", action="store_true",
                        help="write .chalice/policy-<stage>-<function>.json instead of "
                             "bootstrapping")
    args = parser.parse_args(argv)
    if args.write_policy:
        for function, policy in deploy_policies(args.stage).items():
            path = policy_path(args.stage, function)
            path.write_text(json.dumps(policy, indent=2) + "\n")
            print(f"wrote {path.relative_to(PROJECT_DIR)}")
        return 0
    for line in bootstrap(args.stage):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
