"""The CloudFormation resources merged into `chalice package` (`infra/resources.json`).

    python -m chalicelib.infra > infra/resources.json     (a test keeps the file equal)

Everything the functions need is a resource of the same stack, wired into their
environment with Ref / GetAtt / Sub, never a copied ARN. Each function's role grants only
what that function does. The executor's and sweeper's names are set here, so their own
ARNs can be written without a circular reference.
"""
import json
import sys
from typing import Any, Dict, List

from chalicelib import config
from chalicelib.store.dynamodb import TTL_ATTRIBUTE, table_definition

# What each function does to the tasks table (the API lists all tasks with a Scan).
TABLE_ACTIONS = {
    "api": ["GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "Scan"],
    "executor": ["GetItem", "UpdateItem"],
    "sweeper": ["GetItem", "UpdateItem", "Query"],
}
FUNCTIONS = {"api": "APIHandler", "executor": "ExecuteTask", "sweeper": "DailySweeper",
             "authorizer": "TokenAuth"}
NO_VALUE = {"Ref": "AWS::NoValue"}
# A bare Lambda function or bus name is completed with the account id, asked of STS.
IDENTITY = {"Sid": "Identity", "Effect": "Allow", "Action": "sts:GetCallerIdentity",
            "Resource": "*"}
LOGS = {"Sid": "Logs", "Effect": "Allow",
        "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
        "Resource": "arn:aws:logs:*:*:*"}


def _sub(text: str) -> dict:
    return {"Fn::Sub": text}


def _get(resource: str, attribute: str = "Arn") -> dict:
    return {"Fn::GetAtt": [resource, attribute]}


def _function_arn(suffix: str) -> dict:
    return _sub("arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:"
                "${AWS::StackName}-" + suffix)


EXECUTOR_ARN = _function_arn("execute-task")
SWEEPER_ARN = _function_arn("daily-sweeper")
PARAM_ARN = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter"
TOKENS_PARAM = _sub("/task-scheduler/${Stage}/api-tokens")
SECRET_PARAM = _sub("/task-scheduler/${Stage}/webhook-secret")


def environment(function: str) -> Dict[str, Any]:
    """The variables that name this stack's resources, for one function."""
    shared = {
        config.STAGE: {"Ref": "Stage"},
        config.TASKS_TABLE: {"Ref": "TasksTable"},
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
    }
    if function == "authorizer":
        # The merge is deep: names copied from config.json are removed, not left behind.
        return {name: (value if name in (config.STAGE, config.API_TOKENS_PARAM) else NO_VALUE)
                for name, value in {**shared, **_STAGE_LITERALS}.items()}
    return shared


# What config.json's stages set for every function (merged in by chalice package).
_STAGE_LITERALS = {config.TASKS_TABLE: None, config.WEBHOOK_SIGNING_SECRET_PARAM: None}


def _table_statement(actions: List[str]) -> dict:
    return {"Sid": "TasksTable", "Effect": "Allow",
            "Action": [f"dynamodb:{action}" for action in actions],
            "Resource": [_get("TasksTable"), _sub("${TasksTable.Arn}/index/*")]}


def _schedules_statement() -> List[dict]:
    return [
        {"Sid": "Schedules", "Effect": "Allow",
         "Action": ["scheduler:CreateSchedule", "scheduler:GetSchedule",
                    "scheduler:DeleteSchedule"],
         "Resource": _sub("arn:${AWS::Partition}:scheduler:${AWS::Region}:${AWS::AccountId}"
                          ":schedule/${ScheduleGroup}/*")},
        {"Sid": "PassSchedulerRole", "Effect": "Allow", "Action": "iam:PassRole",
         "Resource": _get("SchedulerRole"),
         "Condition": {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}},
        # PRECISION=second invokes the executor at once for a task due within two minutes.
        {"Sid": "InvokeExecutorNow", "Effect": "Allow", "Action": "lambda:InvokeFunction",
         "Resource": EXECUTOR_ARN},
    ]


def _running_statements() -> List[dict]:
    """What running a task needs: dead letters, notifications, the secret, the targets."""
    return [
        {"Sid": "DeadLetters", "Effect": "Allow", "Action": "sqs:SendMessage",
         "Resource": _get("DeadLetterQueue")},
        {"Fn::If": ["WithNotifications",
                    {"Sid": "Notifications", "Effect": "Allow", "Action": "sns:Publish",
                     "Resource": {"Ref": "NotificationTopic"}}, NO_VALUE]},
        {"Sid": "SigningSecret", "Effect": "Allow", "Action": "ssm:GetParameter",
         "Resource": _sub(PARAM_ARN + "/task-scheduler/${Stage}/webhook-secret")},
        {"Fn::If": ["WithTargets",
                    {"Sid": "AllowedTargets", "Effect": "Allow",
                     "Action": ["sqs:SendMessage", "sns:Publish", "lambda:InvokeFunction",
                                "events:PutEvents"],
                     "Resource": {"Ref": "AllowedTargets"}}, NO_VALUE]},
    ]


def policies() -> Dict[str, List[dict]]:
    """Each function's statements: only what that function does."""
    return {
        "api": [LOGS, IDENTITY, _table_statement(TABLE_ACTIONS["api"]), *_schedules_statement()],
        "executor": [LOGS, IDENTITY, _table_statement(TABLE_ACTIONS["executor"]),
                     *_schedules_statement(), *_running_statements()],
        "sweeper": [LOGS, IDENTITY, _table_statement(TABLE_ACTIONS["sweeper"]),
                    *_schedules_statement(), *_running_statements(),
                    {"Sid": "SweeperContinues", "Effect": "Allow",
                     "Action": "lambda:InvokeFunction", "Resource": SWEEPER_ARN}],
        "authorizer": [LOGS, {"Sid": "ApiTokens", "Effect": "Allow",
                              "Action": "ssm:GetParameter",
                              "Resource": _sub(PARAM_ARN + "/task-scheduler/${Stage}/api-tokens")}],
    }


def _alarm(description: str, namespace: str, metric: str, dimension: dict) -> dict:
    return {"Type": "AWS::CloudWatch::Alarm", "Properties": {
        "AlarmDescription": description, "Namespace": namespace, "MetricName": metric,
        "Dimensions": [dimension], "Statistic": "Maximum" if namespace == "AWS/SQS" else "Sum",
        "Period": 300, "EvaluationPeriods": 1, "Threshold": 0,
        "ComparisonOperator": "GreaterThanThreshold", "TreatMissingData": "notBreaching",
        "AlarmActions": {"Fn::If": ["WithNotifications", [{"Ref": "NotificationTopic"}],
                                    NO_VALUE]},
    }}


def merge_template() -> Dict[str, Any]:
    """The template `chalice package --merge-template` merges into its own."""
    resources: Dict[str, Any] = {
        "TasksTable": {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain",
                       "UpdateReplacePolicy": "Retain", "Properties": {
            # The same definition bootstrap creates (one source, the store adapter's).
            **{key: value for key, value in table_definition("").items()
               if key != "TableName"},
            "TimeToLiveSpecification": {"AttributeName": TTL_ATTRIBUTE, "Enabled": True},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "SSESpecification": {"SSEEnabled": True},
        }},
        "ScheduleGroup": {"Type": "AWS::Scheduler::ScheduleGroup",
                          "Properties": {"Name": _sub("task-scheduler-${Stage}")}},
        "SchedulerRole": {"Type": "AWS::IAM::Role", "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Principal": {"Service": "scheduler.amazonaws.com"},
                "Action": "sts:AssumeRole",
                "Condition": {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}}]}}},
        # Separate from the role, so the executor can name the role without a cycle.
        "SchedulerInvokesExecutor": {"Type": "AWS::IAM::Policy", "Properties": {
            "PolicyName": "invoke-executor", "Roles": [{"Ref": "SchedulerRole"}],
            "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
                "Effect": "Allow", "Action": "lambda:InvokeFunction",
                "Resource": [_get("ExecuteTask"), _sub("${ExecuteTask.Arn}:*")]}]}}},
        "DeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {
            "MessageRetentionPeriod": 14 * 86400, "SqsManagedSseEnabled": True}},
        # Not encrypted with the aws/sns key: CloudWatch alarms could not publish to it.
        "NotificationTopic": {"Type": "AWS::SNS::Topic", "Condition": "WithNotifications",
                              "Properties": {"DisplayName": _sub("task-scheduler ${Stage}")}},
        "DeadLettersAlarm": _alarm("A task was dead-lettered", "AWS/SQS",
                                   "ApproximateNumberOfMessagesVisible",
                                   {"Name": "QueueName",
                                    "Value": _get("DeadLetterQueue", "QueueName")}),
        "ExecutorErrorsAlarm": _alarm("The executor Lambda failed", "AWS/Lambda", "Errors",
                                      {"Name": "FunctionName", "Value": {"Ref": "ExecuteTask"}}),
        "SweeperErrorsAlarm": _alarm("The daily sweeper Lambda failed", "AWS/Lambda", "Errors",
                                     {"Name": "FunctionName", "Value": {"Ref": "DailySweeper"}}),
    }
    names = {"executor": "execute-task", "sweeper": "daily-sweeper"}
    statements = policies()
    for function, logical in FUNCTIONS.items():
        properties: Dict[str, Any] = {"Environment": {"Variables": environment(function)}}
        if function in names:
            properties["FunctionName"] = _sub("${AWS::StackName}-" + names[function])
        resources[logical] = {"Properties": properties}
        role = "ApiHandlerRole" if function == "api" else f"{logical}Role"
        resources[role] = {"Properties": {"Policies": [{
            "PolicyName": f"{function}-policy",
            "PolicyDocument": {"Version": "2012-10-17", "Statement": statements[function]}}]}}
    return {
        "Parameters": {
            "Stage": {"Type": "String", "Default": "dev", "AllowedPattern": "[a-z0-9-]+"},
            "AllowedTargets": {"Type": "CommaDelimitedList", "Default": "",
                               "Description": "ARN patterns the sqs/sns/lambda/eventbridge "
                                              "actions may name (ALLOWED_TARGETS)"},
            "Notifications": {"Type": "String", "Default": "on", "AllowedValues": ["on", "off"]},
            "Precision": {"Type": "String", "Default": "minute",
                          "AllowedValues": ["minute", "second"]},
        },
        "Conditions": {
            "WithNotifications": {"Fn::Equals": [{"Ref": "Notifications"}, "on"]},
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
