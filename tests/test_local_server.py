"""The local stage as a user runs it: real server processes, real sockets, restarts."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.conftest import LOCAL_TOKEN, PROJECT_DIR, DevServer

pytestmark = pytest.mark.e2e  # server processes


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


def test_a_run_longer_than_the_shutdown_grace_is_recovered_not_failed(servers, receiver):
    # The run waits on an exchange process; stopping the server must not end that process
    # under it (which would record the run as a failed attempt).
    arrived, release = receiver.hold(b"Hello", timeout=60)
    server = servers().start()
    status, body = server.request("POST", "/schedule-task", {
        "action": "webhook", "payload": {"url": receiver.url, "data": "Hello", "timeout": 30},
        "run_at": whole_seconds_from_now(1).strftime("%Y-%m-%dT%H:%M:%SZ")})
    assert status == 201, body
    task_id = body["task_id"]
    try:
        assert arrived.wait(30), "the run never started"
        code, took = server.stop()
    finally:
        release.set()
        receiver.on_request = None
    assert code == 0 and took >= 10  # waited its 10 s for the run, then left it claimed
    server.start()
    task = server.wait_status(task_id, "completed")
    # Recovered at the start, not recorded as failed: one run on record, its second attempt.
    assert [(run["attempt"], run["outcome"]) for run in task["runs"]] == [(2, "succeeded")]
    keys = {request["headers"]["idempotency-key"] for request in receiver.requests}
    assert len(receiver.requests) == 2 and len(keys) == 1


def test_token_is_required_and_the_banner_shows_it(servers):
    server = servers(extra_env={"API_TOKENS": ""}).start()
    token_file = server.data_dir / "api-token"
    token = token_file.read_text().strip()
    assert len(token) >= 24 and token_file.stat().st_mode & 0o777 == 0o600
    assert token in server.err.read_text()
    assert "curl -s -X POST" in server.err.read_text()
    assert f"on {server.url}\n" in server.err.read_text()  # the port it got, not 0
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
    server = servers(command=[sys.executable, "-m", "chalicelib.local",
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


BAD_FILES = [
    ("api-token", b"x,,", "must hold one token"),
    ("api-token", b"\xff\xfe\x00bad", "is not UTF-8 text"),
    ("api-token", b"short", "at least 8"),
    ("api-token", b"two tokens-here", "no spaces or commas"),
    ("webhook-secret", b"not-a-secret!", "webhook signing secret is not whsec_"),
    ("webhook-secret", b"\xc3\x28", "is not UTF-8 text"),
    ("instance-id", b"zz", "8 hex digits"),
]


@pytest.mark.parametrize("name,content,message", BAD_FILES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_FILES)])
def test_an_unusable_local_file_stops_the_start_with_a_clear_message(tmp_path, name, content,
                                                                      message):
    data = tmp_path / "data"
    data.mkdir()
    (data / name).write_bytes(content)
    env = {key: value for key, value in os.environ.items()
           if key in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update({"PORT": "0", "SQLITE_PATH": str(data / "tasks.sqlite3")})
    result = subprocess.run([sys.executable, "-m", "chalicelib.local"], cwd=PROJECT_DIR,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr and str(data / name) in result.stderr
    assert "Traceback" not in result.stderr
    assert (data / name).read_bytes() == content  # left for the user to fix


def test_an_empty_secret_is_made_again_and_webhooks_stay_signed(servers, receiver):
    server = servers(extra_env={"API_TOKENS": LOCAL_TOKEN})
    server.data_dir.mkdir(parents=True)
    (server.data_dir / "webhook-secret").write_text("\n")
    server.start()
    secret = (server.data_dir / "webhook-secret").read_text().strip()
    assert secret.startswith("whsec_")
    assert "webhook-secret was empty; made a new webhook-secret" in server.err.read_text()
    task_id = server.schedule(receiver.url, whole_seconds_from_now(1))
    server.wait_status(task_id, "completed")
    headers = receiver.requests[0]["headers"]
    from standardwebhooks.webhooks import Webhook

    Webhook(secret).verify(receiver.requests[0]["body"], {
        k: headers[k] for k in ("webhook-id", "webhook-timestamp", "webhook-signature")})


def test_local_data_is_private_to_its_owner(tmp_path, receiver):
    """A folder the server creates is 0700; the store, its WAL, the secrets and the dead
    letters are 0600 (they hold URLs and header values)."""
    data = tmp_path / "fresh" / "data"  # made by the server, not by this test
    server = DevServer(tmp_path, extra_env={"SQLITE_PATH": str(data / "tasks.sqlite3")})
    server.start()
    try:
        task_id = server.schedule(receiver.url, whole_seconds_from_now(1))
        receiver.status = 500
        server.wait_status(task_id, "failed")
        assert data.stat().st_mode & 0o777 == 0o700
        for name in ("tasks.sqlite3", "tasks.sqlite3-wal", "tasks.sqlite3-shm",
                     "webhook-secret", "instance-id", "dead-letters.jsonl"):
            assert (data / name).stat().st_mode & 0o777 == 0o600, name
    finally:
        server.stop(signal.SIGKILL)


def test_the_listen_backlog_takes_a_burst_of_clients(servers):
    server = servers().start()
    listening = subprocess.run(["ss", "-ltnH", f"sport = :{server.port}"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert int(listening[2]) >= 128  # Send-Q of a listening socket: its backlog


@pytest.mark.parametrize("tokens, shown", [
    ("plain-token-0123", "plain-token-0123"), ("alpha=alpha-token-0123,beta=b", "alpha-token-0123"),
])
def test_the_banner_shows_the_first_entrys_token(monkeypatch, tokens, shown):
    from chalicelib.local import server as local_server

    monkeypatch.setenv("API_TOKENS", tokens)
    assert local_server.local_token() == (shown, "API_TOKENS")


@pytest.mark.parametrize("processes, start_fails", [("0", False), ("1", True)])
def test_without_an_exchange_process_the_server_sends_its_webhooks(monkeypatch, caplog,
                                                                   processes, start_fails):
    from chalicelib.actions import exchange
    from chalicelib.local import exchangers, server

    def refuse(self):
        raise OSError("AF_UNIX path too long")

    monkeypatch.setenv("LOCAL_EXCHANGE_PROCESSES", processes)
    monkeypatch.setattr(server, "_exchangers", None)
    monkeypatch.setattr(exchangers.ExchangeProcesses, "start", refuse)

    server._start_exchange_processes()

    assert server._exchangers is None and exchange._handover is None
    assert ("AF_UNIX path too long" in caplog.text) is start_fails
