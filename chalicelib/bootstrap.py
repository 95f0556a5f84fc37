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
import time
from pathlib import Path
from typing import Dict, List

from botocore.exceptions import ClientError

from chalicelib import aws, config, permissions
from chalicelib.models import DEFAULT_TENANT, RUNNING
from chalicelib.store.dynamodb import (
    TENANT_INDEXES, TTL_ATTRIBUTE, flow_table_definition, table_definition, tenant_status,
)

PROJECT_DIR = Path(__file__).resolve().parent.parent
CONFIG_FILE = PROJECT_DIR / ".chalice" / "config.json"


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
    added = _add_tenant_indexes(client, name, indexes)
    return f"table {name}: exists" + (", time to live turned on"
                                      if _ensure_ttl(client, name) else "") + added


def _add_tenant_indexes(client, name: str, indexes) -> str:
    """A table made before tenants: its tasks become the default tenant's, then the
    tenant indexes are added (one at a time, as DynamoDB takes them)."""
    wanted = [index for index in TENANT_INDEXES if index["IndexName"] not in indexes]
    if not wanted:
        return ""
    moved = backfill_tenants(client, name)
    definitions = {attribute["AttributeName"]: attribute for attribute in
                   table_definition(name)["AttributeDefinitions"]}
    for index in wanted:
        keys = [key["AttributeName"] for key in index["KeySchema"]]
        client.update_table(TableName=name,
                            AttributeDefinitions=[definitions[key] for key in keys],
                            GlobalSecondaryIndexUpdates=[{"Create": index}])
        _wait_for_indexes(client, name)
    return (f", tenant indexes added ({moved} task(s) from before tenants now the "
            f"{DEFAULT_TENANT} tenant's)")


def backfill_tenants(client, name: str) -> int:
    """Give every task stored before tenants the default tenant (the attributes the tenant
    indexes are keyed by); one conditional write each, so a task written meanwhile keeps
    its own. Safe to rerun: it writes only tasks still without a tenant."""
    moved, start = 0, None
    while True:
        page = client.scan(TableName=name, ProjectionExpression="TaskID, #status",
                           FilterExpression="attribute_not_exists(Tenant)",
                           ExpressionAttributeNames={"#status": "Status"},
                           ConsistentRead=True,
                           **({"ExclusiveStartKey": start} if start else {}))
        moved += sum(_give_default_tenant(client, name, item) for item in page["Items"])
        start = page.get("LastEvaluatedKey")
        if not start:
            return moved


def _give_default_tenant(client, name: str, item: dict, tries: int = 5) -> bool:
    """One task from before tenants becomes the default tenant's, its status partition
    from the status it has when written (an older app may change it meanwhile)."""
    for _ in range(tries):
        status = item["Status"]["S"]
        # A running task has no status partition (as the store's claim leaves it).
        status_partition = ("" if status == RUNNING else ", TenantStatus = :tenant_status")
        values = {":tenant": {"S": DEFAULT_TENANT}, ":status": {"S": status}}
        if status != RUNNING:
            values[":tenant_status"] = {"S": tenant_status(DEFAULT_TENANT, status)}
        try:
            client.update_item(
                TableName=name, Key={"TaskID": item["TaskID"]},
                UpdateExpression="SET Tenant = :tenant" + status_partition,
                ConditionExpression="attribute_not_exists(Tenant) AND #status = :status",
                ExpressionAttributeNames={"#status": "Status"},
                ExpressionAttributeValues=values)
            return True
        except ClientError as error:
            if _error_code(error) != "ConditionalCheckFailedException":
                raise
        item = client.get_item(TableName=name, Key={"TaskID": item["TaskID"]},
                               ConsistentRead=True).get("Item")
        if item is None or "Tenant" in item:
            return False  # deleted, or written with a tenant meanwhile
    raise SystemExit(f"table {name}: task {item['TaskID']['S']} kept changing while it was "
                     "given the default tenant; run bootstrap again")


def _wait_for_indexes(client, name: str, seconds: float = 900) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        table = client.describe_table(TableName=name)["Table"]
        if all(index.get("IndexStatus", "ACTIVE") == "ACTIVE"
               for index in table.get("GlobalSecondaryIndexes", [])):
            return
        time.sleep(5)
    raise SystemExit(f"table {name}: its new indexes were not active after {seconds:.0f} s")


def ensure_flow_table() -> str:
    """The flow-control table (each key's state and queue)."""
    client = aws.client("dynamodb")
    name = config.flow_table()
    try:
        client.describe_table(TableName=name)
    except ClientError as error:
        if _error_code(error) != "ResourceNotFoundException":
            raise
        client.create_table(**flow_table_definition(name))
        client.get_waiter("table_exists").wait(TableName=name)
        return f"table {name}: created"
    return f"table {name}: exists"


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
    account, region = aws.own_account_and_region()
    arn = f"arn:aws:sns:{region}:{account}:{name}"
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


def ensure_scheduler_role() -> str:
    """The role EventBridge Scheduler assumes to invoke execute_task."""
    iam = aws.client("iam")
    name = config.scheduler_role_name()
    account, _ = aws.own_account_and_region()
    outcome = "exists"
    try:
        iam.get_role(RoleName=name)
    except ClientError as error:
        if _error_code(error) != "NoSuchEntity":
            raise
        iam.create_role(RoleName=name,
                        AssumeRolePolicyDocument=json.dumps(
                            permissions.scheduler_trust_policy(account)),
                        Description="EventBridge Scheduler invokes the task executor")
        outcome = "created"
    executor = aws.executor_arn()
    wanted = permissions.scheduler_role_policy(executor, f"{executor}:*")
    try:
        current = iam.get_role_policy(RoleName=name,
                                      PolicyName=permissions.SCHEDULER_POLICY_NAME)
        document = current["PolicyDocument"]
        if isinstance(document, str):
            document = json.loads(document)
        up_to_date = document == wanted
    except ClientError as error:
        if _error_code(error) != "NoSuchEntity":
            raise
        up_to_date = False
    if not up_to_date:
        iam.put_role_policy(RoleName=name, PolicyName=permissions.SCHEDULER_POLICY_NAME,
                            PolicyDocument=json.dumps(wanted))
        outcome = outcome if outcome == "created" else "policy updated"
    return f"scheduler role {name}: {outcome}"


def ensure_rules_permission() -> str:
    """In rules mode, one Lambda permission covering the stage's rule prefix."""
    from chalicelib.triggers.rules import grant_invoke

    executor = aws.executor_arn()
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
    lines = [ensure_table(), ensure_flow_table(), ensure_schedule_group(), ensure_scheduler_role(),
             ensure_dead_letter_queue(), ensure_notification_topic(), ensure_signing_secret()]
    if config.trigger_backend() == "rules":
        lines.append(ensure_rules_permission())
    return lines


# ---------------------------------------------------------------- deploy policy

def deploy_policies(stage: str) -> Dict[str, dict]:
    """Each function's least-privilege policy (`.chalice/policy-<stage>-<function>.json`),
    from the one table in chalicelib.permissions, with the stage's names."""
    env = stage_environment(stage)
    return {function: {"Version": "2012-10-17",
                       "Statement": permissions.stage_statements(function, env)}
            for function in permissions.FUNCTION_STATEMENTS}


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
    parser.add_argument("--backfill-tenants", action="store_true",
                        help="only give the tasks table's tasks from before tenants the "
                             "default tenant (TASKS_TABLE names a stack's table); rerunnable")
    args = parser.parse_args(argv)
    if args.backfill_tenants:
        apply_stage_environment(args.stage)
        name = config.tasks_table()
        moved = backfill_tenants(aws.client("dynamodb"), name)
        print(f"table {name}: {moved} task(s) from before tenants now the "
              f"{DEFAULT_TENANT} tenant's")
        return 0
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
