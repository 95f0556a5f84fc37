"""Flow control on the local stage as a user runs it: `make dev`'s server process and a real
receiver that counts the requests it is answering at once."""
from datetime import timedelta
from urllib.parse import quote

import pytest

from tests.conftest import seconds_from_now, wait_for

pytestmark = pytest.mark.e2e  # server processes


def test_parallelism_holds_under_a_burst_and_an_unrelated_task_runs_on_time(servers,
                                                                            receiver):
    server = servers().start()
    receiver.delay = 0.15
    run_at = seconds_from_now(4)  # 25 tasks must be stored first, on a busy machine too
    limited = [server.schedule(receiver.url + f"?n={n}", run_at,
                               flow_control={"key": "reports-api", "parallelism": 2})
               for n in range(24)]
    unrelated = server.schedule(receiver.url + "?unrelated", run_at)
    snapshots = []

    def look_while_the_first_runs(request):
        if not snapshots:  # the first run is held here until the rest have queued
            snapshots.append(None)
            wait_for(lambda: snapshots.append(
                server.request("GET", "/flow-control/reports-api")[1])
                or snapshots[-1]["waiting"] > 0)

    receiver.on_request = look_while_the_first_runs
    wait_for(lambda: len(receiver.requests) == 25)
    for task_id in limited + [unrelated]:
        server.wait_status(task_id, "completed")
    assert receiver.most_in_flight <= 3  # 2 of the key, and the unrelated one
    of_key = [r for r in receiver.requests if "unrelated" not in r["path"]]
    assert len({r["path"] for r in of_key}) == 24  # each exactly once
    [plain] = [r for r in receiver.requests if "unrelated" in r["path"]]
    assert plain["received_at"] < run_at + timedelta(seconds=1.5)  # not behind the key's queue
    # The key's burst takes 12 rounds of 0.15 s at least: never more than 2 at once.
    assert of_key[-1]["received_at"] - of_key[0]["received_at"] >= timedelta(seconds=1.5)
    overlap = max(sum(1 for other in of_key
                      if other["received_at"] <= r["received_at"] < other["received_at"]
                      + timedelta(seconds=0.15)) for r in of_key)
    assert overlap <= 2
    shots = snapshots[1:]
    assert shots[-1]["waiting"] > 0  # while the first run is held here, others queue
    assert all(shot["parallelism"] == 2 and shot["running"] <= 2 for shot in shots)
    shown = server.request("GET", "/flow-control/reports-api")[1]
    assert (shown["running"], shown["waiting"]) == (0, 0)
    delayed = [server.request("GET", f"/tasks/{task_id}")[1] for task_id in limited]
    assert all(task["attempts"] == 1 and len(task["runs"]) == 1 for task in delayed)


def test_a_rate_spaces_the_starts_of_a_burst(servers, receiver):
    server = servers().start()
    run_at = seconds_from_now(3)
    tasks = [server.schedule(receiver.url + f"?n={n}", run_at,
                             flow_control={"key": "partner-api", "rate": 5})
             for n in range(20)]
    wait_for(lambda: len(receiver.requests) == 20)
    times = sorted(r["received_at"] for r in receiver.requests)
    assert times[-1] - times[0] >= timedelta(seconds=3)  # 19 gaps of 0.2 s: 3.8 s
    for n, first in enumerate(times):  # no second holds more than 5 starts
        # arrivals, not starts: one more for a network hop's jitter
        assert sum(1 for t in times[n:] if t < first + timedelta(seconds=1)) <= 5 + 1
    for task_id in tasks:
        server.wait_status(task_id, "completed")
    assert server.request("GET", "/flow-control/nobody")[0] == 404


def test_a_key_that_needs_escaping_is_found_as_on_api_gateway(servers, receiver):
    server = servers().start()
    key = "reports api/v2?x=1"
    server.schedule(receiver.url, seconds_from_now(3600),
                    flow_control={"key": key, "parallelism": 1})
    status, shown = server.request("GET", "/flow-control/" + quote(key, safe=""))
    assert status == 200, shown
    assert shown["key"] == key and shown["parallelism"] == 1
