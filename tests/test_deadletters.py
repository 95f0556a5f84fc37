"""Dead letters: SQS (by DLQ_URL or the stage's queue name), or a file in the local stage."""
import json

import boto3

from chalicelib import deadletters
from chalicelib.models import Run, utcnow


def _failed_run():
    return Run("r1", 3, utcnow(), utcnow(), "failed", http_status=503, error="HTTP 503")


def test_sqs_queue_found_by_name(aws, make_task):
    task = make_task(name="report")
    url = deadletters.dead_letter(task, _failed_run())
    [message] = boto3.client("sqs").receive_message(QueueUrl=url)["Messages"]
    body = json.loads(message["Body"])
    assert body["event"] == "task_dead_lettered" and body["task_id"] == task.task_id
    assert body["last_error"] == "HTTP 503" and body["name"] == "report"
    assert body["task"]["payload"] == task.payload


def test_explicit_queue_url_wins(aws, make_task, monkeypatch):
    url = boto3.client("sqs").create_queue(QueueName="elsewhere")["QueueUrl"]
    monkeypatch.setenv("DLQ_URL", url)
    assert deadletters.dead_letter(make_task(), _failed_run()) == url
    assert len(boto3.client("sqs").receive_message(QueueUrl=url)["Messages"]) == 1


def test_local_stage_writes_a_file(local_env, make_task):
    tmp_path = local_env
    task = make_task()
    where = deadletters.dead_letter(task, _failed_run())
    assert where == str(tmp_path / "dead-letters.jsonl")
    [line] = (tmp_path / "dead-letters.jsonl").read_text().splitlines()
    assert json.loads(line)["task_id"] == task.task_id


def test_no_topic_no_notification(memory, make_task):
    assert deadletters.notify(make_task(), _failed_run(), succeeded=False) is None
