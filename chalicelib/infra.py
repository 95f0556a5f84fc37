"""The CloudFormation resources merged into `chalice package` (`infra/resources.json`).

    python -m chalicelib.infra > infra/resources.json     (a test keeps the file equal)

Everything the functions need is a resource of the same stack, wired into their
environment with Ref / GetAtt / Sub, never a copied ARN. Each function's role grants only
what that function does: chalicelib.permissions' table, which the chalice policy files
share. The executor's and sweeper's names are set here, so their own ARNs can be written
without a circular reference.
"""
import json
import sys
from typing import Any, Dict

from chalicelib import config, permissions
from chalicelib.permissions import NO_VALUE, STACK_SETTINGS
from chalicelib.store.dynamodb import TTL_ATTRIBUTE, flow_table_definition, table_definition

FUNCTIONS = {"api": "APIHandler", "executor": "ExecuteTask", "sweeper": "DailySweeper",
             "authorizer": "TokenAuth"}
# The functions whose names the template sets, by the chalice handler behind each.
NAMED_FUNCTIONS = {"executor": config.EXECUTOR_FUNCTION, "sweeper": config.SWEEPER_FUNCTION}


def _sub(text: str) -> dict:
    return {"Fn::Sub": text}


def _get(resource: str, attribute: str = "Arn") -> dict:
    return {"Fn::GetAtt": [resource, attribute]}


[EXECUTOR_ARN] = permissions.EXECUTOR.stack_arns()
TOKENS_PARAM = _sub(config.parameter_name(config.API_TOKENS_PURPOSE, STACK_SETTINGS))
SECRET_PARAM = _sub(config.parameter_name(config.SIGNING_SECRET_PURPOSE, STACK_SETTINGS))


def environment(function: str) -> Dict[str, Any]:
    """The variables that name this stack's resources, for one function."""
    shared = {
        config.STAGE: {"Ref": "Stage"},
        config.TASKS_TABLE: {"Ref": "TasksTable"},
        config.FLOW_TABLE: {"Ref": "FlowTable"},
        config.SCHEDULER_GROUP: {"Ref": "ScheduleGroup"},
        config.SCHEDULER_ROLE_ARN: _get("SchedulerRole"),
        config.EXECUTOR_ARN: EXECUTOR_ARN if function == "executor" else _get("ExecuteTask"),
        config.DLQ_URL: {"Ref": "DeadLetterQueue"},
        config.NOTIFY_TOPIC_ARN: {"Fn::If": ["WithNotifications", {"Ref": "NotificationTopic"},
                                             ""]},
        config.API_TOKENS_PARAM: TOKENS_PARAM,
        config.WEBHOOK_SIGNING_SECRET_PARAM: SECRET_PARAM,
        config.ALLOWED_TARGETS: {"Fn::Join": [",", {"Ref": "AllowedTargets"}]},
        config.PRECISION: {"Ref": "Precision"},
        config.ALLOW_PRIVATE_TARGETS: {"Fn::If": ["WithPrivateTargets", "true", "false"]},
        config.TRIGGER_BACKEND: {"Ref": "Trigger"},
    }
    if function == "authorizer":
        # The merge is deep: names copied from config.json are removed, not left behind.
        return {name: (value if name in (config.STAGE, config.API_TOKENS_PARAM) else NO_VALUE)
                for name, value in {**shared, **_STAGE_LITERALS}.items()}
    return shared


# What config.json's stages set for every function (merged in by chalice package).
_STAGE_LITERALS = {config.TASKS_TABLE: None, config.WEBHOOK_SIGNING_SECRET_PARAM: None}


def _alarm(description: str, namespace: str, metric: str, dimension: dict) -> dict:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmDescription": description, "Namespace": namespace, "MetricName": metric,
        "Dimensions": [dimension], "Statistic": "Maximum" if namespace == "AWS/SQS" else "Sum",
        "Period": 300, "EvaluationPeriods": 1, "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
        "AlarmActions": {"Fn::If": ["WithNotifications", [{"Ref": "NotificationTopic"}],
                                    NO_VALUE]},
    }}


def _tasks_table_properties() -> Dict[str, Any]:
    """The table bootstrap creates (one source, the store adapter's), but TenantStatusIndex
    only with TenantIndexes=both: a stack from before tenants is updated with `first`, then
    `both`, since CloudFormation adds one index per update."""
    definition = {key: value for key, value in table_definition("").items()
                  if key != "TableName"}

    def second_only_with_both(items, is_second):
        return [{"Fn::If": ["WithTenantStatusIndex", item, NO_VALUE]} if is_second(item)
                else item for item in items]

    definition["AttributeDefinitions"] = second_only_with_both(
        definition["AttributeDefinitions"],
        lambda attribute: attribute["AttributeName"] == "TenantStatus")
    definition["GlobalSecondaryIndexes"] = second_only_with_both(
        definition["GlobalSecondaryIndexes"],
        lambda index: index["IndexName"] == config.TENANT_STATUS_INDEX)
    return definition


def merge_template() -> Dict[str, Any]:
    """The template `chalice package --merge-template` merges into its own."""
    resources: Dict[str, Any] = {
        "TasksTable": {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain",
                       "UpdateReplacePolicy": "Retain", "Properties": {
            # The same definition bootstrap creates (one source, the store adapter's).
            **_tasks_table_properties(),
            "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        }},
        "FlowTable": {"Type": "AWS::DynamoDB::Table", "Properties": {
            **{key: value for key, value in flow_table_definition("").items()
               if key != "TableName"},
            "SSESpecification": {"SSEEnabled": True},
        }},
        "ScheduleGroup": {"Type": "AWS::Scheduler::ScheduleGroup",
                          "Properties": {"Name": _sub(config.scheduler_group(STACK_SETTINGS))}},
        "SchedulerRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": permissions.scheduler_trust_policy(
                {"Ref": "AWS::AccountId"})}},
        # Separate from the role, so the executor can name the role without a cycle.
        "SchedulerInvokesExecutor": {"Type": "AWS::IAM::Policy", "Properties": {
            "PolicyName": permissions.SCHEDULER_POLICY_NAME, "Roles": [{"Ref": "SchedulerRole"}],
            "PolicyDocument": permissions.scheduler_role_policy(
                _get("ExecuteTask"), _sub("${ExecuteTask.Arn}:*"))}},
        "DeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {
            "MessageRetentionPeriod": 14 * 86400, "SqsManagedSseEnabled": True}},
        # Not encrypted with the aws/sns key: CloudWatch alarms could not publish to it.
        "NotificationTopic": {"Type": "AWS::SNS::Topic", "Condition": "WithNotifications",
                              "Properties": {"DisplayName": _sub(f"{config.APP_NAME} ${{Stage}}")}},
        "DeadLettersAlarm": _alarm("A task was dead-lettered", "AWS/SQS",
                                   "ApproximateNumberOfMessagesVisible",
                                   {"Name": "QueueName",
                                    "Value": _get("DeadLetterQueue", "QueueName")}),
        "ExecutorErrorsAlarm": _alarm("The executor Lambda failed", "AWS/Lambda", "Errors",
                                      {"Name": "FunctionName", "Value": {"Ref": "ExecuteTask"}}),
        "SweeperErrorsAlarm": _alarm("The daily sweeper Lambda failed", "AWS/Lambda", "Errors",
                                     {"Name": "FunctionName", "Value": {"Ref": "DailySweeper"}}),
    }
    for function, logical in FUNCTIONS.items():
        properties: Dict[str, Any] = {"Environment": {"Variables": environment(function)}}
        if function in NAMED_FUNCTIONS:
            properties["FunctionName"] = _sub(
                permissions.stack_function_name(NAMED_FUNCTIONS[function]))
        resources[logical] = {"Properties": properties}
        role = "ApiHandlerRole" if function == "api" else f"{logical}Role"
        resources[role] = {"Properties": {"Policies": [{
            "PolicyName": f"{function}-policy",
            "PolicyDocument": {"Version": "2012-10-17",
                               "Statement": permissions.stack_statements(function)}}]}}
    return {
        "Parameters": {
            "Stage": {"Type": "String", "Default": "dev", "AllowedPattern": "[a-z0-9-]+"},
            "AllowedTargets": {"Type": "CommaDelimitedList", "Default": "",
                               "Description": "ARN patterns the sqs/sns/lambda/eventbridge "
                                              "actions may name (ALLOWED_TARGETS)"},
            "Notifications": {"Type": "String", "Default": "on", "AllowedValues": ["on", "off"]},
            "Precision": {"Type": "String", "Default": "minute",
                          "AllowedValues": ["minute", "second"]},
            "Trigger": {"Type": "String", "Default": "scheduler",
                        "AllowedValues": ["scheduler", "rules"],
                        "Description": "what arms each task (TRIGGER_BACKEND): an EventBridge "
                                       "Scheduler schedule, or the older one-shot rule"},
            "PrivateTargets": {"Type": "String", "Default": "off", "AllowedValues": ["on", "off"],
                               "Description": "on: webhooks may reach private and loopback "
                                              "addresses (ALLOW_PRIVATE_TARGETS; a local "
                                              "emulator, or receivers inside your VPC)"},
            "TenantIndexes": {"Type": "String", "Default": "both",
                              "AllowedValues": ["both", "first"],
                              "Description": "both: the table's two tenant indexes. Updating "
                                             "a stack made before tenants: first, then both "
                                             "(one index per update)"},
        },
        "Conditions": {
            "WithNotifications": {"Fn::Equals": [{"Ref": "Notifications"}, "on"]},
            "WithPrivateTargets": {"Fn::Equals": [{"Ref": "PrivateTargets"}, "on"]},
            "WithRules": {"Fn::Equals": [{"Ref": "Trigger"}, "rules"]},
            "WithTenantStatusIndex": {"Fn::Equals": [{"Ref": "TenantIndexes"}, "both"]},
            "WithTargets": {"Fn::Not": [{"Fn::Equals": [
                {"Fn::Join": ["", {"Ref": "AllowedTargets"}]}, ""]}]},
        },
        "Resources": resources,
        "Outputs": {
            "TasksTableName": {"Value": {"Ref": "TasksTable"}},
            "DeadLetterQueueUrl": {"Value": {"Ref": "DeadLetterQueue"}},
            "ApiTokensParameter": {"Value": TOKENS_PARAM},
            "WebhookSecretParameter": {"Value": SECRET_PARAM},
        },
    }


if __name__ == "__main__":
    json.dump(merge_template(), sys.stdout, indent=2)
    sys.stdout.write("\n")
