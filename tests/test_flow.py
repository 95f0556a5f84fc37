"""chalicelib.flow: slots as leases and starts spaced by the rate."""
from datetime import datetime, timedelta, timezone


from chalicelib import flow

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


def test_a_reservation_keeps_room_for_a_woken_task_until_it_comes_or_its_hold_ends():
    current = state(parallelism=1)
    assert current.room(T0) == 1
    reserved, [start] = flow.reserve(current, ["woken"], T0, timedelta(minutes=3))
    assert start == T0 and reserved.room(T0) == 0 and reserved.reserved(T0) == 1
    assert not flow.acquire(reserved, "newcomer", T0, T0 + LEASE, "other").granted
    taken = flow.acquire(reserved, "run-1", T0, T0 + LEASE, "woken")
    assert taken.granted and taken.state.slots == {"run-1": T0 + LEASE}
    assert taken.state.running(T0) == 1 and taken.state.reserved(T0) == 0
    expired = T0 + timedelta(minutes=3)
    assert flow.acquire(reserved, "newcomer", expired, expired + LEASE, "other").granted


def test_under_a_rate_reservations_take_the_next_starts_spaced_and_keep_newcomers_back():
    current = flow.acquire(state(rate=4), "a", T0, T0 + LEASE).state
    assert current.room(T0) == flow.RATE_AHEAD
    reserved, starts = flow.reserve(current, ["b", "c"], T0, timedelta(minutes=3))
    assert starts == [T0 + timedelta(milliseconds=250), T0 + timedelta(milliseconds=500)]
    assert reserved.next_start == T0 + timedelta(milliseconds=750)
    assert reserved.room(T0) == flow.RATE_AHEAD - 2
    later = T0 + timedelta(seconds=1)  # past every reserved start: a newcomer still waits
    assert not flow.acquire(reserved, "newcomer", later, later + LEASE, "x").granted
    both = state(rate=4, parallelism=2)
    assert both.room(T0) == 2 and flow.reserve(both, ["x", "y"], T0, LEASE)[1] == [
        T0, T0 + timedelta(milliseconds=250)]


def test_a_late_woken_task_never_starts_closer_than_the_spacing_to_the_last_start():
    current = flow.acquire(state(rate=1), "a", T0, T0 + LEASE).state
    reserved, [start_b, start_c] = flow.reserve(current, ["b", "c"], T0, LEASE)
    late = start_b + timedelta(milliseconds=800)  # b comes late; c is on time right after
    b = flow.acquire(reserved, "run-b", late, late + LEASE, "b")
    assert b.granted and b.state.last_start == late
    c = flow.acquire(b.state, "run-c", start_c, start_c + LEASE, "c")
    assert not c.granted and c.retry_at == late + timedelta(seconds=1)
    assert flow.acquire(b.state, "run-c", c.retry_at, c.retry_at + LEASE, "c").granted
