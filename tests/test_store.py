"""Store contract: every case runs against the three adapters (in-memory, DynamoDB on moto,
SQLite), through the `store` fixture of conftest."""
import functools
from dataclasses import replace
from datetime import timedelta

import pytest

from chalicelib import flow
from chalicelib.errors import (
    ClaimLost, FlowConflict, InvalidPageToken, StateConflict, TaskExists, TaskNotFound,
)
from chalicelib.models import OPTIONS, DueRef, Run, Transition, utcnow
from tests.conftest import together

LEASE = timedelta(minutes=2)


def test_round_trip_keeps_every_field(store, make_task):
    task = make_task(payload={"url": "https://example.com", "data": {"f": 1.25, "n": None,
                                                                      "list": [1, "x"]}},
                     name="nightly report", priority=8, max_attempts=4, notify="always")
    stored = store.get(task.task_id)
    assert stored.payload == task.payload
    assert (stored.name, stored.priority, stored.max_attempts, stored.notify) == (
        "nightly report", 8, 4, "always")
    assert stored.next_run_at == task.next_run_at
    assert stored.status == "scheduled" and stored.runs == []


def a_value_other_than_the_default(declared):
    """A valid value of a declared option that is not its default."""
    schema = declared.schema
    if schema["type"] == "array":
        return [a_value_other_than_the_default(replace(declared, schema=schema["items"],
                                                       default=None))]
    if "properties" in schema:  # every property set, at its first valid value
        return {name: a_value_other_than_the_default(replace(declared, schema=rule,
                                                             default=None))
                for name, rule in schema["properties"].items()}
    candidates = {"integer": [schema.get("maximum"), schema.get("minimum")],
                  "string": list(schema.get("enum", [])) + ["a value"],
                  "boolean": [True, False],
                  "object": [{"team": "ops", "tier": ""}]}[schema["type"]]
    return next(value for value in candidates if value != declared.default)


def test_round_trip_keeps_every_declared_option(store, make_task):
    # A new option is stored by every adapter from its declaration alone.
    chosen = {declared.name: a_value_other_than_the_default(declared) for declared in OPTIONS}
    stored = store.get(make_task(**chosen).task_id)
    assert {name: getattr(stored, name) for name in chosen} == chosen


def _cancel(store, task_id):
    task = store.get(task_id)
    return store.update(replace(task, status="cancelled"), task.version)


def test_create_twice_is_refused(store, make_task):
    task = make_task()
    with pytest.raises(TaskExists):
        store.create(task)


def test_get_unknown_raises(store):
    with pytest.raises(TaskNotFound):
        store.get("nope")


def test_claim_not_yet_due_is_lost_with_the_current_task(store, make_task):
    task = make_task(due_in=120)
    with pytest.raises(ClaimLost) as lost:
        store.claim(task.task_id, "r1", utcnow())
    assert lost.value.current.task_id == task.task_id
    assert lost.value.current.status == "scheduled"


def test_only_one_of_many_concurrent_claims_wins(store, make_task):
    task = make_task()
    results = together(*(functools.partial(store.claim, task.task_id, f"run-{i}", utcnow())
                         for i in range(8)))
    wins = [result.run_id for result in results if not isinstance(result, ClaimLost)]
    assert len(wins) == 1 and sum(isinstance(r, ClaimLost) for r in results) == 7
    assert store.get(task.task_id).run_id == wins[0]


def test_due_refs_name_the_due_tasks_in_due_order(store, make_task):
    make_task(payload={"url": "https://a.example.test/x"}, priority=3)
    make_task(action="log", payload={"message": "m"}, priority=7)
    keyed = make_task(payload={"url": "https://b.example.test/y"}, priority=5)
    store.update(replace(keyed, flow_control={"key": "k", "parallelism": 1}, tenant="alpha"),
                 keyed.version)
    make_task(due_in=120)  # not due
    now = utcnow()
    assert list(store.due_refs(now, 2)) == [DueRef.of(task) for task in store.due(now, 2)]
    refs = list(store.due_refs(now, 2))
    assert [(ref.action, ref.url, ref.flow_key) for ref in refs] == [
        ("log", None, None), ("webhook", "https://b.example.test/y", "alpha\x1fk"),
        ("webhook", "https://a.example.test/x", None)]


def test_claim_many_takes_the_claimable_tasks_each_with_its_run(store, make_task):
    due = [make_task() for _ in range(3)]
    later = make_task(due_in=120)
    claims = [(task.task_id, f"run-{n}") for n, task in enumerate(due + [later])]
    claimed = store.claim_many(claims, utcnow())
    assert set(claimed) == {task.task_id for task in due}
    for n, task in enumerate(due):
        assert claimed[task.task_id].run_id == f"run-{n}" == store.get(task.task_id).run_id
        assert claimed[task.task_id].status == "running" and claimed[task.task_id].attempts == 1
    assert store.get(later.task_id).status == "scheduled"
    assert store.claim_many(claims, utcnow()) == {}  # each was claimed once


def test_claims_made_one_by_one_are_kept_when_a_later_one_fails(memory, make_task):
    """The store port's claim_many (the DynamoDB store's): an error after some claims ends
    the group with them, so no claimed task is left running under a run no one has."""
    from chalicelib.errors import StoreUnavailable

    store = memory.store
    tasks = [make_task() for _ in range(3)]
    real_claim = store.claim

    def throttled_at_the_second(task_id, run_id, now):
        if task_id == tasks[1].task_id:
            raise StoreUnavailable("DynamoDB cannot answer now")
        return real_claim(task_id, run_id, now)

    store.claim = throttled_at_the_second
    claims = [(task.task_id, f"run-{task.task_id}") for task in tasks]
    assert list(store.claim_many(claims, utcnow())) == [tasks[0].task_id]
    with pytest.raises(StoreUnavailable):  # nothing claimed: the error is the caller's
        store.claim_many(claims[1:], utcnow())


def test_concurrent_claim_many_never_claim_one_task_twice(store, make_task):
    tasks = [make_task() for _ in range(20)]
    results = together(*(functools.partial(
        store.claim_many, [(task.task_id, f"w{n}-{task.task_id}") for task in tasks], utcnow())
        for n in range(6)))
    won = [task_id for result in results for task_id in result]
    assert sorted(won) == sorted(task.task_id for task in tasks)  # each exactly once
    for result in results:
        for task_id, task in result.items():
            assert store.get(task_id).run_id == task.run_id


def test_finish_needs_the_claim(store, make_task):
    task = make_task()
    claimed = store.claim(task.task_id, "r1", utcnow())
    # Its lease expires and another invocation takes the task over.
    taken_over = store.claim(task.task_id, "r2", utcnow() + timedelta(minutes=3))
    run = Run(run_id="r1", attempt=1, started_at=utcnow(), ended_at=utcnow(),
              outcome="succeeded", duration_ms=1)
    with pytest.raises(ClaimLost):
        store.finish(claimed, run, Transition("completed"), utcnow())
    done = store.finish(taken_over, replace(run, run_id="r2"), Transition("completed"),
                        utcnow())
    assert done.status == "completed" and done.runs[0].run_id == "r2"
    with pytest.raises(ClaimLost):
        store.finish(taken_over, run, Transition("completed"), utcnow())


def test_update_writes_only_on_the_version_it_read(store, make_task):
    task = store.get(make_task(due_in=60).task_id)
    changed = store.update(replace(task, name="renamed"), task.version)
    assert changed.version == task.version + 1
    assert store.get(task.task_id).name == "renamed"
    with pytest.raises(StateConflict) as conflict:
        store.update(replace(task, name="stale"), task.version)
    assert conflict.value.current.name == "renamed"
    assert conflict.value.current.version == task.version + 1
    with pytest.raises(TaskNotFound):
        store.update(replace(task, task_id="5c0d1f6e-0000-4000-8000-000000000000"), 1)


def test_of_concurrent_updates_on_one_version_exactly_one_wins(store, make_task):
    task = store.get(make_task(due_in=60).task_id)
    results = together(*(functools.partial(store.update, replace(task, name=f"writer-{i}"),
                                           task.version) for i in range(6)))
    wins = [result.name for result in results if not isinstance(result, StateConflict)]
    assert len(wins) == 1 and sum(isinstance(r, StateConflict) for r in results) == 5
    stored = store.get(task.task_id)
    assert stored.name == wins[0] and stored.version == task.version + 1


def test_a_claim_raises_the_version_so_a_change_read_before_it_loses(store, make_task):
    task = store.get(make_task().task_id)
    claimed = store.claim(task.task_id, "r1", utcnow())
    assert claimed.version == task.version + 1
    with pytest.raises(StateConflict) as conflict:
        store.update(replace(task, status="paused"), task.version)
    assert conflict.value.current.status == "running"


def test_a_paused_task_is_never_claimed_and_due_only_at_its_until(store, make_task):
    task = store.get(make_task(due_in=-5).task_id)
    until = (utcnow() + timedelta(minutes=10)).replace(microsecond=0)
    paused = store.update(replace(task, status="paused", paused_until=until), task.version)
    assert paused.wake_at == until
    with pytest.raises(ClaimLost):
        store.claim(task.task_id, "r1", utcnow())
    assert list(store.due(utcnow(), 10)) == []
    assert [t.task_id for t in store.due(until, 10)] == [task.task_id]
    assert store.next_due_after(utcnow()) == until
    forever = store.update(replace(paused, paused_until=None), paused.version)
    assert list(store.due(utcnow() + timedelta(days=400), 10)) == []
    assert store.get(task.task_id).paused_until is None and forever.status == "paused"


def test_the_lifecycle_state_round_trips(store, make_task):
    task = store.get(make_task(due_in=60, run_at="rate(5 minutes)",
                               schedule_kind="rate").task_id)
    until = (utcnow() + timedelta(hours=1)).replace(microsecond=0)
    stored = store.update(replace(task, runs_done=7, extra_run_key="run-abc",
                                  pause_after_run=True, paused_until=until,
                                  runs=[Run("skipped-x", 0, until, until, "skipped",
                                            error="missed")]), task.version)
    again = store.get(task.task_id)
    assert (again.runs_done, again.extra_run_key, again.pause_after_run,
            again.paused_until) == (7, "run-abc", True, until)
    assert again.runs[0].outcome == "skipped" and again.version == stored.version


def test_a_returned_task_is_the_callers_own_copy(store, make_task):
    task = make_task(due_in=60, payload={"url": "https://example.com", "data": {"n": 1}})
    read = store.get(task.task_id)
    read.payload["data"]["n"] = 2
    read.status = "completed"
    task.payload["data"]["n"] = 3
    again = store.get(task.task_id)
    assert again.payload["data"]["n"] == 1 and again.status == "scheduled"


def test_running_task_is_due_again_only_after_its_lease(store, make_task):
    store = store
    task = make_task()
    store.claim(task.task_id, "r1", utcnow())
    assert [t.task_id for t in store.due(utcnow(), 10)] == []
    later = utcnow() + timedelta(minutes=6)
    assert [t.task_id for t in store.due(later, 10)] == [task.task_id]


def test_list_pages_beyond_moto_page_size(store, make_task):
    created = {make_task(due_in=60).task_id for _ in range(120)}
    seen, token = [], None
    while True:
        page = store.list(None, 50, token)
        seen += [t.task_id for t in page.tasks]
        token = page.next_token
        if not token:
            break
    assert len(seen) == 120 and set(seen) == created


def test_due_in_priority_then_time_order(store, make_task):
    for i in range(30):
        make_task(due_in=3600 + i, priority=i % 10)
    due = [make_task(due_in=-60, priority=2), make_task(due_in=-30, priority=9),
           make_task(due_in=-90, priority=2), make_task(due_in=-10, priority=0),
           make_task(due_in=-20, priority=9)]
    found = list(store.due(utcnow(), 2))  # pages of two
    expected = sorted(due, key=lambda t: (-t.priority, t.next_run_at))
    assert [t.task_id for t in found] == [t.task_id for t in expected]


def test_finished_and_cancelled_tasks_are_never_due(store, make_task):
    done, cancelled = make_task(), make_task(due_in=30)
    claimed = store.claim(done.task_id, "r", utcnow())
    store.finish(claimed, Run("r", 1, utcnow(), utcnow(), "succeeded"), Transition("completed"),
                 utcnow())
    _cancel(store, cancelled.task_id)
    assert list(store.due(utcnow() + timedelta(days=1), 10)) == []
    assert store.next_due_after(utcnow()) is None


def test_recurring_finish_makes_it_due_at_the_next_firing(store, make_task):
    task = make_task(run_at="rate(5 minutes)", schedule_kind="rate")
    claimed = store.claim(task.task_id, "r", utcnow())
    following = (utcnow() + timedelta(minutes=5)).replace(microsecond=0)
    store.finish(claimed, Run("r", 1, utcnow(), utcnow(), "succeeded"),
                 Transition("scheduled", following, following, reset_attempts=True), utcnow())
    stored = store.get(task.task_id)
    assert stored.status == "scheduled" and stored.next_run_at == following
    assert stored.attempts == 0  # the next firing counts its own attempts
    assert [t.task_id for t in store.due(following, 10)] == [task.task_id]
    assert store.next_due_after(utcnow()) == following


def test_next_due_after_is_the_earliest_waiting_time(store, make_task):
    assert store.next_due_after(utcnow()) is None
    make_task(due_in=-5)
    later = make_task(due_in=90, priority=1)
    make_task(due_in=30, priority=8)
    soon = store.get(make_task(due_in=20, priority=3).task_id)
    assert store.next_due_after(utcnow()) == soon.next_run_at
    assert store.next_due_after(soon.next_run_at + timedelta(seconds=11)) == later.next_run_at


def test_recover_running_makes_cut_off_runs_due_now(store, make_task):
    task = make_task()
    store.claim(task.task_id, "mine-dead", utcnow())
    other = make_task()
    store.claim(other.task_id, "someone-else", utcnow())
    assert list(store.due(utcnow(), 10)) == []
    assert store.recover_running(utcnow(), "mine-") == 1  # only its own runs
    assert [t.task_id for t in store.due(utcnow(), 10)] == [task.task_id]
    again = store.claim(task.task_id, "new", utcnow())
    assert again.run_id == "new" and again.attempts == 2


def test_list_by_status_is_newest_first_and_pages(store, make_task):
    tasks = [make_task(due_in=60 + i) for i in range(5)]
    _cancel(store, tasks[0].task_id)
    page = store.list("scheduled", 2, None)
    assert len(page.tasks) == 2 and page.next_token
    rest = store.list("scheduled", 10, page.next_token)
    ids = [t.task_id for t in page.tasks + rest.tasks]
    assert sorted(ids) == sorted(t.task_id for t in tasks[1:])
    assert rest.next_token is None
    created = [t.created_at for t in page.tasks + rest.tasks]
    assert created == sorted(created, reverse=True)


@pytest.mark.parametrize("status", [None, "scheduled"])
def test_list_finds_a_name_part_in_any_case_and_pages(store, make_task, monkeypatch, status):
    from chalicelib.store import dynamodb

    # Small reads, so DynamoDB's search follows several pages per call and runs out of its
    # read budget before filling one (a short page with a token).
    monkeypatch.setattr(dynamodb, "SEARCH_READS", 2)
    monkeypatch.setattr(dynamodb, "SEARCH_PAGE", 7)
    wanted = {make_task(due_in=60 + i, name=f"Nightly Ünïcode report {i}").task_id
              for i in range(7)}
    for i in range(60):
        make_task(due_in=60, name=f"other {i}")
    make_task(due_in=60)  # no name at all
    seen, token = [], None
    while True:
        page = store.list(status, 3, token, name="ünÏCODE")
        assert len(page.tasks) <= 3
        seen += [t.task_id for t in page.tasks]
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == sorted(wanted)  # each match once: nothing skipped or repeated
    assert [t.name for t in _search_all(store, "scheduled", "REPORT 3")] == [
        "Nightly Ünïcode report 3"]
    assert _search_all(store, None, "absent") == []


def _search_all(store, status, name):
    found, token = [], None
    while True:
        page = store.list(status, 50, token, name=name)
        found += page.tasks
        token = page.next_token
        if not token:
            return found


def test_a_token_is_refused_under_another_name_filter(store, make_task):
    for i in range(3):
        make_task(due_in=60, name=f"job {i}")
    page = store.list(None, 1, None, name="job")
    assert page.next_token
    with pytest.raises(InvalidPageToken):
        store.list(None, 1, page.next_token, name="other")
    with pytest.raises(InvalidPageToken):
        store.list(None, 1, page.next_token)


@pytest.mark.parametrize("status", [None, "scheduled"])
def test_list_filters_on_one_tag_with_the_other_filters_and_pages(store, make_task, status):
    billing = {make_task(due_in=60, tags={"team": "billing", "env": "prod"},
                         name=f"invoice {i}").task_id for i in range(7)}
    make_task(due_in=60, tags={"team": "ops"}, name="invoice x")
    make_task(due_in=60, tags={"team:billing": "yes"})
    make_task(due_in=60)
    seen, token = [], None
    while True:
        page = store.list(status, 3, token, tag=("team", "billing"))
        seen += [t.task_id for t in page.tasks]
        token = page.next_token
        if not token:
            break
    assert sorted(seen) == sorted(billing)
    named = store.list(status, 50, None, name="INVOICE 3", tag=("team", "billing"))
    assert [t.name for t in named.tasks] == ["invoice 3"]
    assert store.list(status, 50, None, tag=("team", "")).tasks == []
    with pytest.raises(InvalidPageToken):
        first = store.list(status, 3, None, tag=("team", "billing"))
        store.list(status, 3, first.next_token, tag=("team", "ops"))


# ---------------------------------------------------------------- flow-control keys

def flow_state(**limits):
    return flow.FlowState(key="billing-api", limits=flow.Limits(**limits))


def test_a_flow_key_not_stored_is_version_0_without_limits(store):
    fresh = store.get_flow("nobody")
    assert (fresh.version, fresh.limits, fresh.slots) == (0, flow.Limits(), {})
    assert store.count_waiters("nobody") == 0 and store.waiters("nobody", 5) == []


def test_flow_state_round_trips_and_is_written_only_on_its_version(store):
    now = utcnow()
    granted = flow.acquire(flow_state(rate=5, parallelism=2), "run-1", now,
                           now + LEASE).state
    assert store.put_flow(granted, 0).version == 1
    again = store.get_flow("billing-api")
    assert again.slots == {"run-1": now + LEASE} and again.next_start == granted.next_start
    assert again.limits == flow.Limits(rate=5, parallelism=2) and again.version == 1
    with pytest.raises(FlowConflict) as stale:
        store.put_flow(granted, 0)
    assert stale.value.current.version == 1
    assert store.put_flow(flow.release(again, "run-1", now), 1).version == 2
    assert store.get_flow("billing-api").slots == {}


def test_slots_are_acquired_released_and_a_crashed_runs_slot_frees_at_its_lease_end(store):
    now = utcnow()

    def ask(run_id, at):
        current = store.get_flow("billing-api")
        decision = flow.acquire(current if current.version else flow_state(parallelism=2),
                                run_id, at, at + LEASE)
        if decision.granted:
            store.put_flow(decision.state, current.version)
        return decision

    assert ask("a", now).granted and ask("crashed", now).granted
    refused = ask("c", now + timedelta(seconds=1))
    assert not refused.granted and refused.retry_at == now + LEASE
    current = store.get_flow("billing-api")
    store.put_flow(flow.release(current, "a", now), current.version)  # a ended
    assert ask("c", now + timedelta(seconds=2)).granted
    assert not ask("d", now + timedelta(seconds=3)).granted  # c and the crashed run
    assert ask("d", now + LEASE).granted  # the crashed run's lease ended: no release needed
    assert set(store.get_flow("billing-api").slots) == {"c", "d"}


def test_the_rate_window_spaces_starts_as_stored(store):
    now = utcnow()
    first = flow.acquire(flow_state(rate=2, period="second"), "a", now, now + LEASE)
    store.put_flow(first.state, 0)
    stored = store.get_flow("billing-api")
    early = flow.acquire(stored, "b", now + timedelta(milliseconds=499), now + LEASE)
    assert not early.granted and early.retry_at == now + timedelta(milliseconds=500)
    assert flow.acquire(stored, "b", now + timedelta(milliseconds=500), now + LEASE).granted


def test_of_racing_acquires_on_one_version_exactly_one_is_stored(store):
    now = utcnow()
    start = store.put_flow(flow_state(parallelism=1), 0)
    results = together(*(
        (lambda run_id=run_id: store.put_flow(
            flow.acquire(start, run_id, now, now + LEASE).state, start.version))
        for run_id in ("a", "b", "c", "d")))
    stored = [result for result in results if isinstance(result, flow.FlowState)]
    assert len(stored) == 1 and sum(isinstance(r, FlowConflict) for r in results) == 3
    assert store.get_flow("billing-api").slots == stored[0].slots


def test_a_keys_queue_reads_in_entry_order_and_counts_past_a_page(store):
    entries = [f"{9 - priority}#2030-05-19T09:00:00.{n:03d}Z#task-{n}"
               for n, priority in enumerate([5, 9, 5, 0, 7] * 12)]
    for n, entry in enumerate(entries):
        store.add_waiter("billing-api", entry, f"task-{n}")
    store.add_waiter("billing-api", entries[0], "task-0")  # twice: still one entry
    store.add_waiter("other-key", "5#x#y", "y")
    assert store.count_waiters("billing-api") == 60
    first = store.waiters("billing-api", 3)
    assert [task_id for _, task_id in first] == ["task-1", "task-6", "task-11"]  # priority 9
    assert [entry for entry, _ in store.waiters("billing-api", 60)] == sorted(entries)
    store.remove_waiter("billing-api", first[0][0])
    store.remove_waiter("billing-api", "no-such-entry")
    assert store.count_waiters("billing-api") == 59
    assert store.waiters("billing-api", 1)[0][1] == "task-6"


def test_swap_slot_frees_and_turns_a_reservation_into_a_runs_slot_atomically(store):
    now = utcnow()
    stored = store.put_flow(replace(flow_state(parallelism=2),
                                    slots={"run-a": now + LEASE,
                                           flow.reservation("t1"): now + LEASE}), 0)
    taken = store.swap_slot("billing-api", remove=flow.reservation("t1"),
                            add=("run-b", now + 2 * LEASE))
    assert taken.slots == {"run-a": now + LEASE, "run-b": now + 2 * LEASE}
    assert taken.version == stored.version + 1 == store.get_flow("billing-api").version
    # The reservation is gone: a second taker of it gets nothing and changes nothing.
    assert store.swap_slot("billing-api", remove=flow.reservation("t1"),
                           add=("run-c", now)) is None
    freed = store.swap_slot("billing-api", remove="run-a")
    assert freed.slots == {"run-b": now + 2 * LEASE}
    assert store.swap_slot("billing-api", remove="gone-already").slots == freed.slots
    assert store.swap_slot("no-such-key", remove="x") is None


def test_take_slot_holds_a_slot_only_below_the_parallelism_and_never_under_a_rate(store):
    now = utcnow()
    store.put_flow(flow_state(parallelism=2), 0)
    results = together(*((lambda n=n: store.take_slot("billing-api", f"run-{n}",
                                                       now + LEASE)) for n in range(5)))
    assert sorted(taken for taken, _ in results) == [False, False, False, True, True]
    assert len(store.get_flow("billing-api").slots) == 2
    refused, seen = store.take_slot("billing-api", "run-9", now + LEASE)
    assert not refused and len(seen.slots) == 2  # the caller judges the state exactly
    store.put_flow(flow.FlowState("rated", flow.Limits(rate=5, parallelism=9)), 0)
    assert store.take_slot("rated", "run-1", now + LEASE)[0] is False
    assert store.take_slot("not-stored", "run-1", now + LEASE) == (
        False, flow.FlowState("not-stored", flow.Limits()))


def test_wake_waiting_moves_only_a_task_still_queued_at_that_entry(store, make_task):
    task = make_task(due_in=600)
    queued = store.update(replace(store.get(task.task_id), flow_waiting="4#t#x#1"),
                          store.get(task.task_id).version)
    at = utcnow().replace(microsecond=0)
    assert store.wake_waiting(task.task_id, "4#t#x#0", at, at) is None  # another queueing
    woken = store.wake_waiting(task.task_id, "4#t#x#1", at, at)
    assert woken.next_run_at == at and woken.flow_waiting is None
    assert woken.version == queued.version + 1 == store.get(task.task_id).version
    assert store.wake_waiting(task.task_id, "4#t#x#1", at, at) is None  # woken once
    assert [t.task_id for t in store.due(at, 10)] == [task.task_id]
    assert store.wake_waiting("no-such-task", "4#t#x#1", at, at) is None


def test_a_tenants_listing_pages_through_its_own_tasks_only(store, make_task):
    mine = {make_task(tenant="alpha", name=f"a{n}").task_id for n in range(5)}
    others = {make_task(tenant="beta", name=f"b{n}").task_id for n in range(3)}
    for status in (None, "scheduled"):
        found, token = [], None
        while True:
            page = store.list(status, 2, token, tenant="alpha")
            found += [task.task_id for task in page.tasks]
            token = page.next_token
            if not token:
                break
        assert sorted(found) == sorted(mine)
    assert {t.task_id for t in store.list(None, 10, None, name="b", tenant="beta").tasks
            } == others
    assert store.list(None, 10, None, tenant="gamma").tasks == []
    token = store.list(None, 1, None, tenant="alpha").next_token
    with pytest.raises(InvalidPageToken):
        store.list(None, 1, token, tenant="beta")
    with pytest.raises(InvalidPageToken):
        store.list(None, 1, token)  # nor an admin's listing of everyone


def test_a_tenants_waiting_count_is_kept_atomically_under_its_limit(store):
    results = together(*((lambda: store.count_waiting("alpha", +1, below=2))
                         for _ in range(5)))
    assert sorted(results) == [False, False, False, True, True]
    assert store.waiting_count("alpha") == 2 and store.waiting_count("beta") == 0
    assert store.count_waiting("alpha", -1) and store.waiting_count("alpha") == 1
    store.count_waiting("alpha", -1)
    store.count_waiting("alpha", -1)  # never below 0
    assert store.waiting_count("alpha") == 0
    assert store.count_waiting("alpha", +1) and store.waiting_count("alpha") == 1
