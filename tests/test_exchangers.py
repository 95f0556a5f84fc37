"""Exchange processes: the local server's webhooks sent from child processes."""
import contextlib
import marshal
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client

import pytest

from chalicelib.actions import exchange
from chalicelib.local import exchangers
from tests.conftest import wait_for

pytestmark = pytest.mark.e2e  # starts processes


@pytest.fixture
def children():
    started = []

    def start(count=1, channels=2):
        processes = exchangers.ExchangeProcesses(count, channels)
        processes.start()
        started.append(processes)
        wait_for(lambda: processes.idle_channels() == count * channels, timeout=30)
        return processes

    yield start
    for processes in started:
        processes.close()


def _request(url, body=b'{"n":1}', key="key-1"):
    return exchange.Outgoing("POST", exchange.sendable_url(url),
                             {"Content-Type": "application/json", "Idempotency-Key": key},
                             body)


@pytest.fixture
def not_here(monkeypatch):
    """Fail the test if an exchange is sent from this process."""
    def refuse(request, timeout):
        raise AssertionError("sent from the server's own process")

    monkeypatch.setattr(exchange, "deliver_here", refuse)


@pytest.fixture
def sent_here(monkeypatch):
    """The bodies of the exchanges sent from this process (they are still sent)."""
    bodies = []
    send = exchange.deliver_here

    def recorded(request, timeout, **guarded):
        bodies.append(request.body)
        return send(request, timeout, **guarded)

    monkeypatch.setattr(exchange, "deliver_here", recorded)
    return bodies


def test_an_exchange_is_sent_by_a_child_and_its_result_comes_back(children, receiver,
                                                                  not_here):
    children()
    receiver.body = b"thanks"

    result = exchange.deliver(_request(receiver.url), 5)

    assert (result.success, result.http_status, result.response_body) == (True, 200, "thanks")
    assert receiver.requests[0]["headers"]["idempotency-key"] == "key-1"
    assert receiver.requests[0]["body"] == b'{"n":1}'


@pytest.mark.parametrize("status, headers, retryable, retry_after", [
    (503, {"Retry-After": "7"}, True, 7.0),
    (400, {}, False, None),
])
def test_a_refusal_is_judged_in_the_child_as_it_would_be_here(children, receiver, not_here,
                                                               status, headers, retryable,
                                                               retry_after):
    children()
    receiver.status, receiver.reply_headers = status, headers

    result = exchange.deliver(_request(receiver.url), 5)

    assert (result.success, result.http_status, result.retryable) == (False, status,
                                                                      retryable)
    assert result.retry_after == retry_after
    assert result.error.startswith(f"HTTP {status}")


def test_a_refused_connection_is_a_retryable_failure(children, refused_url, not_here):
    children()

    result = exchange.deliver(_request(refused_url), 5)

    assert (result.success, result.retryable) == (False, True)
    assert result.error.startswith("connection failed: ")


@contextlib.contextmanager
def held_exchange(receiver):
    """An exchange in flight (on a thread of its own) that the receiver holds until the
    block ends; yields the list its result goes into."""
    arrived, release = receiver.hold(b"held")
    results = []
    holder = threading.Thread(target=lambda: results.append(
        exchange.deliver(_request(receiver.url, b'"held"'), 30)))
    holder.start()
    try:
        assert arrived.wait(10)
        yield results
    finally:
        release.set()
        holder.join(30)
        receiver.on_request = None


def test_with_every_channel_busy_the_exchange_is_sent_here(children, receiver, sent_here):
    processes = children(count=1, channels=1)
    with held_exchange(receiver) as results:
        assert processes.idle_channels() == 0
        assert exchange.deliver(_request(receiver.url, b'"next"'), 5).success
    assert results[0].success
    assert sent_here == [b'"next"']  # the held one went to the child
    assert processes.idle_channels() == 1  # and its channel came back


def test_a_server_that_is_not_busy_sends_its_exchanges_itself(children, receiver, sent_here):
    processes = children()
    runs = [exchangers.BUSY_RUNS - 1]
    processes.hand_over_from(lambda: runs[0])

    assert exchange.deliver(_request(receiver.url, b'"quiet"'), 5).success
    runs[0] = exchangers.BUSY_RUNS
    assert exchange.deliver(_request(receiver.url, b'"busy"'), 5).success

    assert sent_here == [b'"quiet"']
    assert [r["body"] for r in receiver.requests] == [b'"quiet"', b'"busy"']


def test_a_child_killed_mid_exchange_leaves_a_retryable_failure_then_runs_are_sent_here(
        children, receiver):
    processes = children(count=1, channels=2)
    with held_exchange(receiver) as results:
        os.kill(processes.child_pids()[0], signal.SIGKILL)
        wait_for(lambda: results, timeout=30)
    assert (results[0].success, results[0].retryable) == (False, True)
    assert results[0].error == "connection failed: the exchange process ended"
    # The dead child's idle channel is found broken and the run is sent from here.
    assert exchange.deliver(_request(receiver.url, b'"after"'), 5).success
    assert processes.idle_channels() == 0
    assert [r["body"] for r in receiver.requests] == [b'"held"', b'"after"']


def test_a_child_that_stops_answering_loses_its_channel_and_sends_nothing_late(
        children, receiver, monkeypatch):
    processes = children(count=1, channels=1)
    monkeypatch.setattr(exchange, "DEADLINE_MARGIN_SECONDS", 0.0)
    monkeypatch.setattr(exchangers, "REPLY_MARGIN_SECONDS", 0.0)
    child = processes.child_pids()[0]
    os.kill(child, signal.SIGSTOP)
    try:
        result = processes.deliver(_request(receiver.url, b'"stalled"'), 0.5)
    finally:
        os.kill(child, signal.SIGCONT)
    assert (result.success, result.retryable) == (False, True)
    assert result.error == "timeout: no complete response within 0.5 s"
    # The child opens a channel again in place of the dropped one; the request it found
    # there, past its deadline, was never sent.
    wait_for(lambda: processes.idle_channels() == 1, timeout=30)
    assert processes.deliver(_request(receiver.url, b'"after"'), 5).success
    assert [r["body"] for r in receiver.requests] == [b'"after"']


def test_a_receiver_that_drips_past_the_deadline_does_not_keep_the_childs_channel(
        children, receiver, monkeypatch):
    from bench.common import SlowReceivers

    processes = children(count=1, channels=1)
    monkeypatch.setattr(exchange, "DEADLINE_MARGIN_SECONDS", 0.0)
    slow = SlowReceivers(drip_bytes=60)  # a byte a second: no single read times out
    try:
        result = processes.deliver(_request(slow.drip_url), 1.5)
        assert result.error == "timeout: no complete response within 1.5 s"
        # The exchange still drips in the child (for a minute); a new channel takes the
        # dropped one's place.
        wait_for(lambda: processes.idle_channels() == 1, timeout=20)
        assert processes.deliver(_request(receiver.url), 5).success
    finally:
        slow.close()


def test_a_webhook_run_is_pinned_here_and_sent_by_the_child(children, public_receiver,
                                                             not_here, monkeypatch):
    from chalicelib.actions.base import ActionContext
    from chalicelib.actions.webhook import run_webhook
    from tests.conftest import MEMORY_SIGNING_SECRET

    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", MEMORY_SIGNING_SECRET)
    children()
    context = ActionContext(task_id="t-1", run_id="r-1", attempt=1, idempotency_key="t-1:r")

    # The name resolves only in this process (a fake resolver): the child connects to the
    # address pinned here, and the request still names the host.
    result = run_webhook({"url": public_receiver.public_url, "data": {"n": 1}}, context)

    assert result.success
    assert public_receiver.dns.lookups == ["hooks.example.test"]
    sent = public_receiver.requests[0]
    assert sent["headers"]["host"].startswith("hooks.example.test:")
    assert sent["headers"]["idempotency-key"] == "t-1:r"
    assert sent["headers"]["webhook-signature"].startswith("v1,")
    assert sent["body"] == b'{"n":1}'


def test_an_error_raised_in_the_child_is_raised_in_the_server(children, receiver):
    processes = children()
    broken = _request(receiver.url)
    broken.body = 5  # not bytes: a defect, not a failure of the exchange

    with pytest.raises(exchangers.ExchangeProcessError, match="TypeError"):
        processes.deliver(broken, 5)
    assert processes.idle_channels() == 2  # the channel still works


def test_a_connection_without_the_key_gets_no_channel(children, receiver, not_here):
    processes = children(count=1, channels=1)

    with pytest.raises((AuthenticationError, EOFError, ConnectionError)):
        Client(processes.address, family="AF_UNIX", authkey=b"not the key")

    assert processes.idle_channels() == 1
    assert exchange.deliver(_request(receiver.url), 5).success


def test_close_ends_the_children_and_takes_exchanges_back(children, receiver):
    processes = children()
    pids = processes.child_pids()

    processes.close()

    assert all(_ended(pid) for pid in pids)
    assert not os.path.exists(os.path.dirname(processes.address))
    assert exchange._handover is None
    assert exchange.deliver(_request(receiver.url), 5).success  # sent here


def test_the_children_end_when_the_server_is_killed(tmp_path):
    script = textwrap.dedent("""
        import sys, time
        from chalicelib.local.exchangers import ExchangeProcesses
        processes = ExchangeProcesses(2, 1)
        processes.start()
        print(processes.address, *processes.child_pids(), flush=True)
        time.sleep(120)
    """)
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              cwd=exchangers.config.PROJECT_DIR)
    try:
        address, *pids = server.stdout.readline().decode().split()
        pids = [int(pid) for pid in pids]
        assert len(pids) == 2 and not any(_ended(pid) for pid in pids)
        assert os.path.exists(address)
    finally:
        server.kill()
        server.wait(10)
    wait_for(lambda: all(_ended(pid) for pid in pids), timeout=30)
    assert not os.path.exists(os.path.dirname(address))  # the children removed it


def _ended(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # Ended but not yet reaped by its parent (init, for an orphan) still counts as ended.
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_an_exchange_that_ends_after_its_deadline_answers_a_timeout(receiver):
    # In the child: the server stops waiting at the deadline, so a later success would
    # disagree with what it recorded.
    receiver.delay = 0.5
    over_at = time.monotonic() + 0.2

    outcome, values, _ = exchangers._delivered(_request(receiver.url), 5, over_at)

    assert outcome == "result" and len(receiver.requests) == 1
    assert exchange.ActionResult(*values) == exchange.timed_out(5)


def test_a_request_that_waited_past_its_deadline_is_not_sent(receiver):
    outcome, values, _ = exchangers._delivered(_request(receiver.url), 5,
                                               time.monotonic() - 0.1)

    assert exchange.ActionResult(*values) == exchange.timed_out(5)
    assert receiver.requests == []


@pytest.mark.parametrize("data", [b"not marshal", marshal.dumps(("too", "short"))])
def test_a_child_answers_what_it_cannot_read_as_a_defect_and_keeps_its_channel(data):
    channels = exchangers._Channels("unused", b"key")

    outcome, message, _ = marshal.loads(channels._answer(1, data))

    assert outcome == "raised" and message.split(":")[0] in ("ValueError", "TypeError",
                                                             "EOFError")
