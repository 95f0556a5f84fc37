"""chalicelib.flow: slots as leases and starts spaced by the rate."""
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import flow
from chalicelib.errors import FlowConflict

T0 = datetime(2030, 5, 19, 9, 0, tzinfo=timezone.utc)
LEASE = timedelta(minutes=2)


def state(**limits):
    return flow.FlowState(key="billing-api", limits=flow.Limits(**limits))


def test_parallelism_holds_a_slot_per_run_until_released():
    current = state(parallelism=2)
    for run_id in ("a", "b"):
        decision = flow.acquire(current, run_id, T0, T0 + LEASE)
        assert decision.granted
        current = decision.state
    third = flow.acquire(current, "c", T0, T0 + LEASE)
    assert not third.granted and third.retry_at == T0 + LEASE
    current = flow.release(current, "a", T0 + timedelta(seconds=5))
    assert flow.acquire(current, "c", T0 + timedelta(seconds=5), T0 + LEASE).granted


def test_a_dead_runs_slot_frees_when_its_lease_ends():
    current = flow.acquire(state(parallelism=1), "dead", T0, T0 + LEASE).state
    assert not flow.acquire(current, "next", T0 + LEASE - timedelta(seconds=1),
                            T0 + 2 * LEASE).granted
    later = flow.acquire(current, "next", T0 + LEASE, T0 + 2 * LEASE)
    assert later.granted and set(later.state.slots) == {"next"}
    assert later.state.running(T0 + LEASE) == 1


def test_starts_are_spaced_so_a_period_never_holds_more_than_rate():
    current, starts, moment = state(rate=5, period="second"), [], T0
    while len(starts) < 20:
        decision = flow.acquire(current, f"r{len(starts)}", moment, moment + LEASE)
        if decision.granted:
            starts.append(moment)
            current = flow.release(decision.state, f"r{len(starts) - 1}", moment)
        else:
            moment = decision.retry_at
    assert starts[-1] - starts[0] == timedelta(milliseconds=200) * 19  # 3.8 s for 20
    for first in starts:
        in_window = [s for s in starts if first <= s < first + timedelta(seconds=1)]
        assert len(in_window) <= 5


def test_the_same_run_asking_twice_holds_one_slot():
    current = flow.acquire(state(parallelism=1, rate=1, period="minute"), "a", T0,
                           T0 + LEASE).state
    again = flow.acquire(current, "a", T0, T0 + LEASE)
    assert again.granted and list(again.state.slots) == ["a"]


def test_limits_without_a_rate_never_delay_by_time():
    current = state(parallelism=3)
    decision = flow.acquire(current, "a", T0, T0 + LEASE)
    assert decision.state.next_start is None
    assert flow.Limits(parallelism=3).spacing == timedelta(0)
    assert flow.Limits(rate=10, period="minute").spacing == timedelta(seconds=6)


# ---------------------------------------------------------------- stored state (contract)

@pytest.fixture(params=["memory", "sqlite"])
def flow_store(request, tmp_path):
    """The adapters that keep flow-control state so far (DynamoDB: the next step)."""
    if request.param == "memory":
        from chalicelib.store.memory import InMemoryTaskStore

        return InMemoryTaskStore()
    from chalicelib.store.sqlite import SQLiteTaskStore

    return SQLiteTaskStore(tmp_path / "tasks.sqlite3")


def test_a_key_not_stored_is_version_0_without_limits(flow_store):
    fresh = flow_store.get_flow("nobody")
    assert (fresh.version, fresh.limits, fresh.slots) == (0, flow.Limits(), {})


def test_state_round_trips_and_writes_only_on_its_version(flow_store):
    first = state(rate=5, parallelism=2)
    granted = flow.acquire(first, "run-1", T0, T0 + LEASE).state
    stored = flow_store.put_flow(granted, 0)
    assert stored.version == 1
    again = flow_store.get_flow("billing-api")
    assert again.slots == {"run-1": T0 + LEASE} and again.next_start == granted.next_start
    assert again.limits == flow.Limits(rate=5, parallelism=2)
    with pytest.raises(FlowConflict) as stale:
        flow_store.put_flow(granted, 0)
    assert stale.value.current.version == 1


def test_of_racing_acquires_on_one_version_exactly_one_is_stored(flow_store):
    from tests.conftest import together

    start = flow_store.put_flow(state(parallelism=1), 0)
    results = together(*(
        (lambda run_id=run_id: flow_store.put_flow(
            flow.acquire(start, run_id, T0, T0 + LEASE).state, start.version))
        for run_id in ("a", "b", "c", "d")))
    stored = [r for r in results if isinstance(r, flow.FlowState)]
    assert len(stored) == 1 and sum(isinstance(r, FlowConflict) for r in results) == 3
    assert flow_store.get_flow("billing-api").slots == stored[0].slots
