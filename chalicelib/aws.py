"""Lazily built botocore clients, one per service and endpoint, with standard retries; the
account this process runs in; SSM parameters read at most once per PARAMETER_CACHE_SECONDS.

botocore reads AWS_ENDPOINT_URL itself, so pointing the app at moto, MiniStack or
DynamoDB Local needs no code here; the cache keys include it so tests can switch. The
clients are botocore's own (boto3 adds nothing we use): Lambda's runtime and an emulator's
environment both provide botocore, and not importing boto3 shortens a cold start.
botocore.session (the largest import of a cold start, bench/footprint.py) is imported by
the first client, not by this module: modules that call AWS only on some paths import this
one, and a Lambda whose path makes no call never loads it.
"""
import threading
import time
from typing import Dict, Tuple

from chalicelib import config

# Bounded calls: a run must end well inside its 120 s lease (botocore's defaults are 60 s
# per connect and per read, five times over).
CONNECT_TIMEOUT, READ_TIMEOUT = 5, 15
RETRIES = {"max_attempts": 5, "mode": "standard"}
# A parameter (API tokens, signing secrets) is kept this long: a rotated value takes effect
# without a redeploy, while a request or a run costs no SSM call.
PARAMETER_CACHE_SECONDS = 300

_clients: dict = {}
_accounts: Dict[tuple, str] = {}
_parameters: Dict[str, Tuple[float, str]] = {}
_lock = threading.Lock()
_parameters_lock = threading.Lock()


def _key(service: str):
    return service, config.endpoint_url(), config.region()


def client(service: str):
    """A cached client for service (throttling retried by botocore's standard mode)."""
    key = _key(service)
    found = _clients.get(key)
    if found is None:
        with _lock:
            found = _clients.get(key)
            if found is None:
                found = _new_client(service)
                _clients[key] = found
    return found


def _new_client(service: str):
    import botocore.session
    from botocore.config import Config

    return botocore.session.get_session().create_client(service, config=Config(
        retries=RETRIES, connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT))


def own_account_and_region() -> Tuple[str, str]:
    """The account id (asked of STS once per process) and region this process runs in."""
    # Lambda does not export its account id. A deployed stage that sets EXECUTOR_ARN and
    # SCHEDULER_ROLE_ARN never makes this call.
    key = (config.region(), config.endpoint_url())
    if key not in _accounts:
        _accounts[key] = client("sts").get_caller_identity()["Account"]
    return _accounts[key], config.region()


def executor_arn() -> str:
    """ARN of the execute_task Lambda: EXECUTOR_ARN, or derived from this account."""
    return config.executor_arn_setting() or _in_this_account(
        "arn:aws:lambda:{region}:{account}:function:" + config.executor_function_name())


def scheduler_role_arn() -> str:
    """ARN of the scheduler role: SCHEDULER_ROLE_ARN, or derived from this account."""
    return config.scheduler_role_arn_setting() or _in_this_account(
        "arn:aws:iam::{account}:role/" + config.scheduler_role_name())


def _in_this_account(template: str) -> str:
    # Asked of STS only when the stage did not set the ARN.
    account, region = own_account_and_region()
    return template.format(account=account, region=region)


def get_parameter(name: str) -> str:
    """The decrypted value of an SSM parameter, read again after PARAMETER_CACHE_SECONDS.

    botocore's ClientError and BotoCoreError reach the caller, which knows what they mean."""
    # Held during the read: callers arriving together make one SSM call, not one each.
    with _parameters_lock:
        cached = _parameters.get(name)
        if cached and time.monotonic() - cached[0] < PARAMETER_CACHE_SECONDS:
            return cached[1]
        value = client("ssm").get_parameter(Name=name, WithDecryption=True)["Parameter"][
            "Value"]
        _parameters[name] = (time.monotonic(), value)
        return value


def reset() -> None:
    """Forget every cached client, account and parameter (tests switch moto backends)."""
    with _lock:
        _clients.clear()
        _accounts.clear()
    with _parameters_lock:
        _parameters.clear()


# config derives default ARNs from the account, yet must not import this module (the
# clients above are built from config): it is handed the lookup instead.
