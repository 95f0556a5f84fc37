"""taskctl, run as a user runs it (a subprocess), against one live `make dev` server."""
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from taskctl import cli
from tests.conftest import LOCAL_TOKEN, PROJECT_DIR, TENANT_TOKENS, DevServer, free_port

pytestmark = pytest.mark.e2e  # taskctl processes against a live server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One dev server for the module: starting one costs more than most of these tests."""
    dev = DevServer(tmp_path_factory.mktemp("taskctl") / "data")
    dev.start()
    yield dev
    dev.stop(signal.SIGKILL)


def user_env(url, token):
    # A user's shell: no proxy or AWS settings leak in from the test process.
    env = {key: value for key, value in os.environ.items()
           if key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")}
    if url is not None:
        env["TASKCTL_URL"] = url
    if token is not None:
        env["TASKCTL_TOKEN"] = token
    return env


@pytest.fixture
def taskctl(server):
    """taskctl(*args) -> CompletedProcess, with TASKCTL_URL and TASKCTL_TOKEN set."""
    def run(*args, url=server.url, token=LOCAL_TOKEN, timeout=60):
        return subprocess.run([sys.executable, "-m", "taskctl", *args], cwd=PROJECT_DIR,
                              env=user_env(url, token), capture_output=True, text=True,
                              timeout=timeout)
    return run


def run_taskctl(*args, url, token=LOCAL_TOKEN, timeout=60):
    """taskctl without the dev server, for tests that bring their own."""
    return subprocess.run([sys.executable, "-m", "taskctl", *args], cwd=PROJECT_DIR,
                          env=user_env(url, token), capture_output=True, text=True,
                          timeout=timeout)


def in_seconds(seconds):
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def far_future_task(server, name=None):
    status, body = server.request("POST", "/schedule-task", {
        "action": "log", "payload": {"message": "later"}, "run_at": in_seconds(86400),
        **({"name": name} if name else {})})
    assert status == 201, body
    return body["task_id"]


def recurring_task(server, **fields):
    """A log task every hour (fields added to the POST), stored through the API."""
    status, body = server.request("POST", "/schedule-task", {
        "action": "log", "payload": {"message": "tick"}, "run_at": "rate(1 hour)", **fields})
    assert status == 201, body
    return body["task_id"]


def stored(server, task_id):
    status, body = server.request("GET", f"/tasks/{task_id}")
    assert status == 200, body
    return body


def wait_for(server, task_id, condition, timeout=60):
    """The task once `condition(task)` holds (generous: CI may be very busy)."""
    deadline = time.monotonic() + timeout
    while True:
        task = stored(server, task_id)
        if condition(task):
            return task
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition never held; the task is {task}")
        time.sleep(0.1)


def fields_of(output):
    """The field lines show prints before its first blank line: label -> value (labels
    are padded to line the values up, at least two spaces before each)."""
    return dict(re.split(r" {2,}", line, maxsplit=1)
                for line in output.split("\n\n")[0].splitlines())


def upcoming_of(output):
    return output.split("upcoming\n")[1].split("\n\n")[0].split()


def test_schedule_a_webhook_and_tail_it_until_delivered(taskctl, receiver, tmp_path):
    data = tmp_path / "data.json"
    data.write_text('{"msg": "Hello from taskctl"}')
    scheduled = taskctl("schedule", "--webhook", receiver.url, "--data", f"@{data}",
                        "--header", "X-Trace: abc:1", "--at", in_seconds(2),
                        "--name", "cli webhook")
    assert scheduled.returncode == 0, scheduled.stderr
    assert "Task scheduled successfully" in scheduled.stdout
    task_id = next(line.split()[1] for line in scheduled.stdout.splitlines()
                   if line.startswith("id "))

    tail = taskctl("tail", task_id, "--interval", "0.2", "--timeout", "20")

    assert tail.returncode == 0, tail.stdout + tail.stderr
    lines = tail.stdout.splitlines()
    assert "run attempt 1: succeeded  HTTP 200" in lines[-2]
    assert lines[-1].endswith("status completed")
    assert len(receiver.requests) == 1
    assert json.loads(receiver.requests[0]["body"]) == {"msg": "Hello from taskctl"}
    assert receiver.requests[0]["headers"]["x-trace"] == "abc:1"


def test_list_prints_an_aligned_table_and_json(taskctl, server):
    marker = uuid.uuid4().hex[:8]
    ids = [far_future_task(server, f"list-{marker}-{n}") for n in range(3)]

    table = taskctl("list", "--name", marker)

    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATUS", "ACTION", "NEXT", "RUN", "ATTEMPTS",
                              "TAGS"]
    # Tasks made in the same millisecond come in task_id order, so the order is not checked.
    assert sorted(row.split()[:4] for row in rows) == sorted(
        [task_id, f"list-{marker}-{n}", "scheduled", "log"] for n, task_id in enumerate(ids))
    assert {row.index("scheduled") for row in rows} == {header.index("STATUS")}
    assert all(row.split()[-2:] == ["0/3", "-"] for row in rows)

    for args in (["--json", "list", "--name", marker], ["list", "--name", marker, "--json"]):
        listed = taskctl(*args)
        assert listed.returncode == 0, listed.stderr
        listed_ids = [task["task_id"] for task in json.loads(listed.stdout)["tasks"]]
        assert sorted(listed_ids) == sorted(ids)


def test_list_pages(taskctl, server):
    marker = uuid.uuid4().hex[:8]
    ids = [far_future_task(server, f"page-{marker}") for _ in range(3)]

    one_page = taskctl("list", "--name", marker, "--limit", "2")
    every_page = taskctl("--json", "list", "--name", marker, "--limit", "2", "--all")
    single = taskctl("--json", "list", "--name", marker, "--limit", "100")

    assert one_page.returncode == every_page.returncode == single.returncode == 0
    assert len(one_page.stdout.splitlines()) == 1 + 2
    assert "--all" in one_page.stderr
    body = json.loads(every_page.stdout)
    listed = [task["task_id"] for task in body["tasks"]]
    assert sorted(listed) == sorted(ids)
    # Pages are joined in the API's own order (tasks made in the same millisecond are
    # ordered by task_id, so creation order is not it).
    assert listed == [task["task_id"] for task in json.loads(single.stdout)["tasks"]]
    assert body["next_token"] is None


def test_name_search_is_server_side_and_ignores_case(taskctl, server):
    marker = uuid.uuid4().hex[:8]
    wanted = far_future_task(server, f"Nightly-Report-{marker}")
    far_future_task(server, f"weekly-digest-{marker}")

    found = taskctl("--json", "list", "--name", f"nightly-REPORT-{marker}")

    assert found.returncode == 0, found.stderr
    assert [task["task_id"] for task in json.loads(found.stdout)["tasks"]] == [wanted]


def test_show_a_task_with_its_runs(taskctl, server, receiver):
    receiver.script = [503]
    status, body = server.request("POST", "/schedule-task", {
        "action": "webhook", "payload": {"url": receiver.url}, "run_at": in_seconds(2),
        "max_attempts": 1, "name": "shown"})
    assert status == 201, body
    server.wait_status(body["task_id"], "failed")

    shown = taskctl("show", body["task_id"])

    assert shown.returncode == 0, shown.stderr
    fields = dict(line.split(None, 1) for line in shown.stdout.split("\n\n")[0].splitlines())
    assert fields["id"] == body["task_id"]
    assert fields["name"] == "shown"
    assert fields["status"] == "failed"
    assert fields["attempts"] == "1/1"
    assert json.loads(fields["payload"])["url"] == receiver.url
    runs = shown.stdout.split("runs (1)\n")[1].splitlines()
    assert runs[0].split() == ["ATTEMPT", "STARTED", "OUTCOME", "HTTP", "DURATION", "ERROR"]
    attempt, _, outcome, http_status, duration, unit, *error = runs[1].split()
    assert (attempt, outcome, http_status, unit) == ("1", "failed", "503", "ms")
    assert int(duration) >= 0 and "503" in " ".join(error)


def test_show_lists_the_upcoming_firings_of_a_recurring_task(taskctl):
    scheduled = taskctl("--json", "schedule", "--action", "log", "--payload",
                        '{"message": "tick"}', "--at", "rate(5 minutes)")
    assert scheduled.returncode == 0, scheduled.stderr

    shown = taskctl("show", json.loads(scheduled.stdout)["task_id"])

    upcoming = shown.stdout.split("upcoming\n")[1].split("\n\n")[0].split()
    assert len(upcoming) == 5
    moments = [datetime.fromisoformat(moment.replace("Z", "+00:00")) for moment in upcoming]
    assert {b - a for a, b in zip(moments, moments[1:])} == {timedelta(minutes=5)}
    assert "no runs yet" in shown.stdout


def test_idempotency_key_returns_the_first_task(taskctl):
    key = uuid.uuid4().hex
    args = ["--json", "schedule", "--action", "log", "--payload", '{"message": "once"}',
            "--at", "09:30", "--timezone", "Asia/Tokyo", "--idempotency-key", key]

    first, repeat = taskctl(*args), taskctl(*args)

    assert first.returncode == repeat.returncode == 0, first.stderr + repeat.stderr
    assert json.loads(first.stdout)["task_id"] == json.loads(repeat.stdout)["task_id"]


def test_cancel_then_cancel_again_is_a_user_error(taskctl, server):
    task_id = far_future_task(server)

    cancelled = taskctl("cancel", task_id)
    again = taskctl("cancel", task_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout.strip() == f"task {task_id} cancelled"
    assert server.request("GET", f"/tasks/{task_id}")[1]["status"] == "cancelled"
    assert again.returncode == 2
    assert again.stdout == ""
    assert f"task {task_id} is cancelled: it can no longer be cancelled" in again.stderr
    assert "field task_id" in again.stderr and "HTTP 409" in again.stderr


def test_retry_a_failed_task_then_tail_it_to_completion(taskctl, server, receiver):
    receiver.status = 500
    task_id = server.schedule(receiver.url, datetime.now(timezone.utc) + timedelta(seconds=2),
                              max_attempts=1)
    server.wait_status(task_id, "failed")
    failed_tail = taskctl("tail", task_id)
    assert failed_tail.returncode == 3, failed_tail.stdout + failed_tail.stderr
    assert failed_tail.stderr == ""
    assert failed_tail.stdout.splitlines()[-1].endswith("status failed")

    receiver.status = 200
    when = in_seconds(2)
    retried = taskctl("retry", task_id, "--at", when)
    tail = taskctl("tail", task_id, "--interval", "0.2", "--timeout", "20")

    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == f"task {task_id} scheduled, next run {when}"
    assert tail.returncode == 0, tail.stdout + tail.stderr
    runs = [line for line in tail.stdout.splitlines() if " run attempt " in line]
    assert ["HTTP 500" in runs[0], "succeeded  HTTP 200" in runs[1]] == [True, True]
    assert tail.stdout.splitlines()[-1].endswith("status completed")
    assert len(receiver.requests) == 2


def test_preview_of_a_weekday_cron_in_berlin(taskctl):
    expression = "cron(0 9 ? * MON-FRI *)"

    table = taskctl("preview", expression, "--timezone", "Europe/Berlin", "--count", "3")
    body = json.loads(taskctl("--json", "preview", expression, "--timezone",
                              "Europe/Berlin", "--count", "3").stdout)

    assert table.returncode == 0, table.stderr
    title, header, *rows = table.stdout.splitlines()
    assert title == f"{expression} in Europe/Berlin (recurring)"
    assert header.split() == ["UTC", "Europe/Berlin"]
    assert [row.split()[0] for row in rows] == body["next"]
    for row in rows:
        utc, weekday, _, local, zone = row.split()
        assert weekday in ("Mon", "Tue", "Wed", "Thu", "Fri")
        assert local == "09:00" and zone in ("CET", "CEST")
        assert utc[11:] in ("07:00:00Z", "08:00:00Z")
    assert (body["run_at"], body["timezone"], body["recurring"]) == (
        expression, "Europe/Berlin", True)


@pytest.mark.parametrize("args, message", [
    (["schedule", "--webhook", "http://127.0.0.1:9/hook", "--at", "next tuesday"],
     "run_at 'next tuesday' is not an ISO 8601 date-time"),
    (["schedule", "--at", "10:00"], "--webhook is required for a webhook"),
    (["schedule", "--webhook", "http://127.0.0.1:9/hook", "--at", "10:00", "--data", "{oops"],
     "--data is not valid JSON"),
    (["schedule", "--webhook", "http://127.0.0.1:9/hook", "--at", "10:00", "--header", "oops"],
     "--header must look like Name:value"),
    (["schedule", "--action", "log", "--at", "10:00"], "--payload is required"),
    (["schedule", "--webhook", "http://127.0.0.1:9/hook", "--at", "10:00", "--priority", "12"],
     "priority must be a whole number from 0 to 9 (field priority, HTTP 400)"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["list", "--limit", "101"], "limit must be a whole number from 1 to 100"),
    (["show", "3f0c0000-0000-4000-8000-000000000000"],
     "no task with id 3f0c0000-0000-4000-8000-000000000000 (field task_id, HTTP 404)"),
    (["retry", "3f0c0000-0000-4000-8000-000000000000"], "HTTP 404"),
    (["preview", "cron(0 9 * * * *)"], "(field run_at, HTTP 400)"),
    (["preview", "rate(5 minutes)", "--count", "99"], "count must be a whole number"),
    (["--url", "localhost:8000", "list"], "must start with http:// or https://"),
    (["update", "3f0c0000-0000-4000-8000-000000000000"], "nothing to change"),
    (["update", "3f0c0000-0000-4000-8000-000000000000", "--data", "{}"],
     "--data needs --webhook: the new payload replaces the whole old one"),
    (["update", "3f0c0000-0000-4000-8000-000000000000", "--payload", "{}", "--webhook",
      "http://127.0.0.1:9/hook"], "--webhook cannot be combined with --payload"),
    (["update", "3f0c0000-0000-4000-8000-000000000000", "--tag", "team"],
     "--tag must look like key=value, not 'team'"),
    (["schedule", "--action", "log", "--payload", "{}", "--at", "10:00", "--tag", "a=1",
      "--tag", "a=2"], "--tag a is given twice"),
    (["update", "3f0c0000-0000-4000-8000-000000000000", "--tag", "a=1", "--no-tags"],
     "argument --no-tags: not allowed with argument --tag"),
    (["update", "3f0c0000-0000-4000-8000-000000000000", "--end", "tomorrow", "--no-end"],
     "argument --no-end: not allowed with argument --end"),
    (["update", "3f0c0000-0000-4000-8000-000000000000", "--catch-up", "sometimes"],
     "argument --catch-up: invalid choice: 'sometimes'"),
    (["pause", "3f0c0000-0000-4000-8000-000000000000", "--if-match", "v3"],
     "argument --if-match: must be a task's version"),
    (["resume", "3f0c0000-0000-4000-8000-000000000000"],
     "no task with id 3f0c0000-0000-4000-8000-000000000000 (field task_id, HTTP 404)"),
    (["run", "3f0c0000-0000-4000-8000-000000000000"], "HTTP 404"),
    (["list", "--tag", "team"], "(field tag, HTTP 400)"),
])
def test_user_errors_exit_2_with_the_message(taskctl, args, message):
    result = taskctl(*args)

    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("args, flag", [
    (["--interval", "0"], "--interval"), (["--interval", "-1"], "--interval"),
    (["--interval", "nan"], "--interval"), (["--interval", "inf"], "--interval"),
    (["--interval", "1e300"], "--interval"), (["--interval", "soon"], "--interval"),
    (["--timeout", "0"], "--timeout"), (["--timeout", "-5"], "--timeout"),
])
def test_tail_numbers_that_are_not_positive_are_usage_errors(taskctl, server, args, flag):
    result = taskctl("tail", far_future_task(server), *args)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"taskctl tail: error: argument {flag}: " in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize("args, flag", [
    (["list", "--limit", "0"], "--limit"), (["list", "--limit", "-3"], "--limit"),
    (["preview", "rate(5 minutes)", "--count", "0"], "--count"),
    (["schedule", "--action", "log", "--payload", "{}", "--at", "10:00",
      "--max-attempts", "0"], "--max-attempts"),
    (["schedule", "--webhook", "http://127.0.0.1:9/hook", "--at", "10:00", "--timeout", "-1"],
     "--timeout"),
    (["schedule", "--webhook", "http://127.0.0.1:9/hook", "--at", "10:00", "--timeout", "1.5"],
     "--timeout"),
])
def test_counts_that_are_not_positive_are_usage_errors(taskctl, args, flag):
    result = taskctl(*args)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: argument {flag}: " in result.stderr
    assert "must be a whole number greater than 0" in result.stderr
    assert "HTTP" not in result.stderr and "Traceback" not in result.stderr


def test_retry_of_a_waiting_task_is_a_conflict(taskctl, server):
    result = taskctl("retry", far_future_task(server))

    assert result.returncode == 2
    assert "HTTP 409" in result.stderr


# ---------------------------------------------------------------- managing tasks

def test_schedule_with_tags_and_the_lifecycle_flags(taskctl, server):
    start, end = in_seconds(3600), in_seconds(3 * 86400)

    scheduled = taskctl("--json", "schedule", "--action", "log", "--payload",
                        '{"message": "tick"}', "--at", "rate(1 hour)", "--start", start,
                        "--end", end, "--max-runs", "7", "--catch-up", "all", "--overlap",
                        "buffer_one", "--window", "3", "--tag", "team=ops", "--tag",
                        "note=a=b:c", "--tag", "empty=")

    assert scheduled.returncode == 0, scheduled.stderr
    task_id = json.loads(scheduled.stdout)["task_id"]
    task = stored(server, task_id)
    assert {key: task[key] for key in ("start_at", "end_at", "max_runs", "catch_up", "overlap",
                                       "window_minutes", "tags")} == {
        "start_at": start, "end_at": end, "max_runs": 7, "catch_up": "all",
        "overlap": "buffer_one", "window_minutes": 3,
        "tags": {"team": "ops", "note": "a=b:c", "empty": ""}}
    shown = taskctl("show", task_id)
    assert shown.returncode == 0, shown.stderr
    fields = fields_of(shown.stdout)
    assert fields["tags"] == "empty=, note=a=b:c, team=ops"
    assert (fields["start_at"], fields["end_at"]) == (start, end)
    assert (fields["runs_done"], fields["catch_up"], fields["overlap"], fields["window"]) == (
        "0/7", "all", "buffer_one", "3 min")
    assert (fields["version"], fields["paused_until"], fields["status"]) == (
        "1", "-", "scheduled")
    assert start <= upcoming_of(shown.stdout)[0] <= end


def test_schedule_refuses_recurring_only_flags_on_a_one_time_task(taskctl):
    result = taskctl("schedule", "--action", "log", "--payload", '{"message": "once"}',
                     "--at", in_seconds(3600), "--overlap", "buffer_one")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "overlap applies to recurring tasks only" in result.stderr
    assert "(field overlap, HTTP 400)" in result.stderr


def test_list_filters_by_one_tag_and_shows_tags_and_pauses(taskctl, server):
    marker = uuid.uuid4().hex[:8]
    tagged = [recurring_task(server, tags={"batch": marker, "team": "ops"}) for _ in range(2)]
    recurring_task(server, tags={"batch": f"{marker}-other"})
    recurring_task(server, tags={"team": marker})
    until = in_seconds(3600)
    status, body = server.request("POST", f"/tasks/{tagged[0]}/pause", {"until": until})
    assert status == 200, body

    table = taskctl("list", "--tag", f"batch:{marker}")
    paused = taskctl("--json", "list", "--tag", f"batch:{marker}", "--status", "paused")

    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[-1] == "TAGS"
    rows = {row.split()[0]: row for row in rows}
    assert sorted(rows) == sorted(tagged)
    assert rows[tagged[0]].split()[2:4] == ["paused", "log"]
    assert f"until {until}" in rows[tagged[0]]
    assert rows[tagged[1]].split()[2] == "scheduled"
    assert {row.split()[-1] for row in rows.values()} == {f"batch={marker},team=ops"}
    assert paused.returncode == 0, paused.stderr
    assert [task["task_id"] for task in json.loads(paused.stdout)["tasks"]] == [tagged[0]]


def test_update_changes_only_the_fields_given_and_prints_the_task(taskctl, server):
    task_id = recurring_task(server, name="before", priority=7, tags={"old": "1"})

    updated = taskctl("update", task_id, "--at", "cron(0 9 ? * MON-FRI *)", "--timezone",
                      "Europe/Berlin", "--name", "after", "--max-runs", "5", "--window", "10",
                      "--catch-up", "none", "--tag", "team=ops", "--tag", "env=prod")

    assert updated.returncode == 0, updated.stderr
    fields = fields_of(updated.stdout)
    assert (fields["id"], fields["name"], fields["status"]) == (task_id, "after", "scheduled")
    assert fields["run_at"] == "cron(0 9 ? * MON-FRI *) (Europe/Berlin)"
    assert (fields["tags"], fields["runs_done"], fields["window"], fields["version"]) == (
        "env=prod, team=ops", "0/5", "10 min", "2")
    assert len(upcoming_of(updated.stdout)) == 5
    task = stored(server, task_id)
    assert (task["priority"], task["catch_up"], task["tags"], task["timezone"]) == (
        7, "none", {"team": "ops", "env": "prod"}, "Europe/Berlin")

    cleared = taskctl("update", task_id, "--no-tags", "--no-max-runs", "--no-name", "--json")

    assert cleared.returncode == 0, cleared.stderr
    body = json.loads(cleared.stdout)
    assert (body["tags"], body["max_runs"], body["name"], body["version"]) == ({}, None, None, 3)
    assert (body["run_at"], body["window_minutes"]) == ("cron(0 9 ? * MON-FRI *)", 10)


def test_update_with_a_stale_if_match_is_412_and_changes_nothing(taskctl, server):
    task_id = far_future_task(server, "v1")

    first = taskctl("update", task_id, "--name", "v2", "--if-match", "1")
    stale = taskctl("update", task_id, "--name", "v3", "--if-match", "1")
    as_etag = taskctl("update", task_id, "--priority", "8", "--if-match", '"2"')

    assert first.returncode == 0, first.stderr
    assert fields_of(first.stdout)["version"] == "2"
    assert stale.returncode == 2 and stale.stdout == ""
    assert f"task {task_id} is at version 2, not the one If-Match names" in stale.stderr
    assert "(field If-Match, HTTP 412)" in stale.stderr
    assert as_etag.returncode == 0, as_etag.stderr
    task = stored(server, task_id)
    assert (task["name"], task["priority"], task["version"]) == ("v2", 8, 3)


@pytest.mark.parametrize("command", ["pause", "resume", "run", "cancel"])
def test_every_change_with_a_stale_if_match_is_412(taskctl, server, command):
    task_id = far_future_task(server)
    status, body = server.request(*(
        ("POST", f"/tasks/{task_id}/pause") if command == "resume"
        else ("PATCH", f"/tasks/{task_id}", {"name": "moved on"})))
    assert status == 200 and body["version"] == 2, body

    result = taskctl(command, task_id, "--if-match", "1")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "(field If-Match, HTTP 412)" in result.stderr
    after = stored(server, task_id)
    assert (after["version"], after["status"]) == (2, body["status"])


@pytest.mark.parametrize("flags, message", [
    (["--max-runs", "3"], "max_runs applies to recurring tasks only (cron, rate or HH:MM), "
                          "not to a one-time run_at (field max_runs, HTTP 400)"),
    (["--window", "2000"],
     "window_minutes must be a whole number from 0 to 1440 (field window_minutes, HTTP 400)"),
    (["--at", "next tuesday"], "(field run_at, HTTP 400)"),
    (["--webhook", "ftp://example.com/x"], "(field payload"),
])
def test_update_refused_by_the_api_names_the_field(taskctl, server, flags, message):
    task_id = far_future_task(server)

    result = taskctl("update", task_id, *flags)

    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert stored(server, task_id)["version"] == 1


def test_update_a_finished_task_is_a_conflict(taskctl, server):
    task_id = far_future_task(server)
    assert server.request("DELETE", f"/tasks/{task_id}")[0] == 200

    result = taskctl("update", task_id, "--name", "too late")

    assert result.returncode == 2
    assert f"task {task_id} is cancelled" in result.stderr and "HTTP 409" in result.stderr


def test_update_the_webhook_then_run_it_now(taskctl, server, receiver):
    task_id = server.schedule(receiver.url + "?old",
                              datetime.now(timezone.utc) + timedelta(days=1))

    updated = taskctl("update", task_id, "--webhook", receiver.url, "--data", '{"v": 2}',
                      "--header", "X-Step: 2")
    ran = taskctl("run", task_id, "--if-match", fields_of(updated.stdout)["version"])

    assert updated.returncode == 0, updated.stderr
    payload = json.loads(fields_of(updated.stdout)["payload"])
    assert (payload["url"], payload["data"], payload["headers"]) == (
        receiver.url, {"v": 2}, {"X-Step": "2"})
    assert ran.returncode == 0, ran.stderr
    assert fields_of(ran.stdout)["id"] == task_id
    server.wait_status(task_id, "completed")
    assert len(receiver.requests) == 1
    assert json.loads(receiver.requests[0]["body"]) == {"v": 2}
    assert receiver.requests[0]["headers"]["x-step"] == "2"


def test_pause_then_resume(taskctl, server):
    task_id = recurring_task(server)

    paused = taskctl("pause", task_id)
    paused_again = taskctl("pause", task_id)
    resumed = taskctl("resume", task_id)
    resumed_again = taskctl("resume", task_id)

    assert paused.returncode == 0, paused.stderr
    fields = fields_of(paused.stdout)
    assert (fields["status"], fields["paused_until"], fields["next run"]) == ("paused", "-", "-")
    assert "upcoming" not in paused.stdout
    assert paused_again.returncode == 2
    assert "only a scheduled or retrying task can be paused" in paused_again.stderr
    assert resumed.returncode == 0, resumed.stderr
    assert (fields_of(resumed.stdout)["status"], fields_of(resumed.stdout)["version"]) == (
        "scheduled", "3")
    assert len(upcoming_of(resumed.stdout)) == 5
    assert resumed_again.returncode == 2 and "HTTP 409" in resumed_again.stderr


def test_pause_until_a_time_resumes_by_itself(taskctl, server):
    task_id = recurring_task(server)
    until = in_seconds(4)  # taskctl must start and ask before then, on a busy machine too

    paused = taskctl("pause", task_id, "--until", until)

    assert paused.returncode == 0, paused.stderr
    assert (fields_of(paused.stdout)["status"], fields_of(paused.stdout)["paused_until"]) == (
        "paused", until)
    task = server.wait_status(task_id, "scheduled")
    assert task["paused_until"] is None and task["upcoming"]
    assert task["runs"] == []  # its hourly firing was not due meanwhile


def test_pause_until_a_past_time_is_refused(taskctl, server):
    task_id = recurring_task(server)

    result = taskctl("pause", task_id, "--until", in_seconds(-60))

    assert result.returncode == 2
    assert "is not in the future (field until, HTTP 400)" in result.stderr
    assert stored(server, task_id)["status"] == "scheduled"


def test_run_a_paused_recurring_task_once_and_it_stays_paused(taskctl, server):
    task_id = recurring_task(server)
    assert server.request("POST", f"/tasks/{task_id}/pause")[0] == 200

    ran = taskctl("run", task_id)

    assert ran.returncode == 0, ran.stderr
    task = wait_for(server, task_id,
                    lambda task: task["runs_done"] == 1 and task["status"] == "paused")
    assert [run["outcome"] for run in task["runs"]] == ["succeeded"]
    assert fields_of(taskctl("show", task_id).stdout)["runs_done"] == "1"


def test_a_firing_missed_while_paused_shows_as_skipped(taskctl, server):
    run_at = in_seconds(3)  # it must still wait when the pause arrives, on a busy machine too
    status, body = server.request("POST", "/schedule-task", {
        "action": "log", "payload": {"message": "missed"}, "run_at": run_at,
        "catch_up": "none"})
    assert status == 201, body
    task_id = body["task_id"]
    assert server.request("POST", f"/tasks/{task_id}/pause")[0] == 200
    due = datetime.fromisoformat(run_at.replace("Z", "+00:00"))
    while datetime.now(timezone.utc) <= due:  # its firing passes while it is paused
        time.sleep(0.05)

    resumed = taskctl("resume", task_id)
    shown = taskctl("show", task_id)
    tail = taskctl("tail", task_id, "--timeout", "20")

    assert resumed.returncode == 0, resumed.stderr
    assert fields_of(resumed.stdout)["status"] == "completed"  # catch_up none: nothing left
    assert shown.returncode == 0, shown.stderr
    runs = shown.stdout.split("runs (1, 1 skipped)\n")[1].splitlines()
    attempt, started, outcome, http_status, duration, *reason = runs[1].split()
    assert (attempt, started[:19], outcome, http_status, duration) == (
        "-", run_at[:19], "skipped", "-", "-")
    assert " ".join(reason) == "missed while the task could not run (catch_up none)"
    assert tail.returncode == 0, tail.stdout + tail.stderr
    assert "firing skipped  missed while the task could not run" in tail.stdout
    assert "run attempt" not in tail.stdout


# ---------------------------------------------------------------- flow control

def test_schedule_with_flow_control_then_show_it_and_its_key(taskctl, server):
    key = f"cli-key-{uuid.uuid4().hex[:8]}"

    scheduled = taskctl("--json", "schedule", "--action", "log", "--payload",
                        '{"message": "tick"}', "--at", "rate(1 hour)", "--flow-key", key,
                        "--flow-rate", "5", "--flow-period", "minute", "--flow-parallelism",
                        "2")
    assert scheduled.returncode == 0, scheduled.stderr
    task_id = json.loads(scheduled.stdout)["task_id"]
    shown = taskctl("show", task_id)
    flow = taskctl("flow", key)
    as_json = taskctl("flow", key, "--json")

    assert stored(server, task_id)["flow_control"] == {
        "key": key, "rate": 5, "period": "minute", "parallelism": 2}
    assert shown.returncode == 0, shown.stderr
    fields = fields_of(shown.stdout)
    assert (fields["flow_control"], fields["delayed"]) == (
        f"{key} (5 per minute, 2 at once)", "-")
    assert flow.returncode == 0, flow.stderr
    assert fields_of(flow.stdout) == {"key": key, "rate": "5 per minute", "parallelism": "2",
                                      "running": "0", "waiting": "0"}
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == server.request("GET", f"/flow-control/{key}")[1]


def test_schedule_a_key_with_parallelism_only_shows_no_rate(taskctl):
    key = f"cli-most-{uuid.uuid4().hex[:8]}"

    scheduled = taskctl("schedule", "--action", "log", "--payload", '{"message": "x"}', "--at",
                        in_seconds(3600), "--flow-key", key, "--flow-parallelism", "1")
    flow = taskctl("flow", key)

    assert scheduled.returncode == 0, scheduled.stderr
    assert flow.returncode == 0, flow.stderr
    fields = fields_of(flow.stdout)
    assert (fields["rate"], fields["parallelism"]) == ("-", "1")


def test_flow_of_a_key_no_task_uses_is_a_404(taskctl):
    key = f"no-such-key-{uuid.uuid4().hex[:8]}"

    result = taskctl("flow", key)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"no task uses the flow-control key {key} (field key, HTTP 404)" in result.stderr
    assert result.stdout == ""


def test_update_sets_changes_and_removes_flow_control(taskctl, server):
    task_id = recurring_task(server)
    key = f"cli-update-{uuid.uuid4().hex[:8]}"

    added = taskctl("update", task_id, "--flow-key", key, "--flow-parallelism", "3")
    changed = taskctl("update", task_id, "--flow-key", key, "--flow-rate", "2", "--json")
    removed = taskctl("update", task_id, "--no-flow-control")

    assert added.returncode == 0, added.stderr
    assert fields_of(added.stdout)["flow_control"] == f"{key} (3 at once)"
    assert changed.returncode == 0, changed.stderr
    # The flags set the field whole: the parallelism not given again is gone.
    assert json.loads(changed.stdout)["flow_control"] == {
        "key": key, "rate": 2, "period": "second"}
    assert removed.returncode == 0, removed.stderr
    assert (fields_of(removed.stdout)["flow_control"], fields_of(removed.stdout)["version"]) == (
        "-", "4")
    assert stored(server, task_id)["flow_control"] is None


@pytest.mark.parametrize("command, flags, message", [
    ("schedule", ["--flow-rate", "5"], "--flow-rate needs --flow-key: limits belong to a key"),
    ("schedule", ["--flow-period", "minute", "--flow-parallelism", "2"],
     "--flow-period needs --flow-key"),
    ("schedule", ["--flow-key", "k"], "--flow-key needs --flow-rate, --flow-parallelism or both"),
    ("schedule", ["--flow-key", "k", "--flow-period", "hour"],
     "--flow-key needs --flow-rate, --flow-parallelism or both"),
    ("update", ["--flow-parallelism", "2"], "--flow-parallelism needs --flow-key"),
    ("update", ["--no-flow-control", "--flow-key", "k", "--flow-rate", "1"],
     "--no-flow-control cannot be combined with --flow-key"),
])
def test_flow_flags_that_do_not_make_a_flow_control_are_usage_errors(taskctl, server, command,
                                                                      flags, message):
    task_id = far_future_task(server)
    target = ([task_id] if command == "update" else
              ["--action", "log", "--payload", '{"message": "x"}', "--at", in_seconds(3600)])

    result = taskctl(command, *target, *flags)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"taskctl: error: {message}" in result.stderr
    assert "HTTP" not in result.stderr and result.stdout == ""
    assert stored(server, task_id)["version"] == 1


@pytest.mark.parametrize("flags, message", [
    (["--flow-rate", "0"], "argument --flow-rate: must be a whole number greater than 0"),
    (["--flow-parallelism", "x"], "argument --flow-parallelism: must be a whole number"),
    (["--flow-period", "day"], "argument --flow-period: invalid choice: 'day'"),
])
def test_flow_numbers_and_periods_are_checked_by_the_parser(taskctl, flags, message):
    result = taskctl("schedule", "--action", "log", "--payload", '{"message": "x"}', "--at",
                     "10:00", "--flow-key", "k", *flags)

    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and "HTTP" not in result.stderr


def test_flow_limits_out_of_range_are_refused_by_the_api(taskctl):
    result = taskctl("schedule", "--action", "log", "--payload", '{"message": "x"}', "--at",
                     "10:00", "--flow-key", "k", "--flow-rate", "20000")

    assert result.returncode == 2, result.stdout + result.stderr
    assert "rate: a whole number from 1 to 10000" in result.stderr
    assert "(field flow_control, HTTP 400)" in result.stderr


def test_a_task_delayed_by_its_key_shows_what_it_waits_for(taskctl, server, receiver):
    """Parallelism 1: the first task's webhook is held at the receiver until taskctl has
    shown the second one waiting for the key."""
    key = f"cli-one-{uuid.uuid4().hex[:8]}"
    arrived, release = receiver.hold(b"cli-first")

    def schedule(name, seconds):
        status, body = server.request("POST", "/schedule-task", {
            "action": "webhook", "run_at": in_seconds(seconds), "name": f"{name}-{key}",
            "flow_control": {"key": key, "parallelism": 1},
            "payload": {"url": receiver.url, "data": {"task": name}, "timeout": 60}})
        assert status == 201, body
        return body["task_id"]

    try:
        first = schedule("cli-first", 2)
        assert arrived.wait(60), "the first task's webhook never arrived"
        second = schedule("cli-second", 1)
        since = wait_for(server, second, lambda task: task["flow_delayed_since"])[
            "flow_delayed_since"]

        shown = taskctl("show", second)
        flow = taskctl("flow", key)
        listed = taskctl("list", "--name", f"cli-second-{key}")

        assert shown.returncode == 0, shown.stderr
        assert fields_of(shown.stdout)["delayed"] == f"waiting for {key} since {since}"
        assert flow.returncode == 0, flow.stderr
        fields = fields_of(flow.stdout)
        assert (fields["parallelism"], fields["running"], fields["waiting"]) == ("1", "1", "1")
        assert listed.returncode == 0, listed.stderr
        assert f"waiting for {key}" in listed.stdout.splitlines()[1]
        release.set()
        assert server.wait_status(second, "completed")["attempts"] == 1
        assert fields_of(taskctl("show", second).stdout)["delayed"] == "-"
        server.wait_status(first, "completed")
    finally:
        release.set()
        receiver.on_request = None


@pytest.mark.parametrize("args", [["list"], ["show", "3f0c0000-0000-4000-8000-000000000000"],
                                  ["tail", "3f0c0000-0000-4000-8000-000000000000"]])
def test_an_unreachable_server_exits_1_naming_the_url(taskctl, args):
    nowhere = f"http://127.0.0.1:{free_port()}"

    result = taskctl(*args, url=nowhere)

    assert result.returncode == 1
    assert f"could not reach {nowhere}" in result.stderr
    assert "Traceback" not in result.stderr


class Recorder(ThreadingHTTPServer):
    """A local HTTP server that records each request's headers and answers with `respond`."""

    def __init__(self, respond):
        self.requests, self.respond = [], respond
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def handle_one(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                recorder.requests.append({"method": self.command, "path": self.path,
                                          "headers": dict(self.headers)})
                status, headers, body = recorder.respond(self)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_DELETE = handle_one

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.shutdown()
        self.server_close()


@pytest.fixture
def redirected():
    """(first, second): `first` answers every request with a redirect to `second`."""
    second = Recorder(lambda request: (200, {"Content-Type": "application/json"},
                                       b'{"tasks": [], "task_id": "x", "next": []}'))
    first = Recorder(lambda request: (first.status, {"Location": second.url + request.path},
                                      b""))
    first.status = 302
    yield first, second
    first.close()
    second.close()


@pytest.mark.parametrize("status, args", [
    (302, ["list"]), (301, ["show", "3f0c0000-0000-4000-8000-000000000000"]),
    (307, ["list"]), (308, ["preview", "rate(5 minutes)"]),
    (303, ["schedule", "--action", "log", "--payload", "{}", "--at", "10:00"]),
])
def test_a_redirect_is_not_followed_and_the_token_stays_home(redirected, status, args):
    first, second = redirected
    first.status = status
    token = "secret-token-0815"

    result = run_taskctl(*args, url=first.url, token=token)

    assert result.returncode == 1, result.stdout + result.stderr
    assert [request["headers"].get("Authorization") for request in first.requests] == [
        f"Bearer {token}"]
    assert token not in json.dumps(second.requests)
    assert second.requests == []
    assert f"HTTP {status}" in result.stderr and "redirects are not followed" in result.stderr
    assert second.url in result.stderr  # where it pointed, so the user can fix --url
    assert token not in result.stdout + result.stderr and "Traceback" not in result.stderr


def test_the_url_flag_beats_the_environment(taskctl, server):
    result = taskctl("--url", server.url, "list", url=f"http://127.0.0.1:{free_port()}")

    assert result.returncode == 0, result.stderr


def test_the_token_flag_beats_the_environment(taskctl):
    good_flag = taskctl("--token", LOCAL_TOKEN, "list", token="wrong-env-token")
    bad_flag = taskctl("--token", "wrong-flag-token", "list", token=LOCAL_TOKEN)

    assert good_flag.returncode == 0, good_flag.stderr
    assert bad_flag.returncode == 2


@pytest.mark.parametrize("token", [None, "wrong-token-4711"])
def test_a_missing_or_wrong_token_exits_2_and_is_never_printed(taskctl, token):
    result = taskctl("list", token=token)

    assert result.returncode == 2
    assert "check the token (--token or TASKCTL_TOKEN)" in result.stderr
    assert "HTTP 401" in result.stderr or "HTTP 403" in result.stderr
    assert "4711" not in result.stdout + result.stderr


def test_tail_gives_up_after_its_timeout(taskctl, server):
    task_id = far_future_task(server)

    result = taskctl("tail", task_id, "--interval", "0.1", "--timeout", "0.5")

    assert result.returncode == 1
    assert "status scheduled, next run" in result.stdout
    assert f"gave up after 0.5 s: task {task_id} is scheduled" in result.stderr


def test_tail_ends_quietly_with_130_on_ctrl_c(server):
    task_id = far_future_task(server)
    # As from a terminal: a suite started in the background by a shell (`make test &`)
    # hands its children SIGINT ignored, and Python then never raises KeyboardInterrupt.
    process = subprocess.Popen(
        [sys.executable, "-m", "taskctl", "tail", task_id], cwd=PROJECT_DIR,
        env=user_env(server.url, LOCAL_TOKEN), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        first_line = process.stdout.readline()  # tail is polling now
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)  # generous: CI may be very busy
    finally:
        process.kill()

    assert "status scheduled" in first_line
    assert process.returncode == 130
    assert stderr == ""


def test_help_documents_the_exit_codes():
    result = subprocess.run([sys.executable, "-m", "taskctl", "--help"], cwd=PROJECT_DIR,
                            capture_output=True, text=True)

    assert result.returncode == 0
    epilog = result.stdout.split("exit codes:")[1]
    for code in ("0 ", "1 ", "2 ", "3 ", "130 "):
        assert f"\n  {code}" in epilog
    assert re.search(r"\n  3 +tail: the task finished failed", epilog)
    assert "TASKCTL_URL" in epilog and "TASKCTL_TOKEN" in epilog


def test_the_readme_lists_the_same_exit_codes_as_the_help():
    readme = (Path(PROJECT_DIR) / "README.md").read_text()
    section = readme.split("## Command line: taskctl")[1].split("\n## ")[0]
    in_readme = re.findall(r"^\| (\d+) \|", section, re.MULTILINE)
    in_help = re.findall(r"^  (\d+) ", cli.EPILOG.split("exit codes:")[1].split("\n\n")[0],
                         re.MULTILINE)

    assert in_readme == in_help == ["0", "1", "2", "3", "130"]
    assert "| 3 | `tail`: the task finished `failed`" in section


def test_local_time_shows_the_wall_clock_of_the_zone():
    assert cli.local_time("2030-01-07T08:00:00Z", "Europe/Berlin") == "Mon 2030-01-07 09:00 CET"


def test_local_time_is_blank_only_when_the_zone_is_unknown(monkeypatch):
    assert cli.local_time("2030-01-07T08:00:00Z", "Nowhere/Atlantis") == ""

    def no_tzdata(zone):
        raise cli.ZoneInfoNotFoundError(zone)

    monkeypatch.setattr(cli, "ZoneInfo", no_tzdata)
    assert cli.local_time("2030-01-07T08:00:00Z", "Europe/Berlin") == ""


def test_local_time_does_not_hide_a_bug():
    # A programming error must surface, not turn into a blank column.
    with pytest.raises(AttributeError):
        cli.local_time(None, "Europe/Berlin")


def test_the_console_script_is_installed_in_the_venv():
    # `make dev` and `make test` install the project (pyproject.toml) into .venv.
    script = Path(sys.executable).parent / "taskctl"
    assert script.exists(), f"{script} missing: run make dev or make test"

    result = subprocess.run([str(script), "preview", "--help"], capture_output=True, text=True)

    assert result.returncode == 0
    assert "RUN_AT" in result.stdout


def test_schedule_url_still_names_the_webhook_with_a_warning(taskctl, receiver):
    old = taskctl("schedule", "--url", receiver.url, "--at", in_seconds(3600), "--json")
    assert old.returncode == 0, old.stderr
    assert "`schedule --url` is now `schedule --webhook`" in old.stderr
    new = taskctl("schedule", "--webhook", receiver.url, "--at", in_seconds(3600), "--json")
    assert new.returncode == 0 and new.stderr == ""
    for result in (old, new):
        task = json.loads(taskctl("show", json.loads(result.stdout)["task_id"], "--json").stdout)
        assert task["payload"]["url"] == receiver.url




def test_list_and_show_name_the_tenant_and_an_admin_filters_by_it(tenant_server):
    marker = uuid.uuid4().hex[:8]
    ids = {}
    for tenant in ("alpha", "beta"):
        status, body = tenant_server.request("POST", "/schedule-task", {
            "action": "log", "payload": {"message": "x"}, "run_at": in_seconds(86400),
            "name": f"{tenant}-{marker}"}, token=TENANT_TOKENS[tenant])
        assert status == 201, body
        ids[tenant] = body["task_id"]

    def run(*args, tenant):
        return run_taskctl(*args, url=tenant_server.url, token=TENANT_TOKENS[tenant])

    # One tenant's listing: no TENANT column (every row would say the same).
    alpha = run("list", "--name", marker, tenant="alpha")
    assert alpha.returncode == 0, alpha.stderr
    header, *rows = alpha.stdout.splitlines()
    assert header.split()[:2] == ["ID", "NAME"]
    assert [line.split()[0] for line in rows] == [ids["alpha"]]
    shown = run("show", ids["alpha"], tenant="alpha")
    assert fields_of(shown.stdout)["tenant"] == "alpha"
    hidden = run("show", ids["beta"], tenant="alpha")
    assert hidden.returncode == 2 and "404" in hidden.stderr

    # The admin's listing spans both: each row names its tenant.
    everyone = run("list", "--name", marker, tenant="*")
    assert everyone.returncode == 0, everyone.stderr
    header, *rows = everyone.stdout.splitlines()
    assert header.split()[:3] == ["ID", "TENANT", "NAME"]
    assert sorted(line.split()[:2] for line in rows) == sorted(
        [task_id, tenant] for tenant, task_id in ids.items())
    assert fields_of(run("show", ids["beta"], tenant="*").stdout)["tenant"] == "beta"

    narrowed = run("list", "--name", marker, "--tenant", "beta", "--json", tenant="*")
    assert narrowed.returncode == 0, narrowed.stderr
    assert [(t["task_id"], t["tenant"]) for t in json.loads(narrowed.stdout)["tasks"]] == [
        (ids["beta"], "beta")]

    # A tenant's token filtering by another tenant: the API's 400, exit code 2.
    refused = run("list", "--tenant", "beta", tenant="alpha")
    assert refused.returncode == 2
    assert "tenant" in refused.stderr and "admin" in refused.stderr
