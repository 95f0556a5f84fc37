"""SSRF guard: refused at creation (literal hosts) and at run time (DNS), pinned connects."""
import json
import socket

import pytest

from chalicelib import ssrf
from chalicelib.executor import execute_task
from tests.conftest import runtime
from tests.conftest import FakeDNS
from tests.test_api import spec_example, task_count

REFUSED_AT_CREATION = [
    "http://127.0.0.1/", "http://127.255.255.254:8080/x", "http://localhost/",
    "http://LOCALHOST./", "http://api.localhost/", "http://10.0.0.1/", "http://172.16.5.4/",
    "http://192.168.1.1/", "http://169.254.169.254/latest/meta-data/", "http://100.64.0.1/",
    "http://0.0.0.0/", "http://0/", "http://127.1/", "http://2130706433/", "http://017700000001/",
    "http://0x7f000001/", "http://0x7f.1/", "http://224.0.0.1/", "http://240.0.0.1/",
    "http://255.255.255.255/", "http://[::1]/", "http://[::]/", "http://[fe80::1]/",
    "http://[fd12:3456::1]/", "http://[fc00::1]/", "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:169.254.169.254]/", "http://[ff02::1]/", "http://[2002:7f00:1::]/",
    # Spellings the HTTP client would turn into a private address, or cannot send at all.
    "http://\uff11\uff12\uff17.0.0.1/", "http://127\u30020\u30020\u30021/",
    "http://\u24dbocalhost/", "http://LOCALHOST\uff0e/", "http://user:pw@example.com/",
    "http://example.com@127.0.0.1/", "http://.example.com/",
]
ACCEPTED = ["https://example.com/hook", "http://93.184.216.34/", "http://8.8.8.8:8080/x",
            "http://[2606:4700:4700::1111]/", "https://hooks.example.org:8443/a?b=c"]


@pytest.mark.parametrize("url", REFUSED_AT_CREATION)
def test_private_literal_targets_are_refused_at_creation(api, private_refused, url):
    response = api.post("/schedule-task", spec_example(url=url))
    assert response.status_code == 400, url
    assert response.json["field"] == "payload.url"
    assert task_count() == 0


@pytest.mark.parametrize("url", ACCEPTED)
def test_public_targets_are_accepted(memory_api, private_refused, url):
    assert memory_api.post("/schedule-task", spec_example(url=url)).status_code == 201


def test_allow_private_targets_lets_loopback_through(memory_api, monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_TARGETS", "true")
    assert memory_api.post("/schedule-task", spec_example(url="http://127.0.0.1:9/x")).status_code == 201


def test_name_resolving_to_loopback_fails_at_run_time_without_retry(
        memory, private_refused, receiver, make_task, monkeypatch):
    dns = FakeDNS({"sneaky.example.test": "127.0.0.1"})
    monkeypatch.setattr(ssrf, "resolver", dns)
    port = receiver.url.split(":")[2].split("/")[0]
    task = make_task(payload={"url": f"http://sneaky.example.test:{port}/hook"}, max_attempts=3)
    result = execute_task(runtime(), task.task_id)
    assert result.status == "failed"  # refused, not retried
    assert "127.0.0.1" in result.run.error and receiver.requests == []


def test_connection_goes_to_the_checked_address(memory, public_receiver, make_task):
    # The name is looked up once; an unpinned connect would look again and get 10.9.9.9.
    task = make_task(payload={"url": public_receiver.public_url, "data": {"a": 1}})
    assert execute_task(runtime(), task.task_id).status == "completed"
    [request] = public_receiver.requests
    port = public_receiver.public_url.split(":")[2].split("/")[0]
    assert request["headers"]["host"] == f"hooks.example.test:{port}"
    assert json.loads(request["body"]) == {"a": 1}
    assert public_receiver.dns.lookups == ["hooks.example.test"]
    assert public_receiver.dns.answers["hooks.example.test"] == ["10.9.9.9"]  # never asked


def test_idn_host_is_resolved_and_sent_in_its_idna_form(memory, public_receiver, make_task,
                                                        monkeypatch):
    public_receiver.dns.answers["xn--bcher-kva.example.test"] = "127.0.0.1"
    port = public_receiver.public_url.split(":")[2].split("/")[0]
    task = make_task(payload={"url": f"http://bücher.example.test:{port}/hook"})
    assert execute_task(runtime(), task.task_id).status == "completed"
    assert public_receiver.requests[0]["headers"]["host"] == \
        f"xn--bcher-kva.example.test:{port}"
    assert "xn--bcher-kva.example.test" in public_receiver.dns.lookups


def test_dns_failure_is_retried(memory, private_refused, make_task, monkeypatch):
    def no_answer(*_):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(ssrf, "resolver", no_answer)
    task = make_task(payload={"url": "http://nowhere.example.test/"})
    assert execute_task(runtime(), task.task_id).status == "retrying"
    assert "DNS lookup" in runtime().store.get(task.task_id).runs[0].error


@pytest.mark.parametrize("address,blocked", [
    ("8.8.8.8", False), ("1.1.1.1", False), ("2606:4700:4700::1111", False),
    ("127.0.0.1", True), ("10.1.1.1", True), ("100.100.0.1", True), ("169.254.0.1", True),
    ("::ffff:10.0.0.1", True), ("::", True), ("fd00::1", True), ("2002:a00:1::", True),
])
def test_is_blocked(address, blocked):
    import ipaddress

    assert ssrf.is_blocked(ipaddress.ip_address(address)) is blocked
