"""DynamoDB adapter specifics: the due query reads due items only (ScannedCount)."""
from chalicelib import aws as aws_clients
from chalicelib.models import utcnow
from chalicelib.store import get_store


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
    found = list(get_store().due(utcnow(), 100))
    expected = sorted(due, key=lambda t: (-t.priority, t.next_run_at))
    assert [t.task_id for t in found] == [t.task_id for t in expected]
    assert counter.scanned == 5  # the 1,000 waiting tasks are never read
    assert counter.calls == 10  # one Query per priority bucket, no Scan
    assert "Scan" not in counter.operations


def test_due_follows_pages(aws, make_task):
    tasks = [make_task(due_in=-i - 1, priority=5) for i in range(7)]
    counter = QueryCounter()
    found = list(get_store().due(utcnow(), 3))
    assert sorted(t.task_id for t in found) == sorted(t.task_id for t in tasks)
    assert counter.scanned == 7
