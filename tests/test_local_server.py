"""The local stage as a user runs it: real server processes, real sockets, restarts."""
import json
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest


def whole_seconds_from_now(seconds):
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=0) + timedelta(seconds=seconds + 1)


def arrival(receiver, index=0):
    return receiver.requests[index]["received_at"]


def test_webhook_due_in_two_seconds_arrives_on_time(servers, receiver):
    server = servers().start()
    run_at = whole_seconds_from_now(2)
    task_id = server.schedule(receiver.url, run_at)
    task = server.wait_status(task_id, "completed")
    assert len(receiver.requests) == 1
    received = arrival(receiver)
    # Never early; late by milliseconds on a quiet machine (bench/dispatch.py measures it),
    # so the bound only has to catch a task that waited for something else.
    assert run_at <= received < run_at + timedelta(seconds=3)
    assert json.loads(receiver.requests[0]["body"]) == {"msg": "Hello from Lambda"}
    [run] = task["runs"]
    assert run["outcome"] == "succeeded" and run["http_status"] == 200


def test_restart_keeps_waiting_tasks_and_fires_them_once(servers, receiver):
    server = servers().start()
    run_at = whole_seconds_from_now(5)
    task_id = server.schedule(receiver.url, run_at)
    code, took = server.stop()
    assert code == 0 and took < 5
    server.start()
    server.wait_status(task_id, "completed")
    time.sleep(1.5)  # nothing fires a second time
    assert len(receiver.requests) == 1


def test_task_due_while_down_fires_right_after_start(servers, receiver):
    server = servers().start()
    run_at = whole_seconds_from_now(1)
    task_id = server.schedule(receiver.url, run_at)
    server.stop()
    while datetime.now(timezone.utc) < run_at + timedelta(seconds=1):
        time.sleep(0.1)
    assert receiver.requests == []
    server.start()
    ready = datetime.now(timezone.utc)
    server.wait_status(task_id, "completed")
    assert len(receiver.requests) == 1
    assert arrival(receiver) - ready < timedelta(seconds=5)  # at once, not at a poll


def test_run_cut_off_by_a_kill_is_recovered_at_start(servers, receiver):
    receiver.delay = 3.0
    server = servers().start()
    task_id = server.schedule(receiver.url, whole_seconds_from_now(1))
    deadline = time.monotonic() + 10
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert receiver.requests, "the run never started"
    server.stop(signal.SIGKILL)  # dies mid-run: the task is left claimed in the store
    receiver.delay = 0.0
    server.start()
    task = server.wait_status(task_id, "completed")
    assert len(receiver.requests) == 2  # the cut-off attempt and the recovered one
    keys = {r["headers"]["idempotency-key"] for r in receiver.requests}
    assert len(keys) == 1 and keys.pop().startswith(task_id)  # the receiver sees one run
    assert task["attempts"] == 2


def test_shutdown_lets_a_run_in_flight_finish(servers, receiver):
    receiver.delay = 1.5
    server = servers().start()
    task_id = server.schedule(receiver.url, whole_seconds_from_now(1))
    deadline = time.monotonic() + 10
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    code, took = server.stop()
    assert code == 0 and took < 5
    server.start()
    assert server.request("GET", f"/tasks/{task_id}")[1]["status"] == "completed"
    assert len(receiver.requests) == 1


def test_token_is_required_and_the_banner_shows_it(servers):
    server = servers(extra_env={"API_TOKENS": ""}).start()
    token_file = server.data_dir / "api-token"
    token = token_file.read_text().strip()
    assert len(token) >= 24
    assert token in server.err.read_text()
    assert "curl -s -X POST" in server.err.read_text()
    request = urllib.request.Request(server.url + "/tasks")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401
    request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200


def test_chalice_local_gives_the_same_service(servers, receiver):
    chalice = str(Path(sys.executable).parent / "chalice")
    server = servers(command=[chalice, "local", "--stage", "local", "--port", "{port}",
                              "--no-autoreload"]).start()
    task_id = server.schedule(receiver.url, whole_seconds_from_now(1))
    server.wait_status(task_id, "completed")
    assert len(receiver.requests) == 1


def test_dynamodb_path_against_moto_server(servers, receiver):
    server = servers(command=[sys.executable, "-m", "chalicelib.local_server",
                              "--with-moto"]).start()
    task_id = server.schedule(receiver.url, whole_seconds_from_now(1))
    task = server.wait_status(task_id, "completed")
    assert len(receiver.requests) == 1 and task["runs"][0]["http_status"] == 200
    assert "store : dynamodb" in server.output()


def test_each_thread_of_the_server_sees_its_own_request():
    from app import app

    seen, both_set = {}, threading.Barrier(2)

    def handle(name):
        app.current_request = name
        both_set.wait()  # the other thread has set its own request meanwhile
        seen[name] = app.current_request

    threads = [threading.Thread(target=handle, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == {"a": "a", "b": "b"}


def test_concurrent_posts_each_store_their_own_body(servers):
    server = servers().start()
    names = [f"task {n}" for n in range(240)]

    def post(name):
        status, body = server.request("POST", "/schedule-task", {
            "action": "log", "payload": {"message": name}, "name": name,
            "run_at": "rate(1 day)"})
        assert status == 201, body
        return name, body["task_id"]

    with ThreadPoolExecutor(12) as pool:
        created = list(pool.map(post, names))
    for name, task_id in created:
        _, task = server.request("GET", f"/tasks/{task_id}")
        assert (task["name"], task["payload"]["message"]) == (name, name)


def test_stdout_is_json_lines_only(servers, receiver):
    """`make dev | jq` works: every line of stdout is a JSON object (the banner goes to
    stderr), the requests and the run included."""
    server = servers().start()
    task_id = server.schedule(receiver.url, datetime.now(timezone.utc) + timedelta(seconds=1))
    server.wait_status(task_id, "completed")
    server.stop()
    lines = server.log.read_text().splitlines()
    events = [json.loads(line) for line in lines]  # fails on any line that is not JSON
    assert all(isinstance(event, dict) and event.get("level") for event in events)
    names = {event.get("event") for event in events}
    assert {"http_request", "task_scheduled", "run_finished"} <= names
    assert "task-scheduler (local stage)" in server.err.read_text()


@pytest.mark.parametrize("path", ["/", "/health", "/openapi.json"])
def test_head_answers_like_get_without_a_body(servers, path):
    import http.client

    server = servers().start()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        connection.request("HEAD", path)
        head = connection.getresponse()
        assert head.status == 200 and head.read() == b""
        connection.request("GET", path)  # the same connection: HEAD left nothing behind
        get = connection.getresponse()
        assert get.status == 200 and get.read()
        assert head.getheader("Content-Type") == get.getheader("Content-Type")
    finally:
        connection.close()
