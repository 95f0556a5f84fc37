"""Actions that deliver to AWS services: sqs, sns, lambda (asynchronous), eventbridge.

Which resources a task may name is limited by ALLOWED_TARGETS, comma-separated ARN
patterns with `*` wildcards (a queue URL is matched by its queue's ARN); empty refuses
them all. The deploy policy grants the executor exactly those patterns, so an API caller
cannot make the scheduler publish anywhere else in the account.
"""
import json
import re
from typing import Any, Callable, Dict, Optional
from urllib.parse import urlsplit

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import aws, config
from chalicelib.actions.base import Action, ActionContext, ActionResult, payload_error
from chalicelib.errors import ValidationError

MAX_MESSAGE_BYTES = 256 * 1024
_NAME = re.compile(r"^[A-Za-z0-9_.:/-]{1,256}$")


# ---------------------------------------------------------------- the allowlist

def pattern_matches(pattern: str, arn: str) -> bool:
    """ARN pattern match: `*` stands for any run of characters, nothing else is special."""
    regex = "^" + ".*".join(re.escape(part) for part in pattern.split("*")) + "$"
    return re.match(regex, arn) is not None


def check_allowed(arn: str, field: str) -> str:
    """The ARN, or a 400 on `field` when ALLOWED_TARGETS does not name it."""
    patterns = config.allowed_targets()
    if not any(pattern_matches(pattern, arn) for pattern in patterns):
        hint = "ALLOWED_TARGETS is empty" if not patterns else "not in ALLOWED_TARGETS"
        raise payload_error(f"{field} {arn} may not be targeted ({hint})", field)
    return arn


def _account_region():
    return aws.own_account_and_region()


_QUEUE_HOST = re.compile(r"(?:sqs\.([a-z0-9-]+)|([a-z0-9-]+)\.queue|queue)"
                         r"\.amazonaws\.com(?:\.cn)?", re.ASCII)
_QUEUE_NAME = re.compile(r"[A-Za-z0-9_-]{1,80}(?:\.fifo)?", re.ASCII)
_ACCOUNT = re.compile(r"\d{12}", re.ASCII)
_FUNCTION = r"(?P<name>[A-Za-z0-9_-]{1,64})(?::(?P<qualifier>\$LATEST|[A-Za-z0-9_-]{1,128}))?"
_FUNCTION_NAME = re.compile(_FUNCTION, re.ASCII)
_FUNCTION_ARN = re.compile(r"arn:(?P<partition>aws[a-z-]*):lambda:(?P<region>[a-z0-9-]+):"
                           r"(?P<account>\d{12}):function:" + _FUNCTION, re.ASCII)


def queue_arn(queue_url: str) -> str:
    """The ARN of the queue an SQS URL names; ValueError when it is not one."""
    parts = urlsplit(queue_url)
    path = parts.path.split("/")
    if (parts.scheme not in ("http", "https") or len(path) != 3 or path[0]
            or not _ACCOUNT.fullmatch(path[1]) or not _QUEUE_NAME.fullmatch(path[2])
            or parts.query or parts.fragment or parts.username):
        raise ValueError("not a queue URL")
    # Other hosts (VPC endpoints, a local endpoint) name a queue in the configured region.
    host = _QUEUE_HOST.fullmatch(parts.hostname or "")
    region = (host.group(1) or host.group(2)) if host else None
    return f"arn:aws:sqs:{region or config.region()}:{path[1]}:{path[2]}"


def function_arn(name: str) -> str:
    """A function name (`name[:qualifier]`) or full function ARN as an ARN; ValueError
    for anything else (a partial ARN would be resolved by Lambda, not by this check)."""
    arn = _FUNCTION_ARN.fullmatch(name)
    if arn:
        return name
    if not _FUNCTION_NAME.fullmatch(name):
        raise ValueError("not a function name or ARN")
    account, region = _account_region()
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


_TOPIC_ARN = re.compile(r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}"
                        r"(?:\.fifo)?", re.ASCII)
_BUS_NAME = re.compile(r"[A-Za-z0-9._/-]{1,256}", re.ASCII)
_BUS_ARN = re.compile(r"arn:aws[a-z-]*:events:[a-z0-9-]+:\d{12}:event-bus/[A-Za-z0-9._/-]+",
                      re.ASCII)


def bus_arn(name: str) -> str:
    """An event bus name or ARN as an ARN; ValueError for anything else."""
    if _BUS_ARN.fullmatch(name):
        return name
    if not _BUS_NAME.fullmatch(name):
        raise ValueError("not an event bus name or ARN")
    account, region = _account_region()
    return f"arn:aws:events:{region}:{account}:event-bus/{name}"


# ---------------------------------------------------------------- validation helpers

NO_AWS_LOCALLY = ("{action} tasks deliver to AWS, and the local stage (make dev) has no AWS "
                  "account: use make dev-aws, or a webhook or log task")


def _aws_action(action: str, validate: Callable[[Any], Dict[str, Any]],
                run: Callable[[Dict[str, Any], ActionContext], ActionResult]) -> Action:
    """An Action that the local stage without AWS (`make dev`) refuses to store or run."""
    # Resolving a bare name would ask STS for the account, and a run would call whatever
    # AWS account the shell has: neither belongs to `make dev`.
    def checked_validate(payload: Any) -> Dict[str, Any]:
        if config.local_without_aws():
            raise ValidationError(NO_AWS_LOCALLY.format(action=action), field="action",
                                  code="unavailable_action")
        return validate(payload)

    def checked_run(payload: Dict[str, Any], context: ActionContext) -> ActionResult:
        if config.local_without_aws():  # a task stored before this check existed
            return ActionResult(False, error="refused: " + NO_AWS_LOCALLY.format(
                action=action))
        return run(payload, context)

    return Action(validate=checked_validate, run=checked_run,
                  max_seconds=lambda payload: aws.CONNECT_TIMEOUT + aws.READ_TIMEOUT)


def _object(payload: Any, fields: set, required: set, action: str) -> Dict[str, Any]:
    if not isinstance(payload, dict):
        raise payload_error(f"payload must be an object with {', '.join(sorted(required))}")
    unknown = sorted(set(payload) - fields)
    if unknown:
        raise payload_error(f"payload.{unknown[0]} is not a {action} field (allowed: "
                            f"{', '.join(sorted(fields))})", f"payload.{unknown[0]}")
    for name in sorted(required):
        if payload.get(name) in (None, ""):
            raise payload_error(f"payload.{name} is required", f"payload.{name}")
    return dict(payload)


def _text(payload: Dict[str, Any], name: str, limit: int) -> Optional[str]:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise payload_error(f"payload.{name} must be a string of 1-{limit} characters",
                            f"payload.{name}")
    return value


def _message(payload: Dict[str, Any], name: str = "message") -> str:
    value = payload.get(name)
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"),
                                                           ensure_ascii=False)
    if value is None or len(text.encode()) > MAX_MESSAGE_BYTES:
        raise payload_error(f"payload.{name} is required: a string or JSON of at most "
                            f"{MAX_MESSAGE_BYTES // 1024} KiB", f"payload.{name}")
    return text


def _failure(exc: Exception) -> ActionResult:
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        retryable = status >= 500 or "Throttl" in code or code == "TooManyRequestsException"
        return ActionResult(False, error=f"{code}: {exc.response['Error'].get('Message', '')}"
                            [:300], retryable=retryable)
    return ActionResult(False, error=f"{exc.__class__.__name__}: {exc}"[:300], retryable=True)


# ---------------------------------------------------------------- sqs

def validate_sqs(payload: Any) -> Dict[str, Any]:
    """queue_url, message, delay_seconds (0-900), group_id (FIFO queues: required)."""
    result = _object(payload, {"queue_url", "message", "delay_seconds", "group_id"},
                     {"queue_url", "message"}, "sqs")
    try:
        arn = queue_arn(str(result["queue_url"]))
    except ValueError:
        raise payload_error("payload.queue_url must be an SQS queue URL "
                            "(https://sqs.<region>.amazonaws.com/<account>/<name>)",
                            "payload.queue_url") from None
    check_allowed(arn, "payload.queue_url")
    _message(result)
    delay = result.get("delay_seconds", 0)
    if isinstance(delay, bool) or not isinstance(delay, int) or not 0 <= delay <= 900:
        raise payload_error("payload.delay_seconds must be a whole number from 0 to 900",
                            "payload.delay_seconds")
    fifo = arn.endswith(".fifo")
    group = _text(result, "group_id", 128)
    if fifo and group is None:
        raise payload_error("payload.group_id is required for a FIFO queue",
                            "payload.group_id")
    if not fifo and group is not None:
        raise payload_error("payload.group_id applies to FIFO queues only", "payload.group_id")
    if fifo and delay:
        raise payload_error("payload.delay_seconds is not supported by FIFO queues",
                            "payload.delay_seconds")
    return result


def run_sqs(payload: Dict[str, Any], context: ActionContext) -> ActionResult:
    """Send the message; a FIFO queue deduplicates on the run's idempotency key."""
    request = {"QueueUrl": payload["queue_url"], "MessageBody": _message(payload)}
    if payload.get("group_id"):
        request["MessageGroupId"] = payload["group_id"]
        request["MessageDeduplicationId"] = re.sub(r"[^A-Za-z0-9_.-]", "-",
                                                   context.idempotency_key)[:128]
    elif payload.get("delay_seconds"):
        request["DelaySeconds"] = payload["delay_seconds"]
    try:
        aws.client("sqs").send_message(**request)
    except (ClientError, BotoCoreError) as exc:
        return _failure(exc)
    return ActionResult(True)


# ---------------------------------------------------------------- sns

def validate_sns(payload: Any) -> Dict[str, Any]:
    """topic_arn, message, subject (at most 100 characters), attributes (string map)."""
    result = _object(payload, {"topic_arn", "message", "subject", "attributes"},
                     {"topic_arn", "message"}, "sns")
    arn = _text(result, "topic_arn", 256)
    if not _TOPIC_ARN.fullmatch(arn):
        raise payload_error("payload.topic_arn must be an SNS topic ARN", "payload.topic_arn")
    check_allowed(arn, "payload.topic_arn")
    _message(result)
    subject = _text(result, "subject", 100)
    if subject is not None and any(c in subject for c in "\r\n"):
        raise payload_error("payload.subject must be one line", "payload.subject")
    attributes = result.get("attributes", {})
    if not isinstance(attributes, dict) or len(attributes) > 10 or not all(
            isinstance(k, str) and _NAME.fullmatch(k) and isinstance(v, str) and v
            for k, v in attributes.items()):
        raise payload_error("payload.attributes must map at most 10 names to non-empty "
                            "strings", "payload.attributes")
    return result


def run_sns(payload: Dict[str, Any], context: ActionContext) -> ActionResult:
    """Publish the message."""
    request = {"TopicArn": payload["topic_arn"], "Message": _message(payload),
               "MessageAttributes": {
                   name: {"DataType": "String", "StringValue": value}
                   for name, value in payload.get("attributes", {}).items()}}
    if payload.get("subject"):
        request["Subject"] = payload["subject"]
    try:
        aws.client("sns").publish(**request)
    except (ClientError, BotoCoreError) as exc:
        return _failure(exc)
    return ActionResult(True)


# ---------------------------------------------------------------- lambda

def validate_lambda(payload: Any) -> Dict[str, Any]:
    """function_name (name or ARN), payload (any JSON, the event)."""
    result = _object(payload, {"function_name", "payload"}, {"function_name"}, "lambda")
    name = _text(result, "function_name", 256)
    try:
        arn = function_arn(name)
    except ValueError:
        raise payload_error("payload.function_name must be a function name "
                            "(name or name:alias) or a function ARN",
                            "payload.function_name") from None
    check_allowed(arn, "payload.function_name")
    event = json.dumps(result.get("payload"), separators=(",", ":"), ensure_ascii=False)
    if len(event.encode()) > MAX_MESSAGE_BYTES:
        raise payload_error("payload.payload is larger than 256 KiB", "payload.payload")
    return result


def run_lambda(payload: Dict[str, Any], context: ActionContext) -> ActionResult:
    """Invoke the function asynchronously (InvocationType Event): accepted is success."""
    try:
        response = aws.client("lambda").invoke(
            FunctionName=payload["function_name"], InvocationType="Event",
            Payload=json.dumps(payload.get("payload"), separators=(",", ":")).encode())
    except (ClientError, BotoCoreError) as exc:
        return _failure(exc)
    return ActionResult(True, http_status=response.get("StatusCode"))


# ---------------------------------------------------------------- eventbridge

def validate_eventbridge(payload: Any) -> Dict[str, Any]:
    """event_bus (default `default`), source, detail_type, detail (a JSON object)."""
    result = _object(payload, {"event_bus", "source", "detail_type", "detail"},
                     {"source", "detail_type"}, "eventbridge")
    bus = _text(result, "event_bus", 256) or "default"
    result["event_bus"] = bus
    try:
        arn = bus_arn(bus)
    except ValueError:
        raise payload_error("payload.event_bus must be an event bus name or ARN",
                            "payload.event_bus") from None
    check_allowed(arn, "payload.event_bus")
    source = _text(result, "source", 256)
    if source.startswith("aws."):
        raise payload_error("payload.source may not start with 'aws.'", "payload.source")
    _text(result, "detail_type", 128)
    detail = result.get("detail", {})
    if not isinstance(detail, dict):
        raise payload_error("payload.detail must be a JSON object", "payload.detail")
    if len(json.dumps(detail).encode()) > MAX_MESSAGE_BYTES:
        raise payload_error("payload.detail is larger than 256 KiB", "payload.detail")
    return result


def run_eventbridge(payload: Dict[str, Any], context: ActionContext) -> ActionResult:
    """Put one event on the bus."""
    try:
        response = aws.client("events").put_events(Entries=[{
            "EventBusName": payload["event_bus"], "Source": payload["source"],
            "DetailType": payload["detail_type"],
            "Detail": json.dumps(payload.get("detail", {}), separators=(",", ":"))}])
    except (ClientError, BotoCoreError) as exc:
        return _failure(exc)
    if response.get("FailedEntryCount"):
        entry = response["Entries"][0]
        return ActionResult(False, error=f"{entry.get('ErrorCode')}: {entry.get('ErrorMessage')}",
                            retryable=entry.get("ErrorCode") == "ThrottlingException")
    return ActionResult(True)


ACTIONS: Dict[str, Action] = {
    "sqs": _aws_action("sqs", validate_sqs, run_sqs),
    "sns": _aws_action("sns", validate_sns, run_sns),
    "lambda": _aws_action("lambda", validate_lambda, run_lambda),
    "eventbridge": _aws_action("eventbridge", validate_eventbridge, run_eventbridge),
}
