"""Configuration: every environment variable name lives here and is read when asked for.

Nothing is read at import time: Chalice applies a stage's variables only while a handler
runs, and tests change them between calls.

The name of every AWS resource a stage owns is computed here, once. Those functions take
`env`, the settings to answer from: the process environment by default, a stage's
config.json for bootstrap and its policy files, `{"STAGE": "${Stage}"}` for the template.
"""
import os
from pathlib import Path
from typing import Mapping, Optional

APP_NAME = "task-scheduler"

TASKS_TABLE = "TASKS_TABLE"
FLOW_TABLE = "FLOW_TABLE"
TASK_STORE = "TASK_STORE"
TRIGGER_BACKEND = "TRIGGER_BACKEND"
SCHEDULER_ROLE_ARN = "SCHEDULER_ROLE_ARN"
SCHEDULER_GROUP = "SCHEDULER_GROUP"
EXECUTOR_ARN = "EXECUTOR_ARN"
API_TOKENS = "API_TOKENS"
API_TOKENS_PARAM = "API_TOKENS_PARAM"
ALLOW_PRIVATE_TARGETS = "ALLOW_PRIVATE_TARGETS"
MAX_HORIZON_DAYS = "MAX_HORIZON_DAYS"
STAGE = "STAGE"
RULE_PREFIX = "RULE_PREFIX"
SWEEP_BATCH_SIZE = "SWEEP_BATCH_SIZE"
SQLITE_PATH = "SQLITE_PATH"
PORT = "PORT"
LOCAL_WORKERS = "LOCAL_WORKERS"
LOCAL_EXCHANGE_PROCESSES = "LOCAL_EXCHANGE_PROCESSES"

RETRY_BASE_SECONDS = "RETRY_BASE_SECONDS"
RETRY_MAX_SECONDS = "RETRY_MAX_SECONDS"
DLQ_URL = "DLQ_URL"
NOTIFY_TOPIC_ARN = "NOTIFY_TOPIC_ARN"
AWS_ENDPOINT_URL = "AWS_ENDPOINT_URL"
WEBHOOK_SIGNING_SECRET = "WEBHOOK_SIGNING_SECRET"
WEBHOOK_SIGNING_SECRET_PARAM = "WEBHOOK_SIGNING_SECRET_PARAM"
ALLOWED_TARGETS = "ALLOWED_TARGETS"
AUTH_MODE = "AUTH_MODE"
IAM_TENANTS = "IAM_TENANTS"
METRICS = "METRICS"
TASK_RETENTION_DAYS = "TASK_RETENTION_DAYS"
PRECISION = "PRECISION"
TENANT_MAX_WAITING = "TENANT_MAX_WAITING"
LAMBDA_FUNCTION_NAME = "AWS_LAMBDA_FUNCTION_NAME"  # set by the Lambda runtime

LOCAL_STAGE = "local"
PROJECT_DIR = Path(__file__).resolve().parent.parent
LOCAL_DATA_DIR = PROJECT_DIR / ".chalice" / "local-data"

DEFAULT_TABLE = "ScheduledTasks"
DUE_INDEX = "DueIndex"
STATUS_INDEX = "StatusIndex"
TENANT_INDEX = "TenantIndex"
TENANT_STATUS_INDEX = "TenantStatusIndex"
EXECUTOR_FUNCTION = "execute_task"
SWEEPER_FUNCTION = "daily_sweeper"
# When the daily sweeper runs (UTC): here, not in chalicelib.sweeper, because app.py names
# it at import and only the sweeper's Lambda imports the sweeper.
SWEEP_EXPRESSION = "cron(0 9 * * ? *)"
# The last part of each SSM parameter's name, /<app>/<stage>/<purpose>.
API_TOKENS_PURPOSE = "api-tokens"
SIGNING_SECRET_PURPOSE = "webhook-secret"

Settings = Mapping[str, str]


def _get(name: str, default: Optional[str] = None,
         env: Optional[Settings] = None) -> Optional[str]:
    value = (os.environ if env is None else env).get(name, "").strip()
    return value if value else default


def _flag(name: str, default: bool = False) -> bool:
    value = _get(name)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes", "on")


def stage(env: Optional[Settings] = None) -> str:
    """The Chalice stage this process runs as."""
    return _get(STAGE, "dev", env)


def resource_prefix(env: Optional[Settings] = None) -> str:
    """Prefix of every AWS resource name this stage owns."""
    return f"{APP_NAME}-{stage(env)}"


def tasks_table(env: Optional[Settings] = None) -> str:
    """DynamoDB table holding the tasks."""
    return _get(TASKS_TABLE, DEFAULT_TABLE, env)


def flow_table(env: Optional[Settings] = None) -> str:
    """DynamoDB table holding the flow-control keys and their queues (by default the
    tasks table's name and "-flow")."""
    return _get(FLOW_TABLE, None, env) or f"{tasks_table(env)}-flow"


def metrics_enabled() -> bool:
    """Whether to write EMF metric lines: METRICS=emf|off, by default only in Lambda."""
    value = (_get(METRICS) or ("emf" if in_lambda() else "off")).lower()
    if value not in ("emf", "off"):
        raise ValueError(f"METRICS={value!r} is not supported (emf, off)")
    return value == "emf"


def task_retention_days() -> int:
    """How long a finished task is kept before the table's TTL deletes it (DynamoDB)."""
    return int(_get(TASK_RETENTION_DAYS, "90"))


def tenant_max_waiting() -> Optional[int]:
    """How many waiting (not finished) tasks each tenant may have; None: no limit."""
    value = _get(TENANT_MAX_WAITING)
    return int(value) if value else None


def precision() -> str:
    """`minute` (EventBridge Scheduler's own, the default) or `second` (armed a minute
    early, the executor waits for the second)."""
    value = (_get(PRECISION) or "minute").lower()
    if value not in ("minute", "second"):
        raise ValueError(f"PRECISION={value!r} is not supported (minute, second)")
    return value


def is_local(env: Optional[Settings] = None) -> bool:
    """Whether this is the local stage (embedded store, in-process trigger)."""
    return stage(env) == LOCAL_STAGE


def local_without_aws() -> bool:
    """The local stage with no AWS endpoint (`make dev`): nothing may call AWS."""
    return is_local() and not endpoint_url()


def task_store() -> str:
    """Which store adapter to use: dynamodb, or sqlite (the local stage's default)."""
    return _get(TASK_STORE, "sqlite" if is_local() else "dynamodb").lower()


def trigger_backend(env: Optional[Settings] = None) -> str:
    """Which trigger adapter arms tasks: scheduler, rules, or local (the local stage's)."""
    return _get(TRIGGER_BACKEND, "local" if is_local(env) else "scheduler", env).lower()


def sqlite_path() -> Path:
    """File of the embedded store (gitignored, under .chalice/ by default)."""
    return Path(_get(SQLITE_PATH, str(LOCAL_DATA_DIR / "tasks.sqlite3")))


def port() -> int:
    """Port of the local server."""
    return int(_get(PORT, "8000"))


def local_workers() -> int:
    """How many runs the local trigger starts at once (its fast lane; see local.dispatcher)."""
    return int(_get(LOCAL_WORKERS, "16"))


def local_exchange_processes() -> int:
    """How many child processes send the local server's webhooks (default: 1 on 2+ cores)."""
    return int(_get(LOCAL_EXCHANGE_PROCESSES, "1" if (os.cpu_count() or 1) > 1 else "0"))


def scheduler_group(env: Optional[Settings] = None) -> str:
    """EventBridge Scheduler group holding one schedule per task."""
    return _get(SCHEDULER_GROUP, resource_prefix(env), env)


def scheduler_role_name(env: Optional[Settings] = None) -> str:
    """Name of the role EventBridge Scheduler assumes to invoke the executor."""
    return f"{resource_prefix(env)}-scheduler"


def rule_prefix(env: Optional[Settings] = None) -> str:
    """Name prefix of the EventBridge rules made in rules mode (the Lambda grant covers it)."""
    return _get(RULE_PREFIX, f"{resource_prefix(env)}-task-", env)


def function_name(handler: str, env: Optional[Settings] = None) -> str:
    """Function name chalice gives a stage's Lambda: {app}-{stage}-{handler}."""
    return f"{resource_prefix(env)}-{handler}"


def executor_function_name(env: Optional[Settings] = None) -> str:
    """Function name chalice gives the executor Lambda."""
    return function_name(EXECUTOR_FUNCTION, env)


def parameter_name(purpose: str, env: Optional[Settings] = None) -> str:
    """The stage's SSM parameter for purpose (config.json's dev and prod name theirs so)."""
    return f"/{APP_NAME}/{stage(env)}/{purpose}"


def executor_arn_setting() -> Optional[str]:
    """EXECUTOR_ARN when set (aws.executor_arn derives it otherwise)."""
    return _get(EXECUTOR_ARN)


def scheduler_role_arn_setting() -> Optional[str]:
    """SCHEDULER_ROLE_ARN when set (aws.scheduler_role_arn derives it otherwise)."""
    return _get(SCHEDULER_ROLE_ARN)


def api_tokens() -> Optional[str]:
    """Comma-separated bearer tokens given directly, if any."""
    return _get(API_TOKENS)


def api_tokens_param(env: Optional[Settings] = None) -> Optional[str]:
    """Name of the SSM SecureString that holds the bearer tokens, if any."""
    return _get(API_TOKENS_PARAM, None, env)


def allow_private_targets() -> bool:
    """Whether webhooks may reach loopback and private addresses (yes in the local stage)."""
    return _flag(ALLOW_PRIVATE_TARGETS, default=is_local())


def max_horizon_days() -> int:
    """How far ahead a one-time run_at may be."""
    return int(_get(MAX_HORIZON_DAYS, "365"))


def sweep_batch_size() -> int:
    """How many due tasks the sweeper takes per query page."""
    return int(_get(SWEEP_BATCH_SIZE, "100"))


def retry_base_seconds() -> float:
    """First retry delay ceiling: retry n waits a random time in [0, base * 2^(n-1)]."""
    return float(_get(RETRY_BASE_SECONDS, "10"))


def retry_max_seconds() -> float:
    """Longest wait between two attempts (also caps a receiver's Retry-After)."""
    return float(_get(RETRY_MAX_SECONDS, "3600"))


def dlq_url() -> Optional[str]:
    """The dead-letter queue, if set (otherwise found by name, see deadletters)."""
    return _get(DLQ_URL)


def dlq_name(env: Optional[Settings] = None) -> str:
    """Name of the dead-letter queue bootstrap makes."""
    return f"{resource_prefix(env)}-dlq"


def notify_topic_arn() -> Optional[str]:
    """SNS topic for notifications; unset means none are sent."""
    return _get(NOTIFY_TOPIC_ARN)


def notify_topic_name(env: Optional[Settings] = None) -> str:
    """Name of the topic bootstrap makes (set NOTIFY_TOPIC_ARN to use it)."""
    return f"{resource_prefix(env)}-notifications"


def webhook_signing_secret() -> Optional[str]:
    """Space-separated whsec_ secrets given directly, if any."""
    return _get(WEBHOOK_SIGNING_SECRET)


def webhook_signing_secret_param(env: Optional[Settings] = None) -> Optional[str]:
    """Name of the SSM SecureString holding the signing secret(s), if any."""
    return _get(WEBHOOK_SIGNING_SECRET_PARAM, None, env)


def allowed_targets(env: Optional[Settings] = None) -> list:
    """ARN patterns (`*` wildcard) the sqs, sns, lambda and eventbridge actions may name."""
    return [item.strip() for item in (_get(ALLOWED_TARGETS, None, env) or "").split(",")
            if item.strip()]


def auth_mode() -> str:
    """`token` (bearer tokens) or `iam` (API Gateway IAM auth)."""
    return _get(AUTH_MODE, "token").lower()


def iam_tenants() -> Optional[str]:
    """With AUTH_MODE=iam: comma-separated `tenant=<principal ARN>` entries (`*=` an admin)."""
    return _get(IAM_TENANTS)


def endpoint_url() -> Optional[str]:
    """AWS_ENDPOINT_URL: every AWS call goes there (moto, LocalStack) when set."""
    return _get(AWS_ENDPOINT_URL)


def in_lambda() -> bool:
    """Whether this process is an AWS Lambda function."""
    return _get(LAMBDA_FUNCTION_NAME) is not None


def region() -> str:
    """AWS region of this process."""
    return _get("AWS_REGION") or _get("AWS_DEFAULT_REGION") or "us-east-1"
