"""Managing tasks on the local stage as a user runs it: `make dev`'s server process, a real
receiver, restarts; pause, resume, until, run now, catch-up after downtime, a window."""
import time
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest

from chalicelib.models import parse_iso
from tests.conftest import seconds_from_now, wait_for

pytestmark = pytest.mark.e2e  # server processes


def wait_until(moment):
    while datetime.now(timezone.utc) < moment:
        time.sleep(0.05)


def test_a_pause_holds_through_its_firing_and_a_restart_until_resumed(servers, receiver):
    server = servers().start()
    run_at = seconds_from_now(4)  # the pause must land first, on a busy machine too
    task_id = server.schedule(receiver.url, run_at)
    status, paused = server.request("POST", f"/tasks/{task_id}/pause")
    assert status == 200 and paused["status"] == "paused"
    wait_until(run_at + timedelta(seconds=1))
    server.stop()
    server.start()
    time.sleep(1)  # the restarted dispatcher has looked at the store: nothing may fire
    assert receiver.requests == []
    assert server.request("GET", f"/tasks/{task_id}")[1]["status"] == "paused"
    status, resumed = server.request("POST", f"/tasks/{task_id}/resume")
    assert status == 200 and resumed["status"] == "scheduled"  # catch_up latest: at once
    server.wait_status(task_id, "completed")
    assert len(receiver.requests) == 1


def test_a_pause_until_resumes_by_itself_on_time(servers, receiver):
    server = servers().start()
    run_at = seconds_from_now(3)  # the pause must land first, on a busy machine too
    task_id = server.schedule(receiver.url, run_at)
    until = seconds_from_now(5)
    status, _ = server.request("POST", f"/tasks/{task_id}/pause",
                               {"until": until.strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert status == 200
    task = server.wait_status(task_id, "completed")
    [request] = receiver.requests
    assert until <= request["received_at"] < until + timedelta(seconds=3)
    assert task["paused_until"] is None


def test_run_now_runs_once_with_its_own_key_and_keeps_the_schedule(servers, receiver):
    server = servers().start()
    task_id = server.schedule(receiver.url, seconds_from_now(3600),
                              run_at_text="cron(0 9 * * ? *)")
    before = server.request("GET", f"/tasks/{task_id}")[1]
    status, _ = server.request("POST", f"/tasks/{task_id}/run")
    assert status == 202
    wait_for(lambda: len(receiver.requests) == 1)
    assert f"{task_id}:run-" in receiver.requests[0]["headers"]["idempotency-key"]
    wait_for(lambda: server.request("GET", f"/tasks/{task_id}")[1]["runs_done"] == 1)
    after = server.request("GET", f"/tasks/{task_id}")[1]
    assert after["status"] == "scheduled" and after["next_run_at"] == before["next_run_at"]


@pytest.mark.parametrize("catch_up, delivered, skipped", [("latest", 1, 2), ("none", 0, 3)])
def test_firings_missed_while_the_server_was_down_follow_catch_up(servers, receiver,
                                                                  catch_up, delivered,
                                                                  skipped):
    from chalicelib.store.sqlite import SQLiteTaskStore

    server = servers().start()
    task_id = server.schedule(receiver.url, seconds_from_now(0),
                              run_at_text="rate(5 minutes)", catch_up=catch_up)
    server.stop()
    # Eighteen minutes of downtime, as the data file would have it: the task made that
    # much earlier, its firings 13, 8 and 3 minutes ago never run (the last one is later
    # than lateness: missed).
    store = SQLiteTaskStore(server.data_dir / "tasks.sqlite3")
    task = store.get(task_id)
    shift = timedelta(minutes=18)
    store.update(replace(task, created_at=task.created_at - shift,
                         next_run_at=task.next_run_at - shift,
                         firing_at=task.firing_at - shift), task.version)
    server.start()
    wait_for(lambda: server.request("GET", f"/tasks/{task_id}")[1]["runs"])
    shown = server.request("GET", f"/tasks/{task_id}")[1]
    outcomes = [run["outcome"] for run in shown["runs"]]
    assert outcomes.count("skipped") == skipped and outcomes.count("succeeded") == delivered
    assert len(receiver.requests) == delivered
    assert parse_iso(shown["next_run_at"]) > datetime.now(timezone.utc)


def test_a_window_spreads_twelve_tasks_due_together(servers, receiver):
    server = servers().start()
    run_at = seconds_from_now(2)
    tasks = {server.schedule(receiver.url, run_at, window_minutes=1) for _ in range(12)}
    moments = {task_id: parse_iso(server.request("GET", f"/tasks/{task_id}")[1]["next_run_at"])
               for task_id in tasks}
    assert all(run_at <= moment < run_at + timedelta(minutes=1) for moment in moments.values())
    assert len(set(moments.values())) >= 8  # spread, not one herd
    # The same moments after a restart: a stable function of the task and its firing (a
    # task whose moment came while the server restarted has run since, not before it).
    server.stop()
    server.start()
    restarted = datetime.now(timezone.utc)
    for task_id, moment in moments.items():
        shown = server.request("GET", f"/tasks/{task_id}")[1]
        if shown["status"] == "scheduled":
            assert parse_iso(shown["next_run_at"]) == moment
        else:
            assert parse_iso(shown["runs"][0]["started_at"]) >= moment, shown
    # Watch the first few due after the restart arrive at their own moments (waiting out
    # the whole minute would only make the suite slower), then cancel the rest.
    soonest = sorted(((task_id, moment) for task_id, moment in moments.items()
                      if moment >= restarted + timedelta(seconds=1)),
                     key=lambda pair: pair[1])[:3]
    assert len(soonest) == 3
    for task_id, _ in soonest:
        server.wait_status(task_id, "completed", timeout=90)
    for task_id, moment in soonest:
        arrived = next(r["received_at"] for r in receiver.requests
                       if r["headers"]["idempotency-key"].startswith(task_id))
        assert moment <= arrived < moment + timedelta(seconds=3)
    assert all(r["received_at"] >= moments[r["headers"]["idempotency-key"][:36]]
               for r in receiver.requests)  # none early, not even those due at the restart
    for task_id in tasks - {task_id for task_id, _ in soonest}:
        server.request("DELETE", f"/tasks/{task_id}")


def test_a_patch_moves_the_firing_the_dispatcher_waits_for(servers, receiver):
    server = servers().start()
    task_id = server.schedule(receiver.url, seconds_from_now(3600))
    sooner = seconds_from_now(3)  # the PATCH must land first, on a busy machine too
    status, changed = server.request("PATCH", f"/tasks/{task_id}", {
        "run_at": sooner.strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert status == 200 and changed["version"] == 2
    server.wait_status(task_id, "completed")
    assert sooner <= receiver.requests[0]["received_at"] < sooner + timedelta(seconds=3)
