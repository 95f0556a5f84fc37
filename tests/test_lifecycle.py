"""chalicelib.lifecycle: bounds, spread, catch-up, overlap and what a run leads to."""
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib import lifecycle
from chalicelib.models import Task

T0 = datetime(2030, 5, 19, 9, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def recurring(run_at="cron(0 * * * ? *)", **fields) -> Task:
    """An hourly task whose pending firing is T0."""
    fields = {"next_run_at": T0, "firing_at": T0, **fields}
    return Task(task_id=fields.pop("task_id", "0b9c7e1e-8a55-4c51-9a1f-1d4f0a3c2b10"),
                action="log", payload={"message": "x"}, run_at=run_at,
                schedule_kind="cron" if run_at.startswith("cron") else "rate",
                created_at=T0 - timedelta(days=1), **fields)


def one_time(**fields) -> Task:
    fields = {"next_run_at": T0, "firing_at": T0, **fields}
    return Task(task_id="5d7c1b2a-0000-4000-8000-00000000000a", action="log",
                payload={"message": "x"}, run_at="2030-05-19T09:00:00Z", schedule_kind="once",
                created_at=T0 - timedelta(days=1), **fields)


def test_start_and_end_bound_the_firings():
    task = recurring(start_at="2030-05-19T12:30:00Z", end_at="2030-05-19T15:00:00Z")
    assert lifecycle.next_firing(task, T0) == T0.replace(hour=13)
    assert lifecycle.next_firing(task, T0.replace(hour=14)) == T0.replace(hour=15)
    assert lifecycle.next_firing(task, T0.replace(hour=15)) is None


def test_a_rate_counts_from_its_start():
    task = recurring("rate(30 minutes)", start_at="2030-05-20T08:10:00Z")
    assert lifecycle.next_firing(task, T0) == datetime(2030, 5, 20, 8, 10, tzinfo=timezone.utc)
    assert lifecycle.next_firing(task, datetime(2030, 5, 20, 8, 10, tzinfo=timezone.utc)) == \
        datetime(2030, 5, 20, 8, 40, tzinfo=timezone.utc)


def test_the_spread_is_stable_within_the_window_and_never_early():
    moments = set()
    for index in range(200):
        task = recurring(task_id=f"00000000-0000-4000-8000-{index:012d}", window_minutes=10)
        moment = lifecycle.spread(task, T0)
        assert T0 <= moment < T0 + timedelta(minutes=10)
        assert moment == lifecycle.spread(replace(task), T0)  # the same on every read
        moments.add(moment)
    assert len(moments) > 100  # spread out, not bunched
    assert lifecycle.spread(recurring(), T0) == T0  # no window: the firing itself


def test_upcoming_stops_at_max_runs_and_end_at():
    task = recurring(max_runs=5, runs_done=3)
    assert len(lifecycle.upcoming(task, 5)) == 2
    ending = recurring(end_at="2030-05-19T11:00:00Z")
    assert lifecycle.upcoming(ending, 5) == [T0, T0.replace(hour=10), T0.replace(hour=11)]
    windowed = recurring(window_minutes=30)
    following = lifecycle.upcoming(windowed, 3)
    assert following[1] == lifecycle.spread(windowed, T0.replace(hour=10))


@pytest.mark.parametrize("late", [timedelta(seconds=30), lifecycle.MISSED_AFTER])
def test_a_firing_that_is_only_late_is_not_missed(late):
    assert lifecycle.catch_up(recurring(catch_up="none"), T0 + late) is None


def test_latest_runs_the_newest_missed_firing_once_and_records_the_others():
    resolution = lifecycle.catch_up(recurring(), T0 + timedelta(hours=3, minutes=20))
    assert resolution.run_firing == T0 + timedelta(hours=3)
    assert [run.started_at for run in resolution.skipped] == [
        T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2)]
    assert {run.outcome for run in resolution.skipped} == {"skipped"}


def test_none_skips_every_missed_firing_and_waits_for_the_next():
    resolution = lifecycle.catch_up(recurring(catch_up="none"), T0 + timedelta(hours=2, minutes=5))
    assert resolution.run_firing is None
    assert resolution.firing_at == resolution.next_run_at == T0 + timedelta(hours=3)
    assert len(resolution.skipped) == 3


def test_none_on_a_one_time_task_finishes_it():
    resolution = lifecycle.catch_up(one_time(catch_up="none"), T0 + timedelta(minutes=10))
    assert resolution.finished and resolution.run_firing is None
    assert [run.started_at for run in resolution.skipped] == [T0]
    assert lifecycle.catch_up(one_time(), T0 + timedelta(minutes=10)).run_firing == T0


def test_all_runs_each_missed_firing_oldest_first_at_most_100():
    few = lifecycle.catch_up(recurring(catch_up="all"), T0 + timedelta(hours=5, minutes=1))
    assert few.run_firing == T0 and few.skipped == []
    many = lifecycle.catch_up(recurring("rate(1 minute)", catch_up="all"),
                              T0 + timedelta(minutes=250))
    assert many.run_firing == T0 + timedelta(minutes=151)  # the 100 newest of 251 run
    assert "151" in many.skipped[0].error


def test_catching_up_months_of_a_one_minute_rate_is_quick():
    resolution = lifecycle.catch_up(recurring("rate(1 minute)"), T0 + timedelta(days=120))
    assert resolution.run_firing == T0 + timedelta(days=120)
    assert len(resolution.skipped) == 100


def test_resume_follows_catch_up_with_no_grace():
    paused = recurring(status="paused", catch_up="none")
    resumed, skipped = lifecycle.resumed(paused, T0 + timedelta(seconds=30))
    assert resumed.status == "scheduled" and resumed.next_run_at == T0 + timedelta(hours=1)
    assert len(skipped) == 1
    resumed, _ = lifecycle.resumed(recurring(status="paused"), T0 + timedelta(minutes=90))
    assert resumed.next_run_at == T0 + timedelta(minutes=90)  # latest: at once
    assert resumed.firing_at == T0 + timedelta(hours=1)
    early, skipped = lifecycle.resumed(recurring(status="paused"), T0 - MINUTE)
    assert early.next_run_at == T0 and skipped == []


def _after(task, success=True, started=T0, ended=T0 + MINUTE):
    return lifecycle.after_run(task, success, True, None, started, ended)[0]


def test_after_a_run_the_next_firing_or_a_retry():
    change = _after(recurring(attempts=1))
    assert (change.status, change.firing_at, change.counts_run) == (
        "scheduled", T0 + timedelta(hours=1), True)
    retry = _after(recurring(attempts=1), success=False)
    assert retry.status == "retrying" and not retry.counts_run


def test_max_runs_completes_the_task_with_its_last_run():
    assert _after(recurring(max_runs=3, runs_done=2)).status == "completed"
    assert _after(recurring(max_runs=3, runs_done=1)).status == "scheduled"


def test_overlap_skip_records_the_firings_that_came_during_the_run():
    change = _after(recurring("rate(1 minute)", attempts=1), ended=T0 + timedelta(minutes=3,
                                                                                 seconds=5))
    assert change.firing_at == T0 + timedelta(minutes=4)
    assert [run.started_at for run in change.skipped] == [T0 + MINUTE * k for k in (1, 2, 3)]


def test_overlap_buffer_one_runs_once_right_after_the_run():
    ended = T0 + timedelta(minutes=3, seconds=5)
    change = _after(recurring("rate(1 minute)", overlap="buffer_one", attempts=1), ended=ended)
    assert change.next_run_at == ended and change.firing_at == T0 + 3 * MINUTE
    assert len(change.skipped) == 2


def test_an_extra_run_leaves_the_pending_firing_and_may_pause_again():
    extra = recurring(extra_run_key="run-1", firing_at=T0 + timedelta(hours=1))
    change = _after(extra)
    assert change.firing_at == T0 + timedelta(hours=1) and change.counts_run
    paused = _after(replace(extra, pause_after_run=True))
    assert paused.status == "paused"


def test_upcoming_of_a_pending_extra_run_keeps_the_firing_it_leaves():
    extra = recurring(extra_run_key="run-1", next_run_at=T0 - timedelta(minutes=30))
    assert lifecycle.upcoming(extra, 3) == [T0 - timedelta(minutes=30), T0,
                                            T0 + timedelta(hours=1)]
    paused_after = replace(extra, pause_after_run=True)
    assert lifecycle.upcoming(paused_after, 3) == [T0 - timedelta(minutes=30)]


def test_with_catch_up_all_firings_that_came_during_a_run_follow_overlap():
    task = recurring("rate(1 minute)", catch_up="all", attempts=1)
    # No backlog: the run started at its firing and took 90 s; 09:01 came meanwhile.
    change = _after(task, started=T0, ended=T0 + timedelta(seconds=90))
    assert change.firing_at == T0 + 2 * MINUTE
    assert [run.started_at for run in change.skipped] == [T0 + MINUTE]
    # A backlog (firings due before the run started) drains oldest first.
    behind = _after(task, started=T0 + 5 * MINUTE, ended=T0 + 5 * MINUTE + timedelta(seconds=5))
    assert behind.firing_at == T0 + MINUTE and behind.skipped == []


def test_a_task_paused_while_retrying_resumes_retrying_with_its_attempts():
    retry_at = T0 + timedelta(minutes=30)
    paused = one_time(status="paused", attempts=1, next_run_at=retry_at, catch_up="none")
    resumed, skipped = lifecycle.resumed(paused, T0 + timedelta(minutes=5))
    assert (resumed.status, resumed.attempts, resumed.next_run_at) == ("retrying", 1, retry_at)
    assert skipped == []
    late, _ = lifecycle.resumed(paused, T0 + timedelta(hours=2))
    assert late.status == "retrying" and late.next_run_at == T0 + timedelta(hours=2)
    # A recurring retry gives way to the firings that came meanwhile (catch_up latest).
    hourly = recurring(status="paused", attempts=2, next_run_at=T0 + timedelta(minutes=20))
    resumed, skipped = lifecycle.resumed(hourly, T0 + timedelta(hours=2, minutes=10))
    assert (resumed.status, resumed.attempts) == ("scheduled", 0)
    assert resumed.firing_at == T0 + timedelta(hours=2)
    assert [run.started_at for run in skipped] == [T0 + timedelta(hours=1)]
