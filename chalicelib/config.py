"""Configuration: every environment variable name lives here and is read when asked for.

Nothing is read at import time: Chalice applies a stage's variables only while a handler
runs, and tests change them between calls.
"""
import os
from pathlib import Path
from typing import Optional

APP_NAME = "task-scheduler"

TASKS_TABLE = "TASKS_TABLE"
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

LOCAL_STAGE = "local"
PROJECT_DIR = Path(__file__).resolve().parent.parent
LOCAL_DATA_DIR = PROJECT_DIR / ".chalice" / "local-data"

DEFAULT_TABLE = "ScheduledTasks"
DUE_INDEX = "DueIndex"
STATUS_INDEX = "StatusIndex"
EXECUTOR_FUNCTION = "execute_task"


def _get(name: str, default: Optional[str] = None) -> Optional[str]:
    value = os.environ.get(name, "").strip()
    return value if value else default


def _flag(name: str, default: bool = False) -> bool:
    value = _get(name)
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes", "on")


def stage() -> str:
    """The Chalice stage this process runs as."""
    return _get(STAGE, "dev")


def resource_prefix() -> str:
    """Prefix of every AWS resource name this stage owns."""
    return f"{APP_NAME}-{stage()}"


def tasks_table() -> str:
    """DynamoDB table holding the tasks."""
    return _get(TASKS_TABLE, DEFAULT_TABLE)


def is_local() -> bool:
    """Whether this is the local stage (embedded store, in-process trigger)."""
    return stage() == LOCAL_STAGE


def task_store() -> str:
    """Which store adapter to use: dynamodb, or sqlite (the local stage's default)."""
    return _get(TASK_STORE, "sqlite" if is_local() else "dynamodb").lower()


def trigger_backend() -> str:
    """Which trigger adapter arms tasks: scheduler, rules, or local (the local stage's)."""
    return _get(TRIGGER_BACKEND, "local" if is_local() else "scheduler").lower()


def sqlite_path() -> Path:
    """File of the embedded store (gitignored, under .chalice/ by default)."""
    return Path(_get(SQLITE_PATH, str(LOCAL_DATA_DIR / "tasks.sqlite3")))


def port() -> int:
    """Port of the local server."""
    return int(_get(PORT, "8000"))


def local_workers() -> int:
    """Size of the local trigger's worker pool."""
    return int(_get(LOCAL_WORKERS, "16"))


def scheduler_group() -> str:
    """EventBridge Scheduler group holding one schedule per task."""
    return _get(SCHEDULER_GROUP, resource_prefix())


def scheduler_role_name() -> str:
    """Name of the role EventBridge Scheduler assumes to invoke the executor."""
    return f"{resource_prefix()}-scheduler"


def rule_prefix() -> str:
    """Name prefix of the EventBridge rules made in rules mode (the Lambda grant covers it)."""
    return _get(RULE_PREFIX, f"{resource_prefix()}-task-")


def executor_function_name() -> str:
    """Function name chalice gives the executor Lambda."""
    return f"{resource_prefix()}-{EXECUTOR_FUNCTION}"


def executor_arn() -> str:
    """ARN of the execute_task Lambda: set, or derived from this function's own ARN."""
    explicit = _get(EXECUTOR_ARN)
    if explicit:
        return explicit
    account, region = _own_account_and_region()
    return f"arn:aws:lambda:{region}:{account}:function:{executor_function_name()}"


def scheduler_role_arn() -> str:
    """ARN of the scheduler role: set, or derived from the account this function runs in."""
    explicit = _get(SCHEDULER_ROLE_ARN)
    if explicit:
        return explicit
    account, _ = _own_account_and_region()
    return f"arn:aws:iam::{account}:role/{scheduler_role_name()}"


def api_tokens() -> Optional[str]:
    """Comma-separated bearer tokens given directly, if any."""
    return _get(API_TOKENS)


def api_tokens_param() -> Optional[str]:
    """Name of the SSM SecureString that holds the bearer tokens, if any."""
    return _get(API_TOKENS_PARAM)


def allow_private_targets() -> bool:
    """Whether webhooks may reach loopback and private addresses (yes in the local stage)."""
    return _flag(ALLOW_PRIVATE_TARGETS, default=is_local())


def max_horizon_days() -> int:
    """How far ahead a one-time run_at may be."""
    return int(_get(MAX_HORIZON_DAYS, "365"))


def sweep_batch_size() -> int:
    """How many due tasks the sweeper takes per query page."""
    return int(_get(SWEEP_BATCH_SIZE, "100"))


def region() -> str:
    """AWS region of this process."""
    return _get("AWS_REGION") or _get("AWS_DEFAULT_REGION") or "us-east-1"


_account_cache: dict = {}


def _own_account_and_region():
    # Lambda does not export its account id. STS answers it once per process; a deployed
    # stage that sets EXECUTOR_ARN and SCHEDULER_ROLE_ARN never makes this call.
    key = (region(), _get("AWS_ENDPOINT_URL"))
    if key not in _account_cache:
        from chalicelib import aws

        _account_cache[key] = aws.client("sts").get_caller_identity()["Account"]
    return _account_cache[key], region()
