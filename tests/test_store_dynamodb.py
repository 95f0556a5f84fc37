"""DynamoDB adapter specifics: the due query reads due items only (ScannedCount)."""
from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib import aws as aws_clients, config
from chalicelib.models import Run, Transition, utcnow
from tests.conftest import runtime


class QueryCounter:
    """Counts the items DynamoDB reads for Query calls (ScannedCount) via botocore hooks."""

    def __init__(self):
        self.calls = 0
        self.scanned = 0
        self.operations = []
        client = aws_clients.client("dynamodb")
        client.meta.events.register("after-call.dynamodb", self._after)

    def _after(self, http_response, parsed, model, **_):
        self.operations.append(model.name)
        if model.name == "Query":
            self.calls += 1
            self.scanned += parsed.get("ScannedCount", 0)


def test_due_reads_only_due_items_in_priority_order(aws, make_task):
    for i in range(1000):
        make_task(due_in=3600 + i, priority=i % 10)
    due = [make_task(due_in=-60, priority=2), make_task(due_in=-30, priority=9),
           make_task(due_in=-90, priority=2), make_task(due_in=-10, priority=0),
           make_task(due_in=-20, priority=9)]
    counter = QueryCounter()
    found = list(runtime().store.due(utcnow(), 100))
    expected = sorted(due, key=lambda t: (-t.priority, t.next_run_at))
    assert [t.task_id for t in found] == [t.task_id for t in expected]
    assert counter.scanned == 5  # the 1,000 waiting tasks are never read
    assert counter.calls == 10  # one Query per priority bucket, no Scan
    assert "Scan" not in counter.operations


def test_due_follows_pages(aws, make_task):
    tasks = [make_task(due_in=-i - 1, priority=5) for i in range(7)]
    counter = QueryCounter()
    found = list(runtime().store.due(utcnow(), 3))
    assert sorted(t.task_id for t in found) == sorted(t.task_id for t in tasks)
    assert counter.scanned == 7


def _expires(task_id):
    item = aws_clients.client("dynamodb").get_item(
        TableName=config.tasks_table(), Key={"TaskID": {"S": task_id}})["Item"]
    return int(item["ExpiresAt"]["N"]) if "ExpiresAt" in item else None


def test_finished_tasks_expire_after_the_retention_and_replay_keeps_them(aws, make_task,
                                                                         monkeypatch):
    monkeypatch.setenv("TASK_RETENTION_DAYS", "30")
    store = runtime().store
    waiting, done, cancelled = make_task(), make_task(), make_task(due_in=600)
    claimed = store.claim(done.task_id, "r1", utcnow())
    run = Run(run_id="r1", attempt=1, started_at=utcnow(), ended_at=utcnow(),
              outcome="failed", error="HTTP 500")
    failed = store.finish(claimed, run, Transition("failed"), utcnow())
    store.update(replace(cancelled, status="cancelled"), cancelled.version)
    in_30_days = (utcnow() + timedelta(days=30)).timestamp()
    assert _expires(waiting.task_id) is None
    assert abs(_expires(done.task_id) - in_30_days) < 60
    assert abs(_expires(cancelled.task_id) - in_30_days) < 60
    again = utcnow() + timedelta(minutes=5)
    replayed = store.update(replace(failed, status="scheduled", next_run_at=again,
                                    firing_at=again, attempts=0), failed.version)
    assert _expires(done.task_id) is None  # waiting again: never deleted under it
    store.update(replace(failed, status="failed"), replayed.version)
    assert _expires(done.task_id) is not None


def test_an_item_from_before_versions_is_version_0_and_can_be_changed(aws, make_task):
    task = make_task(due_in=600)
    client = aws_clients.client("dynamodb")
    client.update_item(TableName=config.tasks_table(), Key={"TaskID": {"S": task.task_id}},
                       UpdateExpression="REMOVE Version, RunsDone")
    store = runtime().store
    old = store.get(task.task_id)
    assert (old.version, old.runs_done) == (0, 0)
    changed = store.update(replace(old, name="migrated"), 0)
    assert changed.version == 1 and store.get(task.task_id).name == "migrated"


def test_bootstrap_turns_on_time_to_live(aws):
    described = aws_clients.client("dynamodb").describe_time_to_live(
        TableName=config.tasks_table())["TimeToLiveDescription"]
    assert described["TimeToLiveStatus"] == "ENABLED"
    assert described["AttributeName"] == "ExpiresAt"


def test_name_search_finds_tasks_stored_before_the_search_attribute(aws, make_task):
    import boto3

    older = make_task(due_in=60, name="Legacy Export")
    boto3.client("dynamodb").update_item(  # as an item written by the previous version
        TableName=config.tasks_table(), Key={"TaskID": {"S": older.task_id}},
        UpdateExpression="REMOVE NameSearch")
    newer = make_task(due_in=60, name="legacy export, new")
    store = runtime().store
    assert {t.task_id for t in store.list(None, 10, None, name="Export").tasks} == {
        older.task_id, newer.task_id}
    # The older item matches only as written: "EXPORT" finds the newer one alone.
    assert {t.task_id for t in store.list(None, 10, None, name="EXPORT").tasks} == {
        newer.task_id}


def test_attribute_values_round_trip_what_items_hold():
    from decimal import Decimal

    from chalicelib.store.attribute_values import deserialize, serialize

    value = {"s": "ü", "n": 7, "d": Decimal("1.5"), "b": False, "none": None,
             "list": [1, "x", {"deep": [True]}]}
    assert serialize(value)["M"]["n"] == {"N": "7"} and serialize(True) == {"BOOL": True}
    back = deserialize(serialize(value))
    assert back == {**value, "n": Decimal(7), "list": [Decimal(1), "x", {"deep": [True]}]}
    with pytest.raises(TypeError):
        serialize(1.5)  # as boto3: a float must be a Decimal, or it loses precision


def test_bootstrap_gives_a_table_from_before_tenants_its_indexes_and_its_tasks_a_tenant(
        monkeypatch):
    """A table made by an earlier bootstrap: its tasks are backfilled as the default
    tenant's and the tenant indexes are added; GET and the tenant's listing find them."""
    import boto3
    from moto import mock_aws

    from chalicelib import bootstrap, config
    from chalicelib.store.dynamodb import DynamoDBTaskStore, table_definition

    with mock_aws():
        bootstrap.apply_stage_environment("dev")
        name = config.tasks_table()
        earlier = table_definition(name)
        earlier["GlobalSecondaryIndexes"] = earlier["GlobalSecondaryIndexes"][:2]
        earlier["AttributeDefinitions"] = [
            attribute for attribute in earlier["AttributeDefinitions"]
            if not attribute["AttributeName"].startswith("Tenant")]
        client = boto3.client("dynamodb")
        client.create_table(**earlier)
        client.put_item(TableName=name, Item={
            "TaskID": {"S": "old"}, "Action": {"S": "log"}, "Payload": {"S": "{}"},
            "RunAt": {"S": "cron(0 9 * * ? *)"}, "ScheduleKind": {"S": "cron"},
            "Status": {"S": "scheduled"}, "CreatedAt": {"S": "2026-01-01T00:00:00.000Z"},
            "UpdatedAt": {"S": "2026-01-01T00:00:00Z"}, "Version": {"N": "1"}})
        line = bootstrap.ensure_table()
        assert "tenant indexes added (1 task(s)" in line
        indexes = {index["IndexName"] for index in client.describe_table(
            TableName=name)["Table"]["GlobalSecondaryIndexes"]}
        assert {config.TENANT_INDEX, config.TENANT_STATUS_INDEX} <= indexes
        store = DynamoDBTaskStore(name)
        assert store.get("old").tenant == "default"
        for status in (None, "scheduled"):
            assert [task.task_id for task in store.list(status, 10, None,
                                                        tenant="default").tasks] == ["old"]
        assert "tenant indexes" not in bootstrap.ensure_table()  # once


def test_the_tenant_backfill_follows_each_tasks_status_and_can_run_again(monkeypatch, capsys):
    """A running task gets no status partition, a task whose status changes between the
    scan and its write is written with its new one, and a rerun finds what an older app
    wrote afterwards."""
    import boto3
    from moto import mock_aws

    from chalicelib import bootstrap, config
    from chalicelib.store.dynamodb import DynamoDBTaskStore, table_definition

    def old_task(client, name, task_id, status):
        client.put_item(TableName=name, Item={
            "TaskID": {"S": task_id}, "Action": {"S": "log"}, "Payload": {"S": "{}"},
            "RunAt": {"S": "cron(0 9 * * ? *)"}, "ScheduleKind": {"S": "cron"},
            "Status": {"S": status}, "CreatedAt": {"S": "2026-01-01T00:00:00.000Z"},
            "UpdatedAt": {"S": "2026-01-01T00:00:00Z"}, "Version": {"N": "1"}})

    with mock_aws():
        bootstrap.apply_stage_environment("dev")
        name = config.tasks_table()
        client = boto3.client("dynamodb")
        client.create_table(**table_definition(name))
        old_task(client, name, "running", "running")
        old_task(client, name, "changing", "scheduled")

        class ChangesUnderfoot:
            """The client, but an older app pauses `changing` just before its first write."""
            def __init__(self):
                self.changed = False

            def __getattr__(self, attribute):
                return getattr(client, attribute)

            def update_item(self, **kwargs):
                if kwargs["Key"]["TaskID"]["S"] == "changing" and not self.changed:
                    self.changed = True
                    client.update_item(TableName=name, Key={"TaskID": {"S": "changing"}},
                                       UpdateExpression="SET #s = :paused",
                                       ExpressionAttributeNames={"#s": "Status"},
                                       ExpressionAttributeValues={":paused": {"S": "paused"}})
                return client.update_item(**kwargs)

        assert bootstrap.backfill_tenants(ChangesUnderfoot(), name) == 2
        items = {item["TaskID"]["S"]: item for item in client.scan(TableName=name)["Items"]}
        assert items["running"]["Tenant"]["S"] == "default"
        assert "TenantStatus" not in items["running"]
        assert items["changing"]["TenantStatus"]["S"] == "default#paused"

        old_task(client, name, "later", "scheduled")  # an older app still running
        assert bootstrap.main(["--stage", "dev", "--backfill-tenants"]) == 0
        assert "1 task(s) from before tenants" in capsys.readouterr().out
        store = DynamoDBTaskStore(name)
        assert [task.task_id for task in store.list("scheduled", 10, None,
                                                    tenant="default").tasks] == ["later"]
        assert bootstrap.backfill_tenants(client, name) == 0


@pytest.mark.parametrize("code, status", [("ServiceUnavailable", 503),
                                          ("ProvisionedThroughputExceededException", 503),
                                          ("InternalServerError", 503),
                                          ("ValidationException", 500)])
def test_dynamodb_unable_to_answer_now_is_a_503(api, code, status):
    """Throttling and DynamoDB's own failures (after botocore's retries) are the store's
    StoreUnavailable; any other AWS error is a fault and stays one."""
    from botocore.exceptions import ClientError

    created = api.post("/schedule-task", {"action": "log", "payload": {"message": "x"},
                                          "run_at": "cron(0 9 * * ? *)"})

    def refuse(**_):
        raise ClientError({"Error": {"Code": code, "Message": "not now"}}, "GetItem")

    events = aws_clients.client("dynamodb").meta.events
    events.register("before-call.dynamodb.GetItem", refuse)
    try:
        answer = api.get(f"/tasks/{created.json['task_id']}")
    finally:
        events.unregister("before-call.dynamodb.GetItem", refuse)
    assert answer.status_code == status
    if status == 503:
        assert answer.json["code"] == "store_unavailable"
