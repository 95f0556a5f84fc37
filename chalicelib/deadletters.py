"""Where a task goes when its attempts run out, and who hears about it.

Dead letters go to the SQS queue DLQ_URL (or the stage's queue, found by name once); in
the local stage, without DLQ_URL, to a JSON-lines file beside the local data.
Notifications go to the SNS topic NOTIFY_TOPIC_ARN when it is set.
"""
import json
import logging
import os
import threading
from typing import Optional

from botocore.exceptions import ClientError

from chalicelib import actions, aws, config
from chalicelib.models import Run, Task, iso, utcnow

logger = logging.getLogger("task_scheduler.deadletters")

_queue_urls: dict = {}
_lock = threading.Lock()


def _message(task: Task, run: Run, event: str) -> dict:
    return {
        "event": event,
        "task_id": task.task_id,
        "name": task.name,
        "action": task.action,
        "run_at": task.run_at,
        "attempts": run.attempt,
        "max_attempts": task.max_attempts,
        "last_error": run.error,
        "http_status": run.http_status,
        "firing_at": iso(task.firing_at),
        "at": iso(utcnow()),
        "task": {**task.to_api(), "payload": actions.redacted(task.action, task.payload)},
    }


def _queue_url() -> str:
    explicit = config.dlq_url()
    if explicit:
        return explicit
    key = (config.dlq_name(), config.endpoint_url(), config.region())
    with _lock:
        if key not in _queue_urls:
            _queue_urls[key] = aws.client("sqs").get_queue_url(
                QueueName=config.dlq_name())["QueueUrl"]
        return _queue_urls[key]


def dead_letter(task: Task, run: Run) -> str:
    """Record a task whose attempts ran out; returns where it went."""
    body = json.dumps(_message(task, run, "task_dead_lettered"), default=str)
    if config.is_local() and not config.dlq_url():
        path = config.sqlite_path().parent / "dead-letters.jsonl"
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # 0600: a dead letter holds the task (its URL; header values are redacted).
        with _lock, os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600),
                              "a", encoding="utf-8") as handle:
            handle.write(body + "\n")
        return str(path)
    url = _queue_url()
    aws.client("sqs").send_message(QueueUrl=url, MessageBody=body)
    return url


def notify(task: Task, run: Run, succeeded: bool) -> Optional[str]:
    """Publish the outcome to NOTIFY_TOPIC_ARN, if set; returns the message id."""
    topic = config.notify_topic_arn()
    if not topic:
        return None
    event = "task_succeeded" if succeeded else "task_failed"
    label = task.name or task.task_id
    subject = f"[task-scheduler] {'succeeded' if succeeded else 'failed'}: {label}"[:100]
    try:
        response = aws.client("sns").publish(
            TopicArn=topic, Subject=subject,
            Message=json.dumps(_message(task, run, event), default=str))
    except ClientError:
        # A notification is a courtesy: its failure must not undo the recorded run.
        logger.exception("notification for task %s could not be published", task.task_id)
        return None
    return response["MessageId"]
