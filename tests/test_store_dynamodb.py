"""The DynamoDB store adapter: conditional claims, the sparse due index, paging."""
import threading
from datetime import timedelta

import pytest

from chalicelib import aws as aws_clients
from chalicelib.errors import ClaimLost, Conflict, TaskExists, TaskNotFound
from chalicelib.models import Run, utcnow
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


def test_round_trip_keeps_every_field(aws, make_task):
    task = make_task(payload={"url": "https://example.com", "data": {"f": 1.25, "n": None,
                                                                      "list": [1, "x"]}},
                     name="nightly report", priority=8, max_attempts=4, notify="always")
    stored = get_store().get(task.task_id)
    assert stored.payload == task.payload
    assert (stored.name, stored.priority, stored.max_attempts, stored.notify) == (
        "nightly report", 8, 4, "always")
    assert stored.next_run_at == task.next_run_at
    assert stored.status == "scheduled" and stored.runs == []


def test_create_twice_is_refused(aws, make_task):
    task = make_task()
    with pytest.raises(TaskExists):
        get_store().create(task)


def test_get_unknown_raises(aws):
    with pytest.raises(TaskNotFound):
        get_store().get("nope")


def test_claim_not_yet_due_is_lost_with_the_current_task(aws, make_task):
    task = make_task(due_in=120)
    with pytest.raises(ClaimLost) as lost:
        get_store().claim(task.task_id, "r1", utcnow())
    assert lost.value.current.task_id == task.task_id
    assert lost.value.current.status == "scheduled"


def test_only_one_of_many_concurrent_claims_wins(aws, make_task):
    task = make_task()
    barrier = threading.Barrier(8)
    wins = []

    def claim(run_id):
        barrier.wait()
        try:
            get_store().claim(task.task_id, run_id, utcnow())
            wins.append(run_id)
        except ClaimLost:
            pass

    threads = [threading.Thread(target=claim, args=(f"run-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert get_store().get(task.task_id).run_id == wins[0]


def test_finish_needs_the_claim(aws, make_task):
    store = get_store()
    task = make_task()
    claimed = store.claim(task.task_id, "r1", utcnow())
    run = Run(run_id="r1", attempt=1, started_at=utcnow(), ended_at=utcnow(),
              outcome="succeeded", duration_ms=1)
    stale = claimed.__class__(**{**claimed.__dict__, "run_id": "someone-else"})
    with pytest.raises(ClaimLost):
        store.finish(stale, run, "completed", None, utcnow())
    done = store.finish(claimed, run, "completed", None, utcnow())
    assert done.status == "completed" and done.runs[0].run_id == "r1"
    with pytest.raises(ClaimLost):
        store.finish(claimed, run, "completed", None, utcnow())


def test_cancel_only_while_waiting(aws, make_task):
    store = get_store()
    task = make_task(due_in=60)
    assert store.cancel(task.task_id, utcnow()).status == "cancelled"
    with pytest.raises(Conflict):
        store.cancel(task.task_id, utcnow())
    with pytest.raises(TaskNotFound):
        store.cancel("missing", utcnow())


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


def test_running_task_is_due_again_only_after_its_lease(aws, make_task):
    store = get_store()
    task = make_task()
    store.claim(task.task_id, "r1", utcnow())
    assert [t.task_id for t in store.due(utcnow(), 10)] == []
    later = utcnow() + timedelta(minutes=6)
    assert [t.task_id for t in store.due(later, 10)] == [task.task_id]


def test_list_pages_beyond_moto_page_size(aws, make_task):
    created = {make_task(due_in=60).task_id for _ in range(120)}
    seen, token = [], None
    while True:
        page = get_store().list(None, 50, token)
        seen += [t.task_id for t in page.tasks]
        token = page.next_token
        if not token:
            break
    assert len(seen) == 120 and set(seen) == created
