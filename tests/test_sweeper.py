"""The daily sweeper runs what was missed, highest priority first, then earliest."""
import json

from chalicelib import sweeper
from chalicelib.store import get_store
from tests.test_store_dynamodb import QueryCounter


def test_sweeper_runs_due_tasks_by_priority_then_time(client, receiver, make_task,
                                                     monkeypatch):
    monkeypatch.setattr(sweeper, "RESERVE_MS", 0)  # chalice's test context has 3 s left
    def hook(label):
        return {"url": receiver.url, "data": {"label": label}}

    later = make_task(due_in=3600, payload=hook("not due"))
    due = [
        make_task(due_in=-300, priority=5, payload=hook("p5 older")),
        make_task(due_in=-60, priority=9, payload=hook("p9")),
        make_task(due_in=-30, priority=5, payload=hook("p5 newer")),
        make_task(due_in=-600, priority=1, payload=hook("p1")),
    ]
    event = client.events.generate_cw_event(
        source="aws.events", detail_type="Scheduled Event", detail={}, resources=[])
    summary = client.lambda_.invoke("daily_sweeper", event).payload
    labels = [json.loads(r["body"])["label"] for r in receiver.requests]
    assert labels == ["p9", "p5 older", "p5 newer", "p1"]
    assert summary["completed"] == 4
    for task in due:
        assert get_store().get(task.task_id).status == "completed"
    assert get_store().get(later.task_id).status == "scheduled"


def test_sweeper_reads_grow_with_due_work_not_table_size(aws, make_task):
    for i in range(1000):
        make_task(due_in=3600 + i, action="log", payload={"message": "later"},
                  priority=i % 10)
    for i in range(5):
        make_task(due_in=-60, action="log", payload={"message": "due"}, priority=i)
    counter = QueryCounter()
    summary = sweeper.sweep()
    assert summary["completed"] == 5
    assert counter.scanned <= 5 + 2
    assert "Scan" not in counter.operations


def test_sweeper_stops_when_time_runs_out_and_leaves_the_rest(aws, make_task):
    tasks = [make_task(due_in=-60, action="log", payload={"message": "x"}) for _ in range(3)]
    budget = iter([200_000, 200_000, 1_000, 1_000])
    summary = sweeper.sweep(time_left_ms=lambda: next(budget))
    assert summary["completed"] == 2 and summary["deferred"] == 1
    statuses = sorted(get_store().get(t.task_id).status for t in tasks)
    assert statuses == ["completed", "completed", "scheduled"]
